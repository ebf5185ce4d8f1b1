"""A causal LM opened up for decoding-time control: token embeddings in, logits and hidden states out.

Every controller of :mod:`sstkit.generation.control` decodes through :class:`SteerableLM`: prompts are encoded
left-padded, the context is fed as *embeddings* (so a soft prompt or a perturbed prompt is just another tensor),
and positions come from the attention mask, so padded and unpadded rows compute the same numbers. Any Hugging
Face causal LM that accepts ``inputs_embeds`` works (OPT, Llama, SmolLM2, ...); the full context is recomputed at
each step (no KV cache) because the steered controllers change the prompt itself between steps.

Example:
    >>> lm = SteerableLM(model, tokenizer)  # doctest: +SKIP
    >>> ids, mask = lm.encode(["the movie", "a film that"])  # doctest: +SKIP
    >>> out = lm(lm.embed(ids), mask)  # doctest: +SKIP
    >>> out.logits.shape, out.hidden.shape  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError


@dataclass
class LMOutput:
    """Next-token logits at every position (B, T, V) and the last layer's hidden states (B, T, d)."""

    logits: Tensor
    hidden: Tensor


class SteerableLM:
    """Wraps a causal LM and its tokenizer.

    Args:
        model: a Hugging Face causal LM (kept as given; the caller decides eval/train mode and devices).
        tokenizer: its tokenizer; a pad token is set to the end-of-sequence token when missing.
        prefix: text put before every prompt when encoding (e.g. the line break an sstkit LM's training stream
            puts between sentences, so a prompt starts a sentence as in training).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, prefix: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.prefix = prefix
        if getattr(tokenizer, "pad_token_id", None) is None:
            if getattr(tokenizer, "eos_token", None) is None:
                raise SstkitError("the tokenizer has neither a pad nor an end-of-sequence token")
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def encode(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask, left-padded (B, T); every prompt keeps at least one token."""
        encoded = [self.tokenizer.encode(self.prefix + t, add_special_tokens=False) for t in texts]
        if any(not ids for ids in encoded):
            raise SstkitError(f"a prompt encodes to no tokens: {[t for t, e in zip(texts, encoded) if not e][:3]}")
        width = max(len(ids) for ids in encoded)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, seq in enumerate(encoded):
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        return ids.to(self.device), mask.to(self.device)

    def embed(self, ids: Tensor) -> Tensor:
        """Input embeddings of token ids (B, T, d)."""
        return self.embeddings(ids)

    def __call__(self, embeds: Tensor, mask: Tensor, last_only: bool = False) -> LMOutput:
        """One full forward pass over a context given as embeddings; positions follow the attention mask.

        ``last_only`` computes logits for the last position only (B, 1, V): decoding needs no others, and the
        output layer is a large share of a small LM's cost.
        """
        positions = (mask.long().cumsum(1) * mask - 1).clamp(min=0)
        out = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                         output_hidden_states=True, use_cache=False, logits_to_keep=1 if last_only else 0)
        return LMOutput(out.logits, out.hidden_states[-1])

    def expected_hidden(self, embeds: Tensor, mask: Tensor, logits_last: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden states of the context followed by the *expected* next-token embedding ``softmax(logits) @ E``.

        PPLM's device for a differentiable discriminator signal about the token about to be chosen. Returns the
        hidden states (B, T+1, d) and the extended mask.
        """
        probs = torch.softmax(logits_last.float(), -1).to(self.embeddings.weight.dtype)
        soft_token = probs @ self.embeddings.weight
        embeds = torch.cat([embeds, soft_token[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
        return self(embeds, mask, last_only=True).hidden, mask

    def decode(self, ids: Tensor) -> list[str]:
        """Token ids to text, one string per row (special tokens dropped)."""
        return [self.tokenizer.decode(row.tolist(), skip_special_tokens=True) for row in ids]


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over the unmasked positions of (B, T, d) hidden states: the discriminator's input (B, d)."""
    weights = mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def sample_next(logits: Tensor, temperature: float, top_k: int, generator: torch.Generator | None) -> Tensor:
    """One token per row: greedy at temperature 0, else sampled from the top-k of softmax(logits / T)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, -1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
