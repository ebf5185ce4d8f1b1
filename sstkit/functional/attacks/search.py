"""Search: the attack problem for one example, and TextAttack's greedy search by word importance.

:class:`Problem` binds one example to the victim, goal, transformation and constraints: it lists modifiable
indices, builds constraint-filtered candidates and scores them with one batched victim call. :class:`GreedyWIR`
ranks words by importance and substitutes them in that order, keeping the best candidate while it helps.

Word importance (``wir``):
    ``delete`` — goal score with the word deleted (BAE); ``unk`` / ``mask`` — with the word replaced by the
    tokenizer's [UNK] / [MASK] (BERT-Attack: unk); ``weighted-saliency`` — PWWS (Ren et al., 2019):
    ``H(x, x*_i, w_i) = softmax_i(S(x)_i) * Δp*_i`` with saliency ``S(x)_i = p_y(x) - p_y(x with w_i -> [UNK])``
    (TextAttack softmaxes the [UNK]-replaced goal scores, which differ from S by a constant) and
    ``Δp*_i = max over the synonyms of word i of the goal score``.

Example:
    >>> problem = Problem(victim, UntargetedClassification(), transformation, constraints,  # doctest: +SKIP
    ...                   AttackedText.from_text("a good film"), label=1)
    >>> best = GreedyWIR("weighted-saliency").run(problem)  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from sstkit.functional.attacks.constraints import Constraint
from sstkit.functional.attacks.goal import Goal
from sstkit.functional.attacks.text import AttackedText
from sstkit.functional.attacks.transformations import Transformation
from sstkit.functional.attacks.victim import QueryBudgetExceeded, Victim

WIR_METHODS = ("delete", "unk", "mask", "weighted-saliency", "random")


@dataclass
class Scored:
    """A text with its goal score, success flag and probabilities."""

    text: AttackedText
    score: float
    success: bool
    probs: Tensor = field(repr=False, default_factory=lambda: torch.zeros(0))


@dataclass
class Problem:
    """One example's attack: what may change, how, and how candidates are judged."""

    victim: Victim
    goal: Goal
    transformation: Transformation
    constraints: Sequence[Constraint]
    original: AttackedText
    label: int

    def modifiable(self, text: AttackedText) -> list[int]:
        indices = {i for i in range(len(text)) if text.is_word(i)}
        for c in self.constraints:
            indices = c.modifiable(text, indices)
        return sorted(indices)

    def admissible(self, candidates: list[AttackedText]) -> list[AttackedText]:
        """The candidates every constraint accepts (cheap constraints first: the list is in order)."""
        for c in self.constraints:
            if not candidates:
                break
            keep = c.check(candidates, self.original)
            candidates = [x for x, k in zip(candidates, keep) if k]
        return candidates

    def candidates(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        return self.admissible(self.transformation(text, indices))

    def evaluate(self, texts: Sequence[AttackedText]) -> list[Scored]:
        """Scores ``texts`` with one batched victim call (cached texts are free)."""
        if not texts:
            return []
        probs = self.victim.probs([t.text for t in texts])
        scores = self.goal.score(probs, self.label).tolist()
        wins = self.goal.succeeded(probs, self.label).tolist()
        return [Scored(t, s, w, p) for t, s, w, p in zip(texts, scores, wins, probs)]


class GreedyWIR:
    """Greedy substitution in order of word importance (TextAttack's ``GreedyWordSwapWIR``).

    Args:
        wir: importance method, one of :data:`WIR_METHODS`.
        seed: only for ``random`` order.
    """

    def __init__(self, wir: str = "delete", seed: int = 0) -> None:
        if wir not in WIR_METHODS:
            raise ValueError(f"wir must be one of {WIR_METHODS}, got {wir!r}")
        self.wir, self.seed = wir, seed

    def order(self, problem: Problem, start: Scored) -> list[int]:
        """Modifiable indices, most important first (ties keep text order)."""
        text = start.text
        indices = problem.modifiable(text)
        if self.wir == "random":
            random.Random(self.seed).shuffle(indices)
            return indices
        if self.wir == "delete":
            probes = [text.delete(i) for i in indices]
        else:
            tok = problem.victim.tokenizer
            token = tok.unk_token if self.wir in ("unk", "weighted-saliency") else tok.mask_token
            probes = [text.replace(i, token) for i in indices]
        scores = torch.tensor([s.score for s in problem.evaluate(probes)])
        if self.wir == "weighted-saliency":
            saliency = torch.softmax(scores, dim=0)
            # The swaps of every word are scored in one victim call (full batches), then split per word.
            swaps = [problem.candidates(text, [i]) for i in indices]
            flat = problem.evaluate([c for group in swaps for c in group])
            delta, start = [], 0
            for group in swaps:
                delta.append(max((s.score for s in flat[start:start + len(group)]), default=0.0))
                start += len(group)
            scores = saliency * torch.tensor(delta)
        ranked = sorted(range(len(indices)), key=lambda j: -float(scores[j]))
        return [indices[j] for j in ranked]

    def run(self, problem: Problem) -> Scored:
        """The final text: a success as soon as one is found, else the best-scoring text reached."""
        current = problem.evaluate([problem.original])[0]
        try:
            for i in self.order(problem, current):
                if i not in problem.modifiable(current.text):  # a constraint closed it meanwhile
                    continue
                results = problem.evaluate(problem.candidates(current.text, [i]))
                if not results:
                    continue
                best = max(results, key=lambda r: r.score)  # first best on ties: deterministic
                if best.score > current.score:
                    current = best
                wins = [r for r in results if r.success]
                if wins:
                    return max(wins, key=lambda r: r.score)
        except QueryBudgetExceeded:
            pass
        return current
