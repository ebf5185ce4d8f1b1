"""Obstinate attacks (GradObstinate, Wang, Shi and Zhang, 2023): keep the prediction, change the meaning.

Two recipes share one search, :class:`ObstinateSearch`:

- ``obstinate`` — GradObstinate: positions by the norm of the loss gradient at their input embedding, candidates
  from the whole vocabulary by the first-order score ``ΔL_i(w′) = (e_{w′} − e_{w_i}) · g_i``, smallest first, under
  dissimilarity (embedding cosine below ``tau``, not a WordNet synonym); see :mod:`.gradient`.
- ``obstinate-antonym`` — the antonym baseline: WordNet antonym substitutions and negation toggles
  ("is" -> "is not", "not" removed), positions in text order.

At each position the candidates are scored by the victim in one batch; those keeping the prediction are *raw*
obstinate examples, and the first one the validity oracle (:mod:`.oracle`) accepts is returned at once. Without a
valid one the search keeps the best prediction-preserving substitution and goes one step deeper, up to
``max_swaps`` substitutions, and finally returns the first raw example (or a failure).

Example:
    >>> recipe = build_obstinate_recipe("obstinate", scorer=EmbeddingGradient(model, tok),  # doctest: +SKIP
    ...                                 oracle=ValidityOracle([AntonymOrNegation(WordNetLexicon())]))
"""

from __future__ import annotations

from collections.abc import Sequence

from sstkit.functional.attacks.constraints import NotSynonym, RepeatModification, StopwordModification
from sstkit.functional.attacks.gradient import EmbeddingGradient, GradientWordSwap
from sstkit.functional.attacks.oracle import ValidityOracle
from sstkit.functional.attacks.search import Problem, Scored
from sstkit.functional.attacks.text import AttackedText
from sstkit.functional.attacks.transformations import CompositeTransformation, _match_case
from sstkit.functional.attacks.victim import QueryBudgetExceeded, Victim

OBSTINATE_RECIPES = ("obstinate", "obstinate-antonym")  # = recipes.OBSTINATE (kept here: no import cycle)
AUXILIARIES = frozenset("is are was were be been am do does did has have had will would can could should may might "
                        "must".split())
NEGATORS = frozenset({"not", "never", "n't"})


class WordSwapAntonym:
    """Replace word ``i`` by each of its single-word antonyms (``lexicon.antonyms``)."""

    def __init__(self, lexicon) -> None:
        self.lexicon = lexicon

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        return [text.replace(i, _match_case(text.words[i], a)) for i in indices
                for a in self.lexicon.antonyms(text.words[i].lower()) if a != text.words[i].lower()]


class NegationToggle:
    """Negate at word ``i``: insert "not" after an auxiliary verb, or remove a "not" / "never" / "n't"."""

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        out = []
        for i in indices:
            word = text.words[i].lower()
            if word in AUXILIARIES and (i + 1 >= len(text) or text.words[i + 1].lower() not in NEGATORS):
                out.append(text.insert(i + 1, "not"))
            elif word in NEGATORS:
                out.append(text.delete(i))
        return out


