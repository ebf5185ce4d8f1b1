"""Plain dense state dicts from a model whose linears a method has wrapped (SST, LoRA, ReLoRA).

A method replaces ``nn.Linear`` modules by its own modules, which changes the state-dict keys under each wrapped
name (``query.s``, ``query.U_active`` …, or ``query.base_layer.weight``, ``query.lora_A.default.weight`` …).
:func:`dense_state_dict` undoes that without touching the model: every key under a wrapped name is replaced by
the ``weight``/``bias`` of the merged ``nn.Linear`` the method supplies, so the result loads into the original,
unwrapped architecture (for a Hugging Face backbone: strip the family's prefix, e.g. ``encoder.``, and call
``load_state_dict`` on the plain HF model).

Example:
    >>> import torch
    >>> from sstkit.functional.sst import apply_sst, find_spectral_layers
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    >>> layers = apply_sst(model, rank=2, patterns=["*"], seed=0)
    >>> sorted(dense_state_dict(model, {n: m.merge() for n, m in layers.items()}))
    ['0.bias', '0.weight']
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn


def dense_state_dict(model: nn.Module, merged: Mapping[str, nn.Linear]) -> dict[str, Tensor]:
    """``model.state_dict()`` with each wrapped module's entries replaced by its merged linear's (detached, cloned).

    Args:
        model: the wrapped model (left unchanged).
        merged: ``{module name: nn.Linear holding the merged weight}`` for every wrapped module.

    Returns:
        A state dict whose keys are those of the unwrapped model.

    Example:
        >>> state = dense_state_dict(model, {"0": model[0].merge()})  # doctest: +SKIP
    """
    prefixes = tuple(f"{name}." for name in merged)
    state = {key: value for key, value in model.state_dict().items() if not key.startswith(prefixes)}
    for name, linear in merged.items():
        for key, value in linear.state_dict().items():
            state[f"{name}.{key}"] = value.detach().clone()
    return state
