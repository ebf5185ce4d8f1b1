"""Replaced-token detection (ELECTRA) with unsupervised SimCSE: the objective of Vega v1's continued pretraining.

With a small generator G (a masked LM) and the encoder D being adapted, for a batch of token ids x:

    M        ⊂ real, non-special tokens, each chosen with probability p (= 0.15);  x^m = x with M set to [MASK]
    L_MLM    = CE( G(x^m)_M , x_M )
    x̂_i      ~ softmax(G(x^m)_i) for i ∈ M (sampled, no gradient), x̂_i = x_i elsewhere
    y_i      = 1[x̂_i ≠ x_i]        (a sampled token equal to the original counts as original, as in ELECTRA)
    L_RTD    = BCE( D_head(x̂)_i , y_i ) over real tokens
    L_SimCSE = CE( [cos(z_i, z'_j) / τ]_j , i ),  z, z' two dropout views of the pooled sentence of x (τ = 0.05)
    L        = L_MLM + λ · L_RTD + μ · L_SimCSE                                                   (λ = 50)

Example::

    masked, chosen = mask_for_mlm(ids, mask, special_ids=[101, 102, 0], mask_token_id=103)
    labels = rtd_labels(ids, corrupted, mask)
    loss = simcse_loss(encode(ids, mask), encode(ids, mask), temperature=0.05)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_for_mlm(input_ids: Tensor, attention_mask: Tensor, special_ids: Sequence[int], mask_token_id: int,
                 prob: float = 0.15, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``(masked_ids, chosen)``: a random ``prob`` share of the real, non-special tokens replaced by [MASK]."""
    special = torch.isin(input_ids, torch.as_tensor(list(special_ids), device=input_ids.device, dtype=input_ids.dtype))
    candidates = attention_mask.bool() & ~special
    draw = torch.rand(input_ids.shape, generator=generator, device=input_ids.device if generator is None else "cpu")
    chosen = (draw.to(input_ids.device) < prob) & candidates
    return input_ids.masked_fill(chosen, mask_token_id), chosen


def sample_tokens(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """One token per row of ``logits`` (rows, vocab) drawn from softmax(logits / temperature), without gradient."""
    probs = F.softmax(logits.detach().float() / temperature, dim=-1)
    return torch.multinomial(probs, 1).squeeze(-1)


def rtd_labels(original: Tensor, corrupted: Tensor, attention_mask: Tensor) -> Tensor:
    """1.0 where the token was replaced by a *different* one, 0.0 elsewhere (padding included)."""
    return ((corrupted != original) & attention_mask.bool()).float()


def rtd_loss(scores: Tensor, labels: Tensor, attention_mask: Tensor) -> Tensor:
    """Binary cross-entropy of the per-token replaced scores (batch, length), mean over real tokens."""
    real = attention_mask.bool()
    return F.binary_cross_entropy_with_logits(scores[real].float(), labels[real])


def simcse_loss(z1: Tensor, z2: Tensor, temperature: float = 0.05) -> Tensor:
    """Unsupervised SimCSE InfoNCE: row i of ``z1`` must pick row i of ``z2`` among all rows by cosine / τ."""
    sim = F.cosine_similarity(z1.float().unsqueeze(1), z2.float().unsqueeze(0), dim=-1) / temperature
    return F.cross_entropy(sim, torch.arange(len(z1), device=z1.device))


def mlm_loss(logits: Tensor, original: Tensor, chosen: Tensor) -> Tensor:
    """Cross-entropy of the generator at the masked positions (0 when none was masked)."""
    if not bool(chosen.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[chosen].float(), original[chosen])
