"""PortLLM: training-free, portable model patches from LoRA fine-tuning.

A patch is the LoRA update of every adapted matrix, ``Δ_0 = (α/r)·B·A`` (``B: out×r``, ``A: r×in``), plus the
trained modules outside the adapted base (the task head, peft's ``modules_to_save``). Applying it to an *evolved*
base ``θ_t`` (same architecture after further pre-training) gives ``θ_t + Δ_0`` with no training and no data.

On disk a patch is a folder with ``patch.safetensors`` (tensors ``delta/<name>`` and ``save/<name>``) and
``manifest.json`` (format, base architecture, target modules, α, r, shapes, modules to save, free-form ``extra``).
Applying checks the architecture and every shape, and refuses a mismatch with an :class:`SstkitError`.

LoRA weights are read in peft's layout, from a model with peft ``LoraLayer`` modules (``lora_A`` / ``lora_B``
``ModuleDict`` per adapter, ``scaling``) or from a state dict with ``….lora_A[.<adapter>].weight`` keys; modules
with plain ``lora_A`` / ``lora_B`` linears or parameters (either orientation) are read too.

Example:
    >>> patch = extract_patch(lora_model.encoder, architecture=architecture_of(lora_model.encoder))  # doctest: +SKIP
    >>> save_patch(patch, "patches/sst2")  # doctest: +SKIP
    >>> apply_patch(evolved_encoder, load_patch("patches/sst2"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.functional.surgery import name_matches

FORMAT = "sstkit-portllm-patch"
ARCH_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "vocab_size", "max_position_embeddings", "type_vocab_size")
_PEFT_WRAPPERS = re.compile(r"(^|\.)base_model\.model(\.|$)")
_LORA_KEY = re.compile(r"^(?P<prefix>.*)\.lora_(?P<ab>[AB])(\.(?P<adapter>[^.]+))?\.weight$")


@dataclass
class Patch:
    """A PortLLM patch: LoRA updates keyed by the plain base weight name, saved modules, and the manifest."""

    deltas: dict[str, Tensor]
    saved: dict[str, Tensor] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def plain_name(name: str) -> str:
    """Parameter name without peft's wrappers (``base_model.model.``, ``.base_layer``, ``modules_to_save.<a>``)."""
    name = _PEFT_WRAPPERS.sub(lambda m: m.group(1) if m.group(2) else "", name)
    name = re.sub(r"\.modules_to_save\.[^.]+\.", ".", name.replace(".base_layer.", "."))
    return name


def architecture_of(model: nn.Module | Any) -> dict[str, Any]:
    """What must match between the patch's base and the base it is applied to: the HF config's shape keys."""
    config = getattr(model, "config", model)
    if hasattr(config, "to_dict"):
        values = config.to_dict()
        return {key: values[key] for key in ARCH_KEYS if key in values}
    return {"class": type(model).__name__}


def _lora_update(a: Tensor, b: Tensor, scaling: float, shape: torch.Size | None) -> Tensor:
    """``scaling·B·A`` in the base weight's ``(out, in)`` layout, whichever orientation the factors use."""
    a, b = a.detach().float(), b.detach().float()
    if a.ndim == 2 and b.ndim == 2 and b.shape[1] == a.shape[0] and (shape is None or (b.shape[0], a.shape[1]) == tuple(shape)):
        return scaling * (b @ a)
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[0]:  # A: in×r, B: r×out
        return scaling * (a @ b).T
    raise SstkitError(f"LoRA factors of shapes {tuple(a.shape)} and {tuple(b.shape)} do not form a matrix update")


