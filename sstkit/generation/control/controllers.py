r"""Decoding-time attribute controllers behind one interface, and the batched decoding loop they share.

Each controller turns the context (prompt embeddings ``P`` and the tokens ``x`` generated so far) into next-token
logits; :func:`controlled_generate` samples from them. With ``p(· | P ⊕ x)`` the frozen LM's next-token
distribution, ``p_D(a | h)`` the attribute discriminator on mean hidden states (:class:`AttributeHead`), and
``h̃`` the hidden states of the context followed by the expected next-token embedding (PPLM's device):

* ``none``    samples from ``p(· | P ⊕ x)``.
* ``prompt``  prepends a fixed attribute text ``c_a`` (hard prompt): ``p(· | c_a ⊕ P ⊕ x)``.
* ``pplm``    adds a perturbation Δ to one block's output hidden states H (all positions), takes ``steps``
  normalised gradient steps ``Δ ← Δ − α ‖H‖ ∇_Δ L / ‖∇_Δ L‖`` from Δ = 0 at every token, then samples from the
  perturbed LM.
* ``ppc``     (Wang & Sha, 2024) treats the prompt's embeddings as a soft prompt ``P′`` and takes the same kind
  of steps on it (``P′ ← P′ − α ‖P‖ ∇_P′ L / ‖∇_P′ L‖``), then samples from ``p(· | P′ ⊕ x)``. ``P′`` carries over
  to the next token (the prompt is adjusted dynamically along the generation); ``reset=True`` restarts it from
  ``P`` at every token. α is relative to the norm of the unsteered quantity, so one value suits any model.

Both steered controllers minimise, per sequence,

    L = − log p_D(a | h̃(P′ ⊕ x)) + λ · KL( p(· | P ⊕ x) ‖ p(· | P′ ⊕ x) )

so with step size α = 0 they decode exactly as ``none`` does (same seed, token for token), and the KL term is
0 at ``P′ = P``. Every step works on the whole batch; steps are normalised per sequence, so rows never interact.

Example:
    >>> ppc = PPCController(head, step_size=0.1, steps=3, kl_weight=0.1)  # doctest: +SKIP
    >>> out = controlled_generate(lm, ["the movie"], ppc, [1], DecodeSettings(max_new_tokens=20))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.generation.control.discriminator import AttributeHead
from sstkit.generation.control.steerable import SteerableLM, sample_next


@dataclass(frozen=True)
class DecodeSettings:
    """Sampling settings shared by every controller (temperature 0 decodes greedily)."""

    max_new_tokens: int = 20
    temperature: float = 1.0
    top_k: int = 0
    seed: int = 0
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.temperature < 0 or self.top_k < 0:
            raise SstkitError(f"decode settings: need max_new_tokens, batch_size >= 1 and temperature, top_k >= 0, "
                              f"got {self}")


@dataclass
class Context:
    """One batch's decoding state: prompt embeddings (B, Tp, d) and mask, generated ids (B, t), attribute labels."""

    prompt: Tensor
    mask: Tensor
    labels: Tensor
    generated: Tensor
    extra: dict[str, Any] = field(default_factory=dict)

    def full(self, lm: SteerableLM, prompt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Embeddings and mask of ``prompt ⊕ generated`` (the stored prompt unless one is given)."""
        prompt = self.prompt if prompt is None else prompt
        embeds = torch.cat([prompt, lm.embed(self.generated).to(prompt.dtype)], 1)
        mask = torch.cat([self.mask, self.mask.new_ones(self.generated.shape)], 1)
        return embeds, mask


def next_token_kl(reference_logits: Tensor, logits: Tensor) -> Tensor:
    """KL(softmax(reference) ‖ softmax(logits)) per row, (B,); exactly 0 where the logits are equal."""
    ref = F.log_softmax(reference_logits.float(), -1)
    new = F.log_softmax(logits.float(), -1)
    return (ref.exp() * (ref - new)).sum(-1)


class Controller:
    """Base: ``start`` builds a batch's :class:`Context`; ``next_logits`` gives (B, V) logits for the next token."""

    name = "none"

    def start(self, lm: SteerableLM, prompts: Sequence[str], labels: Tensor) -> Context:
        ids, mask = lm.encode(prompts)
        empty = ids.new_zeros((ids.shape[0], 0))
        return Context(lm.embed(ids).detach(), mask, labels, empty)

    @torch.no_grad()
    def next_logits(self, lm: SteerableLM, ctx: Context) -> Tensor:
        return lm(*ctx.full(lm), last_only=True).logits[:, -1]


class PromptController(Controller):
    """Prepends a fixed text per attribute (``{label: text}``), e.g. ``{1: "a wonderful film . ", 0: ...}``."""

    name = "prompt"

    def __init__(self, prompts: Mapping[int, str]) -> None:
        self.prompts = dict(prompts)

    def start(self, lm: SteerableLM, prompts: Sequence[str], labels: Tensor) -> Context:
        missing = sorted({int(x) for x in labels} - set(self.prompts))
        if missing:
            raise SstkitError(f"prompt controller: no attribute prompt for label(s) {missing}")
        return super().start(lm, [self.prompts[int(a)] + p for a, p in zip(labels, prompts, strict=True)], labels)


class _GradientController(Controller):
    """Shared mechanics of PPLM-style and PPC steering: the objective and normalised gradient steps."""

    def __init__(self, head: AttributeHead, step_size: float = 0.1, steps: int = 3, kl_weight: float = 0.1) -> None:
        if step_size < 0 or steps < 0 or kl_weight < 0:
            raise SstkitError(f"{self.name}: step_size, steps and kl_weight must be >= 0, got "
                              f"{step_size}, {steps}, {kl_weight}")
        self.head, self.step_size, self.steps, self.kl_weight = head, step_size, steps, kl_weight

    def objective(self, lm: SteerableLM, embeds: Tensor, mask: Tensor, labels: Tensor,
                  reference: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per row: ``−log p_D(a | h̃)``, the KL term to ``reference`` logits, and the next-token logits."""
        logits = lm(embeds, mask, last_only=True).logits[:, -1]
        hidden, hidden_mask = lm.expected_hidden(embeds, mask, logits)
        attribute = -self.head(hidden, hidden_mask).gather(1, labels[:, None])[:, 0]
        return attribute, next_token_kl(reference, logits), logits

    def step(self, variable: Tensor, loss: Tensor, row_mask: Tensor, scale: Tensor) -> Tensor:
        """``variable − α · s · ∇/‖∇‖`` per row: α is relative to the scale ``s`` (B,) of the unsteered quantity,
        so one step size suits any model's embedding or hidden-state norms; rows never interact."""
        (grad,) = torch.autograd.grad(loss.sum(), variable)
        grad = grad * row_mask
        shape = (-1, *[1] * (grad.dim() - 1))
        norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(shape)
        return (variable - self.step_size * scale.view(shape) * grad / norm).detach()


class PPCController(_GradientController):
    """PPC: gradient steps on the soft prompt ``P′`` (the prompt's embeddings), KL-anchored to ``p(· | P ⊕ x)``."""

    name = "ppc"

    def __init__(self, head: AttributeHead, step_size: float = 0.1, steps: int = 3, kl_weight: float = 0.1,
                 reset: bool = False) -> None:
        super().__init__(head, step_size, steps, kl_weight)
        self.reset = reset

    def next_logits(self, lm: SteerableLM, ctx: Context) -> Tensor:
        with torch.no_grad():
            reference = lm(*ctx.full(lm), last_only=True).logits[:, -1]
        soft = ctx.prompt if self.reset else ctx.extra.get("soft", ctx.prompt)
        prompt_rows = ctx.mask[..., None].to(soft.dtype)  # padding positions are not part of the prompt
        scale = (ctx.prompt * prompt_rows).flatten(1).norm(dim=1)
        for _ in range(self.steps):
            soft = soft.detach().requires_grad_(True)
            with torch.enable_grad():
                attribute, kl, _ = self.objective(lm, *ctx.full(lm, soft), ctx.labels, reference)
                soft = self.step(soft, attribute + self.kl_weight * kl, prompt_rows, scale)
        ctx.extra["soft"] = soft.detach()
        with torch.no_grad():
            return lm(*ctx.full(lm, soft.detach()), last_only=True).logits[:, -1]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a causal LM (``model.decoder.layers`` in OPT, ``model.layers`` in Llama)."""
    found = [m for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and n.rsplit(".", 1)[-1] in
             ("layers", "h", "blocks") and len(m)]
    if not found:
        raise SstkitError(f"{type(model).__name__}: no list of transformer blocks (layers/h/blocks) found")
    return found[0]


class PPLMController(_GradientController):
    """PPLM-style: a perturbation Δ on block ``layer``'s output hidden states, from 0 at every token."""

    name = "pplm"

    def __init__(self, head: AttributeHead, step_size: float = 0.1, steps: int = 3, kl_weight: float = 0.1,
                 layer: int = -1) -> None:
        super().__init__(head, step_size, steps, kl_weight)
        self.layer = layer
        self._delta: Tensor | None = None
        self._unsteered: Tensor | None = None

    def _hook(self, module: nn.Module, inputs: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if self._delta is None:
            self._unsteered = hidden.detach()
            return output
        # The expected-token pass sees one more position than Δ covers; it gets no perturbation there.
        delta = F.pad(self._delta, (0, 0, 0, hidden.shape[1] - self._delta.shape[1]))
        hidden = hidden + delta.to(hidden.dtype)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def next_logits(self, lm: SteerableLM, ctx: Context) -> Tensor:
        embeds, mask = ctx.full(lm)
        handle = decoder_layers(lm.model)[self.layer].register_forward_hook(self._hook)
        try:
            self._delta = None
            with torch.no_grad():
                reference = lm(embeds, mask, last_only=True).logits[:, -1]
            rows = mask[..., None].to(embeds.dtype)
            assert self._unsteered is not None
            scale = (self._unsteered[:, :mask.shape[1]] * rows).flatten(1).norm(dim=1)
            delta = torch.zeros_like(self._unsteered)
            for _ in range(self.steps):
                self._delta = delta.requires_grad_(True)
                with torch.enable_grad():
                    attribute, kl, _ = self.objective(lm, embeds, mask, ctx.labels, reference)
                    delta = self.step(self._delta, attribute + self.kl_weight * kl, rows, scale)
            self._delta = delta.detach()
            with torch.no_grad():
                return lm(embeds, mask, last_only=True).logits[:, -1]
        finally:
            self._delta = self._unsteered = None
            handle.remove()


@dataclass
class ControlledOutput:
    """Generated continuations (text and ids per row), their prompts and labels, and the decoding speed
    (``seconds`` is the process's CPU time, which on a shared machine measures the work, not the queue)."""

    prompts: list[str]
    labels: list[int]
    texts: list[str]
    token_ids: list[list[int]]
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return sum(len(t) for t in self.token_ids) / max(self.seconds, 1e-9)


def controlled_generate(lm: SteerableLM, prompts: Sequence[str], controller: Controller, labels: Sequence[int],
                        settings: DecodeSettings | None = None) -> ControlledOutput:
    """Decodes ``settings.max_new_tokens`` tokens per prompt under ``controller``, ``batch_size`` rows at a time.

    Sampling is seeded per batch position (``seed + first row``), and controllers draw no random numbers, so two
    controllers that produce the same logits produce the same tokens.
    """
    settings = settings or DecodeSettings()
    if len(prompts) != len(labels):
        raise SstkitError(f"controlled_generate: {len(prompts)} prompts but {len(labels)} attribute labels")
    texts: list[str] = []
    ids_out: list[list[int]] = []
    began = time.process_time()
    for start in range(0, len(prompts), settings.batch_size):
        chunk = list(prompts[start:start + settings.batch_size])
        label_tensor = torch.tensor([int(x) for x in labels[start:start + settings.batch_size]], device=lm.device)
        generator = torch.Generator(device=lm.device).manual_seed(settings.seed + start)
        ctx = controller.start(lm, chunk, label_tensor)
        for _ in range(settings.max_new_tokens):
            token = sample_next(controller.next_logits(lm, ctx), settings.temperature, settings.top_k, generator)
            ctx.generated = torch.cat([ctx.generated, token[:, None]], 1)
        ids_out += ctx.generated.tolist()
        texts += lm.decode(ctx.generated)
    return ControlledOutput(list(prompts), [int(x) for x in labels], texts, ids_out, time.process_time() - began)
