"""A synthetic task with a known circuit: induction (copying a repeated random sequence).

Each example is ``[BOS] noise a₁ … a_m a₁ … a_m`` with random tokens and m varying per example (optionally noise
between the copies too); from the second copy on, the next token is predictable only by finding the earlier
occurrence of the current token and copying its successor. A two-layer attention model does this with the
induction circuit (Olsson et al., 2022): a *previous-token head* in layer 0 writes each token's predecessor into its
residual stream, and an *induction head* in layer 1 attends from the current token to the position after its
earlier occurrence and copies that token. :func:`head_roles` scores every head for the two roles
from its attention patterns. A model trained freely may solve the task without clean role patterns (small OPTs
trained here learned sharp positional look-back heads in layer 0 instead of previous-token heads), so the benchmark
(``benchmarks/cdt/circuits.py``) either plants the circuit (only chosen heads are trainable) or takes as ground
truth the smallest head set that keeps the metric (:func:`~sstkit.functional.cdt.patching.minimal_circuit`); the
role scores are reported as a diagnostic.

Example:
    >>> data = induction_data(4, length=21, vocab=50, seed=0)
    >>> m, s = int(data.half[0]), int(data.start[0])
    >>> data.ids.shape, bool((data.ids[0, s:] == data.ids[0, s - m:s]).all())
    (torch.Size([4, 21]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sstkit.functional.cdt.circuit import Node, head_counts

BOS, FIRST_TOKEN = 0, 2  # 1 is OPT's pad id; random tokens are drawn from [2, vocab)


@dataclass
class InductionData:
    """Token ids (examples, time), each example's repeat length m, the start of its second copy and the distance
    from a token of the first copy to its repeat (m, or m + the gap between the copies)."""

    ids: Tensor
    half: Tensor
    start: Tensor
    distance: Tensor

    def predictable(self) -> Tensor:
        """Bool (examples, time): positions p whose next token is a copy (p in the second copy, not its end)."""
        p = torch.arange(self.ids.shape[1])
        return (p[None] >= self.start[:, None]) & (p[None] < self.ids.shape[1] - 1)


def induction_data(n: int, length: int, vocab: int, seed: int, min_half: int = 4, gaps: bool = False
                   ) -> InductionData:
    """``n`` examples ``[BOS] noise a₁…a_m a₁…a_m`` of ``length`` tokens, m drawn from [min_half, (length − 1) / 2]
    per example, so the repeat sits at a different place in each one and position alone predicts nothing. With
    ``gaps``, random tokens of a random number g ∈ [0, length − 1 − 2m] separate the copies
    (``[BOS] noise a₁…a_m noise a₁…a_m``), so the distance m + g between a token and its repeat varies widely and
    no fixed look-back window finds the earlier occurrence: only matching content (the induction circuit) does."""
    gen = torch.Generator().manual_seed(seed)
    max_half = (length - 1) // 2
    ids = torch.randint(FIRST_TOKEN, vocab, (n, length), generator=gen)
    ids[:, 0] = BOS
    half = torch.randint(min_half, max_half + 1, (n,), generator=gen)
    start = length - half  # first position of the second copy
    distance = half.clone()
    if gaps:
        room = length - 1 - 2 * half  # noise tokens that may go between the copies
        distance += (torch.rand(n, generator=gen) * (room + 1)).long().clamp(max=room)
    for i in range(n):
        m, s, d = int(half[i]), int(start[i]), int(distance[i])
        ids[i, s:] = ids[i, s - d:s - d + m]
    return InductionData(ids, half, start, distance)


def bind_metric(data: InductionData):
    """The induction metric for these examples: logits (examples, time, vocab) -> (examples,), the mean over
    predictable positions of the correct next token's logit minus the mean logit."""
    mask = data.predictable()[:, :-1].float()
    targets = data.ids[:, 1:]

    def metric(logits: Tensor) -> Tensor:
        logits = logits[:, :-1]
        chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.mean(-1)
        return (chosen * mask).sum(-1) / mask.sum(-1)

    return metric


@torch.no_grad()
def attention_patterns(lm: nn.Module, ids: Tensor) -> list[Tensor]:
    """Attention probabilities per layer, each (examples, heads, time, time) (eager attention)."""
    core = getattr(lm, "lm", lm)
    core.config._attn_implementation = "eager"
    return list(core(input_ids=ids, output_attentions=True).attentions)


@torch.no_grad()
def head_roles(lm: nn.Module, data: InductionData) -> tuple[Tensor, Tensor]:
    """Per node (layer-major): previous-token score (mean attention from p to p − 1) and induction score (mean
    attention from the second copy to the position after the earlier occurrence, p − distance + 1)."""
    patterns = attention_patterns(lm, data.ids)
    t = data.ids.shape[1]
    prev_q = torch.arange(1, t)
    mask = data.predictable().float()  # (n, t)
    key = (torch.arange(t)[None] - data.distance[:, None] + 1).clamp(min=0)  # (n, t)
    prev, ind = [], []
    for probs in patterns:
        prev.append(probs[:, :, prev_q, prev_q - 1].mean((0, 2)))
        to_key = probs.gather(-1, key[:, None, :, None].expand(-1, probs.shape[1], -1, 1)).squeeze(-1)  # (n, h, t)
        ind.append((to_key * mask[:, None]).sum((0, 2)) / mask.sum())
    return torch.cat(prev), torch.cat(ind)


def known_circuit(lm: nn.Module, data: InductionData, threshold: float = 0.4) -> list[Node]:
    """The ground-truth heads: previous-token heads of layer 0 and induction heads of the last layer whose score
    passes ``threshold`` (the best one of each kind is always included)."""
    layers, heads = head_counts(lm)
    prev, ind = head_roles(lm, data)
    first = prev[:heads]
    last = ind[(layers - 1) * heads:]
    chosen = {(0, int(first.argmax())), (layers - 1, int(last.argmax()))}
    chosen |= {(0, h) for h in range(heads) if first[h] > threshold}
    chosen |= {(layers - 1, h) for h in range(heads) if last[h] > threshold}
    return sorted(chosen)
