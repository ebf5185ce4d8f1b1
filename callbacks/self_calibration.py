"""Self-calibrated fine-tuning as a callback: soft targets (1−α)·onehot + α·p_EMA(x), α ramped from 0.

Follows the Vega v1 paper's description (no code was released): the teacher p_EMA is an exponential moving
average of the model's own weights (:class:`sstkit.functional.ema.EmaWeights`, in this callback's state, so a
resumed run continues it), predicting in eval mode. The term of
:func:`sstkit.functional.self_calibration.self_calibration_term` is added through the extra-loss protocol.

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.SelfCalibration
          init_args: {alpha_max: 0.5, ramp_steps: null, ema_decay: 0.99}
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.functional.ema import EmaWeights
from sstkit.functional.self_calibration import calibration_alpha, self_calibration_term
from sstkit.models.base import StepOutput
from sstkit.stacking import method_setup

from .freelb import require_sstkit_module
from .smart import step_logits


class SelfCalibration(L.Callback):
    """Self-calibrated fine-tuning with an EMA teacher.

    Args:
        alpha_max: the final weight α of the teacher's distribution in the target.
        ramp_steps: steps of the linear ramp of α from 0 (None: the whole run, ``trainer.estimated_stepping_batches``).
        ema_decay: β of the EMA teacher.
    """

    def __init__(self, alpha_max: float = 0.5, ramp_steps: int | None = None, ema_decay: float = 0.99) -> None:
        if not 0 <= alpha_max <= 1:
            raise SstkitError(f"SelfCalibration.alpha_max must be in [0, 1], got {alpha_max}")
        if ramp_steps is not None and ramp_steps < 0:
            raise SstkitError(f"SelfCalibration.ramp_steps must be >= 0 or null, got {ramp_steps}")
        if not 0 <= ema_decay < 1:
            raise SstkitError(f"SelfCalibration.ema_decay must be in [0, 1), got {ema_decay}")
        self.alpha_max, self.ramp_steps = alpha_max, ramp_steps
        self.ema = EmaWeights(ema_decay)
        self._total = 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_sstkit_module(pl_module, "SelfCalibration")
        with method_setup(pl_module, "selfcal"):
            pl_module.add_extra_loss("selfcal", self.term)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._total = int(trainer.estimated_stepping_batches)

    def alpha(self, step: int) -> float:
        return calibration_alpha(step, self.alpha_max, self.ramp_steps if self.ramp_steps is not None else self._total)

    def term(self, pl_module: Any, batch: Any, out: StepOutput) -> Tensor:
        alpha = self.alpha(pl_module.global_step)
        pl_module.log("method/selfcal/alpha", alpha, batch_size=out.batch_size)
        logits = step_logits(pl_module, batch, out, "SelfCalibration")
        if alpha == 0.0:
            return self_calibration_term(logits, out.target, logits, 0.0)
        with self.ema.swapped(pl_module):
            teacher = pl_module.step(batch, "val").extras["logits"]
        return self_calibration_term(logits, out.target, teacher, alpha)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.ema.update_once(pl_module, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ema.load_state_dict(state_dict.get("ema", {}))
