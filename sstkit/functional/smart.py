"""SMART: smoothness-inducing adversarial regularisation (Jiang et al., ACL 2020; mt-dnn's SmartPerturbation).

With clean logits f = f(x; θ), word embeddings X and symmetric KL ℓ_s(p, q) = KL(p‖q) + KL(q‖p):

    δ_0 ~ N(0, σ²)                                        (σ² = noise_var, on real tokens only)
    g   = ∇_δ KL( softmax(f(X + δ_0)) ‖ softmax(f).detach() )
    δ   = clip_{[-ε, ε]}( δ_0 + η · g / ‖g‖_∞ )          (per-token ∞-norm, η = step_size, ε = epsilon)
    R_s = ℓ_s( f, f(X + δ) )                               (each direction's target detached, as mt-dnn)
    loss = L(θ) + λ_s · R_s  [+ μ · ℓ_s( f, f(x; θ̃) ) with θ̃ an EMA teacher: the Bregman proximal point term]

Example::

    perturb = EmbeddingPerturbation.attach(model)
    reg = smart_regulariser(lambda: model(ids, mask), logits, perturb, mask)
    (F.cross_entropy(logits, y) + 1.0 * reg).backward()
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.functional.embedding_noise import EmbeddingPerturbation, token_mask


def kl_to(logits: Tensor, target_logits: Tensor) -> Tensor:
    """KL( softmax(target) ‖ softmax(logits) ), mean over the batch; the gradient flows into ``logits`` only."""
    return F.kl_div(F.log_softmax(logits.float(), -1), F.softmax(target_logits.detach().float(), -1),
                    reduction="batchmean")


def symmetric_kl(logits: Tensor, other_logits: Tensor) -> Tensor:
    """ℓ_s = KL(q‖p) + KL(p‖q), each direction backpropagating into its log side (mt-dnn's SymKlCriterion)."""
    return kl_to(logits, other_logits) + kl_to(other_logits, logits)


def smart_regulariser(
    logits_of: Callable[[], Tensor],
    clean_logits: Tensor,
    perturb: EmbeddingPerturbation,
    attention_mask: Tensor,
    noise_var: float = 1e-5,
    step_size: float = 1e-3,
    epsilon: float = 1e-5,
) -> Tensor:
    """R_s: one normalised ascent step on the embedding noise, then the symmetric KL to the clean prediction.

    Args:
        logits_of: the model's logits for the batch (called inside the perturbation, twice).
        clean_logits: the clean logits with their graph (the regulariser backpropagates into them too).
        perturb: the word-embedding hook of the model.
        attention_mask: (batch, length) mask; padding is never perturbed.
        noise_var, step_size, epsilon: σ², η and ε above.
    """
    mask = token_mask(attention_mask)
    delta = torch.randn(*attention_mask.shape, perturb.dim, device=attention_mask.device) * noise_var**0.5 * mask
    delta.requires_grad_()
    with perturb.adding(delta):
        adv = logits_of()
    (grad,) = torch.autograd.grad(kl_to(adv, clean_logits), delta, allow_unused=True)
    if grad is None:
        raise SstkitError("SMART: the perturbation never reached the word embeddings (the forward pass did not call "
                          "the table that get_input_embeddings() returns)")
    scale = grad.abs().amax(-1, keepdim=True).clamp(min=1e-12)
    delta = ((delta.detach() + step_size * grad / scale) * mask).clamp(-epsilon, epsilon)
    with perturb.adding(delta):
        adv = logits_of()
    return symmetric_kl(clean_logits, adv)
