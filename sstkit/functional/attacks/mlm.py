"""Masked-language-model access for the attacks: top-k fills of a [MASK], BERT-Attack's sub-word candidates, and
pseudo-perplexity.

Candidates are whole words: a vocabulary mask keeps tokens that start a word and are alphabetic (WordPiece
``##`` pieces are continuations). All calls batch their texts (``batch_size`` per forward).

Example:
    >>> mlm = MaskedLMPredictor(model, tokenizer)  # doctest: +SKIP
    >>> mlm.fill(["a [MASK] film"], k=3)  # doctest: +SKIP
    [[('great', -1.2), ('good', -1.9), ('bad', -2.3)]]
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn


class MaskedLMPredictor:
    """Batched fill-mask over any Hugging Face ``…ForMaskedLM`` (or sstkit's :class:`MaskedLM`'s ``.mlm``).

    Args:
        model: the masked LM (eval mode is set here).
        tokenizer: its tokenizer (must have a mask token).
        batch_size: texts per forward.
        max_length: truncation length in tokens.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, batch_size: int = 32, max_length: int = 128) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = next(model.parameters()).device
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        # Whole-word tokens: alphabetic, not a continuation piece, not a special token.
        special = set(tokenizer.all_special_tokens)
        self.word_ok = torch.tensor([t not in special and not t.startswith("##") and t.lstrip("Ġ▁").isalpha()
                                     for t in vocab])
        self.piece_ok = torch.tensor([t.startswith("##") and t[2:].isalpha() for t in vocab])
        self.logit_cache: OrderedDict[str, tuple[Tensor, list[int | None]]] = OrderedDict()

    @property
    def mask_token(self) -> str:
        return str(self.tokenizer.mask_token)

    @torch.no_grad()
    def _logits(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Log-probabilities (batch, length, vocab) and input ids of ``texts``."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt")
        out = self.model(input_ids=enc["input_ids"].to(self.device),
                         attention_mask=enc["attention_mask"].to(self.device))
        logits = out.logits if hasattr(out, "logits") else out
        return torch.log_softmax(logits.float(), dim=-1).cpu(), enc["input_ids"]

    def fill(self, texts: Sequence[str], k: int) -> list[list[tuple[str, float]]]:
        """The ``k`` most likely whole words (with log-probabilities) at the first mask of each text."""
        out: list[list[tuple[str, float]]] = []
        mask_id = self.tokenizer.mask_token_id
        for start in range(0, len(texts), self.batch_size):
            logp, ids = self._logits(texts[start:start + self.batch_size])
            for row in range(len(ids)):
                where = (ids[row] == mask_id).nonzero()
                if len(where) == 0:  # the mask was truncated away
                    out.append([])
                    continue
                scores = logp[row, int(where[0])].masked_fill(~self.word_ok, -math.inf)
                top = scores.topk(k)
                tokens = self.tokenizer.convert_ids_to_tokens(top.indices.tolist())
                out.append([(t.lstrip("Ġ▁"), float(v)) for t, v in zip(tokens, top.values.tolist())
                            if v > -math.inf])
        return out

    def word_logits(self, words: Sequence[str]) -> tuple[Tensor, list[int | None]]:
        """Log-probabilities of the *unmasked* text at each token and each token's word index (cached)."""
        key = " ".join(words)
        if key not in self.logit_cache:
            enc = self.tokenizer(list(words), is_split_into_words=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
            with torch.no_grad():
                out = self.model(input_ids=enc["input_ids"].to(self.device),
                                 attention_mask=enc["attention_mask"].to(self.device))
            logits = out.logits if hasattr(out, "logits") else out
            self.logit_cache[key] = (torch.log_softmax(logits[0].float(), -1).cpu(), enc.word_ids(0))
            while len(self.logit_cache) > 256:
                self.logit_cache.popitem(last=False)
        return self.logit_cache[key]

    def subword_candidates(self, words: Sequence[str], i: int, k: int, max_subwords: int = 4) -> list[str]:
        """BERT-Attack's candidates for word ``i``, read from the unmasked text's predictions at its tokens.

        A one-token word takes the top-``k`` whole words at its position. A word of ``n`` pieces takes products of
        per-position predictions; instead of all ``k**n`` products (TextAttack ranks every product by perplexity,
        which explodes at k = 48), a beam of width ``k`` keeps the ``k`` best partial products by summed
        log-probability at each position, so at most ``k * k`` products are scored per piece. Words of more than
        ``max_subwords`` pieces get no candidates.
        """
        logp, word_ids = self.word_logits(words)
        positions = [p for p, w in enumerate(word_ids) if w == i]
        if not positions or len(positions) > max_subwords:
            return []
        beam: list[tuple[float, list[int]]] = [(0.0, [])]
        for step, pos in enumerate(positions):
            allowed = self.word_ok if step == 0 else self.piece_ok
            top = logp[pos].masked_fill(~allowed, -math.inf).topk(k)
            grown = [(score + float(v), ids + [int(t)]) for score, ids in beam
                     for v, t in zip(top.values.tolist(), top.indices.tolist()) if v > -math.inf]
            beam = sorted(grown, key=lambda x: -x[0])[:k]
        out: dict[str, None] = {}
        for _, ids in beam:
            word = self.tokenizer.convert_tokens_to_string(self.tokenizer.convert_ids_to_tokens(ids)).strip()
            if word.isalpha() and word != words[i]:
                out[word] = None
        return list(out)

    def pseudo_perplexity(self, texts: Sequence[str]) -> list[float]:
        """exp of the mean negative log-likelihood of each token with that token masked (Salazar et al., 2020)."""
        out = []
        for text in texts:
            ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
            inner = list(range(1, len(ids) - 1))  # not [CLS] / [SEP]
            if not inner:
                out.append(float("nan"))
                continue
            nll = 0.0
            for start in range(0, len(inner), self.batch_size):
                chunk = inner[start:start + self.batch_size]
                batch = torch.tensor([ids] * len(chunk))
                batch[torch.arange(len(chunk)), torch.tensor(chunk)] = self.tokenizer.mask_token_id
                with torch.no_grad():
                    o = self.model(input_ids=batch.to(self.device), attention_mask=torch.ones_like(batch).to(self.device))
                logp = torch.log_softmax((o.logits if hasattr(o, "logits") else o).float(), -1).cpu()
                nll -= float(sum(logp[r, p, ids[p]] for r, p in enumerate(chunk)))
            out.append(math.exp(nll / len(inner)))
        return out
