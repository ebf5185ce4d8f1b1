"""The BERT classifier family: training, records, testing from a checkpoint, pooling, extra losses, NaN guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_BERT, tiny_config
from support import run_cli, summary

from sstkit.errors import SstkitError
from sstkit.models import TextClassifier


def test_fit_then_test_continues_one_record(write_config, data_dir: Path, tmp_path: Path) -> None:
    config = write_config(tiny_config(data_dir, max_steps=3, val_check_interval=3))
    runs = tmp_path / "runs"
    run_cli("fit", "--config", str(config), "--name", "demo", "--run_root", str(runs))
    ckpt = runs / "demo" / "seed0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    run_cli("test", "--config", str(config), "--name", "demo", "--run_root", str(runs), "--ckpt_path", str(ckpt))
    record = summary(runs, "demo")
    assert record["status"] == "finished" and record["global_step"] == 3
    assert {"val/acc", "val/f1", "val/loss", "test/acc", "test/f1", "train/loss"} <= set(record["metrics"])
    assert [s["command"] for s in record["segments"]] == ["fit", "test"]
    assert record["config"]["model"]["init_args"]["config_overrides"] == TINY_BERT
    assert record["config"]["model"]["init_args"]["num_labels"] == 2, "linked from the data module"
    assert record["train_steps_per_s"] > 0 and record["versions"]["torch"]
    assert record["wandb"]["mode"] == "offline"
    offline = list((runs / "demo" / "seed0" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert offline and len({p.name for p in offline}) == 1, "fit and test share one W&B run id"
    assert list((runs / "demo" / "seed0" / "csv").glob("version_*/metrics.csv"))

    # The full config reached W&B, and both run readers see the same run.
    from sstkit.bench import get_path, read_summaries, read_wandb_offline

    (offline_run,) = read_wandb_offline(runs / "demo" / "seed0" / "wandb")
    assert get_path(offline_run.config, "model.init_args.backbone") == "minilm"
    assert get_path(offline_run.config, "data.init_args.batch_size") == 8
    assert offline_run.metrics["test/acc"] == pytest.approx(record["metrics"]["test/acc"])
    (summary_run,) = read_summaries(runs / "demo")
    assert summary_run.seed == 0 and summary_run.metrics["val/acc"] == record["metrics"]["val/acc"]


def test_agnews_links_four_labels(write_config, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir, max_steps=1, limit_val_batches=1)
    config["data"] = {"class_path": "AGNewsDataModule",
                      "init_args": {"data_dir": str(data_dir), "batch_size": 4, "max_length": 24}}
    cli = run_cli("fit", "--config", str(write_config(config)), "--run_root", str(tmp_path))
    assert cli.model.num_labels == 4 and cli.model.head[-1].out_features == 4


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_ignores_padding(pooling: str) -> None:
    torch.manual_seed(0)
    model = TextClassifier(pretrained=False, config_overrides=TINY_BERT, pooling=pooling).eval()
    ids = torch.tensor([[101, 2000, 2001, 102]])
    padded = torch.tensor([[101, 2000, 2001, 102, 0, 0]])
    a = model(ids, torch.ones_like(ids))
    b = model(padded, torch.tensor([[1, 1, 1, 1, 0, 0]]))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_extra_loss_protocol(write_config, data_dir: Path, tmp_path: Path) -> None:
    cli = run_cli("fit", "--config", str(write_config(tiny_config(data_dir, max_steps=1))), "--run_root",
                  str(tmp_path), "--trainer.limit_val_batches", "0")
    model, batch = cli.model, next(iter(cli.datamodule.train_dataloader()))
    model.log = lambda *args, **kwargs: None  # outside a Trainer loop there is nothing to log to
    model.eval()  # no dropout, so the two forward passes agree
    base = model.training_step(batch, 0)
    model.add_extra_loss("constant", lambda module, b, out: torch.tensor(2.0), weight=0.5)
    assert model.extra_loss_names == ["constant"]
    torch.testing.assert_close(model.training_step(batch, 0), base + 1.0)
    model.remove_extra_loss("constant")
    assert model.extra_loss_names == []


def test_nan_loss_stops_with_clear_message(write_config, data_dir: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sstkit.cli import main

    config = tiny_config(data_dir, max_steps=3)
    config["model"]["init_args"]["lr"] = 1e30  # diverges within a step or two
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(write_config(config)), "--run_root", str(tmp_path), "--name", "nan"])
    assert exit_info.value.code == 2
    assert "loss became" in capsys.readouterr().err
    assert summary(tmp_path, "nan")["status"] == "failed"


def test_nan_loss_under_clipping_does_not_advise_clipping(write_config, data_dir: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sstkit.cli import main

    config = tiny_config(data_dir, max_steps=3, gradient_clip_val=0.5)
    config["model"]["init_args"]["lr"] = 1e30  # clipped steps of 1e30 still diverge
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(write_config(config)), "--run_root", str(tmp_path), "--name", "nan"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "loss became" in err and "already clipped (trainer.gradient_clip_val=0.5)" in err
    assert "enable gradient clipping" not in err


def test_bad_model_arguments() -> None:
    with pytest.raises(SstkitError, match="num_labels"):
        TextClassifier(num_labels=1, pretrained=False, config_overrides=TINY_BERT)
    with pytest.raises(SstkitError, match="lr"):
        TextClassifier(lr=0, pretrained=False, config_overrides=TINY_BERT)


def test_real_minilm_fine_tunes_a_few_steps(write_config, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir, max_steps=3, limit_val_batches=2, val_check_interval=3)
    config["model"]["init_args"] = {"backbone": "minilm", "lr": 5e-5, "warmup_steps": 0}
    config["data"]["init_args"]["batch_size"] = 4
    cli = run_cli("fit", "--config", str(write_config(config)), "--run_root", str(tmp_path))
    assert cli.model.encoder.config.num_hidden_layers == 6 and cli.model.encoder.config.hidden_size == 384
    assert cli.model.encoder.training, "the pretrained encoder must train with dropout on"
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])
    # Pretrained weights really changed: the first attention matrix moved away from the packaged one.
    fresh = TextClassifier("minilm")
    moved = (cli.model.encoder.encoder.layer[0].attention.self.query.weight
             - fresh.encoder.encoder.layer[0].attention.self.query.weight).abs().max()
    assert 0 < moved < 0.1


def test_predict_writes_jsonl(write_config, data_dir: Path, tmp_path: Path) -> None:
    import json

    config = write_config(tiny_config(data_dir, max_steps=1, limit_val_batches=0))
    run_cli("fit", "--config", str(config), "--name", "p", "--run_root", str(tmp_path))
    run_cli("predict", "--config", str(config), "--name", "p", "--run_root", str(tmp_path),
            "--ckpt_path", str(tmp_path / "p" / "seed0" / "checkpoints" / "last.ckpt"))
    rows = [json.loads(line) for line in (tmp_path / "p" / "seed0" / "predictions.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(21)), "the test split, in order"
    assert all(r["preds"] in (0, 1) and abs(sum(r["probs"]) - 1) < 1e-5 for r in rows)
