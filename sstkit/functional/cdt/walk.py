"""Shared state of one CD-T propagation: the attention rule, the sign fix, the head hook and the node trace.

The model walkers (:mod:`.bert`, :mod:`.opt`) call :meth:`Propagation.fix` after every operation,
:meth:`Propagation.heads` on each layer's per-head attention context (where circuit discovery plants its sources and
reads its targets), and :meth:`Propagation.record` at every named node (what the completeness tests compare).

Example:
    >>> prop = Propagation(attention="beta", trace={})
    >>> prop.attention
    'beta'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

from sstkit.functional.cdt.rules import ATTENTION_RULES, Pair, sign_fix

# (layer index, β, γ) of the per-head context, each (batch, heads, time, head_dim) -> the pair to continue with.
SIGN_FIX = ("all", "layer", "none")
HeadHook = Callable[[int, Tensor, Tensor], Pair]


@dataclass
class Propagation:
    """Options of one propagation.

    Args:
        attention: ``total`` (probabilities of the total held fixed, the BERT rule) or ``beta`` (β-only
            probabilities for β, the circuit rule).
        sign_fix: where to apply the sign fix: ``all`` (after each operation, as the paper states), ``layer`` (at the
            end of each block only, as the official local-explanation code does) or ``none``; True / False mean
            ``all`` / ``none``. The output logits are never sign-fixed (that would only clip what is read there).
        head_hook: called with each layer's per-head context pair; returns the pair to continue with.
        trace: a dict to fill with ``name -> (β, γ)`` at every node, or None.
        group: consecutive batch rows that share one total (the sets of one example): the total's attention
            probabilities and LayerNorm scales are computed once per group.
        start_layer: the first block to run; the pair given to the walker is the state entering it (circuit
            discovery starts sources of layer l from the cached clean prefix instead of the embeddings).
    """

    attention: str = "total"
    sign_fix: str | bool = "all"
    head_hook: HeadHook | None = None
    trace: dict[str, Pair] | None = field(default=None)
    start_layer: int = 0
    group: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.sign_fix, bool):
            self.sign_fix = "all" if self.sign_fix else "none"
        if self.sign_fix not in SIGN_FIX:
            raise ValueError(f"cdt sign_fix must be one of {SIGN_FIX}, got {self.sign_fix!r}")
        if self.attention not in ATTENTION_RULES:
            raise ValueError(f"cdt attention rule must be one of {ATTENTION_RULES}, got {self.attention!r}")

    def fix(self, pair: Pair) -> Pair:
        """The sign fix after an operation inside a block (mode ``all``)."""
        return sign_fix(*pair) if self.sign_fix == "all" else pair

    def fix_block(self, pair: Pair) -> Pair:
        """The sign fix at the end of a block (modes ``all`` and ``layer``)."""
        return sign_fix(*pair) if self.sign_fix != "none" else pair

    def heads(self, layer: int, beta: Tensor, gamma: Tensor) -> Pair:
        """Passes a layer's per-head context through the hook (circuit sources / targets)."""
        return self.head_hook(layer, beta, gamma) if self.head_hook is not None else (beta, gamma)

    def record(self, name: str, pair: Pair) -> Pair:
        """Stores ``pair`` under ``name`` in the trace and returns it."""
        if self.trace is not None:
            self.trace[name] = (pair[0].detach(), pair[1].detach())
        return pair
