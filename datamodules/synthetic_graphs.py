"""Seeded synthetic graphs where hyperbolic models shine: random trees and a disease-spreading graph on a tree.

- ``tree``: a random tree grown breadth-first (the root has ``branching`` children, every other node between 1
  and ``2·branching − 1``), so the number of nodes grows exponentially with depth — the volume growth of
  hyperbolic space. Label: which of the root's subtrees a node belongs to (the root is class 0).
- ``disease``: like HGCN's "Disease" data (an SIR-style spread on a tree): the root is infected and each child
  of an infected node catches the infection with probability ``infection_prob``. Label: infected or not;
  features carry a weak noisy signal of the label.

Features are ``identity`` (one-hot node ids), ``random`` Gaussian features of width ``feature_dim`` (with the label
signal for ``disease``), or ``ancestry``: a Gaussian random walk down the tree (a node's features are its
parent's plus fresh noise, observed through noise twice a step's size), so features carry the hierarchy. Link prediction on a tree needs informative features:
a held-out tree edge disconnects its endpoints in the training graph, so message passing alone cannot recover it. Everything is generated from ``seed`` alone, so every process and a resumed run see the same graph.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.SyntheticGraphDataModule
      init_args: {kind: tree, num_nodes: 500, branching: 3, task: link}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sstkit.errors import SstkitError

from .graph import GraphDataModule

if TYPE_CHECKING:
    from torch_geometric.data import Data

KINDS = ("tree", "disease")
FEATURES = ("identity", "random", "ancestry")


def random_tree(num_nodes: int, branching: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Parents (``-1`` for the root) and depths of a breadth-first random tree with ``num_nodes`` nodes."""
    parent, depth = np.full(num_nodes, -1), np.zeros(num_nodes, dtype=np.int64)
    frontier, size = [0], 1
    while size < num_nodes:
        next_frontier = []
        for node in frontier:
            children = branching if node == 0 else int(rng.integers(1, 2 * branching))
            for _ in range(min(children, num_nodes - size)):
                parent[size], depth[size] = node, depth[node] + 1
                next_frontier.append(size)
                size += 1
        frontier = next_frontier
    return parent, depth


def make_graph(kind: str, num_nodes: int, branching: int, features: str, feature_dim: int, infection_prob: float,
               seed: int) -> Data:  # fmt: skip
    """Builds the synthetic graph (see the module docstring); same arguments, same graph."""
    from torch_geometric.data import Data
    from torch_geometric.utils import to_undirected

    rng = np.random.default_rng(seed)
    parent, depth = random_tree(num_nodes, branching, rng)
    child = np.arange(1, num_nodes)
    edge_index = to_undirected(torch.from_numpy(np.stack([parent[1:], child])).long(), num_nodes=num_nodes)
    if kind == "tree":
        top = np.zeros(num_nodes, dtype=np.int64)  # the root's child each node descends from
        for node in range(1, num_nodes):  # parents come before children (breadth-first numbering)
            top[node] = node if parent[node] == 0 else top[parent[node]]
        labels = np.zeros(num_nodes, dtype=np.int64)
        firsts = np.flatnonzero(parent == 0)
        labels[1:] = np.searchsorted(firsts, top[1:])
    else:
        infected = np.zeros(num_nodes, dtype=bool)
        infected[0] = True
        draws = rng.random(num_nodes)
        for node in range(1, num_nodes):
            infected[node] = infected[parent[node]] and draws[node] < infection_prob
        labels = infected.astype(np.int64)
    if features == "identity":
        x = torch.eye(num_nodes)
    elif features == "ancestry":  # a random walk down the tree: a node's features are its parent's plus noise
        steps = rng.normal(size=(num_nodes, feature_dim)) / np.sqrt(feature_dim)
        walk = steps.copy()
        for node in range(1, num_nodes):
            walk[node] += walk[parent[node]]
        # Observation noise (twice a step) hides the walk, so a parent-child pair is not given away by its features.
        x = torch.from_numpy(walk + 2.0 * rng.normal(size=walk.shape) / np.sqrt(feature_dim)).float()
    else:
        x = torch.from_numpy(rng.normal(size=(num_nodes, feature_dim))).float()
        if kind == "disease":  # a weak, noisy label signal in the first features
            x[:, : max(1, feature_dim // 4)] += 0.5 * torch.from_numpy(labels).float().unsqueeze(1)
    return Data(x=x, edge_index=edge_index, y=torch.from_numpy(labels), depth=torch.from_numpy(depth),
                num_nodes=num_nodes)  # fmt: skip


class SyntheticGraphDataModule(GraphDataModule):
    """A seeded random tree or disease-spreading graph, for node classification or link prediction.

    Args:
        kind: ``tree`` or ``disease``.
        num_nodes: graph size.
        branching: children of the root; other nodes draw 1 … ``2·branching − 1``.
        features: ``identity`` (one-hot ids), ``random`` (Gaussian) or ``ancestry`` (random walk down the tree).
        feature_dim: feature width for ``random`` and ``ancestry``.
        infection_prob: per-edge infection probability of ``disease``.
        seed: generator seed of the graph (the split has its own ``split_seed``).
        task, split_seed, val_ratio, test_ratio, num_workers: see :class:`GraphDataModule`; node splits are
            random (``1 − val − test`` of the nodes train).
    """

    def __init__(self, kind: str = "tree", num_nodes: int = 500, branching: int = 3, features: str = "identity",
                 feature_dim: int = 16, infection_prob: float = 0.7, seed: int = 0, task: str = "link",
                 split_seed: int = 0, val_ratio: float = 0.05, test_ratio: float = 0.10,
                 num_workers: int = 0) -> None:  # fmt: skip
        super().__init__(task, split_seed, val_ratio, test_ratio, num_workers)
        if kind not in KINDS:
            raise SstkitError(f"data.kind must be one of {KINDS}, got {kind!r}")
        if features not in FEATURES:
            raise SstkitError(f"data.features must be one of {FEATURES}, got {features!r}")
        if num_nodes < 8:
            raise SstkitError(f"data.num_nodes must be >= 8, got {num_nodes}")
        if branching < 2:
            raise SstkitError(f"data.branching must be >= 2, got {branching}")
        if not 0.0 < infection_prob <= 1.0:
            raise SstkitError(f"data.infection_prob must be in (0, 1], got {infection_prob}")
        self.kind, self.num_nodes, self.branching, self.features = kind, num_nodes, branching, features
        self.feature_dim, self.infection_prob, self.seed = feature_dim, infection_prob, seed

    def load_graph(self) -> Data:
        return make_graph(self.kind, self.num_nodes, self.branching, self.features, self.feature_dim,
                          self.infection_prob, self.seed)  # fmt: skip
