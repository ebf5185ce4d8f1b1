"""Swin3D's window attention with contextual relative signal encoding (cRSE), over packed windows.

For voxels ``i, j`` in one window, signals ``s`` (xyz, optionally rgb and normals) and bins
``b_s(i,j) = clamp(⌊(s_i − s_j)·Q_s⌋ + L_s, 0, 2L_s − 1)``, with learned tables ``T^Q_s, T^K_s, T^V_s`` of
shape ``[2L_s, heads, d]``:

    e_ij = q̂_i·k_j + q̂_i·Σ_s T^Q_s[b_s(i,j)] + k_j·Σ_s T^K_s[b_s(i,j)],    q̂ = q / √d
    y_i  = Σ_j softmax_j(e_ij) (v_j + Σ_s T^V_s[b_s(i,j)])

Per-pair ``d``-vectors are never built: ``q̂·T^Qᵀ`` and ``k·T^Kᵀ`` are computed per voxel as (M, signals, 2L,
heads) tables and gathered by bin; the softmax weights are scattered into (M, signals, 2L, heads) bins and
multiplied by ``T^V`` once. Softmax over each query's keys is a scatter softmax over the pair list.

Defaults from the paper: xyz in voxel units with ``Q = 4``, ``L = 4·ws``; colour and normals ``Q = 8``, ``L = 16``.

Example:
    >>> attn = ContextualRelativeAttention(channels=48, heads=6, window_size=5, signals="XYZ_RGB_NORM")
    >>> y = attn(x, signals, query, key)    # signals: (M, 9) = xyz / voxel, rgb, normal
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError

SIGNAL_SETS = {"XYZ": 3, "XYZ_RGB": 6, "XYZ_RGB_NORM": 9}


def scatter_softmax(logits: Tensor, index: Tensor, size: int) -> Tensor:
    """Softmax of (P, H) ``logits`` over the pairs sharing ``index`` (one query)."""
    idx = index.view(-1, 1).expand_as(logits)
    peak = logits.new_full((size, logits.shape[1]), float("-inf"))
    peak = peak.scatter_reduce(0, idx, logits, reduce="amax", include_self=True)
    weight = torch.exp(logits - peak[index])
    total = logits.new_zeros((size, logits.shape[1])).index_add_(0, index, weight)
    return weight / total[index]


class ContextualRelativeAttention(nn.Module):
    """Multi-head attention over window pairs with optional cRSE.

    Args:
        channels: width ``C``; heads: number of heads.
        window_size: ``ws`` (sets the xyz table length ``L = 4·ws``).
        signals: ``XYZ``, ``XYZ_RGB`` or ``XYZ_RGB_NORM``; None disables cRSE (plain window attention).
        xyz_quant, xyz_length: ``Q`` and ``L`` of xyz (default 4 and 4·ws); attr_quant, attr_length: of colour
            and normals (8, 16).
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        window_size: int,
        signals: str | None = "XYZ_RGB_NORM",
        xyz_quant: float = 4.0,
        xyz_length: int | None = None,
        attr_quant: float = 8.0,
        attr_length: int = 16,
    ) -> None:
        super().__init__()
        if channels % heads:
            raise SstkitError(f"channels ({channels}) must be divisible by heads ({heads})")
        if signals is not None and signals not in SIGNAL_SETS:
            raise SstkitError(f"cRSE signals must be one of {sorted(SIGNAL_SETS)} or null, got {signals!r}")
        self.heads, self.head_dim = heads, channels // heads
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.num_signals = SIGNAL_SETS[signals] if signals else 0
        xyz_length = xyz_length or 4 * window_size
        # One quantisation and length per signal; the tables of all signals share one (S, 2L_max) layout.
        quant = [xyz_quant] * 3 + [attr_quant] * (self.num_signals - 3)
        length = [xyz_length] * 3 + [attr_length] * (self.num_signals - 3)
        self.register_buffer("quant", torch.tensor(quant[: self.num_signals]), persistent=False)
        self.register_buffer("length", torch.tensor(length[: self.num_signals]), persistent=False)
        bins = 2 * max(length[: self.num_signals], default=1)
        shape = (self.num_signals, bins, heads, self.head_dim)
        self.table_q = nn.Parameter(torch.randn(shape) * 0.02) if self.num_signals else None
        self.table_k = nn.Parameter(torch.randn(shape) * 0.02) if self.num_signals else None
        self.table_v = nn.Parameter(torch.randn(shape) * 0.02) if self.num_signals else None

    def bins(self, signals: Tensor, query: Tensor, key: Tensor) -> Tensor:
        """(P, S) bin of every pair and signal."""
        diff = signals[query, : self.num_signals] - signals[key, : self.num_signals]
        raw = torch.floor(diff * self.quant).long() + self.length
        return torch.minimum(raw.clamp(min=0), 2 * self.length - 1)

    def forward(self, x: Tensor, signals: Tensor | None, query: Tensor, key: Tensor) -> Tensor:
        """Attention of every voxel over the voxels of its window.

        Args:
            x: (M, C) voxel features.
            signals: (M, S') per-voxel signals, columns xyz (voxel units), rgb, normal; S' >= the signals used.
            query, key: (P,) pair lists from :func:`~sstkit.nn.point.windows.window_pairs`.
        """
        m, channels = x.shape
        q, k, v = self.qkv(x).view(m, 3, self.heads, self.head_dim).unbind(1)
        q = q * self.head_dim**-0.5
        logits = (q[query] * k[key]).sum(-1)  # (P, H)
        if self.num_signals:
            bins = self.bins(signals, query, key)
            sig = torch.arange(self.num_signals, device=x.device).view(1, -1)
            bins_per_signal = self.table_q.shape[1]
            # (M, S, 2L, H): every voxel's dot products with every table row, gathered per pair by bin.
            q_table = torch.einsum("mhd,sbhd->msbh", q, self.table_q).flatten(0, 2)
            k_table = torch.einsum("mhd,sbhd->msbh", k, self.table_k).flatten(0, 2)
            # Flat row numbers into the (M·S·2L, H) tables: index_select is far faster than 3-tensor indexing.
            rows = sig * bins_per_signal + bins  # (P, S)
            stride = self.num_signals * bins_per_signal
            gathered = q_table.index_select(0, (query[:, None] * stride + rows).flatten())
            gathered = gathered + k_table.index_select(0, (key[:, None] * stride + rows).flatten())
            logits = logits + gathered.view(len(query), self.num_signals, self.heads).sum(1)
        weight = scatter_softmax(logits, query, m)
        y = x.new_zeros(m, self.heads, self.head_dim).index_add_(0, query, weight.unsqueeze(-1) * v[key])
        if self.num_signals:
            # Σ_j a_ij Σ_s T^V_s[b] = Σ_s Σ_b (Σ_{j: b_s(i,j)=b} a_ij) T^V_s[b]: scatter weights into bins first.
            binned = x.new_zeros(m * stride, self.heads).index_add_(
                0, (query[:, None] * stride + rows).flatten(), weight.repeat_interleave(self.num_signals, 0))
            binned = binned.view(m, self.num_signals, bins_per_signal, self.heads)
            y = y + torch.einsum("msbh,sbhd->mhd", binned, self.table_v)
        return self.proj(y.reshape(m, channels))
