"""Window packing for Swin3D: sparse voxels grouped by (shifted) cubic windows, variable length, no padding.

A window of ``ws³`` voxels holds only the voxels present in it. Instead of padding every window to ``ws³`` (or to
the fullest window) and masking, the voxels are sorted by ``(sample, window)`` and each window is a contiguous
run of ``counts[w]`` tokens starting at ``starts[w]``. Attention then runs over the list of (query, key) pairs
inside windows, ``Σ_w counts[w]²`` of them, which is what the variable-length attention in
:mod:`sstkit.nn.point.crse` consumes. :func:`pad_windows` gives the padded layout, used as the naive baseline
in the benchmark.

Example:
    >>> packed = pack_windows(grid, batch, window_size=5, shift=0)
    >>> query, key = window_pairs(packed)     # indices into the voxel array
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.nn.point.serialization import lexicographic_key


@dataclass
class PackedWindows:
    """Voxels sorted by window.

    Attributes:
        perm: (M,) voxel indices in window order.
        window: (M,) window number of every voxel (in the original voxel order).
        counts: (W,) voxels per window; starts: (W,) first position of each window in ``perm``.
    """

    perm: Tensor
    window: Tensor
    counts: Tensor
    starts: Tensor

    @property
    def num_windows(self) -> int:
        return int(self.counts.shape[0])


def pack_windows(grid: Tensor, batch: Tensor, window_size: int, shift: int = 0) -> PackedWindows:
    """Groups voxels into cubic windows of ``window_size`` voxels, displaced by ``shift`` voxels.

    Args:
        grid: (M, 3) non-negative integer voxel coordinates.
        batch: (M,) sample index.
        window_size: window edge ``ws`` in voxels.
        shift: displacement of the window grid (``ws // 2`` in shifted Swin blocks).
    """
    if window_size < 1:
        raise SstkitError(f"window_size must be >= 1, got {window_size}")
    win = (grid.long() + shift) // window_size
    dims = grid.shape[1]
    sizes = [int(win[:, a].max()) + 1 if len(win) else 1 for a in range(dims)]
    num_samples = int(batch.max()) + 1 if len(batch) else 1
    key = lexicographic_key([batch.long()] + [win[:, a] for a in range(dims)], [num_samples] + sizes)
    unique, window, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    perm = torch.argsort(window, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    return PackedWindows(perm=perm, window=window, counts=counts, starts=starts)


def window_pairs(packed: PackedWindows) -> tuple[Tensor, Tensor]:
    """All (query, key) voxel pairs that share a window, as two (P,) index tensors, ``P = Σ counts²``."""
    counts, device = packed.counts, packed.perm.device
    pair_counts = counts * counts
    win = torch.repeat_interleave(torch.arange(len(counts), device=device), pair_counts)
    local = torch.arange(int(pair_counts.sum()), device=device) - (torch.cumsum(pair_counts, 0) - pair_counts)[win]
    n = counts[win]
    start = packed.starts[win]
    return packed.perm[start + local // n], packed.perm[start + local % n]


def pad_windows(packed: PackedWindows, length: int | None = None) -> tuple[Tensor, Tensor]:
    """The padded layout of the windows: (W, L) voxel indices (0 where padded) and a (W, L) validity mask.

    Args:
        packed: packed windows.
        length: padded length ``L``; default the fullest window (the naive scheme pads to ``ws³``).
    """
    length = int(packed.counts.max()) if length is None else length
    if length < int(packed.counts.max()):
        raise SstkitError(f"pad length {length} is smaller than the fullest window ({int(packed.counts.max())})")
    slot = torch.arange(length, device=packed.perm.device)
    valid = slot[None, :] < packed.counts[:, None]
    position = (packed.starts[:, None] + slot[None, :]).clamp(max=len(packed.perm) - 1)
    index = torch.where(valid, packed.perm[position], torch.zeros_like(position))
    return index, valid
