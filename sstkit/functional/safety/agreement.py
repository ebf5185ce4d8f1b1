"""Agreement of a judge with a reference (human labels, or another judge): accuracy, unsafe recall and precision.

Pairs where either side is undecided (``None``) are left out and counted, so an unparsable LLM-judge reply never
turns into a silent "safe".

Example:
    >>> agreement([True, False, True, None], [True, True, False, False])
    {'n': 3, 'undecided': 1, 'accuracy': 0.3333333333333333, 'unsafe_recall': 0.5, 'unsafe_precision': 0.5}
"""

from __future__ import annotations

from collections.abc import Sequence

from sstkit.errors import SstkitError


def agreement(predicted: Sequence[bool | None], reference: Sequence[bool | None]) -> dict[str, float | int | None]:
    """Accuracy, recall and precision of the unsafe class of ``predicted`` against ``reference``.

    A ratio whose denominator is zero (no unsafe reference, or no unsafe prediction) is None, not 0.
    """
    if len(predicted) != len(reference):
        raise SstkitError(f"agreement needs equally many labels, got {len(predicted)} and {len(reference)}")
    pairs = [(p, r) for p, r in zip(predicted, reference, strict=True) if p is not None and r is not None]
    tp = sum(p and r for p, r in pairs)
    predicted_unsafe = sum(p for p, _ in pairs)
    reference_unsafe = sum(r for _, r in pairs)
    return {
        "n": len(pairs),
        "undecided": len(predicted) - len(pairs),
        "accuracy": sum(p == r for p, r in pairs) / len(pairs) if pairs else None,
        "unsafe_recall": tp / reference_unsafe if reference_unsafe else None,
        "unsafe_precision": tp / predicted_unsafe if predicted_unsafe else None,
    }


def unsafe_rate(labels: Sequence[bool | None]) -> float | None:
    """The share of decided labels that are unsafe (None when nothing was decided)."""
    decided = [x for x in labels if x is not None]
    return sum(decided) / len(decided) if decided else None
