r"""LoRA and ReLoRA cores on top of peft's ``LoraLayer``, usable on any ``nn.Module`` (no Lightning needed).

LoRA (Hu et al., 2021) keeps a selected linear's weight ``W0`` frozen and trains a low-rank update:

    y = x W0ᵀ + b + (alpha / r) · dropout(x) Aᵀ Bᵀ,     A: r×in (Kaiming-uniform), B: out×r (zeros at start)

so at step 0 the model computes exactly what it did before. ReLoRA (Lialin et al., 2023) restarts LoRA every
``merge_every`` steps: ``W0 ← W0 + (alpha/r)·B A``, ``A`` re-drawn Kaiming-uniform, ``B ← 0``, and the Adam state of
``A`` and ``B`` zeroed — so a sequence of rank-``r`` updates can add up to a high-rank one (:func:`relora_restart`).

Layers are chosen with the shared selection helper (:func:`sstkit.functional.surgery.select_linears`) and the
resolved *exact* names are handed to peft's :func:`peft.inject_adapter_in_model`. Injection (rather than
``get_peft_model``) edits the model in place and keeps every key outside the wrapped layers unchanged, so a
Lightning module keeps its own attributes and a checkpoint restores into a model that went through the same
``setup`` — no wrapper class and no key prefix to strip.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> layers = apply_lora(model, rank=2, alpha=4, patterns=["0"])
    >>> list(layers), model[0].base_layer.weight.requires_grad
    (['0'], False)
    >>> merged = merge_lora(model)
    >>> type(model[0]).__name__
    'Linear'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from sstkit.functional.optim_state import reset_adam_state
from sstkit.functional.surgery import name_matches, replace_module, select_linears, select_modules, warn_no_match

ADAPTER = "default"


def _lora_layer_type() -> type[nn.Module]:
    from peft.tuners.lora import LoraLayer  # deferred: importing peft costs ~1 s, only LoRA users pay it

    return LoraLayer


def find_lora_layers(model: nn.Module, patterns: str | Iterable[str] = "*", exclude: str | Iterable[str] = ()):
    """Every peft ``LoraLayer`` of ``model`` whose name matches, by name (e.g. after ``load_from_checkpoint``)."""
    return dict(select_modules(model, patterns, exclude, _lora_layer_type()))


def apply_lora(model: nn.Module, rank: int, alpha: float, patterns: str | Iterable[str],
               exclude: str | Iterable[str] = (), dropout: float = 0.0, method: str = "lora") -> dict[str, nn.Module]:  # fmt: skip
    """Wrap every matching ``nn.Linear`` in a peft LoRA layer, in place; idempotent.

    Only the wrapped layers' base weights are frozen; every other parameter (the wrapped layers' biases
    included) keeps the ``requires_grad`` it had — peft's own "freeze everything else" is undone, because which
    other parameters train is a policy for the caller (see :func:`set_lora_trainable`).

    Args:
        model: the model to edit in place.
        rank: ``r`` of every adapter.
        alpha: LoRA ``alpha``; updates are scaled by ``alpha / r``.
        patterns: module-name patterns (see :mod:`sstkit.functional.surgery`).
        exclude: patterns removed from the selection.
        dropout: dropout on the adapter's input.
        method: name used in warnings.

    Returns:
        ``{module name: LoraLayer}`` for every matching adapter (new or already there).
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = [name for name, _ in select_linears(model, patterns, exclude, warn_if_empty=False, method=method)]
    if names:
        before = {name: p.requires_grad for name, p in model.named_parameters()}
        config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=names, bias="none")
        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
        # inject_adapter_in_model leaves its config on the root module; nothing here reads it, and it would
        # otherwise ride along into every pickled copy of the model.
        model.__dict__.pop("peft_config", None)
        for name, p in model.named_parameters():
            plain = name.replace(".base_layer.", ".")
            if plain in before:
                p.requires_grad_(before[plain])
    layers = find_lora_layers(model, patterns, exclude)
    for layer in layers.values():
        layer.get_base_layer().weight.requires_grad_(False)
    warn_no_match(list(layers), model, patterns, exclude, method=method)
    return layers


