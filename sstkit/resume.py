"""Random-number state in checkpoints, so ``--ckpt_path`` resumes a run exactly (dropout masks included).

Lightning saves model, optimizer, scheduler, loop and loader state, but not the global RNGs; without them a
resumed run draws other dropout masks than the uninterrupted one.

Example:
    >>> trainer = Trainer(callbacks=[RngState()])
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


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
