"""Run folders and records: `--ckpt_path last` finds the run's checkpoints or fails, `--resume_or_start`, one
configuration per record, `last.ckpt` always the newest, and segment statuses, times and epochs in summary.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config
from support import run_cli, summary

from sstkit.cli import main

# A user checkpoint callback without a dirpath: Lightning alone would put it under csv/version_<n>/.
CHECKPOINT = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
              "init_args": {"every_n_train_steps": 2, "save_last": True}}


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")


def _fail(capsys: pytest.CaptureFixture, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_ckpt_path_last_without_checkpoint_fails_before_writing(write_config, data_dir: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    config = write_config(tiny_config(data_dir, max_steps=2))
    err = _fail(capsys, "fit", "--config", str(config), "--name", "x", "--run_root", str(tmp_path), "--ckpt_path", "last")
    assert "no checkpoint to resume" in err and "--resume_or_start" in err
    assert not (tmp_path / "x").exists(), "nothing may be written when the resume fails"


def test_user_checkpoint_without_dirpath_is_found_by_last(write_config, data_dir: Path, tmp_path: Path) -> None:
    config = tiny_config(data_dir, max_steps=4)
    config["trainer"]["callbacks"] = [CHECKPOINT]
    path = write_config(config)
    run_cli("fit", "--config", str(path), "--name", "u", "--run_root", str(tmp_path))
    assert (tmp_path / "u" / "seed0" / "checkpoints" / "last.ckpt").is_file()
    resumed = run_cli("fit", "--config", str(path), "--name", "u", "--run_root", str(tmp_path), "--ckpt_path", "last",
                      "--trainer.max_steps", "6")
    assert resumed.trainer.global_step == 6
    assert [s["start_step"] for s in summary(tmp_path, "u")["segments"]] == [0, 4]


def test_resume_or_start(write_config, data_dir: Path, tmp_path: Path) -> None:
    path = write_config(tiny_config(data_dir, max_steps=3))
    args = ("fit", "--config", str(path), "--name", "r", "--run_root", str(tmp_path), "--resume_or_start")
    assert run_cli(*args).trainer.global_step == 3  # nothing to resume: starts
    assert run_cli(*args, "--trainer.max_steps", "5").trainer.global_step == 5  # resumes from step 3
    record = summary(tmp_path, "r")
    assert [(s["start_step"], s["end_step"]) for s in record["segments"]] == [(0, 3), (3, 5)]


def test_other_experiment_in_same_run_folder_is_refused(write_config, data_dir: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    sst2 = tiny_config(data_dir, max_steps=1, limit_val_batches=1)
    agnews = json.loads(json.dumps(sst2))
    agnews["data"] = {"class_path": "sstkit.datamodules.AGNewsDataModule",
                      "init_args": {"data_dir": str(data_dir), "batch_size": 8, "max_length": 32}}
    run_cli("fit", "--config", str(write_config(sst2, "sst2.yaml")), "--name", "same", "--run_root", str(tmp_path))
    before = (tmp_path / "same" / "seed0" / "summary.json").read_text()
    other = str(write_config(agnews, "agnews.yaml"))
    err = _fail(capsys, "fit", "--config", other, "--name", "same", "--run_root", str(tmp_path))
    assert "holds another experiment" in err and "data.class_path" in err and "AGNewsDataModule" in err
    assert "--name" in err and "--allow_config_change" in err
    assert (tmp_path / "same" / "seed0" / "summary.json").read_text() == before

    run_cli("fit", "--config", other, "--name", "same", "--run_root", str(tmp_path), "--allow_config_change")
    record = summary(tmp_path, "same")
    assert "data.class_path" in record["segments"][-1]["config_changes"]
    assert record["config"]["data"]["class_path"].endswith("AGNewsDataModule")


def test_rerun_overwrites_last_checkpoint(write_config, data_dir: Path, tmp_path: Path) -> None:
    path = str(write_config(tiny_config(data_dir, max_steps=2)))
    for _ in range(2):
        run_cli("fit", "--config", path, "--name", "again", "--run_root", str(tmp_path))
    names = sorted(p.name for p in (tmp_path / "again" / "seed0" / "checkpoints").iterdir())
    assert "last.ckpt" in names and not [n for n in names if n.startswith("last-v")], names


def test_record_totals_epochs_and_config(write_config, data_dir: Path, tmp_path: Path) -> None:
    # 96 rows / batch 8 = 12 steps per epoch: 3 steps are a quarter of an epoch, not Lightning's "1".
    path = str(write_config(tiny_config(data_dir, max_steps=3, val_check_interval=3)))
    run_cli("fit", "--config", path, "--name", "rec", "--run_root", str(tmp_path))
    run_cli("fit", "--config", path, "--name", "rec", "--run_root", str(tmp_path), "--ckpt_path", "last",
            "--trainer.max_steps", "6")
    record = summary(tmp_path, "rec")
    assert record["epochs"] == 0.5
    segments = record["segments"]
    assert [s["status"] for s in segments] == ["finished", "finished"]
    assert record["wall_time_s"] == pytest.approx(sum(s["wall_s"] for s in segments), abs=1e-3)
    assert record["train_time_s"] == pytest.approx(sum(s["fit_s"] for s in segments), abs=1e-3)
    assert all(0 < s["fit_s"] <= s["wall_s"] for s in segments)
    text = json.dumps(record["config"])
    assert "_class_path" not in text and "_instantiator" not in text


def test_dead_segment_is_marked_killed_on_next_start(write_config, data_dir: Path, tmp_path: Path) -> None:
    # What a SIGKILLed process leaves (tests/test_kill_resume.py kills real ones): a segment without a status.
    path = str(write_config(tiny_config(data_dir, max_steps=2)))
    run_cli("fit", "--config", path, "--name", "dead", "--run_root", str(tmp_path))
    record_path = tmp_path / "dead" / "seed0" / "summary.json"
    record = json.loads(record_path.read_text())
    for key in ("status", "ended", "end_step"):
        record["segments"][-1].pop(key)
    record_path.write_text(json.dumps(record))
    run_cli("fit", "--config", path, "--name", "dead", "--run_root", str(tmp_path), "--ckpt_path", "last",
            "--trainer.max_steps", "3")
    first, second = summary(tmp_path, "dead")["segments"]
    assert first["status"] == "killed" and first["end_step"] == 2 and first["ended"]
    assert second["status"] == "finished" and second["start_step"] == 2
