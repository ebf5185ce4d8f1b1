"""Clean Unlearning (CUL) of Expose Before You Defend as a callback: ``sstkit fit`` over a clean defense set
becomes gradient *ascent* on its clean loss, stopped when the predictions collapse.

The functional core is :func:`sstkit.functional.backdoor.exposure.clean_unlearning`; this callback is its Lightning
face. It loads the backdoored model's weights from ``init_from`` in ``setup()`` (before a resumed checkpoint is
restored, so resume still wins), flips the sign of the gradients in ``on_before_optimizer_step`` (after the DDP
all-reduce) and clips their norm there, i.e. *after* backward. Every ``check_every`` steps it scores the defense
set (the data module's training set) in eval mode, logs the collapse curve under ``method/cul/...`` and stops the
run by :class:`sstkit.functional.backdoor.exposure.StopRule`.

Example (YAML; the official schedule is Adam, lr 1e-5, weight decay 5e-4, constant LR)::

    optimizer: {class_path: torch.optim.Adam, init_args: {lr: 1.0e-5, weight_decay: 5.0e-4}}
    trainer:
      max_steps: 500
      callbacks:
        - class_path: sstkit.callbacks.CleanUnlearning
          init_args: {init_from: runs/backdoor_badnets/seed0/checkpoints/last.ckpt, collapse_share: 0.95}
"""

from __future__ import annotations

import warnings
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch

from sstkit.errors import SstkitError
from sstkit.functional.backdoor.common import prediction_stats
from sstkit.functional.backdoor.exposure import StopRule, ascent_gradients
from sstkit.stacking import method_setup


def _step_logits(module: L.LightningModule, batch: dict[str, Any]) -> torch.Tensor:
    return module.step(batch, "val").preds


class CleanUnlearning(L.Callback):
    """Gradient ascent on the training (defense) set's clean loss until the stop rule fires.

    Args:
        init_from: a Lightning checkpoint of the model to expose (its ``state_dict`` is loaded); None: the model
            as configured.
        collapse_share: stop once one class holds at least this share of the defense predictions.
        min_accuracy: stop once the defense accuracy falls below this (None: collapse only).
        min_steps: no stopping before this many steps.
        check_every: score the defense set every this many steps.
        max_grad_norm: clip the (ascent) gradient norm to this after backward; None: no clipping.
        eval_batches: score only this many batches of the defense set (None: all of it).
    """

    def __init__(self, init_from: str | None = None, collapse_share: float = 0.95, min_accuracy: float | None = None,
                 min_steps: int = 0, check_every: int = 1, max_grad_norm: float | None = 20.0,
                 eval_batches: int | None = None) -> None:
        if init_from is not None and not Path(init_from).is_file():
            raise SstkitError(f"CleanUnlearning.init_from: no such checkpoint file {init_from!r}")
        if check_every < 1:
            raise SstkitError(f"CleanUnlearning.check_every must be >= 1, got {check_every}")
        if max_grad_norm is not None and max_grad_norm <= 0:
            raise SstkitError(f"CleanUnlearning.max_grad_norm must be > 0 or null, got {max_grad_norm}")
        if eval_batches is not None and eval_batches < 1:
            raise SstkitError(f"CleanUnlearning.eval_batches must be >= 1 or null, got {eval_batches}")
        try:
            self.rule = StopRule(collapse_share, min_accuracy, min_steps)
        except SstkitError as err:
            raise SstkitError(f"CleanUnlearning: {err}") from None
        self.init_from, self.check_every = init_from, check_every
        self.max_grad_norm, self.eval_batches = max_grad_norm, eval_batches
        self.curve: list[dict[str, Any]] = []
        self.stopped: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with method_setup(pl_module, "cul"):  # refuses methods CUL cannot be stacked on (sstkit.stacking)
            self._load_init(pl_module, stage)

    def _load_init(self, pl_module: L.LightningModule, stage: str) -> None:
        # Loading the same weights again is idempotent; a resumed checkpoint is restored after setup and wins.
        if stage == "fit" and self.init_from is not None:
            state = torch.load(self.init_from, map_location="cpu", weights_only=False).get("state_dict")
            if state is None:
                raise SstkitError(f"CleanUnlearning.init_from {self.init_from}: not a Lightning checkpoint")
            try:
                pl_module.load_state_dict(state)
            except RuntimeError as err:
                raise SstkitError(f"CleanUnlearning.init_from {self.init_from}: does not fit the model "
                                  f"({str(err).splitlines()[0]})") from None

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any) -> None:
        ascent_gradients(pl_module, self.max_grad_norm)

    def _check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None:
            warnings.warn("CleanUnlearning: no data module, the stop rule cannot score the defense set", stacklevel=2)
            return
        batches = islice(datamodule.train_dataloader(), self.eval_batches)
        num_labels = getattr(pl_module, "num_labels", None)
        stats = prediction_stats(pl_module, batches, num_labels, _step_logits)
        step = trainer.global_step
        self.curve.append({"step": step, **stats.as_dict()})
        for key in ("accuracy", "loss", "max_share"):
            pl_module.log(f"method/cul/defense_{key}", float(getattr(stats, key)), rank_zero_only=False)
        pl_module.log("method/cul/majority", float(stats.majority))
        reason = self.rule.reason(stats, step) if step > 0 else None  # as the core: judge only after a step
        if reason and self.stopped is None:
            self.stopped = {"step": step, "reason": reason, "majority": stats.majority}
            pl_module.log("method/cul/stop_step", float(step))
            trainer.should_stop = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.curve:  # the step-0 point of the collapse curve (a resumed run has it already)
            self._check(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step % self.check_every == 0:
            self._check(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"curve": [dict(point) for point in self.curve], "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.curve = [dict(point) for point in state_dict.get("curve", [])]
        self.stopped = state_dict.get("stopped")
