"""A token-classification task from local data: AG News words tagged by a capitalisation rule (a stand-in for NER).

No NER data set ships with sstkit's data folder, so FM3's NER task is replaced by one whose labels are known by
construction. Every AG News text is split into words, and each word is tagged by :func:`name_tags`:

* ``NUM`` — a word holding a digit ("80", "1.8-inch", "2005");
* ``B-NAME`` / ``I-NAME`` — a maximal run of capitalised words that do not start a sentence ("... says the
  [Center] for [Democracy] ...", "... former self-styled [Spam King Sanford Wallace] ..."): mostly the names of
  people, places and organisations, also weekdays, months and title-cased words;
* ``O`` — every other word.

The encoder reads lower-cased tokens (all-MiniLM-L6-v2 is uncased), so the capital letters that define the tags
are not in its input: it has to tell names from the words around and in them, as in NER. It is *not* NER: a
sentence-initial name is ``O``, a name written in lower case is ``O``, and "The" after a colon is a name.

Only the first sub-word token of a word carries its tag; the others, the special tokens and padding carry -100
(ignored by the loss and the metrics), as Hugging Face's token-classification recipes do.

Example (YAML, as one task of the multitask data)::

    data:
      class_path: sstkit.datamodules.MultitaskTextDataModule
      init_args: {tasks: [sst2, agnews, agnews_names], k_shot: 16}
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.loaders import load_tokenizer
from sstkit.paths import cache_dir, fingerprint

from .agnews import AGNewsDataModule
from .tokenized import PadCollate, TokenizedTexts

NAME_TAGS = ["O", "B-NAME", "I-NAME", "NUM"]
IGNORE = -100  # the label of tokens that no loss or metric counts (the cross-entropy's default ignore_index)
_WORD = re.compile(r"\w+(?:[.'\-]\w+)*|[^\w\s]")
_SENTENCE_END = {".", "!", "?", ":", ";"}


def name_tags(text: str) -> tuple[list[str], list[int]]:
    """Words of ``text`` and their tags (indices into :data:`NAME_TAGS`) by the capitalisation rule.

    Example:
        >>> name_tags("Toshiba Corp. announced Tuesday a 80 GB drive.")[1]
        [0, 1, 0, 0, 1, 0, 3, 1, 0, 0]
    """
    text = re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)  # AG News keeps HTML entities as "#39;"
    words = _WORD.findall(text)
    tags, starts_sentence = [], True
    for word in words:
        if any(c.isdigit() for c in word):
            tag = 3
        elif word[0].isupper() and not starts_sentence:
            tag = 2 if tags and tags[-1] in (1, 2) else 1
        else:
            tag = 0
        tags.append(tag)
        starts_sentence = word in _SENTENCE_END
    return words, tags


@dataclass
class TokenTaggedTexts(TokenizedTexts):
    """:class:`TokenizedTexts` plus one tag per token (``tags``, aligned with ``ids``; -100 where none counts).

    ``labels`` (one per text) is -100 throughout: a token task has no sentence label.
    """

    tags: Tensor = None  # type: ignore[assignment]

    @classmethod
    def build_tagged(cls, texts: list[str], tokenizer: Any, max_length: int) -> TokenTaggedTexts:
        """Tags every text with :func:`name_tags` and tokenises it word by word (truncated to ``max_length``)."""
        ids: list[int] = []
        tags: list[int] = []
        lengths: list[int] = []
        for text in texts:
            words, word_tags = name_tags(text)
            encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
            previous = None
            for word in encoded.word_ids():
                tags.append(IGNORE if word is None or word == previous else word_tags[word])
                previous = word
            ids += encoded["input_ids"]
            lengths.append(len(encoded["input_ids"]))
        offsets = torch.zeros(len(texts) + 1, dtype=torch.long)
        offsets[1:] = torch.tensor(lengths, dtype=torch.long).cumsum(0)
        return cls(torch.tensor(ids, dtype=torch.int32), offsets, torch.full((len(texts),), IGNORE),
                   torch.tensor(tags, dtype=torch.long))  # fmt: skip

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(f".tmp{os.getpid()}")  # atomic, as TokenizedTexts.save
        torch.save({"ids": self.ids, "offsets": self.offsets, "labels": self.labels, "tags": self.tags}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TokenTaggedTexts:
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["ids"], state["offsets"], state["labels"], state["tags"])

    def subset(self, indices: list[int]) -> TokenTaggedTexts:
        base = super().subset(indices)
        pieces = [self.tags[self.offsets[i] : self.offsets[i + 1]] for i in indices]
        return TokenTaggedTexts(base.ids, base.offsets, base.labels, torch.cat(pieces) if pieces else self.tags[:0])

    def text_tags(self, i: int) -> Tensor:
        """The tags of text ``i``'s tokens."""
        return self.tags[self.offsets[i] : self.offsets[i + 1]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**super().__getitem__(i), "tags": self.text_tags(i)}


