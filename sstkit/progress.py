"""Progress for log files: periodic plain lines instead of a redrawn bar when stdout is not a terminal.

Cluster jobs write stdout to files, where a live progress bar becomes megabytes of carriage returns.

Example:
    >>> trainer = Trainer(callbacks=[progress_callback()])  # Rich bar on a TTY, LineProgress otherwise
"""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar


class LineProgress(ProgressBar):
    """Prints one line every ``every_n_steps`` training steps and one per finished evaluation.

    Args:
        every_n_steps: training steps between lines.
    """

    def __init__(self, every_n_steps: int = 50) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._t0 = time.monotonic()

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, trainer: L.Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(f"[{time.monotonic() - self._t0:8.1f}s] {text}", flush=True)

    def _fmt(self, metrics: dict[str, Any]) -> str:
        return " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()) if k != "v_num")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 or step == trainer.max_steps:
            total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else "?"
            metrics = self._fmt({k: v for k, v in self.get_metrics(trainer, pl_module).items() if "loss" in k})
            self._print(trainer, f"epoch {trainer.current_epoch} step {step}/{total} {metrics}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            self._print(trainer, f"validation at step {trainer.global_step}: {self._fmt(metrics)}")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
        self._print(trainer, f"test: {self._fmt(metrics)}")


def progress_callback(every_n_steps: int = 50) -> ProgressBar:
    """A Rich progress bar on an interactive terminal, :class:`LineProgress` otherwise."""
    if sys.stdout.isatty():
        return RichProgressBar()
    return LineProgress(every_n_steps)
