"""ReLoRA* as a Lightning callback: LoRA restarted every ``merge_every`` steps (core: :mod:`sstkit.functional.lora`).

ReLoRA* is ReLoRA (Lialin et al., 2023) without its full-rank warm start, as the SST paper compares against:
training starts from the random ``W0`` with ``B = 0``, and every ``merge_every`` optimizer steps ``(alpha/r)·B A``
is merged into ``W0``, ``A`` is re-drawn (Kaiming-uniform), ``B`` zeroed, their Adam state zeroed, and the
learning rate re-warms over ``restart_warmup_steps`` (the "jagged" schedule: the model's own schedule times a
linear ramp after each restart — the same mechanism as SST's per-iteration warm-up).

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.ReLoRA
          init_args: {rank: 32, alpha: 32, merge_every: 1000, restart_warmup_steps: 50}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from sstkit.errors import require_int
from sstkit.functional.lora import relora_restart

from ._rewarm import RestartingMethod
from ._sharding import refuse_sharded
from .lora import HEAD_PATTERNS, LoRA


class _ReLoRAAdapters(LoRA):
    """LoRA's surgery, freezing and export, reporting errors as ``relora``."""

    method = "relora"


class ReLoRA(RestartingMethod):
    """LoRA whose low-rank update is merged into the frozen weight and restarted every ``merge_every`` steps.

    Args:
        rank, alpha, dropout, patterns, exclude, train_bias, freeze_other, trainable, export_dense: as for
            :class:`~sstkit.callbacks.LoRA` (the same surgery is used).
        merge_every: optimizer steps between restarts.
        restart_warmup_steps: linear learning-rate re-warm-up after each restart (0: none).
        seed: seed of the generator that re-draws ``A`` (checkpointed; identical on every DDP rank).

    Example:
        >>> ReLoRA(rank=4, merge_every=100).merge_every
        100
    """

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        merge_every: int = 5000,
        restart_warmup_steps: int = 100,
        patterns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        train_bias: bool = True,
        freeze_other: bool = False,
        trainable: Sequence[str] = HEAD_PATTERNS,
        seed: int = 0,
        export_dense: bool = False,
    ) -> None:
        super().__init__(restart_warmup_steps, method="relora")
        require_int("relora", "merge_every", merge_every)
        self.adapters = _ReLoRAAdapters(rank, alpha, dropout, patterns, exclude, train_bias, freeze_other,
                                        trainable, export_dense)  # fmt: skip
        self.merge_every, self.seed = merge_every, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.restarts = 0

    @property
    def layers(self) -> dict[str, Any]:
        """The LoRA layers by module name (after ``setup``)."""
        return self.adapters.layers

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        refuse_sharded(trainer, "relora")  # merging B A into W needs whole weights (callbacks/_sharding.py)
        self.adapters.setup(trainer, pl_module, stage)

    def after_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.steps % self.merge_every == 0:
            relora_restart(self.layers, self.generator, optimizer)
            self.restarts += 1
            self.rewarm.restart()

    def metrics(self) -> dict[str, float | torch.Tensor]:
        return {"restarts": self.restarts}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "restarts": self.restarts, "generator_state": self.generator.get_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.restarts = int(state_dict["restarts"])
        self.generator.set_state(state_dict["generator_state"].cpu())

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.adapters.on_save_checkpoint(trainer, pl_module, checkpoint)
