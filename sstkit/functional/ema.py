"""An exponential moving average (EMA) of a model's trainable weights, used as a teacher.

    θ̃_t = β · θ̃_{t-1} + (1 − β) · θ_t          (θ̃_0 = θ_0, one update per optimizer step)

SMART's Bregman proximal point term and self-calibrated fine-tuning both predict with θ̃. The average is kept in
fp32 and is part of the owning callback's ``state_dict``, so a resumed run continues the same teacher.

Example::

    ema = EmaWeights(decay=0.99)
    ema.update(model)                       # after each optimizer step
    with ema.swapped(model):                # no_grad, eval mode, θ̃ in place of θ
        teacher_logits = model(input_ids, attention_mask)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from sstkit.functional.embedding_noise import unperturbed


class EmaWeights:
    """The EMA θ̃ of ``model``'s trainable parameters (empty until the first :meth:`update`)."""

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, Tensor] = {}
        self.updates = 0
        self.last_step = -1

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """θ̃ ← β θ̃ + (1 − β) θ; the first call copies θ."""
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            value = param.detach().float()
            if name not in self.shadow:
                self.shadow[name] = value.clone()
            else:
                self.shadow[name].mul_(self.decay).add_(value, alpha=1.0 - self.decay)
        self.updates += 1

    def update_once(self, model: nn.Module, step: int) -> None:
        """:meth:`update` once per optimizer ``step`` (not per micro-batch under gradient accumulation)."""
        if step != self.last_step:
            self.last_step = step
            self.update(model)

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[None]:
        """Inside the block ``model`` predicts with θ̃, in eval mode, without gradients and without embedding
        perturbations; θ is restored after."""
        if not self.shadow:
            self.update(model)
        params = dict(model.named_parameters())
        saved = {}
        was_training = model.training
        try:
            with torch.no_grad():
                for name, value in self.shadow.items():
                    if name in params:
                        saved[name] = params[name].data
                        # A pointer swap, not a copy: the student's autograd graph keeps its own storage.
                        params[name].data = value.to(device=saved[name].device, dtype=saved[name].dtype)
                model.eval()
                with unperturbed(model):  # the teacher predicts the clean input, also under FreeLB
                    yield
        finally:
            for name, data in saved.items():
                params[name].data = data
            model.train(was_training)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "last_step": self.last_step,
                "shadow": {k: v.clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state.get("updates", 0))
        self.last_step = int(state.get("last_step", -1))
        self.shadow = {k: v.float().clone() for k, v in state.get("shadow", {}).items()}
