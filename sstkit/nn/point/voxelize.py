"""Voxelisation of offset-batched point clouds: points → unique (sample, voxel) cells, and back.

Point clouds are batched the Pointcept way: the points of all samples are concatenated and ``offset[b]`` is the
end (exclusive) of sample ``b``. Voxelisation quantises ``coord / voxel_size`` per sample (relative to the
sample's minimum, so grid coordinates are non-negative), finds the unique cells with an exact int64
lexicographic key ``(sample, x, y, z)`` and averages point attributes per cell. Voxels come out sorted by
sample, so per-sample voxel counts are a ``bincount``.

Example:
    >>> vox = voxelize(coord, batch, voxel_size=0.05)
    >>> voxel_feat = scatter_mean(point_feat, vox.inverse, vox.num_voxels)
    >>> back_to_points = voxel_feat[vox.inverse]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from sstkit.nn.point.serialization import lexicographic_key


def offset_to_batch(offset: Tensor) -> Tensor:
    """Sample index of every point from Pointcept offsets (cumulative sample ends)."""
    counts = torch.diff(offset, prepend=offset.new_zeros(1))
    return torch.repeat_interleave(torch.arange(len(offset), device=offset.device), counts)


def batch_to_offset(batch: Tensor, num_samples: int | None = None) -> Tensor:
    """Cumulative sample ends from a sorted sample index."""
    return torch.cumsum(torch.bincount(batch, minlength=num_samples or 0), 0)


def scatter_mean(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Mean of ``values`` rows per ``index`` (rows of ``size`` cells; empty cells are zero)."""
    out = values.new_zeros((size,) + values.shape[1:]).index_add_(0, index, values)
    count = torch.bincount(index, minlength=size).clamp(min=1).to(values.dtype)
    return out / count.view(-1, *([1] * (values.dim() - 1)))


def scatter_max(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Max of ``values`` rows per ``index`` (differentiable; empty cells are zero)."""
    out = values.new_zeros((size,) + values.shape[1:])
    idx = index.view(-1, *([1] * (values.dim() - 1))).expand_as(values)
    return out.scatter_reduce(0, idx, values, reduce="amax", include_self=False)


@dataclass
class Voxels:
    """Unique occupied cells of a batch of point clouds.

    Attributes:
        grid: (M, D) int64 cell coordinates, non-negative per sample.
        batch: (M,) sample index of each cell (sorted).
        inverse: (N,) cell of every input point.
        coord: (M, 3) mean point position per cell (continuous, in input units).
        voxel_size: edge length of a cell per axis.
    """

    grid: Tensor
    batch: Tensor
    inverse: Tensor
    coord: Tensor
    voxel_size: tuple[float, ...]

    @property
    def num_voxels(self) -> int:
        return int(self.grid.shape[0])

    def pool(self, values: Tensor) -> Tensor:
        """Per-cell mean of per-point ``values``."""
        return scatter_mean(values, self.inverse, self.num_voxels)


def voxelize(coord: Tensor, batch: Tensor, voxel_size: float | Sequence[float], dims: int = 3) -> Voxels:
    """Quantises points into cells of ``voxel_size`` (per sample); ``dims=2`` makes vertical pillars.

    Args:
        coord: (N, 3) point positions.
        batch: (N,) sample index of every point.
        voxel_size: cell edge (one value, or one per axis).
        dims: 3 for voxels, 2 for pillars (x, y only).
    """
    size = [float(voxel_size)] * dims if isinstance(voxel_size, (int, float)) else [float(v) for v in voxel_size]
    size = size[:dims]
    num_samples = int(batch.max()) + 1 if len(batch) else 1
    # Per-sample minimum keeps grid coordinates small and non-negative whatever the scene's origin.
    lowest = coord.new_full((num_samples, 3), float("inf")).scatter_reduce(
        0, batch.view(-1, 1).expand(-1, 3), coord, reduce="amin", include_self=True
    )
    scale = coord.new_tensor(size)
    grid = torch.floor((coord[:, :dims] - lowest[batch, :dims]) / scale).long()
    sizes = [int(grid[:, a].max()) + 1 if len(grid) else 1 for a in range(dims)]
    key = lexicographic_key([batch.long()] + [grid[:, a] for a in range(dims)], [num_samples] + sizes)
    unique, inverse = torch.unique(key, sorted=True, return_inverse=True)
    first = torch.full((len(unique),), len(key), dtype=torch.long, device=key.device)
    first = first.scatter_reduce(0, inverse, torch.arange(len(key), device=key.device), reduce="amin")
    return Voxels(
        grid=grid[first], batch=batch[first].long(), inverse=inverse,
        coord=scatter_mean(coord, inverse, len(unique)), voxel_size=tuple(size),
    )
