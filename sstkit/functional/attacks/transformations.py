"""Transformations: the candidate texts one edit away from a text, at chosen word indices.

- :class:`WordSwapLexicon` — synonyms from a lexicon (WordNet for PWWS).
- :class:`WordSwapMaskedLM` — BAE-R (mask the word, take the MLM's top-k) or BERT-Attack (read the unmasked text's
  predictions at the word's sub-word tokens, bounded by a beam).
- :class:`WordInsertMaskedLM` — BAE-I / FBA insertion: a [MASK] before the word, the MLM's top-k.
- :class:`CompositeTransformation` — the union.

A transformation is a callable ``(text, indices) -> candidates``; a gradient-guided one (scoring the whole
vocabulary by ``(e_w' - e_w) . g_i``) plugs in the same way. All MLM calls for one text's indices go in one batch.

Example:
    >>> from sstkit.functional.attacks.lexicon import DictLexicon
    >>> from sstkit.functional.attacks.text import AttackedText
    >>> swap = WordSwapLexicon(DictLexicon({"good": ["fine"]}))
    >>> [c.text for c in swap(AttackedText.from_text("a good film"), [1, 2])]
    ['a fine film']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sstkit.functional.attacks.lexicon import Lexicon
from sstkit.functional.attacks.mlm import MaskedLMPredictor
from sstkit.functional.attacks.text import AttackedText


class Transformation(Protocol):
    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]: ...


def _match_case(template: str, word: str) -> str:
    return word.capitalize() if template[:1].isupper() else word


class WordSwapLexicon:
    """Replace word ``i`` by each of its single-word synonyms (TextAttack's ``WordSwapWordNet``)."""

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        out = []
        for i in indices:
            word = text.words[i]
            for syn in self.lexicon.synonyms(word.lower()):
                if syn != word.lower():
                    out.append(text.replace(i, _match_case(word, syn)))
        return out


class WordSwapMaskedLM:
    """Masked-LM substitution.

    Args:
        mlm: the predictor.
        method: ``bae`` (replace the word by one [MASK], top-``k`` whole words there) or ``bert-attack`` (no mask:
            the original text's predictions at the word's pieces, see :meth:`MaskedLMPredictor.subword_candidates`).
        k: candidates per word (BAE 50, BERT-Attack 48).
        max_subwords: BERT-Attack only: words of more pieces are not attacked.
        min_logprob: drop candidates the MLM finds less likely than this (BAE's ``min_confidence`` as log-prob).
    """

    def __init__(self, mlm: MaskedLMPredictor, method: str = "bae", k: int = 50, max_subwords: int = 4,
                 min_logprob: float = float("-inf")) -> None:
        if method not in ("bae", "bert-attack"):
            raise ValueError(f"method must be bae or bert-attack, got {method!r}")
        self.mlm, self.method, self.k, self.max_subwords, self.min_logprob = mlm, method, k, max_subwords, min_logprob

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        indices = list(indices)
        out = []
        if self.method == "bae":
            masked = [" ".join(text.words[:i] + (self.mlm.mask_token,) + text.words[i + 1:]) for i in indices]
            for i, fills in zip(indices, self.mlm.fill(masked, self.k)):
                out += [text.replace(i, _match_case(text.words[i], w)) for w, lp in fills
                        if lp >= self.min_logprob and w.lower() != text.words[i].lower()]
        else:
            for i in indices:
                out += [text.replace(i, _match_case(text.words[i], w))
                        for w in self.mlm.subword_candidates(text.words, i, self.k, self.max_subwords)
                        if w.lower() != text.words[i].lower()]
        return out


class WordInsertMaskedLM:
    """Insert each of the MLM's top-``k`` whole words at a [MASK] placed before word ``i``."""

    def __init__(self, mlm: MaskedLMPredictor, k: int = 50) -> None:
        self.mlm, self.k = mlm, k

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        indices = list(indices)
        masked = [" ".join(text.words[:i] + (self.mlm.mask_token,) + text.words[i:]) for i in indices]
        return [text.insert(i, w) for i, fills in zip(indices, self.mlm.fill(masked, self.k)) for w, _ in fills]


class CompositeTransformation:
    """The candidates of several transformations together."""

    def __init__(self, parts: Sequence[Transformation]) -> None:
        self.parts = list(parts)

    def __call__(self, text: AttackedText, indices: Sequence[int]) -> list[AttackedText]:
        return [c for part in self.parts for c in part(text, indices)]
