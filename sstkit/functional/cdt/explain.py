"""Local explanations with CD-T: a score per word and per phrase of a sentence for a text classifier.

A set S of tokens scores ``β_S[label] − β_S[competitor]``: the part of the logit margin that CD-T attributes to S,
where ``label`` is the explained class (by default the prediction) and ``competitor`` the closest other class (the
highest other logit of the full input). A word is the set of its word-piece tokens; a phrase is a run of
consecutive words. Special tokens ([CLS], [SEP]) are never in S.

Example:
    >>> from sstkit.commands.classifier_io import load_classifier  # doctest: +SKIP
    >>> from sstkit.loaders import load_tokenizer  # doctest: +SKIP
    >>> result = explain_text(model, load_tokenizer("minilm"), "a gripping , funny film")  # doctest: +SKIP
    >>> result.words, result.word_scores  # doctest: +SKIP
    (['a', 'gripping', ',', 'funny', 'film'], [0.01, 1.9, -0.02, 1.4, 0.1])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sstkit.functional.cdt.decompose import decompose


@dataclass
class Explanation:
    """CD-T scores of one sentence; ``phrases`` holds (first word, last word, score) for each phrase."""

    text: str
    words: list[str]
    word_scores: list[float]
    phrases: list[tuple[int, int, float]] = field(default_factory=list)
    label: int = 0
    competitor: int = 0
    probs: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def margin_scores(beta: Tensor, label: int, competitor: int) -> Tensor:
    """β-logit of ``label`` minus β-logit of ``competitor`` over the last axis."""
    return beta[..., label] - beta[..., competitor]


def closest_competitor(logits: Tensor, label: int) -> int:
    """The highest-scoring class other than ``label``."""
    other = logits.clone().float()
    other[label] = float("-inf")
    return int(other.argmax())


def word_positions(tokenizer: Any, text: str, max_length: int = 128) -> tuple[dict[str, Tensor], list[str],
                                                                               list[list[int]]]:
    """Tokenises ``text`` (one example) and groups token positions by whitespace word.

    Returns the model inputs, the words, and each word's token positions (empty for a word cut by truncation).
    """
    words = text.split()
    enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length, return_tensors="pt")
    positions: list[list[int]] = [[] for _ in words]
    for pos, word in enumerate(enc.word_ids(0)):
        if word is not None:
            positions[word].append(pos)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    return inputs, words, positions


@torch.no_grad()
def explain_text(model: nn.Module, tokenizer: Any, text: str, label: int | None = None, max_phrase: int = 3,
                 max_length: int = 128, attention: str = "total", sign_fix: str | bool = "layer") -> Explanation:
    """Word and phrase scores of ``text`` for ``model`` (a TextClassifier in eval mode).

    Args:
        label: the class to explain; default the predicted one.
        max_phrase: phrases of 2…max_phrase consecutive words are scored too (1 disables phrases).
        attention: the CD-T attention rule (``total`` for local explanations, as in the paper).
        sign_fix: ``layer`` (default, at block ends as the official local-explanation code), ``all`` or ``none``;
            after every operation it zeroes most words that oppose the explained class.
    """
    inputs, words, positions = word_positions(tokenizer, text, max_length)
    spans = [(i, i) for i in range(len(words))]
    spans += [(i, i + n - 1) for n in range(2, max_phrase + 1) for i in range(len(words) - n + 1)]
    sets = [sorted(p for w in range(a, b + 1) for p in positions[w]) for a, b in spans]
    dec = decompose(model, inputs, relevant=sets, attention=attention, sign_fix=sign_fix)
    logits = dec.total[0, 0]
    label = int(logits.argmax()) if label is None else label
    competitor = closest_competitor(logits, label)
    scores = margin_scores(dec.beta[0], label, competitor).tolist()
    n = len(words)
    return Explanation(text, words, scores[:n], [(a, b, s) for (a, b), s in zip(spans[n:], scores[n:])], label,
                       competitor, torch.softmax(logits.float(), -1).tolist())


def top_words(explanation: Explanation, k: int = 1) -> list[str]:
    """The ``k`` highest-scoring words."""
    order = sorted(range(len(explanation.words)), key=lambda i: -explanation.word_scores[i])
    return [explanation.words[i] for i in order[:k]]
