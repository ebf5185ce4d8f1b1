"""Backdoor removal guided by an exposed model: unlearning the recovered trigger, and RNP-style neuron pruning.

1. **Trigger unlearning**: fine-tune the *original* model on D ∪ ⋃_τ {(x ⊕ τ, y) : (x, y) ∈ D}, where each τ is a
   trigger the scan recovered (:mod:`sstkit.functional.backdoor.scan`) inserted at a random position, keeping the
   true labels, so the model learns that τ carries no label. Several triggers matter: BadNets plants several rare
   words, each a trigger on its own, and unlearning only the best one leaves the others working.
2. **Neuron-mask pruning** (RNP, Li et al. 2023, applied as in EBYD): on the *exposed* model (weights frozen) learn
   masks m ∈ [0, 1] on FFN neurons (outputs of each ``intermediate`` module) and attention heads (outputs of each
   ``attention.self`` module) that restore its clean accuracy,

       min_m  (1/|D|) Σ CE(f_{θ_exp, m}(x), y),   m ← clip_[0,1](m − η ∇_m),   m₀ = 1,

   then prune from the *original* model the units in ascending mask value: an FFN neuron by zeroing its row of
   ``intermediate.dense`` (weight and bias), a head by zeroing its value projection rows. Pruned weights are plain
   dense weights; the model loads without sstkit.

Example:
    >>> unlearn_trigger(original, defense_batches, triggers=[[tok.convert_tokens_to_ids("cf")]])
    >>> masks = NeuronMasks(exposed); learn_masks(exposed, masks, defense_batches)
    >>> prune_units(original, masks.lowest(threshold=0.2))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.functional.backdoor.common import Batch, LogitsFn, default_logits, insert_tokens, model_device, to_device

UNITS = ("ffn", "head")


def ce_epochs(model: nn.Module, batches: list[Batch], optimizer: torch.optim.Optimizer, epochs: int, seed: int,
              logits_fn: LogitsFn = default_logits, before_step: Callable[[], Any] | None = None,
              after_step: Callable[[], Any] | None = None) -> list[float]:
    """Minimises clean CE over ``batches`` in a seeded shuffled order for ``epochs``; the mean loss of each epoch.

    The loop both removal methods share: ``before_step`` runs between backward and the optimizer step (gradient
    clipping), ``after_step`` after it (projecting mask values back to [0, 1]). The caller sets train/eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    device, history = model_device(model), []
    for _ in range(epochs):
        total = 0.0
        for index in torch.randperm(len(batches), generator=generator).tolist():
            batch = to_device(batches[index], device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(logits_fn(model, batch).float(), batch["labels"])
            loss.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach())
        history.append(total / max(1, len(batches)))
    return history


def unlearn_trigger(model: nn.Module, batches: list[Batch], triggers: list[list[int]], lr: float = 2e-5,
                    epochs: int = 3, weight_decay: float = 0.01, max_grad_norm: float | None = 1.0, seed: int = 0,
                    pad_id: int = 0, logits_fn: LogitsFn = default_logits) -> list[float]:
    """Fine-tunes ``model`` in place on the defense set plus one copy per trigger with it inserted (true labels).

    Args:
        triggers: token-id blocks, one per recovered trigger (a single-token trigger is ``[id]``).

    Returns:
        the mean training loss of each epoch.
    """
    if not triggers or not all(triggers):
        raise SstkitError(f"unlearn_trigger needs recovered triggers (non-empty token-id lists), got {triggers!r}")
    if epochs < 1 or lr <= 0:
        raise SstkitError(f"unlearn_trigger needs epochs >= 1 and lr > 0, got {epochs}, {lr}")
    data = list(batches)
    for offset, trigger in enumerate(triggers):  # each copy draws its own insertion positions
        data += insert_tokens(batches, list(trigger), seed + offset, pad_id)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    model.train()
    clip = (lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)) if max_grad_norm else None
    try:
        return ce_epochs(model, data, optimizer, epochs, seed, logits_fn, before_step=clip)
    finally:
        model.eval()


@dataclass(frozen=True)
class Unit:
    """One prunable unit: ``kind`` (``ffn`` / ``head``), the module's name, the index within it, its mask value."""

    kind: str
    module: str
    index: int
    value: float