def _module_updates(model: nn.Module) -> dict[str, tuple[Tensor, float, int]]:
    """(update, α, r) per LoRA-adapted module of a model, keyed by the plain name of its base weight."""
    out: dict[str, tuple[Tensor, float, int]] = {}
    for name, module in model.named_modules():
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        if lora_a is None or lora_b is None:
            continue
        base = getattr(module, "base_layer", module)
        shape = base.weight.shape if isinstance(getattr(base, "weight", None), Tensor) else None
        if isinstance(lora_a, nn.ModuleDict):
            if len(getattr(module, "lora_magnitude_vector", None) or {}) > 0:
                raise SstkitError(f"PortLLM: {name} uses DoRA; a DoRA update is not a plain matrix patch")
            update = None
            for adapter in lora_a:
                r = int(module.r[adapter])
                scaling = float(module.scaling[adapter])
                part = _lora_update(lora_a[adapter].weight, lora_b[adapter].weight, scaling, shape)
                update = part if update is None else update + part
                alpha = float(module.lora_alpha[adapter])
        else:
            a = lora_a.weight if isinstance(lora_a, nn.Module) else lora_a
            b = lora_b.weight if isinstance(lora_b, nn.Module) else lora_b
            r = min(a.shape)
            scaling = float(getattr(module, "scaling", getattr(module, "alpha", r) / r))
            alpha = float(getattr(module, "alpha", scaling * r))
            update = _lora_update(a, b, scaling, shape)
        if update is not None:
            out[plain_name(f"{name}.weight")] = (update, alpha, r)
    return out


def _state_dict_updates(state: Mapping[str, Tensor], alpha: float | None) -> dict[str, tuple[Tensor, float, int]]:
    """(update, α, r) from ``….lora_A[.<adapter>].weight`` / ``….lora_B…`` pairs of a state dict."""
    if alpha is None:
        raise SstkitError("PortLLM: extracting from a state dict needs the LoRA alpha (it is not stored in weights)")
    factors: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in state.items():
        match = _LORA_KEY.match(key)
        if match:
            factors.setdefault((match["prefix"], match["adapter"] or ""), {})[match["ab"]] = value
    out: dict[str, tuple[Tensor, float, int]] = {}
    for (prefix, _adapter), ab in factors.items():
        if set(ab) != {"A", "B"}:
            raise SstkitError(f"PortLLM: {prefix} has lora_{''.join(ab)} but not its partner")
        r = min(ab["A"].shape)
        key = plain_name(f"{prefix}.weight")
        update = _lora_update(ab["A"], ab["B"], alpha / r, None)
        previous = out.get(key)
        out[key] = (update if previous is None else previous[0] + update, alpha, r)
    return out


