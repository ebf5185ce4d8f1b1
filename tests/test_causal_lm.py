"""The OPT causal-LM family and its text-corpus data: tokenizer cache, blocks, perplexity, training, resume, DDP."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import pytest
import sstkit.datamodules.bpe as bpe
import torch
from conftest import lm_tiny_config
from sstkit.datamodules import TextCorpusDataModule, WikiText2DataModule
from support import run_cli, run_sstkit, summary

from sstkit.errors import DataError, SstkitError
from sstkit.models import CausalLM


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("SSTKIT_CACHE", str(cache))
    return cache


def _wikitext(data_dir: Path, **kwargs: object) -> WikiText2DataModule:
    args = {"data_dir": str(data_dir), "bpe_vocab_size": 512, "block_size": 32, "batch_size": 4}
    return WikiText2DataModule(**{**args, **kwargs})


def test_bpe_is_trained_once_and_cached(data_dir: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _wikitext(data_dir)
    assert first.vocab_size == 512
    assert first.tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "<pad>", "</s>", "<unk>"]
    assert len(list((fresh_cache / "tokenizers").glob("bpe512-valid-*/tokenizer.json"))) == 1

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached tokenizer must be reused, not trained again")

    monkeypatch.setattr(bpe, "train_bpe", no_training)
    second = _wikitext(data_dir)
    assert second.vocab_size == 512
    text = "Homarus gammarus is a large <unk> ."
    assert second.tokenizer(text)["input_ids"] == first.tokenizer(text)["input_ids"]
    # Another vocabulary size is another tokenizer.
    with pytest.raises(AssertionError, match="reused"):
        _ = _wikitext(data_dir, bpe_vocab_size=600).vocab_size


def test_blocks_are_contiguous_and_cover_the_text(data_dir: Path, fresh_cache: Path) -> None:
    dm = _wikitext(data_dir)
    dm.prepare_data()
    dm.setup("fit")
    stream, train = dm.token_stream("train"), dm.datasets["train"]
    assert len(stream) - len(train) * 32 in range(32), "only the tail shorter than a block is dropped"
    joined = torch.cat([train[i]["input_ids"] for i in range(len(train))])
    assert torch.equal(joined, stream[: len(train) * 32].long())
    # Byte-level BPE round-trips, so the stream is exactly the file's text.
    text = (data_dir / "wikitext2" / "valid.txt").read_text(encoding="utf-8")
    assert dm.tokenizer.decode(stream.tolist()) == text
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 32) and batch["input_ids"].dtype == torch.long


def test_val_holdout_splits_the_training_file(data_dir: Path, fresh_cache: Path) -> None:
    dm = _wikitext(data_dir, val_holdout=0.1)
    dm.prepare_data()
    text = (data_dir / "wikitext2" / "valid.txt").read_text(encoding="utf-8")
    train, val = dm.tokenizer.decode(dm.token_stream("train").tolist()), dm.tokenizer.decode(dm.token_stream("val").tolist())
    assert train + val == text and text.splitlines()[-1] in val and len(val.splitlines()) == 30
    dm.setup("test")
    assert dm.tokenizer.decode(dm.token_stream("test").tolist()).startswith(
        (data_dir / "wikitext2" / "test.txt").read_text(encoding="utf-8")[:200])


def test_perplexity_is_exp_of_the_token_mean_loss() -> None:
    torch.manual_seed(0)
    model = CausalLM("tiny", vocab_size=50).eval()
    batches = [{"input_ids": torch.randint(0, 50, (3, 9))}, {"input_ids": torch.randint(0, 50, (2, 9))}]
    labels = batches[1]["input_ids"].clone()
    labels[0, :4] = -100  # ignored positions must not count
    batches[1]["labels"] = labels
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            out = model.step(batch, "val")
            model.val_metrics.update(out.preds, out.target)
            model.val_loss.update(out.loss, weight=out.batch_size)
            logp = torch.log_softmax(model.lm(input_ids=batch["input_ids"]).logits[:, :-1].double(), -1)
            target = batch.get("labels", batch["input_ids"])[:, 1:]
            keep = target != -100
            total -= logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep].sum().item()
            count += int(keep.sum())
    assert count == 3 * 8 + 2 * 8 - 3
    ppl = float(model.val_metrics.compute()["val/ppl"])
    assert ppl == pytest.approx(math.exp(total / count), rel=1e-5)
    assert float(model.val_loss.compute()) == pytest.approx(total / count, rel=1e-5)


def test_lm_head_stays_tied_and_positions_are_checked() -> None:
    model = CausalLM("tiny", vocab_size=40, config_overrides={"max_position_embeddings": 16})
    assert model.lm.lm_head.weight is model.lm.model.decoder.embed_tokens.weight
    with pytest.raises(SstkitError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(SstkitError, match="size"):
        CausalLM("huge", vocab_size=40)


def test_loss_decreases_on_a_repeated_corpus(write_config, tmp_path: Path, fresh_cache: Path) -> None:
    corpus = tmp_path / "data" / "repeat"
    corpus.mkdir(parents=True)
    (corpus / "train.txt").write_text("the lobster is blue until it is cooked , then it is red .\n" * 300)
    config = lm_tiny_config(tmp_path / "data", max_steps=30)
    config["model"]["init_args"].update(lr=3e-3, config_overrides={"dropout": 0.0})
    config["data"] = {"class_path": "sstkit.datamodules.TextCorpusDataModule",
                      "init_args": {"data_dir": str(tmp_path / "data"), "dataset_folder": "repeat", "val_file": None,
                                    "test_file": None, "bpe_vocab_size": 300, "block_size": 16, "batch_size": 8}}
    trace = f'{{"class_path": "support.StepTrace", "init_args": {{"out_dir": "{tmp_path}"}}}}'
    run_cli("fit", "--config", str(write_config(config)), "--run_root", str(tmp_path / "runs"), "--trainer.logger=false",
            "--trainer.enable_checkpointing=false", "--trainer.limit_val_batches=0", f"--trainer.callbacks+={trace}")
    losses = [row[2] for row in json.loads((tmp_path / "steps.json").read_text())]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_lm_resume_is_exact(write_config, data_dir: Path, tmp_path: Path) -> None:
    # 24 training blocks / batch 4 = 6 steps per epoch: stop at 4, end at 8 (into epoch 2).
    config = lm_tiny_config(data_dir, max_steps=8, val_check_interval=3, logger=False)
    config["data"]["init_args"]["limit_train_blocks"] = 24
    config = write_config(config)
    runs = str(tmp_path / "runs")
    whole = run_cli("fit", "--config", str(config), "--name", "whole", "--run_root", runs)
    ckpt = tmp_path / "step4.ckpt"
    stop = f'{{"class_path": "support.StopAtStep", "init_args": {{"step": 4, "ckpt_path": "{ckpt}"}}}}'
    run_cli("fit", "--config", str(config), "--name", "parts", "--run_root", runs, f"--trainer.callbacks+={stop}")
    resumed = run_cli("fit", "--config", str(config), "--name", "parts", "--run_root", runs, "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 8
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    assert resumed.model.lm.lm_head.weight is resumed.model.lm.model.decoder.embed_tokens.weight
    ma, mb = summary(tmp_path / "runs", "whole")["metrics"], summary(tmp_path / "runs", "parts")["metrics"]
    assert abs(ma["val/ppl"] - mb["val/ppl"]) <= 1e-4 * ma["val/ppl"]
    assert ma["val/ppl"] == pytest.approx(math.exp(ma["val/loss"]), rel=1e-5)


@pytest.mark.ddp
def test_ddp_perplexity_equals_single_process(write_config, data_dir: Path, tmp_path: Path) -> None:
    # 17 eval blocks, batches of 4: rank 0 evaluates 9 blocks (3 batches), rank 1 8 blocks (2 batches).
    config = write_config(lm_tiny_config(data_dir, max_steps=2, val_check_interval=2, logger=False))
    runs = tmp_path / "runs"
    result = run_sstkit("fit", "--config", str(config), "--name", "ddp", "--run_root", str(runs),
                        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = summary(runs, "ddp")
    assert record["world_size"] == 2
    single = run_cli("validate", "--config", str(config), "--name", "single", "--run_root", str(runs),
                     "--ckpt_path", str(runs / "ddp" / "seed0" / "checkpoints" / "last.ckpt"))
    for key in ("val/ppl", "val/loss"):
        assert record["metrics"][key] == pytest.approx(float(single.trainer.callback_metrics[key]), rel=1e-6), key


def test_read_only_data_folder(data_dir: Path, tmp_path: Path, fresh_cache: Path) -> None:
    root = tmp_path / "ro"
    (root / "wikitext2").mkdir(parents=True)
    for name in ("valid.txt", "test.txt"):
        (root / "wikitext2" / name).write_bytes((data_dir / "wikitext2" / name).read_bytes())
    paths = [root / "wikitext2" / "valid.txt", root / "wikitext2" / "test.txt", root / "wikitext2", root]
    for path in paths:
        os.chmod(path, stat.S_IREAD | (stat.S_IEXEC if path.is_dir() else 0))
    try:
        dm = _wikitext(root)
        dm.prepare_data()
        dm.setup("fit")
        assert len(dm.datasets["train"]) > 0 and len(dm.datasets["val"]) > 0
        assert sorted(p.name for p in (root / "wikitext2").iterdir()) == ["test.txt", "valid.txt"]
    finally:
        for path in paths:
            os.chmod(path, stat.S_IRWXU)


def test_bad_inputs_give_user_errors(data_dir: Path, tmp_path: Path, fresh_cache: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "nowhere" / "wikitext2")):
        _wikitext(tmp_path / "nowhere")
    with pytest.raises(SstkitError, match="block_size"):
        _wikitext(data_dir, block_size=1)
    with pytest.raises(SstkitError, match="val_holdout"):
        _wikitext(data_dir, val_holdout=1.0)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.txt").write_text(" \n\n")
    dm = TextCorpusDataModule(data_dir=str(tmp_path), dataset_folder="empty", val_file=None, test_file=None)
    with pytest.raises(DataError, match="empty"):
        _ = dm.vocab_size
    short = tmp_path / "short"
    short.mkdir()
    (short / "train.txt").write_text("a few words only\n" * 20)
    dm = TextCorpusDataModule(data_dir=str(tmp_path), dataset_folder="short", val_file=None, test_file=None,
                              bpe_vocab_size=300, block_size=4096)
    with pytest.raises(DataError, match="fewer than data.block_size"):
        dm.setup("fit")


def test_cosine_schedule() -> None:
    model = CausalLM("tiny", vocab_size=40, warmup_steps=10, scheduler="cosine")
    factor = model.lr_lambda(110)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(60) == pytest.approx(0.5) and factor(110) == pytest.approx(0.0)
    assert factor(200) == pytest.approx(0.0)


def test_predict_scores_blocks(data_dir: Path, fresh_cache: Path) -> None:
    dm = _wikitext(data_dir, limit_eval_blocks=5)
    dm.setup("predict")
    model = CausalLM("tiny", vocab_size=dm.vocab_size).eval()
    batch = next(iter(dm.predict_dataloader()))
    with torch.no_grad():
        out = model.predict_step(batch, 0)
        loss = model.step(batch, "test").loss
    assert out["index"].tolist() == [0, 1, 2, 3] and out["tokens"].tolist() == [31] * 4
    assert float(out["nll_sum"].sum() / out["tokens"].sum()) == pytest.approx(float(loss), rel=1e-5)
