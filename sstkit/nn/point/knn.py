"""K-nearest neighbours within samples, and Swin3D's KNN down- and up-sampling between voxel levels.

The neighbour search is plain PyTorch: per sample, queries in chunks against that sample's reference points with
``torch.cdist`` and ``topk`` (memory ``chunk × n_ref``). It avoids a compiled dependency (torch_cluster) that has
no wheels for every torch/CUDA pair; at the sizes this framework trains on CPU it is not the bottleneck.

Down-sampling (Swin3D): voxels are pooled to a grid twice as coarse; each coarse voxel gathers its ``k = 16``
nearest fine voxels, ``max_k Linear(LN(x_j))``. Up-sampling: ``Linear(LN(skip)) + Σ_j w_j Linear(LN(coarse))_j``
over the 3 nearest coarse voxels with inverse-distance weights.

Example:
    >>> index, dist = knn(query_xyz, ref_xyz, query_batch, ref_batch, k=16)
    >>> down = KNNDownsample(48, 96, k=16); coarse_feat = down(fine_feat, fine_xyz, fine_batch, xyz, batch)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


@torch.no_grad()
def knn(query: Tensor, ref: Tensor, query_batch: Tensor, ref_batch: Tensor, k: int,
        chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Indices (into ``ref``) and distances of the ``k`` nearest references of the same sample, nearest first.

    A sample with fewer than ``k`` references repeats its farthest neighbour to fill the ``k`` columns.

    Args:
        query: (Q, 3) and ref: (R, 3) positions; query_batch, ref_batch: their sample indices.
        k: neighbours per query.
        chunk: queries per ``cdist`` call.
    """
    index = torch.zeros(len(query), k, dtype=torch.long, device=query.device)
    dist = torch.zeros(len(query), k, dtype=query.dtype, device=query.device)
    for sample in torch.unique(query_batch).tolist():
        q_rows = torch.nonzero(query_batch == sample).flatten()
        r_rows = torch.nonzero(ref_batch == sample).flatten()
        if len(r_rows) == 0:
            raise ValueError(f"sample {sample} has queries but no reference points")
        take = min(k, len(r_rows))
        for start in range(0, len(q_rows), chunk):
            rows = q_rows[start : start + chunk]
            d, j = torch.cdist(query[rows], ref[r_rows]).topk(take, dim=1, largest=False)
            if take < k:
                d = torch.cat([d, d[:, -1:].expand(-1, k - take)], 1)
                j = torch.cat([j, j[:, -1:].expand(-1, k - take)], 1)
            index[rows], dist[rows] = r_rows[j], d
    return index, dist


class KNNDownsample(nn.Module):
    """Fine voxel features → coarse voxels: ``max`` over the ``k`` nearest fine voxels of ``Linear(LN(x))``.

    Args:
        in_channels, out_channels: widths of the fine and coarse level.
        k: neighbours per coarse voxel (16 in Swin3D).
    """

    def __init__(self, in_channels: int, out_channels: int, k: int = 16) -> None:
        super().__init__()
        self.k = k
        self.norm = nn.LayerNorm(in_channels)
        self.linear = nn.Linear(in_channels, out_channels, bias=False)

    def forward(self, x: Tensor, xyz: Tensor, batch: Tensor, coarse_xyz: Tensor, coarse_batch: Tensor) -> Tensor:
        index, _ = knn(coarse_xyz, xyz, coarse_batch, batch, self.k)
        return self.linear(self.norm(x))[index].amax(dim=1)


class KNNUpsample(nn.Module):
    """Coarse features → fine voxels by inverse-distance interpolation over ``k`` neighbours, plus the skip.

    Args:
        coarse_channels, fine_channels: widths of the coarse input and of the fine skip / output.
        k: neighbours (3 in Swin3D).
    """

    def __init__(self, coarse_channels: int, fine_channels: int, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.coarse = nn.Sequential(nn.LayerNorm(coarse_channels), nn.Linear(coarse_channels, fine_channels))
        self.skip = nn.Sequential(nn.LayerNorm(fine_channels), nn.Linear(fine_channels, fine_channels))

    def forward(self, coarse: Tensor, coarse_xyz: Tensor, coarse_batch: Tensor, skip: Tensor, xyz: Tensor,
                batch: Tensor) -> Tensor:
        index, dist = knn(xyz, coarse_xyz, batch, coarse_batch, self.k)
        weight = 1.0 / (dist + 1e-8)
        weight = weight / weight.sum(1, keepdim=True)
        return self.skip(skip) + (self.coarse(coarse)[index] * weight.unsqueeze(-1)).sum(1)
