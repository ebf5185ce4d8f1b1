"""Export of a fake-quantised model as integer weights with per-group scales and zero points, and its loader.

``export_quantized`` writes two files into a folder:

* ``quantized.safetensors`` (``quantized.pt`` when safetensors is not installed): for every quantised module
  ``<name>.weight.codes`` (uint8 integers, one per weight; not bit-packed), ``<name>.weight.scale`` (Δ per group),
  ``<name>.weight.zero`` (q0 per group) and ``<name>.weight.groups`` (group of each row); every other tensor of
  the state dict (biases, LayerNorms, the full-precision head) under its own name;
* ``quant_meta.json``: bits, groups, heads and activation bits per module, and the model size in MB with and
  without the embeddings (packed size: k bits per weight + fp32 scale and zero point per group).

``load_quantized`` dequantises X̂ = Δ · X_q + q0 into a plain model of the same architecture, with the very
arithmetic of the fake quantiser, so its outputs equal the fake-quantised model's bit for bit. Linears that
fake-quantised their input activations get a weight-free :class:`~sstkit.nn.quant.QuantLinear` around them
(``bits=None``), which keeps that equality with activation quantisation too.

Example:
    >>> info = export_quantized(model, "out/qbert")                 # doctest: +SKIP
    >>> plain = load_quantized("out/qbert", build_model())          # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.functional.quantize import model_size_mb, quant_modules
from sstkit.functional.surgery import replace_module
from sstkit.nn.quant import QuantEmbedding, QuantizedTensor, QuantLinear

META_NAME = "quant_meta.json"
SUFFIXES = ("codes", "scale", "zero", "groups")

try:  # safetensors ships with transformers; torch.save is the fallback
    from safetensors.torch import load_file as _st_load
    from safetensors.torch import save_file as _st_save
except ImportError:  # pragma: no cover - depends on the environment
    _st_load = _st_save = None


def _save(tensors: dict[str, Tensor], folder: Path) -> Path:
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    if _st_save is not None:
        path = folder / "quantized.safetensors"
        _st_save(tensors, str(path))
    else:
        path = folder / "quantized.pt"
        torch.save(tensors, path)
    return path


def _load(folder: Path) -> dict[str, Tensor]:
    if (folder / "quantized.safetensors").is_file():
        if _st_load is None:
            raise SstkitError(f"{folder / 'quantized.safetensors'}: install safetensors to read this file")
        return _st_load(str(folder / "quantized.safetensors"))
    if (folder / "quantized.pt").is_file():
        return torch.load(folder / "quantized.pt", map_location="cpu", weights_only=True)
    raise SstkitError(f"{folder}: no quantized.safetensors or quantized.pt (write one with export_quantized)")


def export_quantized(model: nn.Module, folder: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Writes integer weights, per-group ranges and the rest of the state dict; returns the metadata.

    Args:
        model: a model with fake-quant wrappers (see :func:`sstkit.functional.quantize.apply_quantization`).
        folder: output folder (created).
        extra: more JSON-able metadata to store (Ω, the bit pattern …).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wrappers = {n: m for n, m in quant_modules(model).items() if m.bits is not None}
    if not wrappers:
        raise SstkitError("export_quantized: the model has no quantised layer (set bits first)")
    tensors: dict[str, Tensor] = {}
    modules: dict[str, Any] = {}
    for name, module in wrappers.items():
        q = module.quantized_weight()
        for suffix, value in zip(SUFFIXES, (q.codes, q.scale, q.zero, q.group_index)):
            tensors[f"{name}.weight.{suffix}"] = value
        modules[name] = {"kind": "embedding" if isinstance(module, QuantEmbedding) else "linear", "bits": q.bits,
                         "num_groups": module.num_groups, "heads": module.heads,
                         "act_bits": getattr(module, "act_bits", None), "shape": list(module.weight.shape)}
    for key, value in model.state_dict().items():
        owner = key.rpartition(".")[0]
        if not (owner in wrappers and key.endswith(".weight")):
            tensors[key] = value
    path = _save(tensors, folder)
    meta = {"format": "sstkit-qbert-1", "file": path.name, "modules": modules, **model_size_mb(model),
            "file_mb": path.stat().st_size / 2**20, **(extra or {})}
    (folder / META_NAME).write_text(json.dumps(meta, indent=2))
    return meta


def load_quantized(folder: str | Path, model: nn.Module, activation_quant: bool = True) -> nn.Module:
    """Dequantises an export into ``model`` (plain, same architecture) and returns it.

    Args:
        folder: what :func:`export_quantized` wrote.
        model: a model with plain ``nn.Linear``/``nn.Embedding`` layers where the export has quantised ones.
        activation_quant: wrap linears that quantised their inputs, so outputs match the fake-quant model.

    Example:
        >>> plain = load_quantized("out/qbert", TextClassifier("minilm", pretrained=False))  # doctest: +SKIP
    """
    folder = Path(folder)
    meta_path = folder / META_NAME
    if not meta_path.is_file():
        raise SstkitError(f"{meta_path}: not found (write it with export_quantized)")
    meta = json.loads(meta_path.read_text())
    tensors = _load(folder)
    state: dict[str, Tensor] = {k: v for k, v in tensors.items() if not k.endswith(tuple("." + s for s in SUFFIXES))}
    for name, info in meta["modules"].items():
        parts = [tensors[f"{name}.weight.{s}"] for s in SUFFIXES]
        state[f"{name}.weight"] = QuantizedTensor(*parts, bits=info["bits"]).dequantize()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SstkitError(f"{folder}: the export does not fit {type(model).__name__}: missing keys "
                          f"{list(missing)[:5]}, unexpected keys {list(unexpected)[:5]}")
    if activation_quant:
        for name, info in meta["modules"].items():
            module = model.get_submodule(name)
            if info.get("act_bits") and isinstance(module, nn.Linear):
                replace_module(model, name, QuantLinear(module, bits=None, act_bits=info["act_bits"]))
    return model