def extract_patch(
    source: nn.Module | Mapping[str, Tensor],
    architecture: Mapping[str, Any],
    modules_to_save: Iterable[str] = ("head.*",),
    strip_prefix: str = "",
    alpha: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Patch:
    """Builds a patch from a LoRA-fine-tuned model or its state dict.

    Args:
        source: the model (peft LoRA layers inside) or its state dict.
        architecture: the base model's architecture (:func:`architecture_of`), stored and checked on apply.
        modules_to_save: patterns of plain parameter names copied whole (the head); LoRA factors never are.
        strip_prefix: removed from LoRA target names so they are relative to the base (e.g. ``"encoder."`` for
            :class:`sstkit.models.TextClassifier`); saved modules keep their full names.
        alpha: LoRA α, needed only for a state dict.
        extra: free-form manifest entries (e.g. the head's number of labels).

    Raises:
        SstkitError: when no LoRA-adapted matrix is found.
    """
    if isinstance(source, nn.Module):
        updates, state = _module_updates(source), source.state_dict()
    else:
        updates, state = _state_dict_updates(source, alpha), source
    if not updates:
        raise SstkitError("PortLLM: found no LoRA-adapted matrix (no lora_A / lora_B weights) in the fine-tuned model")
    deltas, lora = {}, {}
    for key, (update, a, r) in updates.items():
        target = key[len(strip_prefix):] if strip_prefix and key.startswith(strip_prefix) else key
        deltas[target] = update.contiguous()
        lora[target] = {"alpha": a, "r": r}
    saved = {}
    for key, value in state.items():
        plain = plain_name(key)
        if ".lora_" in key or ".original_module." in key or not name_matches(plain, modules_to_save):
            continue
        saved[plain] = value.detach().clone().contiguous()
    alphas, ranks = {v["alpha"] for v in lora.values()}, {v["r"] for v in lora.values()}
    manifest = {
        "format": FORMAT, "version": 1, "architecture": dict(architecture),
        "target_modules": sorted(k.removesuffix(".weight") for k in deltas),
        "alpha": alphas.pop() if len(alphas) == 1 else None, "r": ranks.pop() if len(ranks) == 1 else None,
        "lora": lora, "shapes": {k: list(v.shape) for k, v in deltas.items()},
        "modules_to_save": sorted(saved), "saved_shapes": {k: list(v.shape) for k, v in saved.items()},
        "extra": dict(extra or {}),
    }
    return Patch(deltas, saved, manifest)


def save_patch(patch: Patch, folder: str | Path) -> Path:
    """Writes ``patch.safetensors`` and ``manifest.json`` into ``folder`` and returns it."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"delta/{k}": v.cpu() for k, v in patch.deltas.items()}
    tensors.update({f"save/{k}": v.cpu() for k, v in patch.saved.items()})
    save_file(tensors, str(folder / "patch.safetensors"), metadata={"format": FORMAT})
    (folder / "manifest.json").write_text(json.dumps(patch.manifest, indent=2, sort_keys=True))
    return folder


def load_patch(folder: str | Path) -> Patch:
    """Reads a patch folder written by :func:`save_patch`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    manifest_path, tensor_path = folder / "manifest.json", folder / "patch.safetensors"
    if not manifest_path.is_file() or not tensor_path.is_file():
        raise SstkitError(f"{folder}: not a patch folder (expected manifest.json and patch.safetensors)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise SstkitError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {FORMAT!r}")
    tensors = load_file(str(tensor_path))
    deltas = {k.removeprefix("delta/"): v for k, v in tensors.items() if k.startswith("delta/")}
    saved = {k.removeprefix("save/"): v for k, v in tensors.items() if k.startswith("save/")}
    return Patch(deltas, saved, manifest)


def check_architecture(patch: Patch, architecture: Mapping[str, Any], state: Mapping[str, Tensor] | None = None) -> None:
    """Refuses a base whose architecture or target shapes differ from the patch's base.

    Raises:
        SstkitError: naming each differing architecture key, or the first missing / mis-shaped target.
    """
    expected = patch.manifest.get("architecture", {})
    diffs = [f"{k}: patch {expected[k]!r} vs base {architecture.get(k)!r}" for k in expected
             if architecture.get(k) != expected[k]]
    if diffs:
        raise SstkitError("PortLLM: the base's architecture differs from the patch's base (" + "; ".join(diffs) + ")")
    for key, delta in patch.deltas.items() if state is not None else ():
        if key not in state:
            raise SstkitError(f"PortLLM: the base has no parameter {key} that the patch adapts")
        if tuple(state[key].shape) != tuple(delta.shape):
            raise SstkitError(f"PortLLM: {key} has shape {tuple(state[key].shape)} in the base but "
                              f"{tuple(delta.shape)} in the patch")


@torch.no_grad()
def apply_patch(base: nn.Module, patch: Patch, root: nn.Module | None = None) -> nn.Module:
    """``θ_t + Δ_0`` in place on ``base``; the saved modules are loaded into ``root`` (default: ``base``).

    Args:
        base: the (evolved) base; its parameter names are the patch's target names.
        patch: the patch.
        root: the module holding the saved modules (e.g. the classifier that contains ``base`` and the head).

    Raises:
        SstkitError: on an architecture or shape mismatch (nothing is changed then).
    """
    params = dict(base.named_parameters())
    check_architecture(patch, architecture_of(base), params)
    root = base if root is None else root
    root_params = dict(root.state_dict(keep_vars=True))
    for key, value in patch.saved.items():
        if key not in root_params or tuple(root_params[key].shape) != tuple(value.shape):
            raise SstkitError(f"PortLLM: the patch saves {key} {tuple(value.shape)}, which the target model lacks "
                              "or has with another shape")
    for key, delta in patch.deltas.items():
        params[key].add_(delta.to(params[key].device, params[key].dtype))
    for key, value in patch.saved.items():
        root_params[key].copy_(value.to(root_params[key].device, root_params[key].dtype))
    return base
