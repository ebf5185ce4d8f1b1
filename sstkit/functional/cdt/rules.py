"""Propagation rules of contextual decomposition for transformers (CD-T, Hsu et al., ICLR 2025).

Every activation ``h`` is carried as a pair ``(β, γ)`` with ``h = β + γ``: β is the part relevant to a chosen set of
inputs (tokens, or attention-head outputs), γ the rest. Each rule maps a pair to a pair whose sum is the true output
of the layer, so completeness holds exactly at every node (γ always takes the remainder ``total − β``):

- linear ``y = W h + b``:      β′ = Wβ + b ⊙ |Wβ| / (|Wβ| + |Wγ| + ε),   γ′ = Wγ + b − (b's share in β′)
- activation σ (linearised):  γ′ = σ(γ),   β′ = σ(β + γ) − σ(γ)
- LayerNorm, with the mean/variance of the *total*:  β′ = (β − mean β) / std(h) ⊙ w + bias ⊙ |β| / (|β| + |γ| + ε)
- attention ``softmax(q kᵀ) v``: the probabilities of the total held fixed (``"total"``, the BERT rule),
  β′ = A v_β; or β-only probabilities (``"beta"``, the circuit rule), β′ = softmax(q_β k_βᵀ) v_β
- residuals add the pairs; after each operation the sign fix gives the total to the larger of β, γ where β ⊙ γ < 0.

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(3, 2)
    >>> beta, gamma = torch.randn(4, 3), torch.randn(4, 3)
    >>> b, g = linear(beta, gamma, lin)
    >>> torch.allclose(b + g, lin(beta + gamma), atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

EPS = 1e-8
ATTENTION_RULES = ("total", "beta")
Pair = tuple[Tensor, Tensor]


def sign_fix(beta: Tensor, gamma: Tensor) -> Pair:
    """Where β and γ have opposite signs, the larger of the two (in magnitude) takes the whole total."""
    total = beta + gamma
    opposite = beta * gamma < 0
    beta_wins = opposite & (beta.abs() >= gamma.abs())
    gamma_wins = opposite & ~beta_wins
    zero = torch.zeros_like(total)
    beta = torch.where(beta_wins, total, torch.where(gamma_wins, zero, beta))
    gamma = torch.where(gamma_wins, total, torch.where(beta_wins, zero, gamma))
    return beta, gamma


def linear_parts(beta: Tensor, gamma: Tensor, weight: Tensor, bias: Tensor | None) -> Pair:
    """``y = h Wᵀ + b`` with the bias split between β and γ in proportion to |Wβ| and |Wγ|."""
    wb, wg = beta @ weight.T, gamma @ weight.T
    if bias is None:
        return wb, wg
    share = bias * (wb.abs() / (wb.abs() + wg.abs() + EPS))
    # γ takes the remainder of the bias so the pair sums to the layer's output exactly, even where both are ~0.
    return wb + share, wg + (bias - share)


def linear(beta: Tensor, gamma: Tensor, module: nn.Linear) -> Pair:
    """:func:`linear_parts` for an ``nn.Linear``."""
    return linear_parts(beta, gamma, module.weight, module.bias)


def activation(beta: Tensor, gamma: Tensor, fn: Callable[[Tensor], Tensor]) -> Pair:
    """Linearised activation: γ′ = σ(γ), β′ = σ(β + γ) − σ(γ)."""
    g = fn(gamma)
    return fn(beta + gamma) - g, g


def shared(x: Tensor, group: int) -> Tensor:
    """The first row of each block of ``group`` consecutive rows: the one total that the sets of an example share."""
    return x if group == 1 else x[::group]


def spread(x: Tensor, group: int) -> Tensor:
    """Inverse of :func:`shared`: each row repeated ``group`` times."""
    return x if group == 1 else x.repeat_interleave(group, dim=0)


def layer_norm(beta: Tensor, gamma: Tensor, module: nn.LayerNorm, group: int = 1) -> Pair:
    """LayerNorm over the last axis with the scale (mean, variance) of the total; the bias split by |β|, |γ|.

    ``group``: consecutive rows that share one total (the sets of one example), computed once per group.
    """
    total = shared(beta + gamma, group)
    var = total.var(-1, unbiased=False, keepdim=True)
    scale = spread(torch.rsqrt(var + module.eps), group)
    b = (beta - beta.mean(-1, keepdim=True)) * scale
    if module.weight is not None:
        b = b * module.weight
    if module.bias is not None:
        b = b + module.bias * (beta.abs() / (beta.abs() + gamma.abs() + EPS))
    return b, spread(module(total), group) - b


def split_heads(x: Tensor, heads: int) -> Tensor:
    """(S, T, H·d) -> (S, H, T, d)."""
    s, t, _ = x.shape
    return x.view(s, t, heads, -1).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(S, H, T, d) -> (S, T, H·d)."""
    s, h, t, d = x.shape
    return x.transpose(1, 2).reshape(s, t, h * d)


def attention_heads(
    beta: Tensor,
    gamma: Tensor,
    q: nn.Linear,
    k: nn.Linear,
    v: nn.Linear,
    heads: int,
    scaling: float,
    mask: Tensor | None,
    rule: str = "total",
    group: int = 1,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-head attention context ``softmax(q kᵀ · scaling + mask) v`` as a pair, shape (S, H, T, d) each.

    ``mask`` is additive, broadcastable to (S, H, T, T) (0 where attended, a large negative number elsewhere).
    ``group``: consecutive rows that share one total (the sets of one example); its probabilities are computed
    once per group. Returns (β, γ, probabilities of the total, one row per group).
    """
    if rule not in ATTENTION_RULES:
        raise ValueError(f"attention rule must be one of {ATTENTION_RULES}, got {rule!r}")
    total = shared(beta + gamma, group)
    probs = _probs(q(total), k(total), heads, scaling, shared(mask, group) if mask is not None and
                   mask.shape[0] > 1 else mask)
    vb, vg = linear(beta, gamma, v)
    vb, vg = split_heads(vb, heads), split_heads(vg, heads)
    if rule == "total":
        return _mix(probs, vb, group), _mix(probs, vg, group), probs
    qb, _ = linear(beta, gamma, q)
    kb, _ = linear(beta, gamma, k)
    ctx_b = _probs(qb, kb, heads, scaling, mask) @ vb
    return ctx_b, _mix(probs, vb + vg, group) - ctx_b, probs


def _mix(probs: Tensor, values: Tensor, group: int) -> Tensor:
    """``probs @ values`` with one probability row per group of ``group`` value rows."""
    if group == 1:
        return probs @ values
    g, h, t, d = values.shape
    return (probs.unsqueeze(1) @ values.view(g // group, group, h, t, d)).view(g, h, t, d)


def _probs(query: Tensor, key: Tensor, heads: int, scaling: float, mask: Tensor | None) -> Tensor:
    scores = split_heads(query, heads) @ split_heads(key, heads).transpose(-1, -2) * scaling
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores.float(), dim=-1).to(query.dtype)
