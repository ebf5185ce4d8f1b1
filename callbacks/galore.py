"""GaLore as a Lightning callback: the model's own AdamW becomes :class:`sstkit.optim.GaLoreAdamW`.

The selected projections' weights move to a group with GaLore's ``rank``/``update_proj_gap``/``scale``; every
other parameter, the learning rates, weight decays and the model's learning-rate schedule stay as the model
configured them. (LightningCLI's ``optimizer:`` injection would drop the model's warm-up/cosine schedule and
cannot tell a projection from an embedding by the parameters it is given, so GaLore is a callback.)

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.GaLore
          init_args: {rank: 16, update_proj_gap: 200, scale: 0.25}
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch

from sstkit.errors import SstkitError, require_int
from sstkit.functional.surgery import method_patterns, name_matches
from sstkit.optim.galore import GaLoreAdamW, galore_param_groups
from sstkit.stacking import method_setup

from ._sharding import refuse_sharded


class GaLore(L.Callback):
    """Replaces the model's AdamW by GaLore-AdamW at fit start, projecting the selected linears' weight gradients.

    Args:
        rank: ``r`` of the gradient projection of every selected weight.
        update_proj_gap: optimizer steps between new projections (GaLore's ``T``).
        scale: factor of the projected-back update (GaLore's ``α``).
        patterns: module-name patterns whose ``weight`` is projected; default: the model family's
            ``method_patterns``, else BERT/OPT attention and MLP projections.
        exclude: patterns removed from the selection.

    Example:
        >>> GaLore(rank=16).rank
        16
    """

    method = "galore"

    def __init__(
        self,
        rank: int = 128,
        update_proj_gap: int = 200,
        scale: float = 0.25,
        patterns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        require_int("galore", "rank", rank)
        require_int("galore", "update_proj_gap", update_proj_gap)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
            raise SstkitError(f"galore: scale must be a number > 0, got {scale!r}")
        self.rank, self.update_proj_gap, self.scale = rank, update_proj_gap, float(scale)
        self.patterns = None if patterns is None else ([patterns] if isinstance(patterns, str) else list(patterns))
        self.exclude = [exclude] if isinstance(exclude, str) else list(exclude)
        self.projected: list[str] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        refuse_sharded(trainer, self.method)  # the SVD of each full gradient needs whole weights
        with method_setup(pl_module, self.method):  # no surgery: only records GaLore against the stacking table
            patterns = method_patterns(pl_module, self.patterns)
            self.projected = [f"{name}.weight" for name, module in pl_module.named_modules()
                              if isinstance(module, torch.nn.Linear) and name_matches(name, patterns, self.exclude)]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs after the strategy set the optimizers up and before a checkpoint's optimizer state is restored.
        if len(trainer.optimizers) != 1 or type(trainer.optimizers[0]) is not torch.optim.AdamW:
            names = [type(o).__name__ for o in trainer.optimizers]
            raise SstkitError(f"galore: needs the model's single torch.optim.AdamW optimizer, got {names}; "
                              "drop the optimizer: section (GaLore brings its own AdamW)")
        if not self.projected:
            raise SstkitError(f"galore: no nn.Linear matches patterns {self.patterns or 'default'}")
        old = trainer.optimizers[0]
        targets = {id(p) for n, p in pl_module.named_parameters() if n in set(self.projected) and p.requires_grad}
        groups = galore_param_groups(old.param_groups, targets, self.rank, self.update_proj_gap, self.scale)
        defaults = old.defaults
        new = GaLoreAdamW(groups, lr=defaults["lr"], betas=defaults["betas"], eps=defaults["eps"],
                          weight_decay=defaults["weight_decay"])
        trainer.strategy.optimizers = [new]
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR) or len(scheduler.lr_lambdas) < 1:
                raise SstkitError(f"galore: cannot carry the scheduler {type(scheduler).__name__} over; use the "
                                  "model's own schedule (model.scheduler)")
            # A fresh LambdaLR on the new optimizer (at fit start the old one has taken only its initial step, and a
            # checkpoint's scheduler state is restored after this hook); a group split in two keeps the model's one
            # multiplier. Re-pointing the old scheduler instead would leave torch's step-order check unpatched.
            config.scheduler = torch.optim.lr_scheduler.LambdaLR(new, [scheduler.lr_lambdas[0]] * len(new.param_groups))
