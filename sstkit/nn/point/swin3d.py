"""Swin3D: a hierarchy of sparse-voxel window transformers with cRSE, KNN down-sampling and up-sampling.

Points are voxelised at ``voxel_size``; a stem (one submanifold 3×3×3 sparse convolution, or an MLP) embeds the
voxel means of the input features. Stage ``s`` works on voxels of size ``voxel_size·2^s``: pre-norm Swin blocks
``x = x + Attn(LN(x))``, ``x = x + MLP₄ₓ(LN(x))`` whose attention runs over packed variable-length windows of
``ws³`` voxels (:mod:`sstkit.nn.point.windows`), shifted by ``ws // 2`` in every other block, with contextual
relative signal encoding (:mod:`sstkit.nn.point.crse`) of xyz (voxel units of the stage), colour and normals.
Between stages voxels are pooled to the coarser grid and features come from the 16 nearest fine voxels; the
decoder goes back up with 3-NN inverse-distance interpolation plus a linear skip, and points take the features
of their finest voxel.

Input features must start with the signals cRSE uses: ``feat[:, 0:3]`` colour, ``feat[:, 3:6]`` normal.

Example:
    >>> net = Swin3DBackbone(in_channels=6, **SWIN3D_PRESETS["tiny"])
    >>> point_features = net(coord, feat, batch)     # (N, net.out_channels)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.nn.point.crse import SIGNAL_SETS, ContextualRelativeAttention
from sstkit.nn.point.knn import KNNDownsample, KNNUpsample
from sstkit.nn.point.sparse_conv import SparseConv3d
from sstkit.nn.point.voxelize import Voxels, voxelize
from sstkit.nn.point.windows import pack_windows, window_pairs

SWIN3D_PRESETS = {
    "small": {"channels": [48, 96, 192, 384, 384], "depths": [2, 4, 9, 4, 4], "heads": [6, 6, 12, 24, 24],
              "window_sizes": [5, 7, 7, 7, 7], "voxel_size": 0.02},
    # CPU-sized: 3 stages of one block, 5³ windows throughout, 0.1 m voxels (several scenes a second on 1 core).
    "tiny": {"channels": [32, 64, 128], "depths": [1, 1, 1], "heads": [2, 4, 8], "window_sizes": [5, 5, 5],
             "voxel_size": 0.1},
}


class Swin3DBlock(nn.Module):
    """Pre-norm Swin block: window attention with cRSE, then an MLP of width ``mlp_ratio·C``."""

    def __init__(self, channels: int, heads: int, window_size: int, signals: str | None, mlp_ratio: float = 4.0,
                 ) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.attn = ContextualRelativeAttention(channels, heads, window_size, signals)
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))

    def forward(self, x: Tensor, signals: Tensor, query: Tensor, key: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x), signals, query, key)
        return x + self.mlp(self.norm2(x))


class Swin3DStage(nn.Module):
    """``depth`` Swin blocks on one voxel level, alternating unshifted and shifted windows."""

    def __init__(self, channels: int, depth: int, heads: int, window_size: int, signals: str | None) -> None:
        super().__init__()
        self.window_size = window_size
        self.blocks = nn.ModuleList(Swin3DBlock(channels, heads, window_size, signals) for _ in range(depth))

    def forward(self, x: Tensor, voxels: Voxels, signals: Tensor) -> Tensor:
        with torch.no_grad():
            pairs = [window_pairs(pack_windows(voxels.grid, voxels.batch, self.window_size, shift))
                     for shift in (0, self.window_size // 2)]
        for i, block in enumerate(self.blocks):
            x = block(x, signals, *pairs[i % 2])
        return x


class Swin3DBackbone(nn.Module):
    """The Swin3D encoder-decoder on offset-batched points.

    Args:
        in_channels: input features per point (colour then normal first, see the module doc).
        voxel_size: finest voxel edge (0.02 m in the paper).
        channels, depths, heads, window_sizes: per stage (Swin3D-S: 48-96-192-384-384, 2-4-9-4-4, 6-6-12-24-24,
            5-7-7-7-7).
        signals: cRSE signals ``XYZ``, ``XYZ_RGB``, ``XYZ_RGB_NORM``, or None for plain window attention.
        stem: ``conv`` (submanifold 3×3×3 sparse conv) or ``mlp``.
        down_k, up_k: neighbours of the KNN down-sampling (16) and up-sampling (3).
        conv_backend: sparse-conv backend (``auto``, ``torch``, ``spconv``).
    """

    def __init__(
        self,
        in_channels: int,
        voxel_size: float = 0.02,
        channels: Sequence[int] = (48, 96, 192, 384, 384),
        depths: Sequence[int] = (2, 4, 9, 4, 4),
        heads: Sequence[int] = (6, 6, 12, 24, 24),
        window_sizes: Sequence[int] = (5, 7, 7, 7, 7),
        signals: str | None = "XYZ_RGB_NORM",
        stem: str = "conv",
        down_k: int = 16,
        up_k: int = 3,
        conv_backend: str = "auto",
    ) -> None:
        super().__init__()
        stages = len(channels)
        if not (len(depths) == len(heads) == len(window_sizes) == stages) or stages < 1:
            raise SstkitError(
                "swin3d channels, depths, heads and window_sizes need one entry per stage, got "
                f"{list(channels)}, {list(depths)}, {list(heads)}, {list(window_sizes)}"
            )
        needed = SIGNAL_SETS.get(signals, 3) - 3 if signals else 0
        if in_channels < needed:
            raise SstkitError(f"cRSE signals {signals!r} need {needed} leading feature columns, got {in_channels}")
        if stem not in ("conv", "mlp"):
            raise SstkitError(f"swin3d stem must be 'conv' or 'mlp', got {stem!r}")
        self.voxel_size, self.attributes = float(voxel_size), needed
        self.stem = (SparseConv3d(in_channels + 3, channels[0], 3, backend=conv_backend) if stem == "conv"
                     else nn.Sequential(nn.Linear(in_channels + 3, channels[0]), nn.GELU(),
                                        nn.Linear(channels[0], channels[0])))
        self.stem_norm = nn.LayerNorm(channels[0])
        self.stages = nn.ModuleList(
            Swin3DStage(channels[s], depths[s], heads[s], window_sizes[s], signals) for s in range(stages)
        )
        self.down = nn.ModuleList(KNNDownsample(channels[s - 1], channels[s], down_k) for s in range(1, stages))
        self.up = nn.ModuleList(KNNUpsample(channels[s], channels[s - 1], up_k) for s in range(1, stages))
        self.out_channels = channels[0]

    def _signals(self, voxels: Voxels, size: float, attributes: Tensor) -> Tensor:
        return torch.cat([voxels.coord / size, attributes], dim=1)

    def forward(self, coord: Tensor, feat: Tensor, batch: Tensor) -> Tensor:
        """(N, 3) positions, (N, F) features, (N,) sample index → (N, C₀) point features."""
        levels = [voxelize(coord, batch, self.voxel_size)]
        attributes = [levels[0].pool(feat[:, : self.attributes])]
        # Offset of the voxel mean from the cell centre: sub-voxel geometry the stem would otherwise lose.
        inside = levels[0].coord / self.voxel_size - levels[0].grid.to(coord.dtype) - 0.5
        stem_in = torch.cat([levels[0].pool(feat), inside], 1)
        if isinstance(self.stem, SparseConv3d):
            x = self.stem(stem_in, levels[0].grid, levels[0].batch)
        else:
            x = self.stem(stem_in)
        x = self.stages[0](self.stem_norm(x), levels[0], self._signals(levels[0], self.voxel_size, attributes[0]))
        skips = [x]
        for s in range(1, len(self.stages)):
            size = self.voxel_size * 2**s
            fine = levels[-1]
            coarse = voxelize(fine.coord, fine.batch, size)
            attributes.append(coarse.pool(attributes[-1]))
            levels.append(coarse)
            x = self.down[s - 1](x, fine.coord, fine.batch, coarse.coord, coarse.batch)
            x = self.stages[s](x, coarse, self._signals(coarse, size, attributes[-1]))
            skips.append(x)
        for s in range(len(self.stages) - 1, 0, -1):
            fine, coarse = levels[s - 1], levels[s]
            x = self.up[s - 1](x, coarse.coord, coarse.batch, skips[s - 1], fine.coord, fine.batch)
        return x[levels[0].inverse]
