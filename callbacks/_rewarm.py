"""The Lightning side of :class:`sstkit.functional.lr_rewarm.LrRewarm`, shared by the SST and ReLoRA callbacks.

:class:`RestartingMethod` is a small base class: it attaches an :class:`LrRewarm` to the trainer's optimizer when
training starts (after a checkpoint has been restored, so the hooks see the restored optimizer), calls
:meth:`RestartingMethod.after_optimizer_step` right after every real optimizer step, and keeps the re-warm-up
counters in the callback's ``state_dict``. Doing post-step work from the optimizer's own post-hook, not in
``on_train_batch_end``, makes it independent of gradient accumulation and of steps that AMP skips, and it runs
before the LR scheduler steps.

Example (a subclass)::

    class MyRestarts(RestartingMethod):
        def after_optimizer_step(self, optimizer):
            if self.steps % 100 == 0:
                reset_something(optimizer)
                self.rewarm.restart()
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from sstkit.errors import SstkitError
from sstkit.functional.lr_rewarm import LrRewarm


class RestartingMethod(L.Callback):
    """Base of callbacks that restart optimizer state periodically and re-warm the learning rate afterwards.

    Args:
        warmup_steps: steps of the linear learning-rate re-warm-up after each restart (0: none).
        method: name used in error messages and under ``method/<name>/`` in the logs.

    Example:
        >>> cb = RestartingMethod(warmup_steps=20, method="demo")
        >>> cb.state_dict()["rewarm"]["steps"]
        0
    """

    def __init__(self, warmup_steps: int, method: str) -> None:
        super().__init__()
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise SstkitError(f"{method}: warmup_steps must be an int >= 0, got {warmup_steps!r}")
        self.method = method
        self.rewarm = LrRewarm(warmup_steps, after_step=self._after_step)
        self._trainer: L.Trainer | None = None
        self._pl_module: L.LightningModule | None = None

    @property
    def steps(self) -> int:
        """Optimizer steps taken so far under this callback (restored on resume)."""
        return self.rewarm.steps

    # --- what subclasses implement ------------------------------------------------------------------------
    def after_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Post-step work; ``self.steps`` already counts this step. Call ``self.rewarm.restart()`` after a reset."""

    # --- Lightning hooks ----------------------------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if len(trainer.optimizers) != 1:
            raise SstkitError(
                f"{self.method}: needs exactly one optimizer, the model configured {len(trainer.optimizers)}"
            )
        self._trainer, self._pl_module = trainer, pl_module
        self.rewarm.detach()  # a second fit() on the same callback must not stack hooks
        self.rewarm.attach(trainer.optimizers[0])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rewarm.detach()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self.rewarm.detach()

    def _after_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.after_optimizer_step(optimizer)

    def log_metrics(self, values: dict[str, float | torch.Tensor]) -> None:
        """Logs ``method/<name>/<key>`` from a training hook (rank-local values that are equal on all ranks)."""
        if self._pl_module is None or self._trainer is None or self._trainer.sanity_checking:
            return
        for key, value in values.items():
            # Tensors are logged as they are: no device sync each step for a value the logger may not write.
            self._pl_module.log(f"method/{self.method}/{key}", value, on_step=True, on_epoch=False, batch_size=1)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.log_metrics({"lr_factor": self.rewarm.factor(), **self.metrics()})

    def metrics(self) -> dict[str, float | torch.Tensor]:
        """Extra scalars to log after each training batch (subclasses add theirs)."""
        return {}

    # --- checkpointing ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rewarm": self.rewarm.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rewarm.load_state_dict(state_dict["rewarm"])
