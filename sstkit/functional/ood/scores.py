"""Per-example OOD scores of a causal LM: mean next-token NLL and perplexity, padding excluded.

The targets of positions ``0..T-2`` are the tokens ``1..T-1``, so the mask of counted predictions is the
attention mask *shifted with the targets* (``mask[:, 1:]``): a prediction counts when the token it predicts is
real. (The official MLKD evaluation drops the last element of the flattened, unshifted mask instead.)

Example::

    nll = sequence_nll(logits, input_ids, attention_mask)   # (B,)
    ppl = nll.exp()                                          # the MLKD / LM-perplexity OOD score
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sequence_nll(logits: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Mean negative log-likelihood of each sequence's real next tokens, shape (B,); NaN for a 1-token sequence."""
    targets = input_ids[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    if attention_mask is None:
        counted = torch.ones_like(targets, dtype=torch.float32)
    else:
        # Right padding: both the predicting and the predicted token must be real.
        counted = (attention_mask[:, 1:] * attention_mask[:, :-1]).float()
    return (nll * counted).sum(1) / counted.sum(1)


@torch.no_grad()
def lm_scores(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Per-example perplexity of a Hugging Face causal LM (``model(input_ids, attention_mask).logits``)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return sequence_nll(logits, input_ids, attention_mask).exp()
