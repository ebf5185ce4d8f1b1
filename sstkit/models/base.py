"""The base every model family shares: metric naming, the extra-loss protocol, and default optimisation.

Families implement :meth:`SstkitModule.step`, returning a :class:`StepOutput`, and give their torchmetrics in
:meth:`SstkitModule.build_metrics`. The base then logs ``train/loss``, ``val/loss``, ``val/<metric>``,
``test/<metric>`` the same way for every family, and method callbacks add loss terms without editing a family:

    model.add_extra_loss("sst_reg", lambda module, batch, out: 1e-3 * penalty(module), weight=1.0)

Each term is added to the training loss and logged as ``method/<name>/loss``. A method that must run the whole
training loss several times per optimizer step (FreeLB's K ascent steps) wraps it instead, one method at a time:

    model.wrap_training_loss("freelb", lambda module, batch, loss_of: adversarial_loss(loss_of, batch))

``loss_of(batch)`` is the family's loss plus the extra terms; what the wrapper returns is what Lightning backpropagates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection

from sstkit.errors import SstkitError

ExtraLoss = Callable[["SstkitModule", Any, "StepOutput"], Tensor]
TrainingLossWrapper = Callable[["SstkitModule", Any, Callable[[Any], Tensor]], Tensor]


@dataclass
class StepOutput:
    """What one forward step of a family returns.

    Attributes:
        loss: the family's own loss (mean over the batch).
        preds: the first argument the family's metrics take (logits, scores …), or None.
        target: the second argument of the metrics, or None.
        batch_size: number of examples, weights the epoch mean of the loss.
        extras: anything else a method callback may want (hidden states, …).
    """

    loss: Tensor
    preds: Tensor | None = None
    target: Tensor | None = None
    batch_size: int = 1
    extras: dict[str, Any] = field(default_factory=dict)


def non_finite_loss_advice(gradient_clip_val: float | None) -> str:
    """What to try after a NaN / inf training loss; clipping is only suggested where the run does not clip yet."""
    if gradient_clip_val:
        return (f"gradients are already clipped (trainer.gradient_clip_val={gradient_clip_val}): lower the learning "
                "rate or the clip value, or check the data")
    return "lower the learning rate, enable gradient clipping (`trainer.gradient_clip_val`), or check the data"


class SstkitModule(L.LightningModule):
    """Shared base of sstkit's LightningModules.

    Args:
        lr: peak learning rate of the default AdamW.
        weight_decay: AdamW weight decay (not applied to biases and norm weights).
        warmup_steps: linear warm-up steps; if None, ``warmup_ratio`` of the total steps.
        warmup_ratio: share of the total steps used for warm-up when ``warmup_steps`` is None.
        scheduler: ``linear`` (warm-up then linear decay to 0), ``cosine`` (warm-up then cosine decay to 0),
            ``constant`` (warm-up then flat) or ``none``.
    """

    def __init__(
        self,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        scheduler: str = "linear",
    ) -> None:
        super().__init__()
        if lr <= 0:
            raise SstkitError(f"lr must be > 0, got {lr}")
        if scheduler not in ("linear", "cosine", "constant", "none"):
            raise SstkitError(f"scheduler must be one of linear, cosine, constant, none; got {scheduler!r}")
        self.lr, self.weight_decay, self.scheduler_name = lr, weight_decay, scheduler
        self.warmup_steps, self.warmup_ratio = warmup_steps, warmup_ratio
        self._extra_losses: dict[str, tuple[ExtraLoss, float]] = {}
        self._loss_wrapper: tuple[str, TrainingLossWrapper] | None = None
        self._last_batch_size = 1
        self._task_loss_weight = 1.0
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_metrics: MetricCollection | None = None
        self.test_metrics: MetricCollection | None = None

    # --- what families implement -------------------------------------------------------------------------
    def step(self, batch: Any, stage: str) -> StepOutput:
        """Runs the model on a batch and returns the loss and what the metrics need."""
        raise NotImplementedError

    def build_metrics(self) -> MetricCollection | None:
        """The family's evaluation metrics (unprefixed names such as ``acc``); called once at init."""
        return None

    def setup_metrics(self) -> None:
        """Creates the val/test copies of :meth:`build_metrics`; families call it at the end of ``__init__``."""
        metrics = self.build_metrics()
        if metrics is not None:
            self.val_metrics = metrics.clone(prefix="val/")
            self.test_metrics = metrics.clone(prefix="test/")

    # --- extra-loss protocol -----------------------------------------------------------------------------
    def add_extra_loss(self, name: str, fn: ExtraLoss, weight: float = 1.0) -> None:
        """Registers (or replaces) a loss term ``weight * fn(module, batch, output)`` added in training."""
        self._extra_losses[name] = (fn, weight)

    def remove_extra_loss(self, name: str) -> None:
        """Drops a registered loss term; unknown names are ignored."""
        self._extra_losses.pop(name, None)

    def set_task_loss_weight(self, weight: float) -> None:
        """Scales the family's own training loss; a method that replaces it (distillation: 0) sets this."""
        self._task_loss_weight = float(weight)

    @property
    def extra_loss_names(self) -> list[str]:
        """Names of the registered extra loss terms."""
        return list(self._extra_losses)

    # --- training-loss wrapper ----------------------------------------------------------------------------
    def wrap_training_loss(self, name: str, fn: TrainingLossWrapper) -> None:
        """Lets ``fn(module, batch, loss_of)`` compute the training loss from ``loss_of`` (one method at a time)."""
        if self._loss_wrapper is not None and self._loss_wrapper[0] != name:
            raise SstkitError(f"{name} cannot wrap the training loss: {self._loss_wrapper[0]} already wraps it")
        self._loss_wrapper = (name, fn)

    def unwrap_training_loss(self, name: str) -> None:
        """Removes ``name``'s wrapper; another method's wrapper stays."""
        if self._loss_wrapper is not None and self._loss_wrapper[0] == name:
            self._loss_wrapper = None

    def training_loss(self, batch: Any) -> Tensor:
        """The family's loss on ``batch`` plus every extra loss term (what a wrapper calls as ``loss_of``)."""
        out = self.step(batch, "train")
        self._last_batch_size = out.batch_size
        loss = out.loss if self._task_loss_weight == 1.0 else self._task_loss_weight * out.loss
        for name, (fn, weight) in self._extra_losses.items():
            term = weight * fn(self, batch, out)
            self.log(f"method/{name}/loss", term.detach(), batch_size=out.batch_size)
            loss = loss + term
        return loss

    # --- Lightning steps ---------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        if self._loss_wrapper is None:
            loss = self.training_loss(batch)
        else:
            loss = self._loss_wrapper[1](self, batch, self.training_loss)
        if not torch.isfinite(loss):
            raise SstkitError(
                f"the training loss became {loss.item()} at step {self.global_step} (batch {batch_idx}); "
                + non_finite_loss_advice(getattr(self._trainer, "gradient_clip_val", None))
            )
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=self._last_batch_size)
        return loss

    def _eval_step(self, batch: Any, stage: str) -> StepOutput:
        out = self.step(batch, stage)
        mean_loss = self.val_loss if stage == "val" else self.test_loss
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        # Metric objects (not floats) are logged so that DDP ranks with uneven shards are reduced exactly.
        mean_loss.update(out.loss.detach(), weight=out.batch_size)
        self.log(f"{stage}/loss", mean_loss, on_step=False, on_epoch=True, batch_size=out.batch_size)
        if metrics is not None and out.preds is not None:
            metrics.update(out.preds, out.target)
            self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=out.batch_size)
        return out

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    # --- default optimisation ----------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict[str, Any]]:
        """Trainable parameters split into decayed matrices and undecayed biases / norm weights / 1-d tensors."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
        return [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def lr_lambda(self, total_steps: int) -> Callable[[int], float]:
        """The default schedule as a multiplier of ``lr``: linear warm-up, then linear or cosine decay, or constant."""
        warmup = self.warmup_steps if self.warmup_steps is not None else math.ceil(self.warmup_ratio * total_steps)

        def factor(step: int) -> float:
            if warmup > 0 and step < warmup:
                return (step + 1) / warmup
            if self.scheduler_name == "linear":
                return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
            if self.scheduler_name == "cosine":
                progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
                return 0.5 * (1.0 + math.cos(math.pi * progress))
            return 1.0

        return factor

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.lr)
        if self.scheduler_name == "none":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_lambda(max(1, total)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