class NeuronMasks(nn.Module):
    """Multiplicative [0, 1] masks on FFN neurons and attention heads of a BERT-type encoder, applied by hooks.

    Args:
        model: the model to mask (masks are created on its device).
        units: which units, a subset of ``ffn`` and ``head``.
    """

    def __init__(self, model: nn.Module, units: tuple[str, ...] | list[str] = UNITS) -> None:
        super().__init__()
        bad = [u for u in units if u not in UNITS]
        if bad or not units:
            raise SstkitError(f"units must be a non-empty subset of {UNITS}, got {list(units)}")
        self.targets: dict[str, tuple[str, nn.Module, int]] = {}
        device = model_device(model)
        for name, module in model.named_modules():
            if "ffn" in units and name.endswith("intermediate") and isinstance(getattr(module, "dense", None), nn.Linear):
                self.targets[name] = ("ffn", module, module.dense.out_features)
            if "head" in units and name.endswith("attention.self") and hasattr(module, "num_attention_heads"):
                self.targets[name] = ("head", module, int(module.num_attention_heads))
        if not self.targets:
            raise SstkitError(f"{type(model).__name__}: no BERT-type `intermediate` or `attention.self` modules to mask")
        self.masks = nn.ParameterDict({
            _key(name): nn.Parameter(torch.ones(size, device=device)) for name, (_, _, size) in self.targets.items()})
        self._handles: list[Any] = []

    def attach(self) -> NeuronMasks:
        """Starts masking the model's forward passes."""
        self.detach()
        for name, (kind, module, _) in self.targets.items():
            self._handles.append(module.register_forward_hook(self._hook(_key(name), kind)))
        return self

    def detach(self) -> None:
        """Stops masking."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @torch.no_grad()
    def clamp_(self) -> None:
        """Projects every mask value back to [0, 1] (after each optimizer step)."""
        for mask in self.masks.values():
            mask.clamp_(0.0, 1.0)

    def _hook(self, key: str, kind: str) -> Any:
        def apply(module: nn.Module, args: Any, out: Any) -> Any:
            mask = self.masks[key]
            if kind == "ffn":
                return out * mask
            hidden = out[0] if isinstance(out, tuple) else out
            shape = hidden.shape
            masked = (hidden.view(*shape[:-1], mask.numel(), -1) * mask[:, None]).view(shape)
            return (masked, *out[1:]) if isinstance(out, tuple) else masked

        return apply

    def units(self) -> list[Unit]:
        """Every unit with its current mask value, in ascending mask value."""
        out = [Unit(kind, name, i, float(v)) for name, (kind, _, _) in self.targets.items()
               for i, v in enumerate(self.masks[_key(name)].detach().cpu().tolist())]
        return sorted(out, key=lambda u: (u.value, u.kind, u.module, u.index))

    def lowest(self, threshold: float | None = 0.2, count: int | None = None, kind: str | None = None) -> list[Unit]:
        """Units to prune: mask value below ``threshold`` and/or the ``count`` lowest (of ``kind`` if given)."""
        units = [u for u in self.units() if kind is None or u.kind == kind]
        if threshold is not None:
            units = [u for u in units if u.value < threshold]
        return units[:count] if count is not None else units


def _key(name: str) -> str:
    return name.replace(".", "__")


def learn_masks(model: nn.Module, masks: NeuronMasks, batches: list[Batch], lr: float = 0.2, epochs: int = 5,
                momentum: float = 0.9, seed: int = 0, logits_fn: LogitsFn = default_logits) -> list[float]:
    """Learns ``masks`` on the frozen ``model`` to minimise clean CE on ``batches`` (RNP's recovering step).

    Returns:
        the mean loss of each epoch.
    """
    frozen = {p: p.requires_grad for p in model.parameters()}
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.SGD(masks.parameters(), lr=lr, momentum=momentum)
    masks.attach()
    model.eval()  # no dropout: the masks should explain the deterministic clean function
    try:
        return ce_epochs(model, batches, optimizer, epochs, seed, logits_fn, after_step=masks.clamp_)
    finally:
        masks.detach()
        for p, flag in frozen.items():
            p.requires_grad_(flag)


@torch.no_grad()
def prune_units(model: nn.Module, units: list[Unit]) -> int:
    """Zeroes the given units in ``model`` (names as found by :class:`NeuronMasks` on a same-architecture model).

    Returns:
        the number of units pruned.
    """
    modules = dict(model.named_modules())
    for unit in units:
        module = modules.get(unit.module)
        if module is None:
            raise SstkitError(f"prune_units: the model has no module {unit.module!r}")
        if unit.kind == "ffn":
            rows: Tensor | slice = torch.tensor([unit.index])
            linear = module.dense
        else:
            size = module.attention_head_size
            rows, linear = slice(unit.index * size, (unit.index + 1) * size), module.value
        linear.weight[rows] = 0.0
        if linear.bias is not None:
            linear.bias[rows] = 0.0
    return len(units)
