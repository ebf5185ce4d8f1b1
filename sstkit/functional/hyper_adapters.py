r"""Hypernetwork adapters (HyperFormer / FM3) on any BERT-family encoder, without Lightning.

The surgery puts an adapter after each layer's attention sublayer (position 0) and FFN sublayer (position 1):
the sublayer's output projection (``attention.output.dense`` / ``output.dense`` in BERT, RoBERTa, ELECTRA,
MiniLM; ``attention.out_lin`` / ``ffn.lin2`` in DistilBERT; ``self_attn.out_proj`` / ``mlp.fc2`` in the towers of
CLIP-type vision-language models, one tower at a time) is wrapped by
:class:`sstkit.nn.hyper_adapter.AdaptedSublayer`, which applies

    a(x) = x + W_up · act(W_down · LN(x) + b_down) + b_up

before the sublayer's dropout-residual-LayerNorm. All weights come from one bank registered on the model as
``adapter_bank``: a task-conditioned hypernetwork (``kind="hyper"``: ``W = G(MLP(z_t, e_l, e_p[, e_g]))``, see
:mod:`sstkit.nn.hyper_adapter` for the equations) or one weight set per task (``kind="per_task"``, the plain-adapter
baseline). ``G_up`` / ``W_up`` start at zero, so the model computes exactly what it did before the surgery.

Example:
    >>> from transformers import BertConfig, BertModel
    >>> encoder = BertModel(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
    ...                                intermediate_size=64))
    >>> bank = apply_hyper_adapters(encoder, num_tasks=3, bottleneck=4)
    >>> sorted(adapter_slots(encoder))[:1]
    ['encoder.layer.0.attention.output.dense']
    >>> set_condition(encoder, torch.tensor([2]))  # the next forward pass is for task 2
    1
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable

import torch
from torch import nn

from sstkit.functional.surgery import name_matches, replace_module
from sstkit.nn.hyper_adapter import (
    AdaptedSublayer,
    AdapterBank,
    HyperAdapterNetwork,
    PerTaskAdapters,
    set_condition,
)

__all__ = ["BANK_ATTR", "KINDS", "SUBLAYER_PATTERNS", "adapter_slots", "apply_hyper_adapters", "freeze_for_adapters",
           "parameters_per_task", "set_condition", "train_only_task"]

BANK_ATTR = "adapter_bank"
KINDS = ("hyper", "per_task")
# (regex with the layer index as group 1, adapter position) — after attention (0) and after the FFN (1).
# CLIP / SigLIP towers: ``encoder.layers.<l>.self_attn.out_proj`` and ``encoder.layers.<l>.mlp.fc2``.
SUBLAYER_PATTERNS: tuple[tuple[str, int], ...] = (
    (r"(?:^|\.)layer\.(\d+)\.attention\.(?:output\.dense|out_lin)$", 0),
    (r"(?:^|\.)layer\.(\d+)\.(?:output\.dense|ffn\.lin2)$", 1),
    (r"(?:^|\.)encoder\.layers\.(\d+)\.self_attn\.out_proj$", 0),
    (r"(?:^|\.)encoder\.layers\.(\d+)\.mlp\.fc2$", 1),
)


def _sublayers(model: nn.Module) -> list[tuple[str, nn.Module, int, int]]:
    found = []
    for name, module in model.named_modules():
        if isinstance(module, AdaptedSublayer) or not isinstance(module, nn.Linear):
            continue
        for pattern, position in SUBLAYER_PATTERNS:
            match = re.search(pattern, name)
            if match:
                found.append((name, module, int(match.group(1)), position))
                break
    return found


def adapter_slots(model: nn.Module) -> dict[str, AdaptedSublayer]:
    """Every adapter slot of ``model`` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedSublayer)}


