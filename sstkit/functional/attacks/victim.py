"""The attacked classifier behind one batched, cached query function.

Every candidate text an attack wants scored goes through :meth:`Victim.probs`: texts already seen come from the
cache (and cost no query, as in TextAttack), the rest are tokenised together and run in batches of ``batch_size``
(one forward per batch). ``batch_size=1`` is the one-at-a-time baseline the benchmark compares against.

Works with a Hugging Face ``…ForSequenceClassification`` (output with ``.logits``) and with sstkit's
:class:`~sstkit.models.TextClassifier` (returns logits), or any module called as
``model(input_ids=…, attention_mask=…)``.

Example:
    >>> victim = Victim(model, tokenizer, batch_size=32)  # doctest: +SKIP
    >>> victim.probs(["a gripping film", "a dull film"]).shape  # doctest: +SKIP
    torch.Size([2, 2])
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class QueryBudgetExceeded(Exception):
    """Raised inside a search when the per-example query budget is spent; the search returns its best so far."""


class Victim:
    """Batched, cached class probabilities of a text classifier.

    Args:
        model: the classifier (put in eval mode here).
        tokenizer: its Hugging Face tokenizer.
        batch_size: texts per forward pass.
        max_length: truncation length in tokens.
        device: where the model runs (default: where its parameters are).
        cache_size: how many texts' probabilities to keep (least recently used are dropped).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, batch_size: int = 32, max_length: int = 128,
                 device: torch.device | str | None = None, cache_size: int = 2**16) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.cache: OrderedDict[str, Tensor] = OrderedDict()
        self.cache_size = cache_size
        self.queries = 0  # texts sent to the model (cache misses), TextAttack's "num queries"
        self.forwards = 0  # forward passes
        # Where query time goes (CPU seconds of this process: robust to other jobs on a shared machine).
        self.cpu_seconds = {"tokenize": 0.0, "model": 0.0}
        self.budget: int | None = None  # queries left for the current example (None: unlimited)

    def start_example(self, query_budget: int | None) -> None:
        """Resets the per-example budget; counters keep running (callers take differences)."""
        self.budget = query_budget

    @torch.no_grad()
    def _forward(self, texts: list[str]) -> Tensor:
        t0 = time.process_time()
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        t1 = time.process_time()
        out = self.model(input_ids=enc["input_ids"].to(self.device),
                         attention_mask=enc["attention_mask"].to(self.device))
        logits = out.logits if hasattr(out, "logits") else out
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        self.cpu_seconds["tokenize"] += t1 - t0
        self.cpu_seconds["model"] += time.process_time() - t1
        self.forwards += 1
        return probs

    def probs(self, texts: Sequence[str]) -> Tensor:
        """Class probabilities, shape (len(texts), num_labels); raises :class:`QueryBudgetExceeded` when the
        budget cannot pay for the uncached texts."""
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if self.budget is not None and len(missing) > self.budget:
            raise QueryBudgetExceeded
        if self.batch_size > 1:
            # Texts of similar length share a batch: each batch is padded to its longest text, so mixing the
            # candidates of short and long words wastes compute on padding.
            missing.sort(key=len)
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start:start + self.batch_size]
            for text, row in zip(chunk, self._forward(chunk)):
                self.cache[text] = row
        self.queries += len(missing)
        if self.budget is not None:
            self.budget -= len(missing)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        rows = []
        for text in texts:
            self.cache.move_to_end(text)
            rows.append(self.cache[text])
        return torch.stack(rows) if rows else torch.zeros(0)

    def predict(self, texts: Sequence[str]) -> list[int]:
        """Argmax labels."""
        return self.probs(texts).argmax(-1).tolist()

    def clear_cache(self) -> None:
        self.cache.clear()
