"""LLM2LLM teachers: whatever writes new examples similar to a seed example the student got wrong.

A teacher answers a batch of :class:`Request` s (one seed example, how many new ones are wanted, the iteration
and the retry number) with candidate ``(text, label)`` pairs for each; the loop checks labels, drops
near-duplicates and asks again, a bounded number of times. Teachers are deterministic given the request, so a
resumed run writes the same data. This module holds the protocol and the two teachers that need no model:

- :class:`RuleTeacher`: label-preserving edits (WordNet synonym swaps, word deletion, word swaps — EDA's
  operations), negations and other stop words left alone so the sentiment does not flip;
- :class:`RetrievalTeacher`: the nearest unused labelled examples of a pool by embedding cosine. It adds real
  data, so it is an upper bound of what a generator could add, not a generator.

The chat-model teacher is in :mod:`sstkit.functional.llm2llm.chat_teacher`.

Example:
    >>> teacher = RuleTeacher(lexicon=DictLexicon({"good": ["fine"]}))
    >>> teacher.generate([Request(Example("s0", "a good film", 1), n=1, iteration=1)])  # doctest: +SKIP
    [[('a fine film', 1)]]
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.functional.attacks.lexicon import DictLexicon, Lexicon, WordNetLexicon, stop_words
from sstkit.functional.llm2llm.data import Example

Candidate = tuple[str, int | str]  # (text, class) or, for a generation task, (question, answer)
__all__ = ["Candidate", "DictLexicon", "Request", "RetrievalTeacher", "RuleTeacher", "Teacher", "request_rng"]

# Words whose removal or replacement can flip a sentiment or topic label.
PROTECTED = frozenset("not no never nor n't none nothing nobody neither without but however".split())


@dataclass(frozen=True)
class Request:
    """Ask for ``n`` new examples like ``parent`` in ``iteration``; ``attempt`` counts retries from 0."""

    parent: Example
    n: int
    iteration: int
    attempt: int = 0


@runtime_checkable
class Teacher(Protocol):
    """``generate(requests, existing) -> candidates per request``; ``existing`` holds the dataset's texts."""

    name: str

    def generate(self, requests: Sequence[Request], existing: Collection[str] = ()) -> list[list[Candidate]]: ...


def request_rng(seed: int, request: Request) -> random.Random:
    """A generator fixed by the run seed and the request, independent of what ran before (resume-safe)."""
    return random.Random(f"{seed}:{request.iteration}:{request.parent.id}:{request.attempt}")


class RuleTeacher:
    """EDA-style edits that keep the label: synonym replacement (WordNet), random deletion, random swap.

    Args:
        lexicon: synonyms (default: WordNet through :class:`~sstkit.functional.attacks.lexicon.WordNetLexicon`).
        edit_rate: fraction of the words an edit touches (at least one).
        operations: any of ``synonym``, ``delete``, ``swap``; each candidate uses one, chosen at random.
        seed: fixes the edits.
    """

    name = "rule"
    OPERATIONS = ("synonym", "delete", "swap")

    def __init__(self, lexicon: Lexicon | None = None, edit_rate: float = 0.15,
                 operations: Sequence[str] = OPERATIONS, seed: int = 0) -> None:
        unknown = sorted(set(operations) - set(self.OPERATIONS))
        if unknown or not operations:
            raise SstkitError(f"teacher.operations: expected a non-empty subset of {list(self.OPERATIONS)}, got {list(operations)}")
        if not 0 < edit_rate <= 1:
            raise SstkitError(f"teacher.edit_rate must be in (0, 1], got {edit_rate}")
        self.lexicon = lexicon if lexicon is not None else WordNetLexicon()
        self.edit_rate, self.operations, self.seed = edit_rate, tuple(operations), seed
        self.stop = stop_words() | PROTECTED

    def generate(self, requests: Sequence[Request], existing: Collection[str] = ()) -> list[list[Candidate]]:
        out = []
        for request in requests:
            rng = request_rng(self.seed, request)
            words = request.parent.text.split()
            out.append([(self.edit(words, rng), request.parent.label) for _ in range(request.n)])
        return out

    def edit(self, words: list[str], rng: random.Random) -> str:
        """One edit of ``words`` by an operation drawn from ``rng``."""
        k = max(1, round(self.edit_rate * len(words)))
        op = rng.choice(self.operations)
        words = list(words)
        if op == "synonym":
            slots = [i for i, w in enumerate(words) if w.isalpha() and w.lower() not in self.stop]
            rng.shuffle(slots)
            done = 0
            for i in slots:
                choices = self.lexicon.synonyms(words[i].lower())
                if choices:
                    words[i] = rng.choice(choices)
                    done += 1
                if done == k:
                    break
        elif op == "delete" and len(words) > 1:
            slots = [i for i, w in enumerate(words) if w.lower() not in PROTECTED]
            drop = set(rng.sample(slots, min(k, len(slots), len(words) - 1)))
            words = [w for i, w in enumerate(words) if i not in drop]
        elif op == "swap" and len(words) > 1:
            for _ in range(k):
                i, j = rng.sample(range(len(words)), 2)
                words[i], words[j] = words[j], words[i]
        return " ".join(words)


