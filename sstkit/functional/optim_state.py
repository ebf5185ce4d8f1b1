"""Optimizer-state surgery shared by methods that swap what a parameter means (SST resampling, ReLoRA restarts).

When a parameter's values are replaced by new ones (a freshly sampled spectral slot, a re-initialised LoRA
factor), the Adam moments accumulated for the old values are wrong for the new ones; they are zeroed in place so
the optimizer keeps pointing at the same tensors (CUDA graphs, fused kernels and DDP buckets stay valid).

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = torch.optim.AdamW([p], lr=0.1)
    >>> p.sum().backward(); opt.step()
    >>> reset_adam_state(opt, [p])
    1
    >>> float(opt.state[p]["exp_avg"].abs().sum())
    0.0
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

_MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def reset_adam_state(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> int:
    """Zero Adam/AdamW moments (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) and ``step`` of ``params``.

    Parameters without state yet (never stepped) are left alone; Adam initialises them lazily anyway. A Lightning
    ``LightningOptimizer`` is unwrapped.

    Args:
        optimizer: a torch Adam-family optimizer (or Lightning's wrapper of one).
        params: the parameters whose state to reset.

    Returns:
        How many parameters had state that was reset.

    Example:
        >>> n = reset_adam_state(trainer.optimizers[0], [layer.U_active, layer.Vh_active])  # doctest: +SKIP
    """
    # LightningOptimizer keeps the real optimizer in `_optimizer`; its own `state` is not guaranteed to alias it.
    inner = getattr(optimizer, "_optimizer", optimizer)
    count = 0
    for p in params:
        state = inner.state.get(p)  # .get: `state` is a defaultdict and must not grow entries here
        if not state:
            continue
        for key in _MOMENT_KEYS:
            if key in state:
                state[key].zero_()
        if "step" in state:
            if torch.is_tensor(state["step"]):
                state["step"].zero_()
            else:
                state["step"] = 0
        count += 1
    return count
