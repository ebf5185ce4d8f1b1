"""What Lightning's checkpoints leave out, so that ``--ckpt_path`` resumes a run exactly.

- :class:`RngState`: the global RNGs; without them a resumed run draws other dropout masks.
- :class:`LoaderPosition`: the training loader's position within the epoch when Lightning loaded the data
  before restoring the loops (a finite ``max_epochs`` makes ``estimated_stepping_batches`` do so); the resumed
  run would otherwise start the epoch again from its first batch.
- :class:`PendingValidation`: whether the checkpoint was written between a training step and that step's
  validation (``ModelCheckpoint(every_n_train_steps=…)`` saves in ``on_train_batch_end``, before validation);
  Lightning's loop then skips that validation on resume, and this callback runs it instead.

Example:
    >>> trainer = Trainer(callbacks=[RngState(), LoaderPosition(), PendingValidation()])
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import RunningStage, TrainerFn


class RngState(L.Callback):
    """Captures the torch / numpy / python RNG states when a checkpoint is written and restores them on resume."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # Plain lists and tensors only, so checkpoints load with torch.load(weights_only=True).
            "numpy": _numpy_state(),
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied when training starts, after the sanity check and anything else that may draw random numbers.
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))


def _numpy_state() -> list:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(gauss)]


class LoaderPosition(L.Callback):
    """Hands the checkpoint's data-loader states to the training loaders, also when Lightning did not.

    Lightning gives them back in ``FitLoop.setup_data``, only if the loops were restored before it ran. When
    ``configure_optimizers`` asks for ``trainer.estimated_stepping_batches`` with a finite ``max_epochs`` (the
    default schedules do, and the shipped configs set ``max_epochs``), the data is set up during strategy setup,
    before the loops are restored, and the states stay unapplied. At ``on_train_start`` the loops are restored
    and no training batch has been drawn yet, so applying them here puts the loader where the checkpoint was.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A no-op where Lightning applied them (it empties the list) or where nothing was restored.
        trainer.fit_loop._load_combined_loader_states()


class PendingValidation(L.Callback):
    """Runs, on resume, a validation that was due at the checkpoint's step but had not run when it was written.

    Lightning restores such a checkpoint as "restarted on train batch end" and fast-forwards the validation
    loop's counters past that step, so the validation is lost. At save time this callback records whether the
    step's validation is still to come; on resume it runs that validation before training continues, logged at
    the same step as in an uninterrupted run (also where the step ended an epoch, which Lightning would skip too).
    """

    def __init__(self) -> None:
        self._trainer: L.Trainer | None = None
        self._validated_step = -1
        self._pending = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_step = trainer.global_step

    def state_dict(self) -> dict[str, Any]:
        return {"validation_pending": self._validation_pending()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = bool(state_dict.get("validation_pending", False))

    def _validation_pending(self) -> bool:
        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING or trainer.state.stage != RunningStage.TRAINING:
            return False
        loop = trainer.fit_loop.epoch_loop
        fetcher = trainer.fit_loop._data_fetcher
        # Inside a training step (on_train_batch_end): Lightning validates next if this holds for the batch.
        return (fetcher is not None and self._validated_step != trainer.global_step
                and loop.batch_progress.current.processed > loop.batch_progress.current.completed
                and loop._should_check_val_fx(fetcher))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pending, self._pending = self._pending, False
        if not pending:
            return
        # Here the restored loops have not advanced yet: the loggers' step is the one an uninterrupted run logs this
        # validation at, and Lightning's own fast-forward, which follows, only moves counters. The restored
        # validation loop still counts the batches of the validation before the checkpoint; "restarting", it
        # would add them to this one's and stop early.
        val_loop = trainer.fit_loop.epoch_loop.val_loop
        val_loop.restarting = False
        first_loop_iter = trainer._logger_connector._first_loop_iter
        trainer.validating = True
        try:
            val_loop.run()
        finally:
            trainer.training = True
            trainer._logger_connector._first_loop_iter = first_loop_iter
