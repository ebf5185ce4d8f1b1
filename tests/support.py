"""Helpers for tests: in-process and subprocess CLI runs, and a callback that records what each rank trained on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L

from sstkit.cli import SstkitCLI


def run_cli(*args: str) -> SstkitCLI:
    """Runs the CLI in this process (fast: no import cost) and returns it, trainer and model included."""
    return SstkitCLI(args=list(args))


def run_sstkit(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs the real console script in a subprocess."""
    exe = Path(sys.executable).with_name("sstkit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sstkit"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def run_main(tmp_path: Path, command: str, config: dict[str, Any]) -> Path:
    """Writes ``config`` as YAML, runs ``sstkit <command> --config`` in this process (the commands that exit
    through ``sstkit.cli.main``), asserts exit code 0 and returns the run root."""
    import pytest
    import yaml

    from sstkit.cli import main

    config_file = tmp_path / f"{command}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as done:
        main([command, "--config", str(config_file), "--run_root", str(runs)])
    assert done.value.code == 0
    return runs


def summary(run_root: Path, name: str, seed: int = 0) -> dict[str, Any]:
    """The summary.json of a run."""
    return json.loads((run_root / name / f"seed{seed}" / "summary.json").read_text())


class SampleTrace(L.Callback):
    """Writes, per rank, the dataset indices of every training batch to ``<out_dir>/trace-rank<r>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.indices: list[int] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.indices += batch["index"].tolist()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"trace-rank{trainer.global_rank}.json"
        path.write_text(json.dumps({"rank": trainer.global_rank, "world_size": trainer.world_size,
                                    "indices": self.indices}))


class StopAtStep(L.Callback):
    """Emulates a job killed after ``step`` steps: writes a checkpoint there, then stops training."""

    def __init__(self, step: int, ckpt_path: str) -> None:
        self.step, self.ckpt_path = step, ckpt_path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.ckpt_path)
            trainer.should_stop = True


class StepTrace(L.Callback):
    """Debug aid: writes learning rate and loss of every training step to ``<out_dir>/steps.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.rows = Path(out_dir), []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any) -> None:
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.rows.append([trainer.global_step, lr, float(outputs["loss"])])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "steps.json").write_text(json.dumps(self.rows))


class KillAt(L.Callback):
    """Ends its own process with SIGKILL, like ``kill -9`` or the OOM killer, when ``global_step == step``.

    ``where`` is the hook: ``validation`` (at the first validation batch of that step, i.e. after the step's
    checkpoint and before its validation has finished) or ``train`` (at the next training batch, after the step's
    validation). Nothing gets a chance to clean up: no teardown, no exception hooks, no logger flush.
    """

    def __init__(self, step: int, where: str = "validation") -> None:
        if where not in ("validation", "train"):
            raise ValueError(f"where must be validation or train, got {where!r}")
        self.step, self.where = step, where

    def _kill_if(self, trainer: L.Trainer, where: str) -> None:
        if where == self.where and trainer.global_step == self.step and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._kill_if(trainer, "validation")

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._kill_if(trainer, "train")
