"""The base of full-graph data modules: node or link splits of one graph, served as one batch per step.

A graph model sees the whole graph every step, so each split is a dataset of one PyG ``Data`` object. The
training loader is still a :class:`ResumableDataLoader` over an :class:`EpochRandomSampler` and the evaluation
loaders use :func:`eval_sampler`, like every sstkit data module, so resume and the CLI's run records work the
same way. Splits are drawn with a private seed (``split_seed``) that leaves the global RNGs untouched, so the same
split comes back on every process and after a resume.

Under DDP every rank keeps the whole graph for message passing but scores only its share of the split's targets
(nodes of the mask, or labelled edges: every ``world_size``-th from its rank), so the ranks' losses and metrics
together cover each target exactly once — synced metrics equal the single-process ones.

- ``task: node``: every split holds the full graph and a boolean ``mask`` of the nodes it scores (public masks if
  the data set has them, else a seeded random split with ``val_ratio`` / ``test_ratio``).
- ``task: link``: PyG's ``RandomLinkSplit`` (undirected): message passing on training edges only;
  ``edge_label_index`` / ``edge_label`` hold the split's positive edges (training) or positive and as many negative
  held-out pairs (validation, test). Training negatives are sampled by the model each step.

Subclasses implement :meth:`GraphDataModule.load_graph`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, SequentialSampler

from sstkit.errors import SstkitError

from .resumable import EpochRandomSampler, EvalLoaderHooks, ResumableDataLoader, private_generator

if TYPE_CHECKING:  # torch_geometric is imported where it is used: it costs seconds at every CLI start
    from torch_geometric.data import Data

TASKS = ("node", "link")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Runs a block with torch / numpy / python RNGs seeded, and puts the previous states back afterwards."""
    states = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(states[0]), np.random.set_state(states[1]), random.setstate(states[2])


class OneGraph(Dataset):
    """A dataset holding a single graph."""

    def __init__(self, data: Data) -> None:
        self.data = data

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Data:
        return self.data


def rank_share(data: Data) -> Data:
    """This DDP rank's share of a split's targets (the split itself on one process); the graph stays whole."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return data
    rank, world = dist.get_rank(), dist.get_world_size()
    share = data.clone()
    if "mask" in data:
        nodes = data.mask.nonzero().flatten()[rank::world]
        share.mask = torch.zeros_like(data.mask).index_fill_(0, nodes, True)
    else:
        share.edge_label_index, share.edge_label = data.edge_label_index[:, rank::world], data.edge_label[rank::world]
    return share


def first_item(items: list[Data]) -> Data:
    """Collate function of one-graph batches (a module-level function, so worker processes can pickle it)."""
    return items[0]


class GraphDataModule(EvalLoaderHooks, L.LightningDataModule):
    """Node or link splits of one graph (see the module docstring).

    Args:
        task: ``node`` (node classification) or ``link`` (link prediction).
        split_seed: seed of the random node or edge split.
        val_ratio: share of nodes / edges held out for validation (node task: only without public masks).
        test_ratio: share held out for testing.
        num_workers: DataLoader workers (0 is right for one small graph).
    """

    def __init__(self, task: str = "node", split_seed: int = 0, val_ratio: float = 0.05, test_ratio: float = 0.10,
                 num_workers: int = 0) -> None:  # fmt: skip
        super().__init__()
        if task not in TASKS:
            raise SstkitError(f"data.task must be one of {TASKS}, got {task!r}")
        if not (0 < val_ratio < 1 and 0 < test_ratio < 1 and val_ratio + test_ratio < 1):
            raise SstkitError(f"data.val_ratio and data.test_ratio must be in (0, 1) with a sum < 1, got "
                              f"{val_ratio} and {test_ratio}")  # fmt: skip
        self.task, self.split_seed, self.val_ratio, self.test_ratio = task, split_seed, val_ratio, test_ratio
        self.num_workers = num_workers
        self._graph: Data | None = None
        self.splits: dict[str, Data] = {}

    # --- what subclasses implement ----------------------------------------------------------------------------
    def load_graph(self) -> Data:
        """The graph with ``x``, ``edge_index`` (both directions), ``y`` and optional public ``*_mask``s."""
        raise NotImplementedError

    # --- the graph and its sizes (read by the CLI's links before the model is built) -------------------------
    @property
    def graph(self) -> Data:
        if self._graph is None:
            self._graph = self.load_graph()
        return self._graph

    @property
    def num_features(self) -> int:
        return int(self.graph.x.shape[1])

    @property
    def num_labels(self) -> int:
        return int(self.graph.y.max()) + 1

    # --- splits -----------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        from torch_geometric.data import Data
        from torch_geometric.transforms import RandomLinkSplit, RandomNodeSplit

        graph = self.graph
        if self.task == "node":
            if not all(hasattr(graph, f"{s}_mask") for s in ("train", "val", "test")):
                with seeded(self.split_seed):
                    graph = RandomNodeSplit("train_rest", num_val=self.val_ratio, num_test=self.test_ratio)(graph.clone())
            for split in ("train", "val", "test"):
                self.splits[split] = Data(x=graph.x, edge_index=graph.edge_index, y=graph.y,
                                          mask=getattr(graph, f"{split}_mask"), num_nodes=graph.num_nodes)  # fmt: skip
        else:
            transform = RandomLinkSplit(num_val=self.val_ratio, num_test=self.test_ratio, is_undirected=True,
                                        add_negative_train_samples=False, split_labels=False)  # fmt: skip
            with seeded(self.split_seed):
                parts = transform(Data(x=graph.x, edge_index=graph.edge_index, num_nodes=graph.num_nodes))
            for split, part in zip(("train", "val", "test"), parts, strict=True):
                self.splits[split] = Data(x=part.x, edge_index=part.edge_index, edge_label_index=part.edge_label_index,
                                          edge_label=part.edge_label, num_nodes=graph.num_nodes)  # fmt: skip

    def describe(self) -> dict[str, Any]:
        """Sizes of the splits (nodes scored or edges labelled), for logs and tests."""
        self.setup()
        if self.task == "node":
            return {s: int(d.mask.sum()) for s, d in self.splits.items()}
        return {s: int(d.edge_label.numel()) for s, d in self.splits.items()}

    # --- loaders ----------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        dataset = OneGraph(rank_share(self.splits["train"]))
        return ResumableDataLoader(dataset, batch_size=1, sampler=EpochRandomSampler(dataset), collate_fn=first_item,
                                   num_workers=self.num_workers)  # fmt: skip

    def _eval_loader(self, split: str) -> DataLoader:
        # Every rank evaluates its own share of the one graph (Lightning's distributed sampler hands each rank
        # item 0), instead of the unpadded sampler text data uses, which would leave ranks without a batch.
        dataset = OneGraph(rank_share(self.splits[split]))
        return DataLoader(dataset, batch_size=1, sampler=SequentialSampler(dataset), generator=private_generator(),
                          collate_fn=first_item, num_workers=self.num_workers)  # fmt: skip
