"""The PPC steering discriminator as a callback on the causal-LM family, and the mixed SST-2 + WikiText-2 corpus
its generator trains on (tiny models, seconds, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from chat_fixtures import tiny_lm, tiny_tokenizer
from conftest import lm_tiny_config
from support import run_cli

from sstkit.errors import SstkitError
from sstkit.generation.control import AttributeHead, SteerableLM, attribute_loss


@pytest.mark.parametrize("lm_gradient", [True, False])
def test_attribute_loss_trains_the_lm_only_with_lm_gradient(lm_gradient: bool) -> None:
    lm = SteerableLM(tiny_lm("opt"), tiny_tokenizer(), prefix="\n")
    head = AttributeHead(lm.model.config.hidden_size)
    loss, correct = attribute_loss(lm, head, ["the cat sat", "how do I stop"], [1, 0], lm_gradient)
    loss.backward()
    assert correct.shape == (2,) and correct.dtype == torch.bool
    assert head.linear.weight.grad is not None and head.linear.weight.grad.abs().sum() > 0
    lm_grads = [p.grad for p in lm.model.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert bool(lm_grads) == lm_gradient


def _mixed_config(data_dir: Path, export: Path) -> dict:
    config = lm_tiny_config(data_dir, max_steps=3, val_check_interval=3, check_val_every_n_epoch=None)
    config["data"] = {"class_path": "sstkit.datamodules.MixedTextCorpusDataModule",
                      "init_args": {"data_dir": str(data_dir), "train_files": ["sst2/train.tsv", "wikitext2/valid.txt"],
                                    "val_files": ["sst2/dev.tsv"], "tokenizer": "bpe", "bpe_vocab_size": 400,
                                    "block_size": 32, "batch_size": 4, "limit_eval_blocks": 4}}
    config["trainer"]["callbacks"] = [{"class_path": "sstkit.callbacks.AttributeDiscriminator",
                                       "init_args": {"batch_size": 4, "dev_rows": 8, "export": str(export)}}]
    return config


def test_head_trains_with_the_lm_and_sstkit_generate_steers_with_it(write_config, data_dir: Path,
                                                                      tmp_path: Path) -> None:
    config = write_config(_mixed_config(data_dir, tmp_path / "head.pt"))
    cli = run_cli("fit", "--config", str(config), "--run_root", str(tmp_path / "runs"), "--name", "lm")
    metrics = cli.trainer.callback_metrics
    assert 0.0 <= float(metrics["method/attribute_head/dev_acc"]) <= 1.0
    assert torch.isfinite(metrics["method/attribute_head/loss"])
    ckpt = tmp_path / "runs" / "lm" / "seed0" / "checkpoints" / "last.ckpt"
    # The exported file and the checkpoint hold the same trained head.
    exported, stored = AttributeHead.load(tmp_path / "head.pt"), AttributeHead.from_checkpoint(ckpt)
    assert torch.equal(exported.linear.weight, stored.linear.weight)
    assert torch.equal(stored.linear.weight, cli.model.attribute_head.linear.weight.detach())

    from sstkit.commands.generate import generate_main

    (tmp_path / "prompts.txt").write_text("the film\na story of\n")
    args = ["--model", str(ckpt), "--data-config", str(config), "--prompts", str(tmp_path / "prompts.txt"),
            "--max-new-tokens", "2", "--steps", "1", "--device", "cpu"]
    # No --discriminator: PPC steers with the head inside the checkpoint.
    assert generate_main([*args, "--controller", "ppc", "--out", str(tmp_path / "gen")]) == 0
    assert json.loads((tmp_path / "gen" / "metrics.json").read_text())["n"] == 2
    with pytest.raises(SstkitError, match="no attribute head in this checkpoint"):
        AttributeHead.from_checkpoint(_without_head(ckpt, tmp_path / "plain.ckpt"))


def _without_head(ckpt: Path, target: Path) -> Path:
    blob = torch.load(ckpt, map_location="cpu", weights_only=False)
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if not k.startswith("attribute_head.")}
    torch.save(blob, target)
    return target


def test_bad_arguments_fail_clearly(tmp_path: Path) -> None:
    from sstkit.callbacks import AttributeDiscriminator

    with pytest.raises(SstkitError, match="batch_size must be an int >= 1"):
        AttributeDiscriminator(batch_size=0)
    with pytest.raises(SstkitError, match="weight must be > 0"):
        AttributeDiscriminator(weight=0.0)
    with pytest.raises(SstkitError, match="causal LM"):
        AttributeDiscriminator().setup(None, torch.nn.Linear(2, 2), "fit")


def test_mixed_bpe_corpus_keeps_line_breaks_and_keys_the_tokenizer_by_every_file(data_dir: Path, tmp_path: Path) -> None:
    from sstkit.datamodules import MixedTextCorpusDataModule

    def corpus(root: Path) -> MixedTextCorpusDataModule:
        return MixedTextCorpusDataModule(data_dir=str(root), train_files=["sst2/train.tsv", "wikitext2/valid.txt"],
                                         tokenizer="bpe", bpe_vocab_size=400, block_size=16)

    dm = corpus(data_dir)
    stream = dm.tokenizer.decode(dm.token_stream("train").tolist())
    assert stream == "".join(dm._lines("train")) and stream.count("\n") == len(dm._lines("train"))
    assert stream.startswith(dm._lines("train")[0]) and "sentence\t" not in stream
    # A changed second file is a different training text: a different cached tokenizer, not the first one's.
    other = tmp_path / "data"
    (other / "sst2").mkdir(parents=True)
    (other / "wikitext2").mkdir()
    (other / "sst2" / "train.tsv").write_text((data_dir / "sst2" / "train.tsv").read_text())
    (other / "wikitext2" / "valid.txt").write_text("zebra quagga okapi\n" * 50)
    assert corpus(other)._tokenizer_key() != dm._tokenizer_key()
    assert "zebra" in corpus(other).tokenizer.get_vocab() or "Ġzebra" in corpus(other).tokenizer.get_vocab()
    with pytest.raises(SstkitError, match="bpe is trained on the training text"):
        MixedTextCorpusDataModule(data_dir=str(data_dir), val_files=["sst2/dev.tsv"], tokenizer="bpe")
