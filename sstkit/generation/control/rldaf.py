r"""RLDAF (Wang & Sha, 2024): reinforcement learning with dynamic adjust feedback, on a small parameter subset.

The controller (PPC) generates; the LM then learns to take the controller's actions itself, so that steering
needs smaller prompt changes and the text stays fluent. For a batch of prompts ``P`` with attributes ``a`` and
continuations ``y = (y_1 … y_N)`` generated under PPC:

    r      = p_D(a | h_ref(P ⊕ y)) − β · NLL_ref(y | P) / N       (reward from the *reference* LM's features,
                                                                     so the policy cannot move the feature space)
    b      = mean of r over the batch                             (the baseline)
    loss   = − (r − b) · Σ_t log π_θ(y_t | P ⊕ y_<t)  +  κ · mean_t KL(π_θ(· | P ⊕ y_<t) ‖ π_ref(· | P ⊕ y_<t))

averaged over the batch. ``π_θ`` is the LM with only a configured subset trainable — ``norms_biases`` (every
LayerNorm/RMSNorm parameter and every bias), ``last_block`` (the last transformer block) or ``lora`` (rank-r LoRA
on every linear of the transformer blocks, through :func:`sstkit.functional.lora.apply_lora`); everything else
stays bit-identical. Our own loop rather than ``trl``: trl's trainers assume on-policy samples from the trained
model and wrap the whole model, while RLDAF's actions come from the controller and only a subset trains.

Example:
    >>> params = select_trainable(model, "norms_biases")  # doctest: +SKIP
    >>> trainer = RLDAF(lm, reference, head, PPCController(head), torch.optim.Adam(params, 1e-4))  # doctest: +SKIP
    >>> trainer.step(prompts, labels, DecodeSettings(max_new_tokens=20))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.generation.control.controllers import Controller, DecodeSettings, controlled_generate, decoder_layers
from sstkit.generation.control.discriminator import AttributeHead
from sstkit.generation.control.steerable import SteerableLM

SUBSETS = ("norms_biases", "last_block", "lora")


def select_trainable(model: nn.Module, subset: str, lora_rank: int = 4, lora_alpha: float = 8.0) -> list[nn.Parameter]:
    """Freezes ``model`` except ``subset`` (see the module docstring) and returns the trainable parameters."""
    if subset not in SUBSETS:
        raise SstkitError(f"RLDAF subset {subset!r}: expected one of {list(SUBSETS)}")
    if subset == "lora":
        from sstkit.functional.lora import apply_lora

        names = [n for n, m in model.named_modules() if m is decoder_layers(model)]
        apply_lora(model, rank=lora_rank, alpha=lora_alpha, patterns=[f"{names[0]}.*"], method="rldaf")
    for param in model.parameters():
        param.requires_grad_(False)
    chosen: dict[int, nn.Parameter] = {}
    if subset == "norms_biases":
        for module in model.modules():
            if "norm" in type(module).__name__.lower():
                chosen.update((id(p), p) for p in module.parameters(recurse=False))
        chosen.update((id(p), p) for n, p in model.named_parameters() if n.endswith(".bias"))
    elif subset == "last_block":
        chosen.update((id(p), p) for p in decoder_layers(model)[-1].parameters())
    else:
        chosen.update((id(p), p) for n, p in model.named_parameters() if "lora_" in n)
    if not chosen:
        raise SstkitError(f"RLDAF subset {subset!r} matched no parameter of {type(model).__name__}")
    for param in chosen.values():
        param.requires_grad_(True)
    return list(chosen.values())


def reinforce_loss(log_probs: Tensor, rewards: Tensor, baseline: Tensor | float) -> Tensor:
    """``− mean((r − b) · log π(action))``: its gradient is the REINFORCE estimate of −∇ E[r]."""
    return -((rewards - baseline).detach() * log_probs).mean()


def reference_kl(logits: Tensor, reference_logits: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked positions of KL(π_θ ‖ π_ref), the full next-token distributions (B, T, V)."""
    logp, logq = F.log_softmax(logits.float(), -1), F.log_softmax(reference_logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class RLDAFStats:
    """What one update saw: mean reward, mean attribute probability, KL to the reference, and the loss."""

    reward: float
    attribute_prob: float
    kl: float
    loss: float


class RLDAF:
    """One REINFORCE update per call on prompts generated under ``controller``.

    Args:
        lm: the policy (its model's trainable subset is what ``optimizer`` updates).
        reference: the frozen reference LM (same tokenizer), for the KL term and the reward's features.
        head: the attribute discriminator (trained on the reference LM's hidden states).
        controller: the decoding-time controller whose actions the policy learns (PPC).
        optimizer: over the trainable subset (see :func:`select_trainable`).
        kl_coef: κ, weight of the KL to the reference LM.
        fluency_weight: β, weight of the per-token NLL under the reference LM in the reward (0 = off).
    """

    def __init__(self, lm: SteerableLM, reference: SteerableLM, head: AttributeHead, controller: Controller,
                 optimizer: torch.optim.Optimizer, kl_coef: float = 0.1, fluency_weight: float = 0.0) -> None:
        self.lm, self.reference, self.head, self.controller = lm, reference, head, controller
        self.optimizer, self.kl_coef, self.fluency_weight = optimizer, kl_coef, fluency_weight

    def _sequences(self, lm: SteerableLM, prompts: Sequence[str], generated: Tensor) -> tuple[Tensor, Tensor, int]:
        ids, mask = lm.encode(prompts)
        full = torch.cat([ids, generated], 1)
        return full, torch.cat([mask, torch.ones_like(generated)], 1), ids.shape[1]

    def step(self, prompts: Sequence[str], labels: Sequence[int], settings: DecodeSettings) -> RLDAFStats:
        # Dropout off throughout: the actions were taken by the deterministic network, the update scores them so.
        self.lm.model.eval()
        out = controlled_generate(self.lm, prompts, self.controller, labels, settings)
        generated = torch.tensor(out.token_ids, device=self.lm.device)
        full, mask, start = self._sequences(self.lm, prompts, generated)
        label_tensor = torch.tensor([int(x) for x in labels], device=self.lm.device)
        with torch.no_grad():
            ref = self.reference(self.reference.embed(full), mask)
            prob = self.head(ref.hidden, mask).gather(1, label_tensor[:, None])[:, 0].exp()
            ref_logp = F.log_softmax(ref.logits[:, start - 1:-1].float(), -1)
            nll = -ref_logp.gather(2, generated[..., None])[..., 0].mean(1)
            rewards = prob - self.fluency_weight * nll
        policy = self.lm(self.lm.embed(full), mask).logits[:, start - 1:-1]
        log_probs = F.log_softmax(policy.float(), -1).gather(2, generated[..., None])[..., 0].sum(1)
        kl = reference_kl(policy, ref.logits[:, start - 1:-1], torch.ones_like(generated, dtype=torch.float))
        loss = reinforce_loss(log_probs, rewards, rewards.mean()) + self.kl_coef * kl
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return RLDAFStats(float(rewards.mean()), float(prob.mean()), float(kl.detach()), float(loss.detach()))
