"""Transductive fine-tuning as a callback: pseudo-label the evaluation inputs at ``start_step``, then train on
train ∪ pseudo-labelled.

At ``start_step`` the model (eval mode) predicts every input of the evaluation split (``split``; inputs only, its
labels are never read, see :mod:`sstkit.functional.transductive`) and keeps those predicted with confidence ≥
``threshold``. From then on each training step adds, through the extra-loss protocol, the loss of a random batch
of pseudo-labelled inputs with weight |P| / |D_train| (``weight: null``), so that the expected loss is the mean
over D_train ∪ P up to a constant factor. Every rank predicts the whole split and draws the same batches (no
collectives). The pseudo-labels and the sampler's RNG are in the callback's state, so a resumed run continues
exactly; the run logs ``method/transductive/transductive = 1`` so its summary marks it transductive.

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.TransductiveFineTuning
          init_args: {split: test, threshold: 0.9, start_step: null}
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.functional.embedding_noise import unperturbed
from sstkit.functional.transductive import PseudoLabels, UnlabelledInputs, pseudo_batch, pseudo_label
from sstkit.models.base import StepOutput
from sstkit.stacking import method_setup

from .freelb import require_sstkit_module


class TransductiveFineTuning(L.Callback):
    """Self-training on the unlabelled evaluation inputs (transductive).

    Args:
        split: the evaluation split whose inputs are pseudo-labelled (``test`` or ``val``).
        threshold: keep predictions whose top probability is at least this.
        start_step: the step at which to pseudo-label (None: half of the run's optimizer steps).
        weight: weight of the pseudo-labelled batch's loss (None: |P| / |D_train|, the union's share).
        batch_size: pseudo-labelled examples per step (None: the training batch's size).
        seed: seed of the pseudo-batch sampler.
    """

    def __init__(self, split: str = "test", threshold: float = 0.9, start_step: int | None = None,
                 weight: float | None = None, batch_size: int | None = None, seed: int = 0) -> None:
        if split not in ("test", "val"):
            raise SstkitError(f"TransductiveFineTuning.split must be test or val, got {split!r}")
        if not 0 <= threshold <= 1:
            raise SstkitError(f"TransductiveFineTuning.threshold must be in [0, 1], got {threshold}")
        for name, value in (("start_step", start_step), ("weight", weight), ("batch_size", batch_size)):
            if value is not None and value < 0:
                raise SstkitError(f"TransductiveFineTuning.{name} must be >= 0 or null, got {value}")
        self.split, self.threshold, self.start_step = split, threshold, start_step
        self.weight, self.batch_size = weight, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.labelled: PseudoLabels | None = None
        self.inputs: UnlabelledInputs | None = None
        self._start = start_step or 0
        self._train_size = 1

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_sstkit_module(pl_module, "TransductiveFineTuning")
        with method_setup(pl_module, "transductive"):
            pl_module.add_extra_loss("transductive", self.term)

    def _split_inputs(self, trainer: L.Trainer) -> UnlabelledInputs:
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "datasets"):
            raise SstkitError("TransductiveFineTuning needs an sstkit text data module (data.class_path)")
        dm.setup("test" if self.split == "test" else "validate")
        if self.split not in dm.datasets:
            raise SstkitError(f"TransductiveFineTuning: the data module has no {self.split} split")
        self._pad = getattr(dm._collate(), "pad_token_id", 0) if hasattr(dm, "_collate") else 0
        self._train_size = max(1, len(dm.datasets["train"])) if "train" in dm.datasets else 1
        return UnlabelledInputs.of(dm.datasets[self.split])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.inputs = self._split_inputs(trainer)
        if self.start_step is None:
            self._start = int(trainer.estimated_stepping_batches) // 2

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.labelled is None and trainer.global_step >= self._start:
            was_training = pl_module.training
            pl_module.eval()
            self.labelled = pseudo_label(lambda b: pl_module.step({**b, "labels": b["index"] * 0}, "val").preds,
                                         self.inputs, self.threshold, pad_token_id=self._pad,
                                         device=pl_module.device)
            pl_module.train(was_training)
            if not len(self.labelled):
                warnings.warn(f"TransductiveFineTuning: no {self.split} input reached confidence {self.threshold}; "
                              "training continues on the labelled data only", stacklevel=2)

    def term(self, pl_module: Any, batch: Any, out: StepOutput) -> Tensor:
        pl_module.log("method/transductive/transductive", 1.0, batch_size=out.batch_size)
        if self.labelled is None or not len(self.labelled):
            return out.loss.new_zeros(())
        pl_module.log("method/transductive/pseudo_labels", float(len(self.labelled)), batch_size=out.batch_size)
        size = self.batch_size or out.batch_size
        pseudo = pseudo_batch(self.inputs, self.labelled, size, self.generator, self._pad)
        pseudo = {k: v.to(out.loss.device) for k, v in pseudo.items()}
        weight = self.weight if self.weight is not None else len(self.labelled) / self._train_size
        with unperturbed(pl_module):  # under FreeLB, δ belongs to the labelled batch (and has its shape)
            return weight * pl_module.step(pseudo, "train").loss

    def state_dict(self) -> dict[str, Any]:
        labelled = None if self.labelled is None else vars(self.labelled)
        return {"labelled": labelled, "generator": self.generator.get_state(), "start": self._start}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        labelled = state_dict.get("labelled")
        self.labelled = None if labelled is None else PseudoLabels(**labelled)
        if "generator" in state_dict:
            self.generator.set_state(state_dict["generator"])
        self._start = int(state_dict.get("start", self._start))
