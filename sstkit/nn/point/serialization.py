"""Serialisation of sparse voxels: int64 lexicographic keys, boustrophedon ("snake") ranks, and FlatFormer's
window-based sort orders.

FlatFormer sorts the non-empty voxels of a scene along a path that visits windows one after the other and walks
every window completely before moving on, so that neighbouring positions in the sorted list are neighbours in
space. A window of shape ``w`` (2-D pillars or 3-D voxels) splits a grid coordinate ``g`` into a window index
``g // w`` and an in-window index ``g % w``. The walk is a snake across windows and a snake inside each window
(reversed in every other window), so the path has no long jumps. Four orders are used per block: ``x``,
``x_shift`` (all coordinates shifted by ``w/2`` before the split), ``y`` and ``y_shift`` (``y`` the primary axis).

The sort key is the exact lexicographic key ``(batch, window rank, in-window rank)`` packed into one int64 with
a mixed radix (no "magic offsets" that can collide); where it would overflow, an error says so.

Example:
    >>> grid = torch.tensor([[0, 0, 0], [5, 1, 0], [1, 7, 0]])
    >>> batch = torch.zeros(3, dtype=torch.long)
    >>> orders = flat_window_orders(grid, batch, window=(4, 4, 4))
    >>> sorted(orders)
    ['x', 'x_shift', 'y', 'y_shift']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from sstkit.errors import SstkitError

ORDERS = ("x", "x_shift", "y", "y_shift")
_AXIS = {"x": 0, "y": 1, "z": 2}
_INT64_MAX = 2**63 - 1


def lexicographic_key(columns: Sequence[Tensor], sizes: Sequence[int]) -> Tensor:
    """Packs integer columns into one int64 key that sorts like the tuple ``(columns[0], columns[1], …)``.

    Args:
        columns: int64 tensors of equal shape, ``0 <= columns[i] < sizes[i]``.
        sizes: the radix of each column.

    Raises:
        SstkitError: when the product of the sizes does not fit into int64 (make voxels larger, scenes smaller).
    """
    total = 1
    for size in sizes:
        total *= max(int(size), 1)
    if total > _INT64_MAX:
        raise SstkitError(
            f"sort key does not fit into int64 (radices {list(sizes)}, product {total}); "
            "use a larger voxel size or smaller scenes"
        )
    key = torch.zeros_like(columns[0], dtype=torch.long)
    for column, size in zip(columns, sizes):
        key = key * max(int(size), 1) + column.long()
    return key


def snake_rank(coords: Sequence[Tensor], sizes: Sequence[int]) -> Tensor:
    """Rank of each cell along the boustrophedon walk of a grid (``coords[0]`` slowest, ``coords[-1]`` fastest).

    A coordinate is walked backwards whenever the rank of the coarser coordinates is odd, so consecutive ranks
    are always adjacent cells.
    """
    rank = torch.zeros_like(coords[0], dtype=torch.long)
    for coord, size in zip(coords, sizes):
        coord = torch.where(rank % 2 == 1, size - 1 - coord, coord)
        rank = rank * size + coord
    return rank


def _axes(name: str, dims: int) -> tuple[list[int], bool]:
    shifted = name.endswith("_shift")
    primary = name.removesuffix("_shift")
    if primary not in _AXIS or _AXIS[primary] >= dims:
        raise SstkitError(f"unknown sort order {name!r} for {dims}-D windows; use one of {ORDERS}")
    first = _AXIS[primary]
    return [first] + [a for a in range(dims) if a != first], shifted


def window_order(grid: Tensor, batch: Tensor, window: Sequence[int], name: str = "x") -> Tensor:
    """The permutation that sorts voxels along one window-based snake order.

    Args:
        grid: (M, D) non-negative integer voxel coordinates, D = ``len(window)`` (2: pillars, 3: voxels).
        batch: (M,) sample index of every voxel.
        window: window shape in voxels.
        name: ``x``, ``x_shift``, ``y`` or ``y_shift`` (``z`` orders work for 3-D windows too).

    Returns:
        (M,) int64 permutation; ``grid[perm]`` is the sorted walk, samples in increasing order.
    """
    dims = len(window)
    axes, shifted = _axes(name, dims)
    size = torch.tensor(list(window), dtype=torch.long, device=grid.device)
    coords = grid[:, :dims].long() + (size // 2 if shifted else 0)
    win, inner = coords // size, coords % size
    win_sizes = [int(win[:, a].max()) + 1 if len(win) else 1 for a in axes]
    win_rank = snake_rank([win[:, a] for a in axes], win_sizes)
    inner_rank = snake_rank([inner[:, a] for a in axes], [int(window[a]) for a in axes])
    volume = math.prod(int(w) for w in window)
    # Reversing the in-window walk in every other window joins the end of one window to the start of the next.
    inner_rank = torch.where(win_rank % 2 == 1, volume - 1 - inner_rank, inner_rank)
    num_samples = int(batch.max()) + 1 if len(batch) else 1
    key = lexicographic_key([batch.long(), win_rank, inner_rank], [num_samples, math.prod(win_sizes), volume])
    return torch.argsort(key, stable=True)


def window_index(grid: Tensor, batch: Tensor, window: Sequence[int], shifted: bool = False) -> Tensor:
    """A unique int64 id per (sample, window) of every voxel (unshifted or shifted by half a window)."""
    dims = len(window)
    size = torch.tensor(list(window), dtype=torch.long, device=grid.device)
    win = (grid[:, :dims].long() + (size // 2 if shifted else 0)) // size
    sizes = [int(win[:, a].max()) + 1 if len(win) else 1 for a in range(dims)]
    num_samples = int(batch.max()) + 1 if len(batch) else 1
    return lexicographic_key([batch.long()] + [win[:, a] for a in range(dims)], [num_samples] + sizes)


def flat_window_orders(
    grid: Tensor, batch: Tensor, window: Sequence[int], orders: Sequence[str] = ORDERS
) -> dict[str, Tensor]:
    """All sort permutations a FlatFormer block cycles through, by name (see :func:`window_order`)."""
    return {name: window_order(grid, batch, window, name) for name in orders}
