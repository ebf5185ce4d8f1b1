"""Group-wise uniform fake quantisation (Q-BERT): ``QuantLinear``, ``QuantEmbedding`` and the quantiser itself.

The quantiser is uniform and asymmetric. For a group of weights X with range [q0, qmax] (the exact minimum and
maximum of the group) and k bits,

    Δ   = (qmax − q0) / (2^k − 1)
    X_q = round((clamp(X, q0, qmax) − q0) / Δ)          (integers 0 … 2^k − 1)
    X̂   = Δ · X_q + q0                                  (the dequantised weight)

Groups are sets of consecutive *output rows* of a weight matrix (``num_groups`` per matrix, the paper's default
128). For attention projections the rows are first split by head, then each head's rows into consecutive
sub-groups, so no group mixes two heads. A constant group (Δ = 0) is stored exactly with Δ set to 1.

Training uses a straight-through estimator: the forward pass sees X̂, the backward pass treats the quantiser as the
identity, so gradients reach the full-precision weights (quantisation-aware training). Activations may be
fake-quantised too (per tensor, dynamic range, ``act_bits``).

The wrappers reuse the original ``weight``/``bias`` Parameter objects, so parameter names, optimizer state and
checkpoints stay those of the plain model; ``bits=None`` turns a wrapper into the identity of the original layer.

Example:
    >>> import torch
    >>> layer = QuantLinear(torch.nn.Linear(16, 8), bits=3, num_groups=4)
    >>> y = layer(torch.randn(2, 16))
    >>> q = layer.quantized_weight()          # QuantizedTensor: integers + per-group scale/zero point
    >>> torch.equal(q.dequantize(), layer.fake_weight())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.errors import SstkitError

MAX_BITS = 16


def check_bits(bits: int | None, what: str = "bits") -> None:
    """Raises :class:`SstkitError` unless ``bits`` is None or an integer in 1 … 16."""
    if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= MAX_BITS):
        raise SstkitError(f"{what} must be an integer from 1 to {MAX_BITS} (or null for full precision), got {bits!r}")


def row_groups(rows: int, num_groups: int, heads: int | None = None, device: torch.device | None = None) -> Tensor:
    """The group index of every output row: consecutive rows, split per head first when ``heads`` is given.

    Example:
        >>> row_groups(8, 4).tolist()
        [0, 0, 1, 1, 2, 2, 3, 3]
        >>> row_groups(8, 4, heads=2).tolist()   # head 0 = rows 0-3 → groups 0, 1; head 1 → groups 2, 3
        [0, 0, 1, 1, 2, 2, 3, 3]
    """
    if num_groups < 1:
        raise SstkitError(f"num_groups must be >= 1, got {num_groups}")
    index = torch.arange(rows, device=device)
    if heads and heads > 1 and rows % heads == 0:
        head_dim = rows // heads
        per_head = max(1, min(head_dim, round(num_groups / heads)))
        return (index // head_dim) * per_head + (index % head_dim) * per_head // head_dim
    groups = min(num_groups, rows)
    return index * groups // rows


@dataclass
class QuantizedTensor:
    """Integer codes of a matrix and the per-group ranges that dequantise them: ``X̂ = Δ[g] · X_q + q0[g]``."""

    codes: Tensor  # uint8 (bits ≤ 8) or int16/int32, same shape as the weight
    scale: Tensor  # Δ per group, float32
    zero: Tensor  # q0 per group, float32
    group_index: Tensor  # group of each row (long)
    bits: int

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The dequantised matrix, computed exactly as the fake quantiser does."""
        shape = (-1,) + (1,) * (self.codes.dim() - 1)
        scale = self.scale[self.group_index].view(shape)
        zero = self.zero[self.group_index].view(shape)
        return (self.codes.to(scale.dtype) * scale + zero).to(dtype)


