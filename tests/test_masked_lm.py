"""The MaskedLM family: tied decoder, fixed evaluation masks, a short fit on the mixed local corpus."""

from __future__ import annotations

import torch
from conftest import TINY_BERT, _trainer

from sstkit.models.masked_lm import IGNORE_INDEX, MaskedLM


def tiny() -> MaskedLM:
    torch.manual_seed(0)
    return MaskedLM("minilm", pretrained=False, config_overrides=TINY_BERT)


def test_decoder_is_tied_and_eval_masks_are_fixed():
    model = tiny()
    assert model.mlm.get_output_embeddings().weight.data_ptr() == model.mlm.get_input_embeddings().weight.data_ptr()
    block = torch.randint(1000, 2000, (2, 40))
    ids = model.frame(block)
    assert ids[0, 0] == model.cls_id and ids[0, -1] == model.sep_id
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    a, la = model.mask_tokens(ids, gen(), train=False)
    b, lb = model.mask_tokens(ids, gen(), train=False)
    assert torch.equal(a, b) and torch.equal(la, lb)
    picked = la != IGNORE_INDEX
    assert picked.any() and (a[picked] == model.mask_id).all() and torch.equal(a[~picked], ids[~picked])
    assert not picked[:, 0].any() and not picked[:, -1].any()  # [CLS] / [SEP] never masked
    out = model.step({"input_ids": block, "index": torch.tensor([5, 6])}, "val")  # seeded by the first index
    assert out.loss.isfinite() and out.preds.shape == (int(picked.sum()), model.vocab)
    assert torch.equal(out.target, la[picked])


def test_fit_on_the_mixed_corpus_and_reload(data_dir, tmp_path, write_config):
    from support import run_cli

    config = {
        "seed_everything": 0, "trainer": _trainer({"max_steps": 3, "limit_val_batches": 1}),
        "model": {"class_path": "sstkit.models.MaskedLM",
                  "init_args": {"backbone": "minilm", "pretrained": False, "config_overrides": TINY_BERT,
                                "lr": 1e-3, "warmup_steps": 1}},
        "data": {"class_path": "sstkit.datamodules.MixedTextCorpusDataModule",
                 "init_args": {"data_dir": str(data_dir), "train_files": ["sst2/train.tsv", "wikitext2/valid.txt"],
                               "val_files": ["sst2/dev.tsv"], "test_files": ["sst2/test.tsv"], "block_size": 30,
                               "batch_size": 4, "limit_eval_blocks": 4}},
    }
    cfg = write_config(config)
    cli = run_cli("fit", "--config", str(cfg), "--run_root", str(tmp_path / "runs"), "--trainer.logger", "false")
    assert cli.trainer.global_step == 3
    ckpt = next((tmp_path / "runs").rglob("last.ckpt"))
    model = MaskedLM.load_trained(str(ckpt))
    state = cli.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    from sstkit.functional.attacks.recipes import load_mlm

    mlm = load_mlm(str(ckpt))
    assert len(mlm.fill(["a [MASK] film"], k=5)[0]) == 5
