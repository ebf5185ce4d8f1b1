"""The validity oracle of obstinate attacks: evidence that an edit changed the *gold* label, as constraints.

A substitution that keeps the victim's prediction only counts as an obstinate example if its meaning changed.
Each part below is a :class:`~sstkit.functional.attacks.constraints.Constraint` whose :meth:`check` says, per
candidate, whether it has such evidence against the original text:

- :class:`AntonymOrNegation` — some changed word is a WordNet antonym of the word it replaced, or the number of
  negation words ("not", "never", "n't", …) changed parity (the paper's antonym baseline criterion);
- :class:`SentimentLexiconFlip` — the changed words' summed lexicon valence (VADER's lexicon by default) has the
  opposite sign after the edit, pointing away from the gold label;
- :class:`ClassifierDisagreement` — a second, independently trained classifier changes its prediction on the
  candidate (while the search already guarantees the victim did not).

:class:`ValidityOracle` combines parts with ``any`` (default) or ``all`` and names the parts that fired.

Example:
    >>> from sstkit.functional.attacks.lexicon import DictLexicon
    >>> from sstkit.functional.attacks.text import AttackedText
    >>> orig = AttackedText.from_text("a good film")
    >>> AntonymOrNegation(DictLexicon({}, antonyms={"good": ["bad"]})).check([orig.replace(1, "bad")], orig)
    [True]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sstkit.errors import SstkitError
from sstkit.functional.attacks.constraints import Constraint
from sstkit.functional.attacks.text import AttackedText
from sstkit.functional.attacks.victim import Victim

NEGATIONS = frozenset("not no never nothing nobody none neither nor nowhere cannot n't isn't aren't wasn't weren't "
                      "don't doesn't didn't won't wouldn't can't couldn't shouldn't hasn't haven't hadn't".split())
ORACLE_PARTS = ("antonym", "lexicon", "classifier")


def changed_pairs(candidate: AttackedText) -> list[tuple[str, str]]:
    """``(original word, new word)`` for every substituted word of ``candidate`` (lower case)."""
    return [(candidate.original[o].lower(), w.lower())
            for w, o, ch in zip(candidate.words, candidate.origin, candidate.changed) if ch and o >= 0]


def negation_count(words: Sequence[str]) -> int:
    return sum(1 for w in words if w.lower() in NEGATIONS)


class AntonymOrNegation(Constraint):
    """A changed word is an antonym of its original (``lexicon.antonyms``), or negation parity flipped."""

    name = "antonym"

    def __init__(self, lexicon) -> None:
        if not hasattr(lexicon, "antonyms"):
            raise ValueError(f"{type(lexicon).__name__} has no antonyms(); use WordNetLexicon or DictLexicon")
        self.lexicon = lexicon

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        base = negation_count(original.words) % 2
        return [negation_count(c.words) % 2 != base
                or any(new in self.lexicon.antonyms(old) for old, new in changed_pairs(c)) for c in candidates]


def load_valence(path: str | Path | None = None) -> dict[str, float]:
    """``word -> valence`` from a ``word<TAB>valence[<TAB>…]`` file; default: VADER's lexicon (vaderSentiment)."""
    if path is None:
        try:
            from importlib.resources import files

            path = Path(str(files("vaderSentiment") / "vader_lexicon.txt"))
        except ModuleNotFoundError as err:
            raise SstkitError("the sentiment-lexicon oracle needs vaderSentiment (pip install vadersentiment) "
                              "or a word<TAB>valence file") from err
    path = Path(path)
    if not path.is_file():
        raise SstkitError(f"sentiment lexicon {path}: no such file (expected word<TAB>valence lines)")
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if len(parts) < 2 or not line.strip():
            continue
        try:
            out[parts[0].lower()] = float(parts[1])
        except ValueError as err:
            raise SstkitError(f"sentiment lexicon {path}:{n}: valence {parts[1]!r} is not a number") from err
    return out


class SentimentLexiconFlip(Constraint):
    """The substituted words' valence flips sign, away from the gold label's polarity.

    With ``v`` the lexicon valence, ``before = Σ v(old)`` and ``after = Σ v(new)`` over the changed words: valid
    when ``before`` and ``after`` have opposite signs, both at least ``min_valence`` in size, and ``after`` points
    against the gold label (``positive_label`` positive, every other label negative). Negation parity flips the
    sign of ``after`` (VADER's own rule, simplified to the whole text).

    Args:
        valence: word -> valence (see :func:`load_valence`).
        label: the gold label of the original text (set per example by :meth:`for_label`).
        positive_label: which label is the positive class.
        min_valence: smallest |valence| that counts as polar.
    """

    name = "lexicon"

    def __init__(self, valence: dict[str, float], label: int | None = None, positive_label: int = 1,
                 min_valence: float = 0.5) -> None:
        self.valence, self.label, self.positive_label, self.min_valence = valence, label, positive_label, min_valence

    def for_label(self, label: int) -> SentimentLexiconFlip:
        return SentimentLexiconFlip(self.valence, label, self.positive_label, self.min_valence)

    def _valid(self, c: AttackedText, original: AttackedText) -> bool:
        pairs = changed_pairs(c)
        before = sum(self.valence.get(old, 0.0) for old, _ in pairs)
        after = sum(self.valence.get(new, 0.0) for _, new in pairs)
        if negation_count(c.words) % 2 != negation_count(original.words) % 2:
            after = -after
        if abs(before) < self.min_valence or abs(after) < self.min_valence or before * after > 0:
            return False
        if self.label is None:
            return True
        return (after < 0) == (self.label == self.positive_label)

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        return [self._valid(c, original) for c in candidates]


class ClassifierDisagreement(Constraint):
    """A second classifier's prediction on the candidate differs from its prediction on the original."""

    name = "classifier"

    def __init__(self, victim: Victim) -> None:
        self.victim = victim

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        if not candidates:
            return []
        preds = self.victim.predict([original.text] + [c.text for c in candidates])
        return [p != preds[0] for p in preds[1:]]


class ValidityOracle(Constraint):
    """Parts combined by ``mode`` (``any``: one piece of evidence suffices; ``all``: every part must agree)."""

    def __init__(self, parts: Sequence[Constraint], mode: str = "any") -> None:
        if mode not in ("any", "all"):
            raise ValueError(f"oracle mode must be any or all, got {mode!r}")
        if not parts:
            raise ValueError("the validity oracle needs at least one part")
        self.parts, self.mode = list(parts), mode

    def for_label(self, label: int) -> ValidityOracle:
        """The oracle for one example (parts that read the gold label get it)."""
        return ValidityOracle([p.for_label(label) if hasattr(p, "for_label") else p for p in self.parts], self.mode)

    def verdicts(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[list[str]]:
        """Per candidate, the names of the parts that accept it."""
        out: list[list[str]] = [[] for _ in candidates]
        for part in self.parts:
            for names, ok in zip(out, part.check(candidates, original)):
                if ok:
                    names.append(getattr(part, "name", type(part).__name__))
        return out

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        need = 1 if self.mode == "any" else len(self.parts)
        return [len(names) >= need for names in self.verdicts(candidates, original)]
