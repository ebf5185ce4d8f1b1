"""Singular-value pruning: keep only the largest singular values of every selected weight (SST paper, appendix).

A trained model's projections are replaced, in place, by plain ``nn.Linear`` layers whose weight keeps the top
``1 − prune_fraction`` share of its ``k = min(out, in)`` singular values:

* a :class:`~sstkit.nn.SpectralLinear` (SST) is merged from its own spectrum, ``U[:, top] diag(s[top]) Vh[top]``
  (:meth:`SpectralLinear.merge`), as the paper prunes SST's ``s``;
* a dense ``nn.Linear`` (full rank, GaLore, merged LoRA) is truncated through its SVD, ``W ≈ U_r diag(σ_r) V_rᵀ``.

Both keep ``k − ⌊prune_fraction · k⌋`` values, so the two kinds of layer lose the same number at every ratio.

Example:
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    >>> prune_singular_values(model, 0.5, patterns=["*"])
    ['0', '2']
    >>> int(torch.linalg.matrix_rank(model[0].weight))
    4
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from sstkit.functional.surgery import method_patterns, name_matches, replace_module
from sstkit.nn.spectral import SpectralLinear


def kept_values(k: int, prune_fraction: float) -> int:
    """How many of ``k`` singular values survive ``prune_fraction`` (the rule :meth:`SpectralLinear.merge` uses)."""
    if not 0.0 <= prune_fraction < 1.0:
        raise ValueError(f"prune_fraction must be in [0, 1), got {prune_fraction}")
    return k - int(prune_fraction * k)


@torch.no_grad()
def svd_truncate(weight: Tensor, prune_fraction: float) -> Tensor:
    """``weight`` with its smallest ``prune_fraction`` share of singular values set to zero (same dtype/shape).

    Example:
        >>> w = svd_truncate(torch.randn(6, 4), 0.5)
        >>> int(torch.linalg.matrix_rank(w))
        2
    """
    keep = kept_values(min(weight.shape), prune_fraction)
    if keep == min(weight.shape):
        return weight.clone()
    U, s, Vh = torch.linalg.svd(weight.float(), full_matrices=False)
    return ((U[:, :keep] * s[:keep]) @ Vh[:keep]).to(weight.dtype)


@torch.no_grad()
def prune_singular_values(
    model: nn.Module, prune_fraction: float, patterns: str | Iterable[str] | None = None, exclude: Iterable[str] = ()
) -> list[str]:
    """Merges every SST layer and truncates every selected dense linear to its top singular values, in place.

    Args:
        model: the model (SST layers anywhere in it are always merged and pruned).
        prune_fraction: share of each layer's singular values to drop, smallest first, in [0, 1).
        patterns: dense ``nn.Linear`` layers to truncate (fnmatch globs or ``re:`` regexes); default: the model
            family's ``method_patterns``, else BERT/OPT attention and MLP projections — the layers SST wraps.
        exclude: patterns removed from the selection.

    Returns:
        The names of the layers pruned, in model order.
    """
    kept_values(1, prune_fraction)  # validates the fraction before the model is touched
    selected = method_patterns(model, patterns)
    exclude = list(exclude)
    pruned = []
    for name, module in list(model.named_modules()):
        if isinstance(module, SpectralLinear):
            if name == "":
                raise ValueError("the model itself is a SpectralLinear; call its .merge(prune_fraction) instead")
            replace_module(model, name, module.merge(prune_fraction))
            pruned.append(name)
        elif isinstance(module, nn.Linear) and name_matches(name, selected, exclude):
            module.weight.copy_(svd_truncate(module.weight, prune_fraction))
            pruned.append(name)
    return pruned
