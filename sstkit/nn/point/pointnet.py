"""PointNet for segmentation on offset-batched points: the baseline of the point benchmark.

Each point is embedded by a shared MLP from its features and its position relative to its sample's centroid; a
per-sample max-pool gives a global descriptor, which is concatenated to every point's embedding and mixed by a
second MLP (Qi et al., 2017, without the input/feature transform networks). LayerNorm instead of BatchNorm keeps
a point's output independent of the other samples in its batch.

Example:
    >>> net = PointNetBackbone(in_channels=6)
    >>> point_features = net(coord, feat, batch)   # (N, 128)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from sstkit.nn.point.voxelize import scatter_max, scatter_mean


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.LayerNorm(b), nn.GELU()]
    return nn.Sequential(*layers)


class PointNetBackbone(nn.Module):
    """Shared point MLP, per-sample max-pool, and a point MLP over [point, global] features.

    Args:
        in_channels: input features per point.
        local_channels: widths of the shared point MLP.
        global_channels: width of the pooled descriptor.
        out_channels: width of the output point features.
    """

    def __init__(self, in_channels: int, local_channels: Sequence[int] = (64, 128), global_channels: int = 256,
                 out_channels: int = 128) -> None:
        super().__init__()
        self.local = _mlp([in_channels + 3, *local_channels])
        self.globl = _mlp([local_channels[-1], global_channels])
        self.head = _mlp([local_channels[-1] + global_channels, 2 * out_channels, out_channels])
        self.out_channels = out_channels

    def forward(self, coord: Tensor, feat: Tensor, batch: Tensor) -> Tensor:
        """(N, 3) positions, (N, F) features, (N,) sample index → (N, out_channels)."""
        samples = int(batch.max()) + 1
        centred = coord - scatter_mean(coord, batch, samples)[batch]
        local = self.local(torch.cat([feat, centred], 1))
        pooled = scatter_max(self.globl(local), batch, samples)
        return self.head(torch.cat([local, pooled[batch]], 1))
