"""Samplers and a DataLoader that make training resume exactly, mid-epoch included, and evaluation unpadded.

Lightning stores ``state_dict()`` of stateful train loaders in checkpoints and hands it back on resume; with
:class:`ResumableDataLoader` and an epoch-seeded order (:class:`EpochRandomSampler` on one process, Lightning's
``DistributedSampler`` under DDP) the resumed run sees exactly the batches the uninterrupted run would have.

Example:
    >>> loader = train_loader(dataset, batch_size=32)   # ResumableDataLoader + EpochRandomSampler
    >>> evaluation = eval_loader(dataset, batch_size=64)  # unpadded under DDP
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sized
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, RandomSampler, Sampler, SequentialSampler


class EpochRandomSampler(RandomSampler):
    """A random order that depends only on (seed, epoch), so a resumed run draws the same order.

    Subclassing ``RandomSampler`` lets Lightning swap it for a shuffling ``DistributedSampler`` under DDP.
    """

    def __init__(self, data_source: Sized, seed: int | None = None) -> None:
        super().__init__(data_source)
        self.seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position within the epoch is saved in checkpoints and skipped to on resume.

    Skipping re-reads the first batches of the epoch without yielding them: cheap for tokenised text and graphs,
    and it works with any deterministic sampler.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("generator", private_generator())
        super().__init__(*args, **kwargs)
        self._served = 0
        self._skip = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # A generator: nothing runs until the first batch is asked for, i.e. after Lightning's set_epoch.
        skip, self._skip = self._skip, 0
        batches = super().__iter__()
        for _ in range(skip):
            next(batches)
        self._served = skip
        for batch in batches:
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Batches of the current epoch already served (Lightning does not prefetch from sized loaders)."""
        # Restored but not iterated yet (a checkpoint written by a validation run before the first resumed
        # step): the position is the one still to be skipped to, not the fresh iterator's 0.
        return {"served": self._skip or self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Arranges for the next epoch iterator to skip the batches an interrupted run had already trained on."""
        served = int(state.get("served", 0))
        self._skip = served if served < len(self) else 0


def private_generator() -> torch.Generator:
    """A generator for a DataLoader's worker seeds.

    Without one, every new epoch iterator draws from the global RNG, so where a resumed run creates its
    iterator (after restoring the RNG) would shift every later dropout mask.
    """
    return torch.Generator().manual_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)))


def eval_sampler(dataset: Sized) -> Sampler[int]:
    """Sequential on one process; under DDP a split into disjoint shards *without* padding repeats.

    Lightning's default distributed sampler pads the last shard with repeated samples, which biases metrics.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return UnrepeatedDistributedSampler(dataset, shuffle=False)
    return SequentialSampler(dataset)


def train_loader(data: Sized, batch_size: int, collate_fn: Any = None, num_workers: int = 0) -> ResumableDataLoader:
    """The training loader every sstkit DataModule uses: epoch-seeded order, resumable mid-epoch."""
    return ResumableDataLoader(data, batch_size=batch_size, sampler=EpochRandomSampler(data), collate_fn=collate_fn,
                               num_workers=num_workers)


def eval_loader(data: Sized, batch_size: int, collate_fn: Any = None, num_workers: int = 0) -> DataLoader:
    """The evaluation loader every sstkit DataModule uses: in order, unpadded DDP shards, private RNG."""
    return DataLoader(data, batch_size=batch_size, sampler=eval_sampler(data), generator=private_generator(),
                      collate_fn=collate_fn, num_workers=num_workers)


class EvalLoaderHooks:
    """Lightning's val / test / predict hooks, all from the data module's ``_eval_loader(split)``.

    Put it before ``LightningDataModule`` in the bases; ``predict_split`` names the split ``sstkit predict`` reads.
    """

    predict_split = "test"

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")  # type: ignore[attr-defined]

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")  # type: ignore[attr-defined]

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.predict_split)  # type: ignore[attr-defined]
