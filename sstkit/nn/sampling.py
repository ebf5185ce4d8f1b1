"""Sampling of ``r`` distinct spectral indices by a rule: which singular triplets a :class:`SpectralLinear` trains.

The rules and their probabilities are stated once, in :mod:`sstkit.functional.sst` (the method core, which
re-exports :func:`sample_indices`). They live here, below both the layer and the core, so that ``sstkit.nn``
never imports ``sstkit.functional``.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> sample_indices(torch.tensor([3.0, 0.0, 0.0, 1.0]), 3, "multinomial", g).tolist()
    [0, 1, 3]
"""

from __future__ import annotations

import torch
from torch import Tensor

RULES = ("mixed", "multinomial", "uniform", "top")


def _draw(p: Tensor, r: int, generator: torch.Generator | None) -> Tensor:
    positive = int((p > 0).sum())
    if positive >= r:
        return torch.multinomial(p, r, replacement=False, generator=generator)
    # torch.multinomial refuses to draw more distinct categories than have weight: take them all, fill uniformly.
    zeros = (p <= 0).nonzero().flatten()
    fill = zeros[torch.randperm(zeros.numel(), generator=generator, device=p.device)[: r - positive]]
    return torch.cat([(p > 0).nonzero().flatten(), fill])


def sample_indices(s: Tensor, r: int, rule: str = "mixed", generator: torch.Generator | None = None) -> Tensor:
    """``r`` distinct indices into ``s`` (sorted, long, on ``s.device``) drawn by ``rule`` (see :mod:`sstkit.functional.sst`).

    Sampling runs on the generator's device, so a CPU generator gives the same indices on CPU and GPU.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample_indices(torch.tensor([3.0, 0.0, 0.0, 1.0]), 3, "multinomial", g).tolist()
        [0, 1, 3]
    """
    k = s.numel()
    if not 1 <= r <= k:
        raise ValueError(f"r must be in [1, {k}], got {r}")
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    device = generator.device if generator is not None else torch.device("cpu")
    w = torch.nan_to_num(s.detach().float().to(device), nan=0.0).clamp_min(0)
    if rule == "top":
        idx = torch.topk(w, r).indices
    elif rule == "uniform":
        idx = torch.randperm(k, generator=generator, device=device)[:r]
    else:
        total = float(w.sum())
        if rule == "mixed":
            p = torch.full_like(w, 1.0 / k) if total <= 0 else 0.5 * (1.0 / k + w / total)
        else:
            p = w
        idx = _draw(p, r, generator)
    return torch.sort(idx).values.to(s.device)