class ObstinateSearch:
    """Position by position, the first oracle-valid prediction-preserving candidate (see the module docstring).

    Args:
        oracle: the validity oracle (None: raw obstinate examples only).
        scorer: orders positions by gradient norm (None: text order).
        max_swaps: substitutions one example may accumulate.
        max_positions: positions tried per step (None: all modifiable ones).
    """

    def __init__(self, oracle: ValidityOracle | None = None, scorer: EmbeddingGradient | None = None,
                 max_swaps: int = 2, max_positions: int | None = None) -> None:
        self.oracle, self.scorer = oracle, scorer
        self.max_swaps, self.max_positions = max(1, max_swaps), max_positions

    def order(self, problem: Problem, text: AttackedText) -> list[int]:
        indices = problem.modifiable(text)
        if self.scorer is not None:
            grads = self.scorer.gradients(text)
            indices = sorted(indices, key=lambda i: -grads.norm(i))  # stable: ties keep text order
        return indices[:self.max_positions] if self.max_positions else indices

    def run(self, problem: Problem) -> Scored:
        oracle = self.oracle.for_label(problem.label) if self.oracle is not None else None
        current = problem.evaluate([problem.original])[0]
        raw: Scored | None = None
        try:
            for _ in range(self.max_swaps):
                deeper: Scored | None = None
                for i in self.order(problem, current.text):
                    kept = [r for r in problem.evaluate(problem.candidates(current.text, [i])) if r.success]
                    if not kept:
                        continue
                    raw = raw or kept[0]
                    if oracle is not None:
                        for r, ok in zip(kept, oracle.check([r.text for r in kept], problem.original)):
                            if ok:
                                return r
                    top = max(kept, key=lambda r: r.score)  # first best on ties: deterministic
                    if deeper is None or top.score > deeper.score:
                        deeper = top
                if deeper is None:
                    break
                current = deeper
        except QueryBudgetExceeded:
            pass
        if raw is not None:
            return raw
        return Scored(current.text, current.score, False, current.probs)


def build_obstinate_recipe(name: str, *, lexicon=None, scorer: EmbeddingGradient | None = None,
                           oracle: ValidityOracle | None = None, stopwords: frozenset[str] | None = None,
                           k: int | None = None, tau: float = 0.5, max_swaps: int = 2,
                           max_positions: int | None = None):
    """One of :data:`OBSTINATE_RECIPES` as a :class:`~sstkit.functional.attacks.recipes.Recipe`.

    Raises:
        ValueError: unknown name, or ``obstinate`` without a gradient scorer.
    """
    from sstkit.functional.attacks.goal import PredictionPreserved
    from sstkit.functional.attacks.lexicon import WordNetLexicon, stop_words
    from sstkit.functional.attacks.recipes import Recipe

    if name not in OBSTINATE_RECIPES:
        raise ValueError(f"recipe must be one of {OBSTINATE_RECIPES}, got {name!r}")
    lexicon = lexicon or WordNetLexicon()
    options = {"tau": tau, "max_swaps": max_swaps, "k": k or 10}
    if name == "obstinate":
        if scorer is None:
            raise ValueError("recipe obstinate needs the victim's gradient scorer (scorer=EmbeddingGradient(...))")
        stop = StopwordModification(stopwords if stopwords is not None else stop_words())
        return Recipe(name, PredictionPreserved(), GradientWordSwap(scorer, k or 10, tau),
                      [RepeatModification(), stop, NotSynonym(lexicon)],
                      ObstinateSearch(oracle, scorer, max_swaps, max_positions), options, oracle)
    return Recipe(name, PredictionPreserved(), CompositeTransformation([WordSwapAntonym(lexicon), NegationToggle()]),
                  [RepeatModification()], ObstinateSearch(oracle, None, max_swaps, max_positions), options, oracle)


def transfer(results: Sequence, victim: Victim) -> dict[str, float | int | None]:
    """How often the obstinate examples of another victim are obstinate for ``victim`` too.

    Over the successful results whose original ``victim`` classifies like the attacked one did, the share on which
    ``victim`` keeps that prediction on the perturbed text (raw), and the same over the oracle-validated ones.
    """
    pool = [r for r in results if r.status == "success"]
    if not pool:
        return {"transfer_n": 0, "transfer_rate": None, "transfer_validated_n": 0, "transfer_validated_rate": None}
    preds = victim.predict([r.original for r in pool] + [r.perturbed for r in pool])
    before, after = preds[:len(pool)], preds[len(pool):]
    agree = [(r, a) for r, b, a in zip(pool, before, after) if b == r.original_pred]
    held = [r.original_pred == a for r, a in agree]
    held_valid = [r.original_pred == a for r, a in agree if r.validated]
    return {"transfer_n": len(held), "transfer_rate": sum(held) / len(held) if held else None,
            "transfer_validated_n": len(held_valid),
            "transfer_validated_rate": sum(held_valid) / len(held_valid) if held_valid else None}

