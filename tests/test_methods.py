"""Generic method tests: every method in the settings table trains, resumes exactly and runs under DDP."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

import lightning as L
import pytest
import sstkit.callbacks
import torch
from conftest import family_config
from method_settings import METHOD_SETTINGS, MethodSetting
from support import run_cli, run_sstkit

NAMES = sorted(METHOD_SETTINGS)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def method_config(name: str, setting: MethodSetting, data_dir: Path, **trainer: object) -> dict:
    config = _merge(family_config(setting.family, data_dir, **trainer), setting.config)
    if setting.kind == "callback":
        entry = {"class_path": f"sstkit.callbacks.{name}", "init_args": setting.init_args}
        config["trainer"].setdefault("callbacks", []).append(entry)
    return config


def test_every_method_has_settings() -> None:
    callbacks = [n for n, obj in inspect.getmembers(sstkit.callbacks, inspect.isclass)
                 if issubclass(obj, L.Callback) and obj.__module__.startswith("sstkit.callbacks")]
    missing = sorted(set(callbacks) - set(METHOD_SETTINGS))
    assert not missing, f"add these methods to tests/method_settings.py: {missing}"


@pytest.mark.parametrize("name", NAMES)
def test_method_trains(name: str, write_config, data_dir: Path, tmp_path: Path) -> None:
    config = write_config(method_config(name, METHOD_SETTINGS[name], data_dir, max_steps=2))
    cli = run_cli("fit", "--config", str(config), "--run_root", str(tmp_path), "--name", name)
    assert cli.trainer.global_step == 2
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    for key in METHOD_SETTINGS[name].logs:
        assert key in cli.trainer.callback_metrics, f"{name} logged no {key}"
        assert torch.isfinite(cli.trainer.callback_metrics[key])


@pytest.mark.parametrize("name", NAMES)
def test_method_resumes_exactly(name: str, write_config, data_dir: Path, tmp_path: Path) -> None:
    config = write_config(method_config(name, METHOD_SETTINGS[name], data_dir, max_steps=6))
    whole = run_cli("fit", "--config", str(config), "--run_root", str(tmp_path), "--name", "whole")
    ckpt = tmp_path / "step3.ckpt"
    stop = f'{{"class_path": "support.StopAtStep", "init_args": {{"step": 3, "ckpt_path": "{ckpt}"}}}}'
    run_cli("fit", "--config", str(config), "--run_root", str(tmp_path), "--name", "parts", f"--trainer.callbacks+={stop}")
    resumed = run_cli("fit", "--config", str(config), "--run_root", str(tmp_path), "--name", "parts",
                      "--ckpt_path", str(ckpt))
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    for key in METHOD_SETTINGS[name].logs:  # the method's own metrics after the resume equal the uninterrupted run's
        assert float(resumed.trainer.callback_metrics[key]) == float(whole.trainer.callback_metrics[key]), key


@pytest.mark.ddp
@pytest.mark.parametrize("name", NAMES)
def test_method_under_ddp(name: str, write_config, data_dir: Path, tmp_path: Path) -> None:
    config = write_config(method_config(name, METHOD_SETTINGS[name], data_dir, max_steps=2))
    result = run_sstkit("fit", "--config", str(config), "--run_root", str(tmp_path), "--name", name,
                        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / name / "seed0" / "summary.json").read_text())
    assert record["world_size"] == 2 and record["global_step"] == 2
    assert all(key in record["metrics"] for key in METHOD_SETTINGS[name].logs), record["metrics"]