class TagCollate(PadCollate):
    """:class:`PadCollate` plus ``token_labels`` (batch, length), -100 on padding and on examples without tags."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        batch = super().__call__(examples)
        if any("tags" in e for e in examples):
            token_labels = torch.full(batch["input_ids"].shape, IGNORE, dtype=torch.long)
            for row, example in enumerate(examples):
                if "tags" in example:
                    token_labels[row, : len(example["tags"])] = example["tags"]
            batch["token_labels"] = token_labels
        return batch


def k_shot_tagged_indices(data: TokenTaggedTexts, k: int, seed: int, counted: list[int]) -> list[int]:
    """Greedy k-shot sampling for tagging (Yang & Katiyar, 2020): texts in a seeded order, each kept while one of
    the ``counted`` tags it holds has fewer than ``k`` occurrences, until every counted tag has at least ``k``.

    Each counted tag ends with at least ``k`` occurrences (more where a kept text holds several); sorted rows.

    Example:
        >>> k_shot_tagged_indices(data, 16, seed=0, counted=[1, 3])  # doctest: +SKIP
    """
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    counts = dict.fromkeys(counted, 0)
    keep = []
    for i in order:
        if all(c >= k for c in counts.values()):
            break
        found = torch.bincount(data.text_tags(i).clamp(min=0), minlength=max(counted) + 1)
        if any(counts[t] < k and found[t] > 0 for t in counted):
            keep.append(i)
            for t in counted:
                counts[t] += int(found[t])
    short = {NAME_TAGS[t] if t < len(NAME_TAGS) else t: c for t, c in counts.items() if c < k}
    if short:
        raise SstkitError(f"data.k_shot={k}, but the training texts hold only {short} occurrences of these tags")
    return sorted(keep)


class AGNewsNamesDataModule(AGNewsDataModule):
    """AG News texts with per-word tags ``O / B-NAME / I-NAME / NUM`` from :func:`name_tags` (a stand-in for NER).

    Batches carry ``token_labels`` (batch, length). Same files and arguments as :class:`AGNewsDataModule`; the
    topic labels are not used.

    Example:
        >>> dm = AGNewsNamesDataModule(data_dir="data", max_length=64); dm.setup("fit")  # doctest: +SKIP
    """

    task_type = "token"
    tag_names = NAME_TAGS
    counted_tags = [1, 3]  # what the greedy k-shot counts: entity starts, not their continuations or O

    @property
    def dataset_name(self) -> str:
        return "agnews_names"

    @property
    def num_labels(self) -> int:
        return len(NAME_TAGS)

    def _load_split(self, split: str) -> TokenTaggedTexts:
        path = self._split_path(split)
        key = fingerprint(path, self.opts.tokenizer, self.opts.max_length, "name_tags-v1")
        cached = cache_dir("tokenized") / f"{self.dataset_name}-{path.stem}-{key}.pt"
        if cached.is_file():
            return TokenTaggedTexts.load(cached)
        texts, _ = self.read_split(split)
        data = TokenTaggedTexts.build_tagged(texts, load_tokenizer(self.opts.tokenizer), self.opts.max_length)
        data.save(cached)
        return data

    def _collate(self) -> TagCollate:
        return TagCollate(load_tokenizer(self.opts.tokenizer).pad_token_id)
