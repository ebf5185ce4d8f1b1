"""Attack success rate (ASR) for any classifier, next to the clean accuracy the model logs itself.

At the end of validation and testing the callback runs the model over the data module's *triggered* set (the
non-target examples with the trigger inserted, from :class:`sstkit.datamodules.PoisonedTextDataModule`) and logs
``val/asr`` / ``test/asr``: the share classified as the target label. The model family is untouched: predictions
are the argmax of ``pl_module.step(batch, "test").preds``, counted by
:func:`sstkit.functional.backdoor.common.attack_success_counts`, the same function ``sstkit backdoor`` uses (rows
whose true label is the target are not counted). Under DDP each rank scores its own unpadded shard and the counts
are summed.

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.AttackSuccessRate
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from sstkit.errors import SstkitError
from sstkit.functional.backdoor.common import attack_success_counts
from sstkit.stacking import method_setup

STAGES = ("val", "test")


def _step_logits(module: L.LightningModule, batch: dict[str, Any]) -> torch.Tensor:
    return module.step(batch, "test").preds


class AttackSuccessRate(L.Callback):
    """Logs ``<stage>/asr`` from the data module's ``triggered_dataloader(stage)``.

    Args:
        stages: where to measure it, a subset of ``val`` and ``test``.
        target_label: the backdoor's target class; default: the data module's ``target_label``.
    """

    def __init__(self, stages: list[str] | tuple[str, ...] = STAGES, target_label: int | None = None) -> None:
        bad = [s for s in stages if s not in STAGES]
        if bad or not stages:
            raise SstkitError(f"AttackSuccessRate.stages must be a non-empty subset of {STAGES}, got {list(stages)}")
        self.stages, self.target_label = tuple(stages), target_label
        self._warned = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with method_setup(pl_module, "asr"):  # a measurement: it stacks with every method, recorded all the same
            pass

    def _target(self, datamodule: Any) -> int | None:
        return self.target_label if self.target_label is not None else getattr(datamodule, "target_label", None)

    @torch.no_grad()
    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> float | None:
        """ASR of ``pl_module`` on the triggered ``split`` (None when the data module has no triggered set)."""
        datamodule = trainer.datamodule
        loader = datamodule.triggered_dataloader(split) if hasattr(datamodule, "triggered_dataloader") else None
        target = self._target(datamodule)
        if loader is None or target is None:
            if not self._warned:
                self._warn(type(datamodule).__name__)
            return None
        counts = attack_success_counts(pl_module, loader, target, _step_logits)
        hits = torch.tensor(counts, dtype=torch.float64, device=pl_module.device)
        hits = trainer.strategy.reduce(hits, reduce_op="sum")
        return float(hits[0] / hits[1].clamp(min=1))

    @rank_zero_only
    def _warn(self, name: str) -> None:
        warnings.warn(f"AttackSuccessRate: data module {name} has no triggered set (use PoisonedTextDataModule); "
                      "no ASR is logged", stacklevel=2)
        self._warned = True

    def _log(self, trainer: L.Trainer, pl_module: L.LightningModule, split: str) -> None:
        if split not in self.stages or trainer.sanity_checking:
            return
        asr = self.measure(trainer, pl_module, split)
        if asr is not None:
            pl_module.log(f"{split}/asr", asr, sync_dist=False, rank_zero_only=False)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")
