"""FreeLB adversarial training as a callback: K ascent steps on word-embedding perturbations per optimizer step.

The functional core is :func:`sstkit.functional.freelb.freelb_loss`. FreeLB needs K forward/backward passes
before one optimizer step, which neither an extra loss term (one forward, one backward) nor
``on_before_optimizer_step`` (after the only backward) can express. The callback therefore registers a *training-
loss wrapper* on the model base (:meth:`SstkitModule.wrap_training_loss`): the wrapper runs the family's whole
training loss (its own loss plus any extra terms of stacked methods) K times under the embedding perturbation,
backpropagates the first K-1 itself and returns the K-th to Lightning (their gradients are kept apart and put
back in ``on_before_backward``, because Lightning zeroes gradients between ``training_step`` and the backward
pass). Lightning's automatic optimization,
gradient accumulation, clipping, AMP scaling and DDP synchronisation then act once, on the accumulated
gradients (under DDP the inner backward passes run inside the wrapped forward, where the reducer does not listen,
so they accumulate locally and are all-reduced with the last one).

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.FreeLB
          init_args: {steps: 2, adv_lr: 0.1, init_mag: 0.1, max_norm: 0.0}
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.functional.embedding_noise import EmbeddingPerturbation
from sstkit.functional.freelb import check_freelb_args, freelb_loss
from sstkit.stacking import method_setup


def require_sstkit_module(pl_module: L.LightningModule, method: str) -> None:
    """Embedding-perturbation methods need the model base's loss protocols."""
    if not hasattr(pl_module, "add_extra_loss"):
        raise SstkitError(f"{method} needs an sstkit model family (sstkit.models.*), got {type(pl_module).__name__}")


class FreeLB(L.Callback):
    """FreeLB on the word embeddings (Zhu et al., 2020).

    Args:
        steps: K ascent steps per optimizer step (K = 1 with ``init_mag = 0`` is plain fine-tuning).
        adv_lr: α, the normalised ascent step on δ.
        init_mag: norm of the random initial δ of each example (0: δ starts at 0).
        max_norm: bound on each example's ‖δ‖₂ (0: unbounded, the paper's usual GLUE setting).
    """

    def __init__(self, steps: int = 2, adv_lr: float = 0.1, init_mag: float = 0.1, max_norm: float = 0.0) -> None:
        try:
            check_freelb_args(steps, adv_lr, init_mag, max_norm)
        except ValueError as err:
            raise SstkitError(f"FreeLB: {err}") from None
        self.steps, self.adv_lr, self.init_mag, self.max_norm = steps, adv_lr, init_mag, max_norm
        self.perturb: EmbeddingPerturbation | None = None
        self._inner: dict[torch.nn.Parameter, Tensor] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_sstkit_module(pl_module, "FreeLB")
        with method_setup(pl_module, "freelb"):
            self.perturb = EmbeddingPerturbation.attach(pl_module)
            pl_module.wrap_training_loss("freelb", self.training_loss)

    def _backward(self, pl_module: L.LightningModule) -> Any:
        """Backward for the first K-1 passes, scaled as Lightning scales the returned loss."""
        trainer = pl_module._trainer
        accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
        scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None) if trainer is not None else None

        def backward(loss: Tensor) -> None:
            loss = loss / accumulate
            (scaler.scale(loss) if scaler is not None else loss).backward()

        return backward

    def training_loss(self, pl_module: Any, batch: dict[str, Tensor], loss_of: Any) -> Tensor:
        mask = batch.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(batch["input_ids"])
        self.perturb = EmbeddingPerturbation.attach(pl_module)  # the table a later method may have replaced
        # Lightning's closure runs training_step, THEN zero_grad, then backward: gradients the first K-1 passes
        # leave in .grad would be wiped. They are collected apart here (earlier gradients set aside and put
        # back) and added in on_before_backward, after that zero_grad and before the K-th backward.
        params = [q for q in pl_module.parameters() if q.requires_grad]
        earlier = {q: q.grad for q in params}
        for q in params:
            q.grad = None
        loss = freelb_loss(lambda: loss_of(batch), self.perturb, mask, self.steps, self.adv_lr, self.init_mag,
                           self.max_norm, backward=self._backward(pl_module))
        self._inner = {q: q.grad for q in params if q.grad is not None}
        for q in params:
            q.grad = earlier[q]
        return loss

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        """Puts the first K-1 passes' parameter gradients back before the K-th backward accumulates onto them."""
        for q, grad in self._inner.items():
            q.grad = grad if q.grad is None else q.grad + grad
        self._inner = {}
