"""FlatFormer encoder and a point-segmentation backbone built on it.

Per forward, the encoder sorts the voxels along the four window-based orders (``x``, ``x_shift``, ``y``,
``y_shift``; :func:`~sstkit.nn.point.serialization.window_order`), cuts each order into equal-size groups
(:func:`~sstkit.nn.point.grouping.equal_size_groups`) and runs ``num_blocks`` blocks of four post-norm layers,
layer ``i`` attending within the groups of order ``i mod 4``. The sin/cos encoding of the integer voxel
coordinates is added to queries and keys in every layer. Windows of two sizes give BEV pillars (FlatFormer's
Waymo setting, ``window: [13, 13]``), three give 3-D voxels (indoor scenes).

Example (YAML, through :class:`~sstkit.models.PointSegmenter`)::

    model:
      class_path: sstkit.models.PointSegmenter
      init_args: {backbone: flatformer, preset: tiny, backbone_args: {group_size: 48}}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.nn.point.flat_attention import FlatFormerLayer, sincos_position_encoding
from sstkit.nn.point.grouping import FlatGroups, equal_size_groups
from sstkit.nn.point.serialization import ORDERS, window_order
from sstkit.nn.point.voxelize import voxelize


class FlatFormerEncoder(nn.Module):
    """Blocks of FlatFormer layers over voxel tokens.

    Args:
        channels: token width ``C`` (128 in the paper).
        heads: attention heads (8).
        window: window shape in voxels, 2 (pillars) or 3 values ((13, 13) on Waymo).
        group_size: tokens per group ``G`` (144 ≈ 0.85 × window area on Waymo).
        num_blocks: blocks of ``len(orders)`` layers (2).
        ffn_ratio: FFN width over ``C`` (2).
        dropout: dropout inside the layers.
        orders: sort orders cycled through by the layers of a block.
        mask_padding: hide padding copies from the keys (see :class:`FlatFormerLayer`).
    """

    def __init__(
        self,
        channels: int = 128,
        heads: int = 8,
        window: Sequence[int] = (13, 13),
        group_size: int = 144,
        num_blocks: int = 2,
        ffn_ratio: float = 2.0,
        dropout: float = 0.0,
        orders: Sequence[str] = ORDERS,
        mask_padding: bool = True,
    ) -> None:
        super().__init__()
        if len(window) not in (2, 3) or min(window) < 1:
            raise SstkitError(f"window must be 2 or 3 positive sizes, got {list(window)}")
        if group_size < 1 or num_blocks < 1:
            raise SstkitError(f"group_size and num_blocks must be >= 1, got {group_size}, {num_blocks}")
        self.channels, self.window, self.group_size = channels, tuple(int(w) for w in window), group_size
        self.orders = tuple(orders)
        self.layers = nn.ModuleList(
            FlatFormerLayer(channels, heads, ffn_ratio, dropout, mask_padding)
            for _ in range(num_blocks * len(self.orders))
        )
        self.last_padding_ratio = 0.0

    def groups(self, grid: Tensor, batch: Tensor, num_samples: int | None = None) -> dict[str, FlatGroups]:
        """The equal-size groups of every order (computed once per forward, shared by all blocks)."""
        with torch.no_grad():
            return {
                name: equal_size_groups(window_order(grid, batch, self.window, name), batch, self.group_size,
                                        num_samples)
                for name in self.orders
            }

    def forward(self, x: Tensor, grid: Tensor, batch: Tensor) -> Tensor:
        """x: (M, C) voxel features; grid: (M, D) integer voxel coordinates; batch: (M,) sample index."""
        groups = self.groups(grid, batch)
        pe = sincos_position_encoding(grid[:, : len(self.window)], self.channels).to(x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, pe, groups[self.orders[i % len(self.orders)]])
        self.last_padding_ratio = sum(g.padding_ratio for g in groups.values()) / len(groups)
        return x


class FlatFormerBackbone(nn.Module):
    """Points → voxels → FlatFormer → per-point features (voxel context fused with the point's own embedding).

    Args:
        in_channels: per-point input features (e.g. 6 for colour + normal).
        voxel_size: voxel edge in the coordinates' unit; with a 2-value window, pillars (x, y only).
        channels, heads, window, group_size, num_blocks, ffn_ratio, dropout, mask_padding: see
            :class:`FlatFormerEncoder`.
    """

    def __init__(
        self,
        in_channels: int,
        voxel_size: float = 0.1,
        channels: int = 128,
        heads: int = 8,
        window: Sequence[int] = (13, 13, 13),
        group_size: int = 144,
        num_blocks: int = 2,
        ffn_ratio: float = 2.0,
        dropout: float = 0.0,
        mask_padding: bool = True,
    ) -> None:
        super().__init__()
        self.voxel_size, self.dims = float(voxel_size), len(window)
        self.point_embed = nn.Sequential(
            nn.Linear(in_channels + 3, channels), nn.LayerNorm(channels), nn.GELU(), nn.Linear(channels, channels)
        )
        self.encoder = FlatFormerEncoder(channels, heads, window, group_size, num_blocks, ffn_ratio, dropout,
                                         mask_padding=mask_padding)
        self.fuse = nn.Sequential(nn.Linear(2 * channels, channels), nn.LayerNorm(channels), nn.GELU())
        self.out_channels = channels

    def forward(self, coord: Tensor, feat: Tensor, batch: Tensor) -> Tensor:
        """(N, 3) positions, (N, F) features, (N,) sample index → (N, C) point features."""
        vox = voxelize(coord, batch, self.voxel_size, self.dims)
        # Where a point lies inside its cell: lets the head separate points that share a voxel.
        local = (coord - vox.coord[vox.inverse]) / self.voxel_size
        point = self.point_embed(torch.cat([feat, local], dim=1))
        voxel = self.encoder(vox.pool(point), vox.grid, vox.batch)
        return self.fuse(torch.cat([voxel[vox.inverse], point], dim=1))