class RetrievalTeacher:
    """Returns the pool's nearest examples of the parent's label that are not yet in the dataset.

    Args:
        pool_texts, pool_labels: labelled examples the student has not seen (e.g. the rest of the training file).
        embed: texts → ``(n, d)`` embeddings; cosine similarity ranks the pool (see :func:`minilm_embedder`).
        match_label: return only examples of the parent's label (classification); off for a generation task,
            whose pool questions bring their own answers.
    """

    name = "retrieval"

    def __init__(self, pool_texts: Sequence[str], pool_labels: Sequence[int | str],
                 embed: Callable[[Sequence[str]], Tensor], match_label: bool = True) -> None:
        if len(pool_texts) != len(pool_labels) or not pool_texts:
            raise SstkitError(f"retrieval teacher: the pool needs texts and labels of one non-zero length, "
                              f"got {len(pool_texts)} texts and {len(pool_labels)} labels")
        self.texts = list(pool_texts)
        self.labels = [y if isinstance(y, str) else int(y) for y in pool_labels]
        self.embed, self.match_label = embed, match_label
        self.vectors = torch.nn.functional.normalize(embed(self.texts).float(), dim=-1)

    def generate(self, requests: Sequence[Request], existing: Collection[str] = ()) -> list[list[Candidate]]:
        if not requests:
            return []
        taken = set(existing)
        queries = torch.nn.functional.normalize(self.embed([r.parent.text for r in requests]).float(), dim=-1)
        order = (queries @ self.vectors.T).argsort(dim=-1, descending=True)
        out = []
        for request, ranked in zip(requests, order.tolist(), strict=True):
            found: list[Candidate] = []
            for i in ranked:
                if (not self.match_label or self.labels[i] == request.parent.label) and self.texts[i] not in taken:
                    found.append((self.texts[i], self.labels[i]))
                    taken.add(self.texts[i])  # two parents in one batch never get the same pool example
                    if len(found) == request.n:
                        break
            out.append(found)
        return out


def minilm_embedder(backbone: str = "minilm", batch_size: int = 64, max_length: int = 64) -> Callable[[Sequence[str]], Tensor]:
    """Mean-pooled sentence embeddings from a packaged or Hugging Face encoder (all-MiniLM-L6-v2 by default)."""
    from sstkit.loaders import load_encoder, load_tokenizer

    encoder, tokenizer = load_encoder(backbone).eval(), load_tokenizer(backbone)

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> Tensor:
        parts = []
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            parts.append((hidden * mask).sum(1) / mask.sum(1).clamp_min(1))
        return torch.cat(parts) if parts else torch.zeros(0, 1)

    return embed
