"""Goal functions: what the attack optimises (a score, higher is better for the attacker) and when it has won.

Untargeted classification (TextAttack's ``UntargetedClassification``) scores ``1 - p_y(x')`` and succeeds when the
argmax differs from the gold label ``y``. A goal is any object with :meth:`score` and :meth:`succeeded`; a goal that
wants the prediction *kept* while the meaning changes (obstinate examples) plugs in the same way.

Example:
    >>> import torch
    >>> goal = UntargetedClassification()
    >>> goal.score(torch.tensor([[0.7, 0.3]]), 0).tolist(), goal.succeeded(torch.tensor([[0.4, 0.6]]), 0).tolist()
    ([0.30000001192092896], [True])
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor


class Goal(Protocol):
    """What every search needs from a goal."""

    def score(self, probs: Tensor, label: int) -> Tensor:
        """Attack progress per row of ``probs`` (batch, classes); higher is closer to success."""
        ...

    def succeeded(self, probs: Tensor, label: int) -> Tensor:
        """Boolean per row: has the attack reached its goal?"""
        ...


class UntargetedClassification:
    """Any label but the gold one: score ``1 - p_y``, success when ``argmax p != y``.

    Args:
        min_confidence: additionally require ``1 - p_y >= min_confidence`` (0: a flip is enough, as in the recipes).
    """

    def __init__(self, min_confidence: float = 0.0) -> None:
        self.min_confidence = min_confidence

    def score(self, probs: Tensor, label: int) -> Tensor:
        return 1.0 - probs[:, label]

    def succeeded(self, probs: Tensor, label: int) -> Tensor:
        return (probs.argmax(-1) != label) & (1.0 - probs[:, label] >= self.min_confidence)


class TargetedClassification:
    """A chosen wrong label: score ``p_target``, success when it is the argmax."""

    def __init__(self, target: int) -> None:
        self.target = target

    def score(self, probs: Tensor, label: int) -> Tensor:
        return probs[:, self.target]

    def succeeded(self, probs: Tensor, label: int) -> Tensor:
        return probs.argmax(-1) == self.target


class PredictionPreserved:
    """Obstinate examples: the prediction ``label`` must survive the edit (score ``p_label``, success when it is
    still the argmax). That the *meaning* changed is the validity oracle's business
    (:mod:`~sstkit.functional.attacks.oracle`), and that something changed at all the search's."""

    def score(self, probs: Tensor, label: int) -> Tensor:
        return probs[:, label]

    def succeeded(self, probs: Tensor, label: int) -> Tensor:
        return probs.argmax(-1) == label
