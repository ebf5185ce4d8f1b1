"""Checkpoint and resume: 2N steps in one go equal N steps, a checkpoint, a resume and N more (CPU, fixed seed)."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import tiny_config
from support import run_cli, summary


def _weights(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.state_dict().items()}


def _assert_same_run(a, b) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=0, msg=key)
    ma = a.trainer.validate(a.model, datamodule=a.datamodule, verbose=False)[0]
    mb = b.trainer.validate(b.model, datamodule=b.datamodule, verbose=False)[0]
    for key in ma:
        assert abs(ma[key] - mb[key]) <= 1e-6, key


def test_resume_mid_epoch_is_exact(write_config, data_dir: Path, tmp_path: Path) -> None:
    # 96 training rows / batch 8 = 12 steps per epoch: stop at 8 (mid-epoch), end at 16 (into epoch 2).
    config = write_config(tiny_config(data_dir, max_steps=16, val_check_interval=6))
    runs = str(tmp_path / "runs")
    whole = run_cli("fit", "--config", str(config), "--name", "whole", "--run_root", runs)

    ckpt = tmp_path / "step8.ckpt"
    stop = f'{{"class_path": "support.StopAtStep", "init_args": {{"step": 8, "ckpt_path": "{ckpt}"}}}}'
    first = run_cli("fit", "--config", str(config), "--name", "parts", "--run_root", runs,
                    f"--trainer.callbacks+={stop}")
    assert first.trainer.global_step == 8 and ckpt.is_file()
    first_id = summary(tmp_path / "runs", "parts")["wandb"]["id"]
    resumed = run_cli("fit", "--config", str(config), "--name", "parts", "--run_root", runs, "--ckpt_path", str(ckpt))
    assert resumed.trainer.global_step == 16
    _assert_same_run(whole, resumed)

    record = summary(tmp_path / "runs", "parts")
    assert [s["command"] for s in record["segments"]] == ["fit", "fit", "validate"]
    assert record["segments"][1]["start_step"] == 8 and record["global_step"] == 16
    # The resumed segment logs into the first segment's W&B run (one run, one id), not into a new one.
    assert record["wandb"]["id"] == first_id
    offline = sorted(p.name for p in (tmp_path / "runs" / "parts" / "seed0" / "wandb").glob("offline-run-*"))
    assert offline and all(name.endswith(f"-{first_id}") for name in offline), offline
