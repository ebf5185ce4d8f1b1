"""Submanifold sparse 3-D convolution: a pure-PyTorch implementation and an spconv backend chosen automatically.

Output sites are the input sites (submanifold). For a kernel of size ``K`` and offsets ``o`` (enumerated x-major,
as the axes of ``conv3d``'s weight ``[C_out, C_in, K_x, K_y, K_z]``),

    y_i = b + Σ_o W_o x_{n(i, o)},   n(i, o) = the voxel at grid_i + o − ⌊K/2⌋ of the same sample, if present.

The neighbour map is a sort/search hash: every voxel gets an exact int64 lexicographic key ``(sample, x, y, z)``;
keys are sorted once and each offset's neighbour keys are located with ``searchsorted``. Features are then
gathered into (M, K³, C_in) (absent neighbours read a zero row) and multiplied with the (K³·C_in, C_out) weight in
one matmul. The spconv backend (``SubMConv3d``) is used when ``backend='auto'``, spconv imports and the input is on
CUDA; install it with ``pip install sstkit[point-cuda]`` (``spconv-cu120``; for other CUDA 12.x builds install
``spconv-cu121``/``spconv-cu124`` instead). The two backends keep different parameters, so a checkpoint is tied to
its backend; use ``backend='torch'`` for checkpoints that must load everywhere.

Example:
    >>> conv = SparseConv3d(6, 32, kernel_size=3)
    >>> y = conv(feat, grid, batch)            # feat: (M, 6), grid: (M, 3) int, batch: (M,)
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.nn.point.serialization import lexicographic_key

BACKENDS = ("auto", "torch", "spconv")


@functools.cache
def spconv_available() -> bool:
    """True when spconv imports and a CUDA device is present."""
    try:
        import spconv.pytorch  # noqa: F401
    except Exception:  # an ImportError, or a broken CUDA build raising at import
        return False
    return torch.cuda.is_available()


@torch.no_grad()
def neighbour_map(grid: Tensor, batch: Tensor, kernel_size: int = 3) -> Tensor:
    """(M, K³) index of the neighbour of every voxel at every kernel offset, -1 where there is none."""
    radius = kernel_size // 2
    g = grid.long() + radius  # room for negative offsets in the key
    num_samples = int(batch.max()) + 1 if len(batch) else 1
    sizes = [num_samples] + [int(g[:, a].max()) + radius + 1 for a in range(3)]
    keys = lexicographic_key([batch.long(), g[:, 0], g[:, 1], g[:, 2]], sizes)
    sorted_keys, order = torch.sort(keys)
    out = []
    for offset in itertools.product(range(-radius, radius + 1), repeat=3):
        shifted = g + g.new_tensor(offset)
        probe = lexicographic_key([batch.long(), shifted[:, 0], shifted[:, 1], shifted[:, 2]], sizes)
        pos = torch.searchsorted(sorted_keys, probe).clamp(max=len(keys) - 1)
        found = (sorted_keys[pos] == probe) & (shifted >= 0).all(1)
        out.append(torch.where(found, order[pos], torch.full_like(pos, -1)))
    return torch.stack(out, dim=1)


def sparse_conv3d(feat: Tensor, neighbours: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Gather-matmul submanifold convolution: feat (M, C_in), neighbours (M, K³), weight (K³, C_in, C_out)."""
    padded = torch.cat([feat, feat.new_zeros(1, feat.shape[1])], 0)
    index = torch.where(neighbours < 0, torch.full_like(neighbours, len(feat)), neighbours)
    y = padded[index].flatten(1) @ weight.flatten(0, 1)
    return y if bias is None else y + bias


class SparseConv3d(nn.Module):
    """Submanifold sparse convolution on (features, integer grid, sample index).

    Args:
        in_channels, out_channels: widths.
        kernel_size: odd kernel edge (3).
        bias: add a bias.
        backend: ``auto`` (spconv when available and the input is on CUDA, else PyTorch), ``torch`` or ``spconv``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True,
                 backend: str = "auto") -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise SstkitError(f"sparse conv backend must be one of {BACKENDS}, got {backend!r}")
        if kernel_size % 2 == 0:
            raise SstkitError(f"kernel_size must be odd, got {kernel_size}")
        if backend == "spconv" and not spconv_available():
            raise SstkitError("backend 'spconv' needs spconv and CUDA: pip install 'sstkit[point-cuda]'")
        self.kernel_size = kernel_size
        self.backend = "spconv" if backend == "spconv" or (backend == "auto" and spconv_available()) else "torch"
        if self.backend == "spconv":
            import spconv.pytorch as spconv

            self.spconv = spconv.SubMConv3d(in_channels, out_channels, kernel_size, bias=bias)
        else:
            volume = kernel_size**3
            bound = 1.0 / math.sqrt(in_channels * volume)  # conv3d's default init range
            self.weight = nn.Parameter(torch.empty(volume, in_channels, out_channels).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound)) if bias else None

    def forward(self, feat: Tensor, grid: Tensor, batch: Tensor) -> Tensor:
        if self.backend == "spconv" and feat.is_cuda:
            import spconv.pytorch as spconv

            indices = torch.cat([batch.view(-1, 1), grid], 1).int()
            shape = (grid.max(0).values + 1).tolist()
            tensor = spconv.SparseConvTensor(feat, indices, shape, int(batch.max()) + 1)
            return self.spconv(tensor).features
        if self.backend == "spconv":
            raise SstkitError("the spconv sparse conv backend (chosen by backend='auto' because spconv and CUDA "
                              "are present) needs its input on CUDA; set conv_backend: torch to run on CPU")
        return sparse_conv3d(feat, neighbour_map(grid, batch, self.kernel_size), self.weight, self.bias)
