"""Fraud's Bargain Attack (Ni et al., 2023): a Metropolis–Hastings chain over word manipulations.

The Word Manipulation Process proposes from the current text ``x`` an edit ``x'``: with probabilities
``p_I, p_S, p_R`` it *inserts* a masked-LM word at a gap, *substitutes* a word by a synonym, or *removes* a word.
Positions for substitution and removal are drawn in proportion to word importance (deletion scores of the original
text, softmaxed; inserted words take the smallest weight), gaps for insertion uniformly; a substitute is uniform
over the word's synonyms; an inserted word follows the MLM's probabilities renormalised over its top ``k`` whole
words. The chain targets

    log π(x) = β · (score(x) + μ · sim(x, x₀))        (−∞ when a constraint fails)

with ``score`` the goal score (1 − p_y) and ``sim`` the MiniLM cosine to the original (when an encoder is
configured; else ``−`` the share of words changed), and accepts ``x'`` with

    α(x' | x) = min(1, π(x') q(x | x') / (π(x) q(x' | x)))

where the reverse of an insertion is the removal of that word, the reverse of a removal the insertion of the
removed word at that gap, and the reverse of a substitution the substitution back. The chain stops at the first
accepted state the victim misclassifies, or after ``steps``.

Example:
    >>> fba = FBAChain(lexicon, mlm, steps=40, seed=0)  # doctest: +SKIP
    >>> result = fba.run(problem)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import torch
from torch import Tensor

from sstkit.functional.attacks.lexicon import Lexicon
from sstkit.functional.attacks.mlm import MaskedLMPredictor
from sstkit.functional.attacks.search import Problem, Scored
from sstkit.functional.attacks.text import AttackedText
from sstkit.functional.attacks.victim import QueryBudgetExceeded

NEG_INF = float("-inf")


def acceptance_probability(log_pi_new: float, log_pi_old: float, log_q_back: float, log_q_forward: float) -> float:
    """``min(1, π(x') q(x|x') / (π(x) q(x'|x)))`` from logs; 0 when the move cannot be reversed or x' is invalid."""
    if log_pi_new == NEG_INF or log_q_back == NEG_INF:
        return 0.0
    return math.exp(min(0.0, log_pi_new - log_pi_old + log_q_back - log_q_forward))


class FBAChain:
    """The WMP proposal and the MH acceptance.

    Args:
        lexicon: synonyms for substitution.
        mlm: masked LM for insertion (None: no insertion, ``p_I`` is moved to substitution).
        steps: chain length per example.
        probs: (p_I, p_S, p_R).
        k: MLM candidates per insertion.
        beta, mu: target temperature and similarity weight.
        encode: sentence encoder for ``sim`` (None: ``-changed_share``).
        seed: the chain's RNG seed (one ``random.Random`` per example, seeded with ``seed`` and the text).
    """

    def __init__(self, lexicon: Lexicon, mlm: MaskedLMPredictor | None, steps: int = 50,
                 probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3), k: int = 30, beta: float = 20.0,
                 mu: float = 0.2, encode: Callable[[list[str]], Tensor] | None = None, seed: int = 0) -> None:
        p_i, p_s, p_r = probs
        if mlm is None:
            p_i, p_s = 0.0, p_s + p_i
        total = p_i + p_s + p_r
        self.p = {"insert": p_i / total, "substitute": p_s / total, "remove": p_r / total}
        self.lexicon, self.mlm, self.steps, self.k = lexicon, mlm, steps, k
        self.beta, self.mu, self.encode, self.seed = beta, mu, encode, seed
        self.importance: dict[int, float] = {}

    # --- proposal densities -------------------------------------------------------------------------------
    def _positions(self, problem: Problem, x: AttackedText) -> tuple[list[int], list[float]]:
        idx = problem.modifiable(x)
        floor = min(self.importance.values(), default=1.0)
        weights = [self.importance.get(x.origin[i], floor) if x.origin[i] >= 0 else floor for i in idx]
        total = sum(weights)
        return idx, [w / total for w in weights] if total > 0 else []

    def _insert_words(self, x: AttackedText, gap: int) -> dict[str, float]:
        assert self.mlm is not None
        masked = " ".join(x.words[:gap] + (self.mlm.mask_token,) + x.words[gap:])
        fills = self.mlm.fill([masked], self.k)[0]
        if not fills:
            return {}
        z = torch.logsumexp(torch.tensor([lp for _, lp in fills]), 0).item()
        return {w: lp - z for w, lp in fills}  # log-probabilities renormalised over the top k

    def log_q(self, problem: Problem, x: AttackedText, move: str, i: int, word: str | None = None) -> float:
        """log q(x' | x) of the edit ``move`` at index/gap ``i`` (with ``word`` for insert/substitute)."""
        p = self.p[move]
        if p == 0:
            return NEG_INF
        if move == "insert":
            words = self._insert_words(x, i)
            return math.log(p) - math.log(len(x) + 1) + words[word] if word in words else NEG_INF
        idx, weights = self._positions(problem, x)
        if i not in idx:
            return NEG_INF
        log_pos = math.log(weights[idx.index(i)])
        if move == "remove":
            return math.log(p) + log_pos
        syns = self._synonyms(x, i)
        return math.log(p) + log_pos - math.log(len(syns)) if word in syns else NEG_INF

    def _synonyms(self, x: AttackedText, i: int) -> list[str]:
        return [s for s in self.lexicon.synonyms(x.words[i].lower()) if s != x.words[i].lower()]

    def propose(self, problem: Problem, x: AttackedText, rng: random.Random) -> tuple[AttackedText, float, float] | None:
        """A proposal ``x'`` with ``log q(x'|x)`` and ``log q(x|x')``, or None when the drawn move is impossible."""
        move = rng.choices(list(self.p), weights=list(self.p.values()))[0]
        if move == "insert":
            gap = rng.randrange(len(x) + 1)
            words = self._insert_words(x, gap)
            if not words:
                return None
            word = rng.choices(list(words), weights=[math.exp(v) for v in words.values()])[0]
            new = x.insert(gap, word)
            return new, self.log_q(problem, x, "insert", gap, word), self.log_q(problem, new, "remove", gap)
        idx, weights = self._positions(problem, x)
        if not idx:
            return None
        i = rng.choices(idx, weights=weights)[0]
        if move == "remove":
            if len(x) <= 1:
                return None
            new = x.delete(i)
            return new, self.log_q(problem, x, "remove", i), self.log_q(problem, new, "insert", i, x.words[i])
        syns = self._synonyms(x, i)
        if not syns:
            return None
        new = x.replace(i, rng.choice(syns))
        back = self.log_q(problem, new, "substitute", i, x.words[i].lower())
        return new, self.log_q(problem, x, "substitute", i, new.words[i]), back

    # --- target and chain --------------------------------------------------------------------------------
    def log_target(self, problem: Problem, scored: Scored) -> float:
        if not problem.admissible([scored.text]):
            return NEG_INF
        if self.encode is not None:
            emb = self.encode([scored.text.text, problem.original.text])
            sim = float((emb[0] * emb[1]).sum())
        else:
            sim = -scored.text.changed_share()
        return self.beta * (scored.score + self.mu * sim)

    def run(self, problem: Problem) -> Scored:
        """Runs the chain; the first accepted successful state, else the highest-target state visited."""
        rng = random.Random(f"{self.seed}:{problem.original.text}")
        current = problem.evaluate([problem.original])[0]
        best = current
        try:
            idx = problem.modifiable(problem.original)
            deleted = problem.evaluate([problem.original.delete(i) for i in idx])
            raw = torch.tensor([s.score for s in deleted]) if deleted else torch.zeros(0)
            self.importance = dict(zip(idx, torch.softmax(raw, 0).tolist()))
            log_pi = best_pi = self.log_target(problem, current)
            for _ in range(self.steps):
                proposal = self.propose(problem, current.text, rng)
                if proposal is None:
                    continue
                new_text, log_fwd, log_back = proposal
                if not problem.admissible([new_text]):  # π(x') = 0: rejected without a victim query
                    continue
                new = problem.evaluate([new_text])[0]
                new_pi = self.log_target(problem, new)
                if rng.random() < acceptance_probability(new_pi, log_pi, log_back, log_fwd):
                    current, log_pi = new, new_pi
                    if new.success:
                        return new
                    if new_pi > best_pi:
                        best, best_pi = new, new_pi
        except QueryBudgetExceeded:
            pass
        return best
