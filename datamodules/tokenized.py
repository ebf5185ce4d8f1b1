"""Tokenised text held as one flat tensor, cached on disk, padded per batch.

Tokenising SST-2's 60k sentences takes seconds, but doing it once per split and tokenizer and caching it in a
writable folder keeps every later run (and every DDP rank) from doing it again.

Example:
    >>> data = TokenizedTexts.build(texts, labels, tokenizer, max_length=128)
    >>> loader = DataLoader(data, batch_size=32, collate_fn=PadCollate(tokenizer.pad_token_id))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset


@dataclass
class TokenizedTexts(Dataset):
    """Token ids of many texts: ``ids[offsets[i]:offsets[i+1]]`` is text i; ``labels[i]`` its class."""

    ids: Tensor
    offsets: Tensor
    labels: Tensor

    @classmethod
    def build(cls, texts: list[str], labels: list[int], tokenizer: Any, max_length: int) -> TokenizedTexts:
        """Tokenises with truncation to ``max_length`` (special tokens included)."""
        encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        offsets = torch.zeros(len(encoded) + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
        ids = torch.tensor([t for e in encoded for t in e], dtype=torch.int32)
        return cls(ids, offsets, torch.tensor(labels, dtype=torch.long))

    def save(self, path: Path) -> None:
        """Writes atomically, so concurrent ranks or an interrupted run never leave a half-written cache."""
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"ids": self.ids, "offsets": self.offsets, "labels": self.labels}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TokenizedTexts:
        """Reads a cache file written by :meth:`save`."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        return cls(state["ids"], state["offsets"], state["labels"])

    def subset(self, indices: list[int]) -> TokenizedTexts:
        """A new dataset holding only ``indices``, in that order."""
        pieces = [self.ids[self.offsets[i] : self.offsets[i + 1]] for i in indices]
        lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
        offsets = torch.zeros(len(pieces) + 1, dtype=torch.long)
        offsets[1:] = lengths.cumsum(0)
        ids = torch.cat(pieces) if pieces else self.ids[:0]
        return TokenizedTexts(ids, offsets, self.labels[indices])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[self.offsets[i] : self.offsets[i + 1]], "labels": self.labels[i], "index": i}


class PadCollate:
    """Pads a list of examples to the longest one in the batch (dynamic padding)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            input_ids[row, :n] = example["input_ids"]
            mask[row, :n] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": torch.stack([torch.as_tensor(e["labels"]) for e in examples]),
            "index": torch.tensor([e["index"] for e in examples], dtype=torch.long),
        }
