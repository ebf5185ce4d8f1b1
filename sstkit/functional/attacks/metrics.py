"""Per-example attack results and TextAttack's summary metrics.

- attack success rate = successes / (successes + failures); inputs the victim already gets wrong are *skipped*
  (counted, not attacked);
- original accuracy = (successes + failures) / all; accuracy under attack = failures / all;
- % words perturbed, victim queries, similarity, perplexity: means over successful examples (TextAttack averages
  perturbation over successes; queries over attacked ones);
- seconds per example: wall time per attacked example;
- obstinate recipes: mean substitutions per success, and the validated success rate (successes the validity
  oracle accepted, over attacked examples).

Example:
    >>> r = [AttackResult("a", "b", 1, 1, 0, "success", queries=5, seconds=0.1, changed_share=0.5),
    ...      AttackResult("c", "c", 0, 1, 1, "skipped")]
    >>> summarize(r)["attack_success_rate"], summarize(r)["skipped"]
    (1.0, 1)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

STATUSES = ("success", "failed", "skipped")


@dataclass
class AttackResult:
    """One example's outcome (``status`` is success, failed or skipped)."""

    original: str
    perturbed: str
    label: int
    original_pred: int
    perturbed_pred: int
    status: str
    queries: int = 0
    seconds: float = 0.0
    changed_share: float = 0.0
    similarity: float | None = None
    perplexity: float | None = None
    original_perplexity: float | None = None
    substitutions: int = 0  # words changed in a successful example
    validated: bool | None = None  # obstinate recipes: did the validity oracle accept the success?
    oracle: str | None = None  # the oracle parts that accepted it, comma-separated

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else None


def summarize(results: list[AttackResult]) -> dict[str, Any]:
    """The summary block of a report (numbers as TextAttack's ``AttackSummary`` defines them)."""
    n = len(results)
    succ = [r for r in results if r.status == "success"]
    fail = [r for r in results if r.status == "failed"]
    attacked = succ + fail
    return {
        "examples": n,
        "successes": len(succ),
        "failures": len(fail),
        "skipped": n - len(attacked),
        "original_accuracy": len(attacked) / n if n else None,
        "accuracy_under_attack": len(fail) / n if n else None,
        "attack_success_rate": len(succ) / len(attacked) if attacked else None,
        "words_perturbed_pct": None if not succ else 100 * _mean([r.changed_share for r in succ]),
        "queries": _mean([float(r.queries) for r in attacked]),
        "similarity": _mean([r.similarity for r in succ]),
        "perplexity_original": _mean([r.original_perplexity for r in succ]),
        "perplexity_adversarial": _mean([r.perplexity for r in succ]),
        "seconds_per_example": _mean([r.seconds for r in attacked]),
        "substitutions": _mean([float(r.substitutions) for r in succ]),
        "validated_successes": sum(1 for r in succ if r.validated),
        # obstinate recipes: successes the validity oracle accepted, over attacked examples (like the raw rate)
        "validated_success_rate": (sum(1 for r in succ if r.validated) / len(attacked)
                                   if attacked and any(r.validated is not None for r in attacked) else None),
    }
