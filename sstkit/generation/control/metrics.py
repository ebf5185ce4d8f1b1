"""Generation metrics for controlled text: Dist-n diversity and perplexity under a second (fluency) LM.

Attribute accuracy needs a separate judge classifier and lives with the command (``sstkit generate``), which
loads it; these functions need only the texts and, for perplexity, any Hugging Face causal LM.

Example:
    >>> distinct_n(["the film is good", "the film is bad"], 1)
    0.625
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the texts (whitespace words), pooled over the set (Li et al., 2016)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def conditional_perplexity(model: Any, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str],
                           batch_size: int = 16) -> float:
    """``exp`` of the token-weighted mean NLL of each continuation given its prompt under ``model``.

    Prompt and continuation are tokenised by ``tokenizer`` (the scoring LM's own), right-padded in batches.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    total_nll, total_tokens = 0.0, 0
    pairs = []
    for prompt, cont in zip(prompts, continuations, strict=True):
        head = tokenizer.encode(prompt, add_special_tokens=False)
        full = tokenizer.encode(prompt + cont, add_special_tokens=False)
        if tokenizer.bos_token_id is not None:  # a model trained with a BOS sees one at the start
            head, full = [tokenizer.bos_token_id] + head, [tokenizer.bos_token_id] + full
        if len(full) > len(head) and len(head) > 0:
            pairs.append((full, len(head)))
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        width = max(len(f) for f, _ in chunk)
        ids = torch.full((len(chunk), width), int(pad), dtype=torch.long)
        mask = torch.zeros_like(ids)
        scored = torch.zeros_like(ids, dtype=torch.bool)
        for row, (full, n_head) in enumerate(chunk):
            ids[row, :len(full)] = torch.tensor(full)
            mask[row, :len(full)] = 1
            scored[row, n_head:len(full)] = True
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:].to(device), reduction="none")
        counted = scored[:, 1:].to(device)
        total_nll += float(nll[counted].sum())
        total_tokens += int(counted.sum())
    return math.exp(total_nll / total_tokens) if total_tokens else float("nan")
