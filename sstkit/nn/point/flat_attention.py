"""Flattened-window attention (FlatFormer): attention inside equal-size groups of sorted tokens.

For one layer with groups ``g`` of ``G`` tokens, positional encoding ``p`` and token features ``x``:

    q = k = x + p,  v = x,   y_g = softmax((q_g W_Q)(k_g W_K)ᵀ / √d) (v_g W_V) W_O

computed for all groups at once with ``F.scaled_dot_product_attention`` (one batched call, heads split). The
layer is post-norm as in FlatFormer's code: ``x = LN(x + Attn(x))``, ``x = LN(x + FFN(x))`` with an FFN of width
``ffn_ratio·C`` and GELU. Padding copies (see :mod:`sstkit.nn.point.grouping`) are masked as keys, so a real
token attends to each real token of its group exactly once, and their outputs are discarded.

Example:
    >>> layer = FlatFormerLayer(channels=128, heads=8)
    >>> x = layer(x, pe, groups)   # x, pe: (M, 128) per voxel
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.nn.point.grouping import FlatGroups


def sincos_position_encoding(coords: Tensor, channels: int, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine encoding of (integer) coordinates, ``channels`` wide, split evenly across the axes.

    Args:
        coords: (M, D) positions (FlatFormer uses integer voxel coordinates).
        channels: output width; each axis gets ``2·⌊channels / 2D⌋`` of it, the rest is zero.
        temperature: the frequency base (10000 as in the paper).
    """
    dims = coords.shape[1]
    half = channels // (2 * dims)
    freq = temperature ** (torch.arange(half, device=coords.device, dtype=torch.float32) / max(half, 1))
    angles = coords.float().unsqueeze(-1) / freq  # (M, D, half)
    pe = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)
    return F.pad(pe, (0, channels - pe.shape[1]))


class FlatAttention(nn.Module):
    """Multi-head attention over groups, with ``q = k = x + pe`` and ``v = x``.

    Args:
        channels: token width ``C``.
        heads: number of heads (``C`` must be divisible by it).
        dropout: attention dropout in training.
    """

    def __init__(self, channels: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if channels % heads:
            raise SstkitError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.qk = nn.Linear(channels, 2 * channels)
        self.v = nn.Linear(channels, channels)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, pe: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """Attention inside each group.

        Args:
            x, pe: (groups, G, C) token features and positional encodings.
            key_mask: (groups, G) True where a token may be attended to (None: all).
        """
        groups, size, channels = x.shape
        q, k = self.qk(x + pe).chunk(2, dim=-1)
        v = self.v(x)

        def split(t: Tensor) -> Tensor:
            return t.view(groups, size, self.heads, -1).transpose(1, 2)

        mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(groups, size, channels))


class FlatFormerLayer(nn.Module):
    """One post-norm FlatFormer layer on a flat token array: grouped attention, then a per-token FFN.

    Args:
        channels: token width ``C``.
        heads: attention heads.
        ffn_ratio: FFN hidden width as a multiple of ``C`` (2 in FlatFormer).
        dropout: dropout on the attention and FFN outputs.
        mask_padding: hide padding copies from the keys (exact per-group attention); False duplicates them
            as in the official code.
    """

    def __init__(
        self, channels: int, heads: int, ffn_ratio: float = 2.0, dropout: float = 0.0, mask_padding: bool = True
    ) -> None:
        super().__init__()
        hidden = int(channels * ffn_ratio)
        self.attn = FlatAttention(channels, heads, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, channels))
        self.drop = nn.Dropout(dropout)
        self.mask_padding = mask_padding

    def forward(self, x: Tensor, pe: Tensor, groups: FlatGroups) -> Tensor:
        """x, pe: (M, C) per token; returns the updated (M, C)."""
        mask = groups.real if self.mask_padding and groups.has_padding else None
        out = self.attn(x[groups.index], pe[groups.index], mask)
        # Scatter back the real tokens only; every token occurs exactly once among them.
        attn = torch.empty_like(x)
        attn[groups.index[groups.real]] = out[groups.real]
        x = self.norm1(x + self.drop(attn))
        return self.norm2(x + self.drop(self.ffn(x)))