def apply_hyper_adapters(model: nn.Module, num_tasks: int = 1, kind: str = "hyper", bottleneck: int = 16,
                         num_languages: int = 0, task_dim: int = 64, hyper_dim: int = 32,
                         activation: str = "relu", method: str = "hyper_adapters") -> AdapterBank:  # fmt: skip
    """Adds adapters after every attention and FFN sublayer of ``model``'s encoder layers, in place; idempotent.

    Args:
        model: a BERT-family encoder, or a module holding one (a Lightning model).
        num_tasks: tasks the bank serves (task ids ``0 … num_tasks-1``).
        kind: ``hyper`` (one hypernetwork) or ``per_task`` (plain adapters, one set per task).
        bottleneck: ``r``.
        num_languages: rows of the language embedding (``hyper`` only; 0: none).
        task_dim, hyper_dim: widths of the source embeddings and of the projected embedding ``h`` (``hyper``).
        activation: the adapter's nonlinearity.
        method: name used in warnings.

    Returns:
        The bank (registered as ``model.adapter_bank``; an existing one is reused on a second call).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    bank = getattr(model, BANK_ATTR, None)
    found = _sublayers(model)
    if bank is None:
        if not found:
            warnings.warn(f"{method}: no attention / FFN output projection matched in {type(model).__name__} "
                          f"(looked for {[p for p, _ in SUBLAYER_PATTERNS]}); nothing was adapted", stacklevel=2)  # fmt: skip
            return None  # type: ignore[return-value]
        hidden = found[0][1].out_features
        if any(m.out_features != hidden for _, m, _, _ in found):
            # e.g. a whole CLIP model: its image and text towers differ in width and share layer indices.
            raise ValueError(f"{method}: the matched sublayers differ in width ({sorted({m.out_features for _, m, _, _ in found})}); "
                             "apply the adapters to one encoder (for a vision-language model, its text tower)")  # fmt: skip
        layers = max(layer for _, _, layer, _ in found) + 1
        device = found[0][1].weight.device
        if kind == "hyper":
            bank = HyperAdapterNetwork(num_tasks, hidden, layers, bottleneck, num_languages=num_languages,
                                       task_dim=task_dim, hyper_dim=hyper_dim, activation=activation)  # fmt: skip
        else:
            if num_languages:
                raise ValueError("per_task adapters have no language embedding; use kind='hyper' or num_languages=0")
            bank = PerTaskAdapters(num_tasks, hidden, layers, bottleneck, activation=activation)
        setattr(model, BANK_ATTR, bank.to(device))
    for name, module, layer, position in found:
        replace_module(model, name, AdaptedSublayer(module, bank, layer, position))
    return bank


def freeze_for_adapters(model: nn.Module, trainable: str | Iterable[str] = ()) -> list[str]:
    """Freezes everything except the adapter bank and parameters matching ``trainable`` (e.g. heads).

    Returns:
        The names of the trainable parameters.
    """
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(f"{BANK_ATTR}.") or bool(trainable and name_matches(name, trainable)))
    return [name for name, p in model.named_parameters() if p.requires_grad]


def parameters_per_task(bank: AdapterBank) -> dict[str, int]:
    """What one more task costs and what all tasks share, in numbers of parameters (heads not included).

    Example:
        >>> parameters_per_task(HyperAdapterNetwork(4, 32, 2, 4, task_dim=8))["per_task"]
        8
    """
    total = sum(p.numel() for p in bank.parameters())
    if isinstance(bank, HyperAdapterNetwork):
        per_task = bank.task_dim
    else:
        per_task = total // bank.num_tasks
    return {"per_task": per_task, "shared": total - per_task * bank.num_tasks, "total": total}


def train_only_task(bank: HyperAdapterNetwork, task: int) -> torch.utils.hooks.RemovableHandle:
    """Few-shot transfer: of the whole bank only task ``task``'s embedding ``z_t`` trains.

    Freezes every other bank parameter and masks the gradient of the other rows of ``z``; use an optimizer
    without weight decay on ``bank.task_embeddings`` (decoupled decay would still shrink the masked rows).

    Returns:
        The gradient hook's handle (``.remove()`` to train every row again).
    """
    if not isinstance(bank, HyperAdapterNetwork):
        raise ValueError(f"only a HyperAdapterNetwork has task embeddings, got {type(bank).__name__}")
    if not 0 <= task < bank.num_tasks:
        raise ValueError(f"task must lie in [0, {bank.num_tasks}), got {task}")
    for p in bank.parameters():
        p.requires_grad_(False)
    bank.task_embeddings.requires_grad_(True)
    mask = torch.zeros(bank.num_tasks, 1, device=bank.task_embeddings.device)
    mask[task] = 1.0
    return bank.task_embeddings.register_hook(lambda grad: grad * mask)
