"""Shared base of the point-scene DataModules: offset batching (no padding) and the resumable loaders.

A scene dataset returns dicts ``{coord (n, 3), feat (n, F), label (n,), index}``; :func:`collate_points`
concatenates a list of them into one batch dict::

    {"coord": (N, 3), "feat": (N, F), "label": (N,), "offset": (B,), "batch": (N,), "index": (B,)}

where ``offset`` holds cumulative sample ends (Pointcept's convention) and ``batch`` the sample of every point.

Example:
    >>> batch = collate_points([scene_a, scene_b])
    >>> batch["offset"]            # tensor([n_a, n_a + n_b])
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sstkit.errors import SstkitError

from .resumable import EvalLoaderHooks, eval_loader, train_loader


def collate_points(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Concatenates point samples into one offset-batched dict (see the module doc)."""
    counts = torch.tensor([len(s["coord"]) for s in samples], dtype=torch.long)

    def cat(key: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.cat([torch.as_tensor(np.asarray(s[key])).to(dtype) for s in samples])

    return {
        "coord": cat("coord", torch.float32),
        "feat": cat("feat", torch.float32),
        "label": cat("label", torch.long),
        "offset": torch.cumsum(counts, 0),
        "batch": torch.repeat_interleave(torch.arange(len(samples)), counts),
        "index": torch.tensor([int(s["index"]) for s in samples], dtype=torch.long),
    }


class PointScenesDataModule(EvalLoaderHooks, L.LightningDataModule):
    """Base of point-scene DataModules: subclasses fill ``self.datasets`` (``train``/``val``/``test``) in setup.

    Args:
        batch_size: scenes per training batch and process.
        eval_batch_size: scenes per evaluation batch (default: ``batch_size``).
        num_workers: DataLoader workers.
    """

    class_names: tuple[str, ...] = ()

    def __init__(self, batch_size: int = 4, eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise SstkitError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.num_workers = num_workers
        self.datasets: dict[str, Dataset] = {}

    @property
    def num_labels(self) -> int:
        """Number of classes; the CLI links it to ``model.num_labels``."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Features per point (colour + normal = 6)."""
        return 6

    def _eval_loader(self, split: str) -> DataLoader:
        return eval_loader(self.datasets[split], self.eval_batch_size, collate_points, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return train_loader(self.datasets["train"], self.batch_size, collate_points, self.num_workers)
