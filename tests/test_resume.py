"""Checkpoint and resume: 2N steps in one go equal N steps, a checkpoint, a resume and N more (CPU, fixed seed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, family_config, tiny_config
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
    # wandb names a folder offline-run-<time>-<id>, adding -1, -2 … when two segments start in the same second.
    assert offline and all(re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{first_id}(-\d+)?", n) for n in offline), offline


def _tensors_close(a: object, b: object, where: str, scale_tol: float = 0.0) -> None:
    """Nested state (dicts, lists, tensors, numbers) equal to float noise: 1e-6 absolute, 1e-5 relative, plus
    ``scale_tol`` times the tensor's largest entry."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _tensors_close(a[key], b[key], f"{where}.{key}", scale_tol)
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _tensors_close(x, y, f"{where}[{i}]", scale_tol)
    elif torch.is_tensor(a) and a.ndim > 0:
        atol = 1e-6 + scale_tol * float(a.abs().max())
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-5, msg=lambda m: f"{where}: {m}")
    elif torch.is_tensor(a) or torch.is_tensor(b):  # a step count may come back as a 0-d tensor from a checkpoint
        assert float(a) == pytest.approx(float(b), abs=1e-6), where
    else:
        assert a == pytest.approx(b, abs=1e-9), where


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_resumes_exactly_across_epochs(family: str, write_config, data_dir: Path, tmp_path: Path) -> None:
    # Every model family for 20 steps (several epochs for the small sets, validation at every epoch end), killed
    # at step 9 and resumed: weights, optimizer moments, scheduler, last training loss and validation metrics all
    # equal the uninterrupted run's.
    config = write_config(family_config(family, data_dir, max_steps=20))
    runs = str(tmp_path / "runs")
    whole = run_cli("fit", "--config", str(config), "--name", "whole", "--run_root", runs)
    ckpt = tmp_path / "step9.ckpt"
    stop = f'{{"class_path": "support.StopAtStep", "init_args": {{"step": 9, "ckpt_path": "{ckpt}"}}}}'
    run_cli("fit", "--config", str(config), "--name", "parts", "--run_root", runs, f"--trainer.callbacks+={stop}")
    resumed = run_cli("fit", "--config", str(config), "--name", "parts", "--run_root", runs, "--ckpt_path", str(ckpt))
    assert whole.trainer.global_step == resumed.trainer.global_step == 20
    assert whole.trainer.current_epoch == resumed.trainer.current_epoch
    _tensors_close(whole.model.state_dict(), resumed.model.state_dict(), "model")
    # Riemannian Adam transports the centroids' momentum along the hyperboloid every step, which amplifies float
    # noise (≈ 0.2 % of the largest entry after 11 steps); a lost or stale moment is off by its whole size.
    _tensors_close(whole.trainer.optimizers[0].state_dict(), resumed.trainer.optimizers[0].state_dict(), "optimizer",
                   scale_tol=1e-2)
    schedulers = [t.lr_scheduler_configs for t in (whole.trainer, resumed.trainer)]
    for a, b in zip(*schedulers):
        _tensors_close(a.scheduler.state_dict(), b.scheduler.state_dict(), "scheduler")
    ma, mb = whole.trainer.callback_metrics, resumed.trainer.callback_metrics
    keys = [k for k in ma if k.startswith(("train/", "val/"))]
    assert "train/loss" in keys and any(k.startswith("val/") for k in keys), keys
    for key in keys:
        torch.testing.assert_close(mb[key], ma[key], atol=1e-5, rtol=1e-5, msg=key)
