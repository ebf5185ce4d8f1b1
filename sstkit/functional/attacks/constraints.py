"""Constraints on adversarial candidates, in TextAttack's two kinds.

*Pre-transformation* constraints say which words may be touched (:meth:`Constraint.modifiable`): no word twice
(``RepeatModification``), no stop word (``StopwordModification``). *Post-transformation* constraints accept or
reject a candidate against the original (:meth:`Constraint.check`): share of words changed, part of speech, sentence
similarity. :meth:`check` is also how tests and reports verify a returned example.

Example:
    >>> from sstkit.functional.attacks.text import AttackedText
    >>> orig = AttackedText.from_text("a good film")
    >>> MaxWordsPerturbed(0.4).check([orig.replace(1, "fine"), orig.replace(1, "fine").replace(2, "movie")], orig)
    [True, False]
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from sstkit.functional.attacks.lexicon import Lexicon
from sstkit.functional.attacks.text import AttackedText


class Constraint:
    """Base: every index modifiable, every candidate accepted."""

    def modifiable(self, text: AttackedText, indices: set[int]) -> set[int]:
        """The subset of current ``indices`` of ``text`` this constraint lets the attack change."""
        return indices

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        """Per candidate: does it satisfy the constraint with respect to ``original``?"""
        return [True] * len(candidates)


class RepeatModification(Constraint):
    """A word already changed is not changed again (greedy searches)."""

    def modifiable(self, text: AttackedText, indices: set[int]) -> set[int]:
        return {i for i in indices if not text.changed[i]}


class StopwordModification(Constraint):
    """Stop words are never substituted or removed (inserting next to them is allowed)."""

    def __init__(self, stopwords: frozenset[str] | set[str]) -> None:
        self.stopwords = frozenset(w.lower() for w in stopwords)

    def modifiable(self, text: AttackedText, indices: set[int]) -> set[int]:
        return {i for i in indices if text.words[i].lower() not in self.stopwords}

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        protected = {i for i, w in enumerate(original.original) if w.lower() in self.stopwords}
        return [not (protected & c.changed_origins()) for c in candidates]


class MaxWordsPerturbed(Constraint):
    """At most ``max_percent`` (a share, 0–1) of the original words changed (inserted words count as changes)."""

    def __init__(self, max_percent: float) -> None:
        self.max_percent = max_percent

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        return [c.changed_share() <= self.max_percent + 1e-9 for c in candidates]


class NotSynonym(Constraint):
    """No substituted word is a lexicon synonym of the word it replaced (obstinate edits must not paraphrase)."""

    def __init__(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        out = []
        for c in candidates:
            pairs = [(original.original[o].lower(), w.lower()) for w, o, ch in zip(c.words, c.origin, c.changed)
                     if ch and o >= 0]
            out.append(not any(new in self.lexicon.synonyms(old) for old, new in pairs))
        return out


class PartOfSpeech(Constraint):
    """A substitute must share a part of speech with the word it replaces.

    Deviation: TextAttack tags both words in context (NLTK's perceptron tagger or flair), which needs data files
    that cannot be downloaded here. This checks the words' WordNet parts of speech instead (noun, verb, adjective,
    adverb), which is context-free: a word WordNet does not know (function words) passes. ``allow_verb_noun_swap``
    as in BAE.
    """

    def __init__(self, lexicon: Lexicon, allow_verb_noun_swap: bool = True) -> None:
        self.lexicon = lexicon
        self.allow_verb_noun_swap = allow_verb_noun_swap

    def _compatible(self, a: str, b: str) -> bool:
        pa, pb = self.lexicon.pos(a), self.lexicon.pos(b)
        if not pa or a.lower() == b.lower():
            return True
        if self.allow_verb_noun_swap and pa & {"n", "v"} and pb & {"n", "v"}:
            return True
        return bool(pa & pb)

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        out = []
        for c in candidates:
            out.append(all(self._compatible(original.original[o], w)
                           for w, o, ch in zip(c.words, c.origin, c.changed) if ch and o >= 0))
        return out


class SentenceSimilarity(Constraint):
    """Cosine similarity of sentence embeddings, candidate vs original, at least ``threshold``.

    Args:
        encode: texts -> L2-normalised embeddings (batch, dim); :class:`SentenceEncoder` wraps MiniLM, the
            offline stand-in for the Universal Sentence Encoder the recipes use.
        threshold: minimum cosine.
        window: compare only the ``window`` words around the last modified word (BAE: 15); None: whole texts.
        skip_short: texts shorter than the window pass unchecked (BAE's ``skip_text_shorter_than_window``).
    """

    def __init__(self, encode: Callable[[list[str]], Tensor], threshold: float, window: int | None = None,
                 skip_short: bool = False) -> None:
        self.encode, self.threshold, self.window, self.skip_short = encode, threshold, window, skip_short

    def similarities(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[float]:
        pairs = []
        for c in candidates:
            i = c.modified_index or 0
            pairs.append((c.window(i, self.window), original.window(min(i, len(original) - 1), self.window)))
        if not pairs:
            return []
        emb = self.encode([a for a, _ in pairs] + [b for _, b in pairs])
        n = len(pairs)
        return (emb[:n] * emb[n:]).sum(-1).tolist()

    def check(self, candidates: Sequence[AttackedText], original: AttackedText) -> list[bool]:
        sims = self.similarities(candidates, original)
        short = [self.skip_short and self.window is not None and len(c) < self.window for c in candidates]
        return [s or sim >= self.threshold for s, sim in zip(short, sims)]


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings of a Hugging Face encoder (all-MiniLM-L6-v2's recipe), cached.

    Example:
        >>> enc = SentenceEncoder.load("minilm")  # doctest: +SKIP
        >>> enc(["a good film", "a fine movie"]).shape  # doctest: +SKIP
        torch.Size([2, 384])
    """

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 64, max_length: int = 128) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_length = batch_size, max_length
        self.cache: OrderedDict[str, Tensor] = OrderedDict()

    @classmethod
    def load(cls, name: str = "minilm") -> SentenceEncoder:
        from sstkit.loaders import load_encoder, load_tokenizer

        return cls(load_encoder(name, pretrained=True), load_tokenizer(name))

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            enc = self.tokenizer(chunk, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
            self.cache.update(zip(chunk, emb))
        while len(self.cache) > 8192:
            self.cache.popitem(last=False)
        return torch.stack([self.cache[t] for t in texts])