def set_lora_trainable(model: nn.Module, layers: Mapping[str, nn.Module], train_bias: bool = True,
                       freeze_other: bool = False, trainable: str | Iterable[str] = ()) -> list[str]:  # fmt: skip
    """Which parameters train: adapters always, base weights never, the rest per the flags.

    Args:
        model: the model holding ``layers``.
        layers: its LoRA layers (from :func:`apply_lora`).
        train_bias: train the wrapped layers' biases.
        freeze_other: freeze every parameter outside the wrapped layers unless its name matches ``trainable``
            (fine-tuning); ``False`` leaves them as they are (pre-training from scratch, as ReLoRA does).
        trainable: parameter-name patterns that stay trainable when ``freeze_other`` (e.g. a classifier head).

    Returns:
        The names of the trainable parameters.
    """
    wrapped = tuple(f"{name}." for name in layers)
    for name, p in model.named_parameters():
        if name.startswith(wrapped):
            if ".lora_" in name:
                p.requires_grad_(True)
            elif name.endswith("base_layer.bias"):
                p.requires_grad_(train_bias)
            else:
                p.requires_grad_(False)
        elif freeze_other:
            p.requires_grad_(name_matches(name, trainable) if trainable else False)
    return [name for name, p in model.named_parameters() if p.requires_grad]


@torch.no_grad()
def merged_linear(layer: nn.Module) -> nn.Linear:
    """A new plain ``nn.Linear`` holding ``W0 + (alpha/r)·B A`` and the bias of a LoRA layer (layer unchanged)."""
    base = layer.get_base_layer()
    linear = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                       device=base.weight.device, dtype=base.weight.dtype)  # fmt: skip
    linear.weight.copy_(base.weight + layer.get_delta_weight(ADAPTER).to(base.weight.dtype))
    if base.bias is not None:
        linear.bias.copy_(base.bias)
    return linear


def merge_lora(model: nn.Module) -> list[str]:
    """Replace every LoRA layer by its merged ``nn.Linear``, in place; returns the names replaced.

    Afterwards the model holds no peft module and loads without sstkit or peft.

    Example:
        >>> merge_lora(model)  # doctest: +SKIP
        ['encoder.layer.0.attention.self.query', ...]
    """
    layers = find_lora_layers(model)
    for name, layer in layers.items():
        replace_module(model, name, merged_linear(layer))
    return list(layers)


@torch.no_grad()
def _kaiming_uniform_(weight: torch.Tensor, generator: torch.Generator) -> None:
    # Drawn on the CPU generator so every device and every DDP rank gets the same values; a = sqrt(5) is
    # nn.Linear's (and LoRA's) default, i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    values = torch.empty(weight.shape, dtype=torch.float32)
    nn.init.kaiming_uniform_(values, a=math.sqrt(5), generator=generator)
    weight.copy_(values)


@torch.no_grad()
def relora_restart(layers: Mapping[str, nn.Module], generator: torch.Generator,
                   optimizer: torch.optim.Optimizer | None = None) -> None:  # fmt: skip
    """ReLoRA's restart: merge ``(alpha/r)·B A`` into ``W0``, re-draw ``A`` (Kaiming), zero ``B`` and their Adam state.

    The model's function is unchanged by a restart (``B = 0`` afterwards). Only the adapters' optimizer state
    is reset; the paper's optional partial (pruned) reset of other parameters is not applied.

    Args:
        layers: ``{name: LoraLayer}``.
        generator: CPU generator for the new ``A`` (checkpointed by the caller, so resume is exact).
        optimizer: if given, the Adam state of every ``A`` and ``B`` is zeroed.

    Example:
        >>> relora_restart(find_lora_layers(model), torch.Generator().manual_seed(0), optimizer)  # doctest: +SKIP
    """
    params = []
    for layer in layers.values():
        base = layer.get_base_layer()
        base.weight.add_(layer.get_delta_weight(ADAPTER).to(base.weight.dtype))
        A, B = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
        _kaiming_uniform_(A, generator)
        B.zero_()
        params += [A, B]
    if optimizer is not None:
        reset_adam_state(optimizer, params)