def group_ranges(weight: Tensor, group_index: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Exact per-group minimum q0 and maximum qmax of the rows of ``weight``."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    init_lo = torch.full((num_groups,), float("inf"), dtype=flat.dtype, device=flat.device)
    lo = init_lo.scatter_reduce(0, group_index, flat.amin(1), "amin")
    hi = (-init_lo).scatter_reduce(0, group_index, flat.amax(1), "amax")
    return lo, hi


def quantize_groups(weight: Tensor, bits: int, group_index: Tensor) -> QuantizedTensor:
    """Quantises ``weight`` (rows grouped by ``group_index``) to ``bits``-bit codes with exact group ranges."""
    check_bits(bits)
    num_groups = int(group_index.max()) + 1
    lo, hi = group_ranges(weight, group_index, num_groups)
    levels = 2**bits - 1
    delta = (hi - lo) / levels
    delta = torch.where(delta > 0, delta, torch.ones_like(delta))  # constant group: any Δ reproduces q0 exactly
    shape = (-1,) + (1,) * (weight.dim() - 1)
    q0, step = lo[group_index].view(shape), delta[group_index].view(shape)
    hi_rows = hi[group_index].view(shape)
    x = weight.detach()
    codes = torch.round((torch.minimum(torch.maximum(x, q0), hi_rows) - q0) / step).clamp_(0, levels)
    dtype = torch.uint8 if bits <= 8 else torch.int32
    return QuantizedTensor(codes.to(dtype), delta.float(), lo.float(), group_index, bits)


class _StraightThrough(torch.autograd.Function):
    """Forward: the dequantised tensor, bit for bit (``x + (q - x).detach()`` would round differently);
    backward: the identity, so the gradient reaches the full-precision tensor."""

    @staticmethod
    def forward(ctx: object, x: Tensor, quantized: Tensor) -> Tensor:  # noqa: ARG004
        return quantized.view_as(quantized)

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ARG004
        return grad, None


def fake_quantize(weight: Tensor, bits: int, group_index: Tensor) -> Tensor:
    """Quantise-dequantise ``weight`` with a straight-through estimator (gradient = identity)."""
    deq = quantize_groups(weight, bits, group_index).dequantize(weight.dtype)
    return _StraightThrough.apply(weight, deq)


def fake_quantize_activation(x: Tensor, bits: int) -> Tensor:
    """Per-tensor asymmetric fake quantisation with the batch's exact range, straight-through gradient."""
    index = torch.zeros(1, dtype=torch.long, device=x.device)
    deq = quantize_groups(x.detach().reshape(1, -1), bits, index).dequantize(x.dtype).reshape(x.shape)
    return _StraightThrough.apply(x, deq)


class _GroupQuantMixin:
    """Shared settings of the wrappers: weight bits, groups per matrix, heads, activation bits."""

    weight: nn.Parameter
    bits: int | None
    num_groups: int
    heads: int | None

    def group_index(self) -> Tensor:
        """Group of each output row (recomputed: cheap, and keeps checkpoints free of extra buffers)."""
        return row_groups(self.weight.shape[0], self.num_groups, self.heads, self.weight.device)

    def fake_weight(self) -> Tensor:
        """The weight the forward pass uses: fake-quantised, or the original when ``bits`` is None."""
        if self.bits is None:
            return self.weight
        return fake_quantize(self.weight, self.bits, self.group_index())

    def quantized_weight(self) -> QuantizedTensor:
        """Integer codes and per-group ranges of the current weight (for export)."""
        if self.bits is None:
            raise SstkitError("this layer is full precision (bits=None): nothing to quantise")
        return quantize_groups(self.weight, self.bits, self.group_index())


class QuantLinear(_GroupQuantMixin, nn.Module):
    """A fake-quantised ``nn.Linear`` that shares the original's parameters.

    Args:
        linear: the layer to wrap (its ``weight``/``bias`` Parameters are reused, not copied).
        bits: weight bits, or None for full precision.
        num_groups: groups of consecutive output rows per matrix.
        heads: attention heads of this projection (rows are grouped per head first), or None.
        act_bits: bits of the input activations (per-tensor fake quantisation), or None.

    Example:
        >>> layer = QuantLinear(nn.Linear(64, 64), bits=4, num_groups=8, heads=4, act_bits=8)
    """

    def __init__(self, linear: nn.Linear, bits: int | None = 8, num_groups: int = 128, heads: int | None = None,
                 act_bits: int | None = None) -> None:
        super().__init__()
        check_bits(bits), check_bits(act_bits, "act_bits")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.bits, self.num_groups, self.heads, self.act_bits = bits, num_groups, heads, act_bits

    def forward(self, x: Tensor) -> Tensor:
        if self.act_bits is not None:
            x = fake_quantize_activation(x, self.act_bits)
        return F.linear(x, self.fake_weight(), self.bias)

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding the dequantised weight (and the original bias)."""
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.fake_weight())
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"num_groups={self.num_groups}, heads={self.heads}, act_bits={self.act_bits}")


class QuantEmbedding(_GroupQuantMixin, nn.Module):
    """A fake-quantised ``nn.Embedding`` (rows = tokens, grouped consecutively) sharing the original's weight.

    Example:
        >>> emb = QuantEmbedding(nn.Embedding(100, 16), bits=8, num_groups=4)
    """

    def __init__(self, embedding: nn.Embedding, bits: int | None = 8, num_groups: int = 128) -> None:
        super().__init__()
        check_bits(bits)
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim
        self.weight = embedding.weight
        self.padding_idx, self.max_norm = embedding.padding_idx, embedding.max_norm
        self.norm_type, self.scale_grad_by_freq, self.sparse = (embedding.norm_type, embedding.scale_grad_by_freq,
                                                                embedding.sparse)
        self.bits, self.num_groups, self.heads = bits, num_groups, None

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.fake_weight(), self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse)

    def to_embedding(self) -> nn.Embedding:
        """A plain ``nn.Embedding`` holding the dequantised weight."""
        out = nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.fake_weight())
        return out

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, num_groups={self.num_groups}"
