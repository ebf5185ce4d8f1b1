r"""SetFit-style contrastive fine-tuning on few labelled examples (FM3's first stage), without Lightning.

SetFit (Tunstall et al., 2022) turns ``n`` labelled sentences into sentence pairs — for each example and each of
``R`` rounds one *positive* pair (another example of the same class, target 1) and one *negative* pair (an example
of another class, target 0) — and fine-tunes the sentence encoder with the cosine-similarity loss

    L = mean_{(i, j)} (cos(u_i, u_j) − y_ij)²,      u = pooled encoder output, y_ij ∈ {0, 1}

before a classification head is fitted on the new embeddings. :func:`setfit_pairs` draws the pairs (seeded) and
:func:`cosine_pair_loss` is ``L``; :func:`in_batch_pair_loss` draws the pairs within one training batch, which is
how the ``HyperAdapters`` callback runs the stage inside ``sstkit fit`` (``contrastive_steps``); both work on any encoder (a frozen backbone with hypernetwork adapters included:
then only the adapters move). sstkit implements the two pieces instead of depending on the ``setfit`` package,
which brings its own trainer, ``datasets`` pipeline and version pins around ``sentence-transformers`` for what is
these two functions here.

Example:
    >>> pairs, targets = setfit_pairs(torch.tensor([0, 0, 1, 1]), pairs_per_example=1, seed=0)
    >>> pairs.shape, sorted(set(targets.tolist()))
    (torch.Size([8, 2]), [0.0, 1.0])
    >>> cosine_pair_loss(torch.ones(2, 3), torch.ones(2, 3), torch.ones(2)).item()
    0.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def setfit_pairs(labels: Tensor, pairs_per_example: int = 20, seed: int = 0) -> tuple[Tensor, Tensor]:
    """SetFit's pairs: for each example and round, one same-class and one other-class partner.

    Args:
        labels: (n,) integer class of each example.
        pairs_per_example: ``R``, rounds per example (each round gives one positive and one negative pair).
        seed: seed of the partners' draw.

    Returns:
        ``pairs`` (2·n·R, 2) example indices and ``targets`` (2·n·R,) float 1.0 (same class) or 0.0.
        An example whose class has no other member (or when only one class is present) gets no pair of the
        missing kind.
    """
    if pairs_per_example < 1:
        raise ValueError(f"pairs_per_example must be >= 1, got {pairs_per_example}")
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    pairs: list[tuple[int, int]] = []
    targets: list[float] = []
    for _ in range(pairs_per_example):
        for i, label in enumerate(labels.tolist()):
            same = (labels == label).nonzero().flatten()
            same = same[same != i]
            other = (labels != label).nonzero().flatten()
            for pool, target in ((same, 1.0), (other, 0.0)):
                if len(pool):
                    j = int(pool[torch.randint(len(pool), (1,), generator=generator)])
                    pairs.append((i, j))
                    targets.append(target)
    return torch.tensor(pairs, dtype=torch.long).view(-1, 2), torch.tensor(targets)


def cosine_pair_loss(u: Tensor, v: Tensor, targets: Tensor) -> Tensor:
    """``mean (cos(u, v) − y)²`` — sentence-transformers' ``CosineSimilarityLoss``, which SetFit trains with."""
    return F.mse_loss(F.cosine_similarity(u.float(), v.float(), dim=-1), targets.to(u.device).float())


def in_batch_pair_loss(embeddings: Tensor, labels: Tensor, pairs_per_example: int = 2, seed: int = 0) -> Tensor | None:
    """``L`` on SetFit pairs drawn among the examples of one batch (the contrastive stage inside a training loop).

    Args:
        embeddings: (batch, dim) pooled sentence embeddings.
        labels: (batch,) classes; a negative label (-100: an example without a sentence label) takes no part.
        pairs_per_example: ``R``.
        seed: seed of the draw (e.g. from the global step, so a resumed run draws the same pairs).

    Returns:
        The loss, or None when the batch yields no pair (fewer than two labelled examples).

    Example:
        >>> in_batch_pair_loss(torch.eye(3), torch.tensor([0, 0, 1]), 1, seed=0) is not None
        True
    """
    rows = (labels >= 0).nonzero().flatten()
    if len(rows) < 2:
        return None
    pairs, targets = setfit_pairs(labels[rows], pairs_per_example, seed)
    if not len(pairs):
        return None
    index = rows.to(embeddings.device)[pairs.to(embeddings.device)]
    return cosine_pair_loss(embeddings[index[:, 0]], embeddings[index[:, 1]], targets)
