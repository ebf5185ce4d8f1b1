"""FreeLB: "free" large-batch adversarial training on the word embeddings (Zhu et al., ICLR 2020).

With word embeddings X, a loss L(θ, X + δ) and K ascent steps, one optimizer step uses

    δ_0 ~ U(-1, 1)·mask · ε_0 / sqrt(n_tokens · d)                    (ε_0 = init_mag; 0 gives δ_0 = 0)
    g_θ = Σ_{k<K} ∇_θ L(θ, X + δ_k) / K                              (parameter gradients accumulate)
    δ_{k+1} = Π_{‖δ‖ ≤ ε}( δ_k + α · ∇_δ L / ‖∇_δ L‖ )                (per-example L2 norm, α = adv_lr, ε = max_norm)

All K forward passes use the same dropout mask (the RNG state is restored before each), as the paper's analysis
assumes; δ lives in fp32 whatever the model's precision. Only the last pass's loss is returned, to be
backpropagated by the caller (Lightning), so that the caller's gradient synchronisation, scaling and accumulation
apply once per optimizer step; the earlier K-1 passes call ``backward`` here.

Example (a plain PyTorch loop)::

    perturb = EmbeddingPerturbation.attach(model)
    loss = freelb_loss(lambda: F.cross_entropy(model(ids, mask), y), perturb, mask, steps=2)
    loss.backward(); optimizer.step(); optimizer.zero_grad()
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.functional.embedding_noise import EmbeddingPerturbation, per_example_norm, project_to_ball, token_mask


@contextmanager
def same_dropout(device: torch.device) -> Iterator[Callable[[], None]]:
    """Yields ``replay()``, which rewinds the global RNG (CPU and the CUDA device) to the block's start."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def replay() -> None:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)

    yield replay


def init_delta(attention_mask: Tensor, dim: int, init_mag: float) -> Tensor:
    """δ_0 in fp32: zeros for ``init_mag == 0``, else uniform noise of per-example L2 norm about ``init_mag``."""
    mask = token_mask(attention_mask)
    shape = (*attention_mask.shape, dim)
    if init_mag <= 0:
        return torch.zeros(shape, device=attention_mask.device)
    delta = torch.empty(shape, device=attention_mask.device).uniform_(-1, 1) * mask
    tokens = mask.sum(dim=(1, 2)).clamp(min=1.0)
    return delta * (init_mag / torch.sqrt(tokens * dim)).view(-1, 1, 1)


def freelb_loss(
    loss_of: Callable[[], Tensor],
    perturb: EmbeddingPerturbation,
    attention_mask: Tensor,
    steps: int = 2,
    adv_lr: float = 0.1,
    init_mag: float = 0.1,
    max_norm: float = 0.0,
    backward: Callable[[Tensor], None] = Tensor.backward,
) -> Tensor:
    """Runs FreeLB's K passes; returns the last pass's loss/K (plus the earlier ones, detached, for the value).

    Args:
        loss_of: the training loss of the batch (called once per ascent step, inside the perturbation).
        perturb: the word-embedding hook of the model (:meth:`EmbeddingPerturbation.attach`).
        attention_mask: (batch, length) mask of real tokens; padding is never perturbed.
        steps: K, the number of ascent steps (K = 1 with ``init_mag = 0`` is plain fine-tuning).
        adv_lr: α, the ascent step on δ.
        init_mag: ε_0, the norm of the random initial δ.
        max_norm: ε, the bound on each example's ‖δ‖ (0: unbounded).
        backward: how to backpropagate the first K-1 losses (e.g. through a gradient scaler).

    Returns:
        A scalar whose gradient is the K-th pass's share; its value is the mean adversarial loss.
    """
    delta = init_delta(attention_mask, perturb.dim, init_mag)
    mask = token_mask(attention_mask)
    earlier = torch.zeros((), device=attention_mask.device)
    with same_dropout(attention_mask.device) as replay:
        for k in range(steps):
            if k > 0:
                replay()
            delta.requires_grad_()
            with perturb.adding(delta):
                loss = loss_of() / steps
            if k == steps - 1:
                return loss + earlier
            backward(loss)
            earlier = earlier + loss.detach()
            if delta.grad is None:
                raise SstkitError("FreeLB: the perturbation never reached the word embeddings (the forward pass did "
                                  "not call the table that get_input_embeddings() returns)")
            grad = delta.grad.detach().float()
            # δ is a leaf of fp32; its update is not part of any graph.
            delta = project_to_ball((delta.detach() + adv_lr * grad / per_example_norm(grad)) * mask, max_norm)
    raise ValueError(f"FreeLB needs steps >= 1, got {steps}")  # unreachable for steps >= 1


def check_freelb_args(steps: int, adv_lr: float, init_mag: float, max_norm: float) -> None:
    """Raises ValueError naming the first bad argument."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for name, value in (("adv_lr", adv_lr), ("init_mag", init_mag), ("max_norm", max_norm)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
