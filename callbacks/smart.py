"""SMART as a callback: an extra loss term λ_s · R_s (+ μ · Bregman proximal term with an EMA teacher).

The functional core is :func:`sstkit.functional.smart.smart_regulariser`; the term is added through the model
base's extra-loss protocol and uses the family's logits with their graph (``StepOutput.extras["logits"]``). The
EMA teacher θ̃ (only with ``bregman_weight > 0``) is updated after each optimizer step and saved in the
callback's state, so a resumed run continues the same teacher.

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.SMART
          init_args: {weight: 1.0, noise_var: 1.0e-5, step_size: 1.0e-3, epsilon: 1.0e-5, bregman_weight: 0.0}
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.functional.ema import EmaWeights
from sstkit.functional.embedding_noise import EmbeddingPerturbation
from sstkit.functional.smart import smart_regulariser, symmetric_kl
from sstkit.models.base import StepOutput
from sstkit.stacking import method_setup

from .freelb import require_sstkit_module


def step_logits(pl_module: Any, batch: Any, out: StepOutput, method: str) -> Tensor:
    """The family's logits with their graph; a clear error for families that do not expose them."""
    logits = out.extras.get("logits")
    if logits is None:
        raise SstkitError(f"{method} needs the family's logits in StepOutput.extras['logits']; "
                          f"{type(pl_module).__name__} does not provide them")
    return logits


class SMART(L.Callback):
    """Smoothness-inducing adversarial regularisation (Jiang et al., 2020).

    Args:
        weight: λ_s, the weight of the symmetric-KL smoothness term (0: plain fine-tuning).
        noise_var: σ², variance of the initial embedding noise.
        step_size: η, the ascent step on the noise.
        epsilon: ε, the ∞-norm bound of the perturbation.
        bregman_weight: μ of the Bregman proximal point term ℓ_s(f(x; θ), f(x; θ̃)) (0: off).
        ema_decay: β of the EMA teacher θ̃.
    """

    def __init__(self, weight: float = 1.0, noise_var: float = 1e-5, step_size: float = 1e-3, epsilon: float = 1e-5,
                 bregman_weight: float = 0.0, ema_decay: float = 0.99) -> None:
        for name, value in (("weight", weight), ("noise_var", noise_var), ("step_size", step_size),
                            ("epsilon", epsilon), ("bregman_weight", bregman_weight)):
            if not value >= 0:
                raise SstkitError(f"SMART.{name} must be >= 0, got {value}")
        if not 0 <= ema_decay < 1:
            raise SstkitError(f"SMART.ema_decay must be in [0, 1), got {ema_decay}")
        self.weight, self.noise_var, self.step_size, self.epsilon = weight, noise_var, step_size, epsilon
        self.bregman_weight = bregman_weight
        self.ema = EmaWeights(ema_decay)
        self.perturb: EmbeddingPerturbation | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_sstkit_module(pl_module, "SMART")
        with method_setup(pl_module, "smart"):
            self.perturb = EmbeddingPerturbation.attach(pl_module)
            pl_module.add_extra_loss("smart", self.smoothness, weight=self.weight)
            if self.bregman_weight > 0:
                pl_module.add_extra_loss("smart_bregman", self.bregman, weight=self.bregman_weight)

    def smoothness(self, pl_module: Any, batch: Any, out: StepOutput) -> Tensor:
        clean = step_logits(pl_module, batch, out, "SMART")
        self.perturb = EmbeddingPerturbation.attach(pl_module)  # the table a later method may have replaced
        return smart_regulariser(lambda: pl_module.step(batch, "train").extras["logits"], clean, self.perturb,
                                 batch["attention_mask"], self.noise_var, self.step_size, self.epsilon)

    def bregman(self, pl_module: Any, batch: Any, out: StepOutput) -> Tensor:
        with self.ema.swapped(pl_module):
            teacher = pl_module.step(batch, "val").extras["logits"]
        return symmetric_kl(step_logits(pl_module, batch, out, "SMART"), teacher)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # One EMA update per optimizer step (not per micro-batch under gradient accumulation).
        if self.bregman_weight > 0:
            self.ema.update_once(pl_module, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.ema.load_state_dict(state_dict.get("ema", {}))
