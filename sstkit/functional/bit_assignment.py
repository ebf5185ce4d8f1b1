"""Mixed-precision bit assignment by Hessian sensitivity (Q-BERT), and the orderings of its ablation.

Blocks are ranked by Ω (most sensitive first; ``reverse`` flips the ranking, ``random`` shuffles it with a
seed). Three ways to turn a ranking into bits:

* a pattern ``"2/3"``: the ranking is cut into as many equal consecutive parts as widths, the most sensitive part
  gets the widest (``"2/3"``: the top half 3 bits, the rest 2; ``"8"``: everything 8 bits);
* a budget: every block starts at the smallest allowed width, then, width level by width level, blocks are raised
  in rank order while the quantised weights stay within ``budget_mb``;
* a manual map ``{block name or index: bits}``.

Example:
    >>> omega = {"l0": 5.0, "l1": 1.0, "l2": 9.0, "l3": 0.5}
    >>> bits_from_pattern(omega, "2/3")
    {'l0': 3, 'l1': 2, 'l2': 3, 'l3': 2}
    >>> bits_from_budget(omega, {k: 1_000_000 for k in omega}, [2, 3, 4], budget_mb=1.25)
    {'l0': 3, 'l1': 2, 'l2': 3, 'l3': 2}
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from sstkit.errors import SstkitError
from sstkit.nn.quant import check_bits

ORDERS = ("omega", "reverse", "random")
BITS_PER_MB = 8 * 2**20


def parse_pattern(pattern: str | int) -> list[int]:
    """Bit widths of a pattern, ascending: ``"2/3"`` → ``[2, 3]``, ``8`` → ``[8]``.

    Example:
        >>> parse_pattern("3/2")
        [2, 3]
    """
    parts = [pattern] if isinstance(pattern, int) else str(pattern).replace(",", "/").split("/")
    try:
        widths = sorted({int(p) for p in parts})
    except ValueError:
        raise SstkitError(f"bits pattern {pattern!r}: expected bit widths separated by '/', e.g. '2/3' or '8'") from None
    for w in widths:
        check_bits(w, f"bits pattern {pattern!r}: width")
    return widths


def block_order(omega: Mapping[str, float], order: str = "omega", seed: int = 0) -> list[str]:
    """Block names, most sensitive first (``omega``), least sensitive first (``reverse``) or shuffled (``random``)."""
    if order not in ORDERS:
        raise SstkitError(f"order must be one of {ORDERS}, got {order!r}")
    names = sorted(omega, key=lambda n: -omega[n])
    if order == "reverse":
        names.reverse()
    elif order == "random":
        random.Random(seed).shuffle(names)
    return names


def bits_from_pattern(omega: Mapping[str, float], pattern: str | int, order: str = "omega",
                      seed: int = 0) -> dict[str, int]:
    """Bits per block: the ranking split into equal parts, the most sensitive part gets the widest width."""
    widths = parse_pattern(pattern)
    ranked = block_order(omega, order, seed)
    n, k = len(ranked), len(widths)
    chosen = {name: widths[k - 1 - (rank * k) // n] for rank, name in enumerate(ranked)}
    return {name: chosen[name] for name in omega}


def bits_from_budget(omega: Mapping[str, float], sizes: Mapping[str, int], allowed_bits: Sequence[int],
                     budget_mb: float, order: str = "omega", seed: int = 0) -> dict[str, int]:
    """Bits per block within ``budget_mb`` of quantised weights (``sizes``: weights per block), raised by rank.

    Raises:
        SstkitError: the smallest width alone exceeds the budget, or an argument is invalid.
    """
    widths = sorted({int(b) for b in allowed_bits})
    if not widths:
        raise SstkitError("allowed_bits is empty")
    for w in widths:
        check_bits(w, "allowed_bits entry")
    missing = [n for n in omega if n not in sizes]
    if missing:
        raise SstkitError(f"bits_from_budget: no size for blocks {missing}")
    budget = budget_mb * BITS_PER_MB
    bits = {name: widths[0] for name in omega}
    used = sum(sizes[n] * widths[0] for n in omega)
    if used > budget:
        raise SstkitError(f"budget_mb={budget_mb}: even {widths[0]}-bit weights need {used / BITS_PER_MB:.3f} MB")
    ranked = block_order(omega, order, seed)
    for width in widths[1:]:
        for name in ranked:
            extra = sizes[name] * (width - bits[name])
            if used + extra <= budget:
                bits[name], used = width, used + extra
    return bits


def bits_from_map(blocks: Sequence[str], mapping: Mapping[str | int, int]) -> dict[str, int]:
    """Bits per block from a manual map; keys are block names or block indices (``0`` = first block).

    Example:
        >>> bits_from_map(["a", "b"], {0: 4, "b": 2})
        {'a': 4, 'b': 2}
    """
    blocks = list(blocks)
    out: dict[str, int] = {}
    for key, value in mapping.items():
        name = blocks[int(key)] if str(key).lstrip("-").isdigit() and int(key) < len(blocks) else str(key)
        if name not in blocks:
            raise SstkitError(f"layer_bits key {key!r} is neither a block index (< {len(blocks)}) nor a block "
                              f"name; blocks: {blocks}")
        check_bits(int(value), f"layer_bits[{key!r}]")
        out[name] = int(value)
    left = [b for b in blocks if b not in out]
    if left:
        raise SstkitError(f"layer_bits gives no bits for blocks {left}")
    return {b: out[b] for b in blocks}
