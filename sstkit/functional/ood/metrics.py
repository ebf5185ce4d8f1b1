"""OOD-detection metrics with OOD as the positive class: AUROC, AUPR-In, AUPR-Out, FAR95.

Scores are "higher = more OOD" (a perplexity, a negative MSP …). With ID scores ``s_id`` and OOD scores
``s_ood``:

- AUROC: area under the ROC curve of OOD (label 1) against ID (label 0);
- AUPR-Out: average precision with OOD as positive; AUPR-In: average precision with ID as positive and the
  negated score (ID examples should score low);
- FAR95: the share of ID examples flagged as OOD at the threshold that still flags 95 % of the OOD examples,
  i.e. the false-positive rate at 95 % true-positive rate, where the threshold is the largest score ``t`` with
  ``#{s_ood >= t} >= 0.95·n_ood`` and an ID example counts as flagged when its score is ``>= t`` (ties with
  the threshold are flagged: the conservative choice; the official MLKD code counts ``> t`` only).

AUROC and AUPR use torchmetrics (tie handling is theirs: AUROC counts a tie as ½). All values are in [0, 1].

Example::

    >>> r = ood_metrics([0.1, 0.2, 0.3], [0.25, 0.9])
    >>> round(r["auroc"], 4), round(r["far95"], 4)
    (0.8333, 0.3333)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

from sstkit.errors import SstkitError

METRICS = ("auroc", "aupr_in", "aupr_out", "far95")


def _as_tensor(scores: Sequence[float] | Tensor, name: str) -> Tensor:
    t = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if t.numel() == 0:
        raise SstkitError(f"{name}: no scores (need at least one ID and one OOD example)")
    if not torch.isfinite(t).all():
        # An overflowed perplexity is still "very OOD": map +inf to the largest finite value plus one, refuse NaN.
        if torch.isnan(t).any():
            raise SstkitError(f"{name}: NaN scores")
        finite = t[torch.isfinite(t)]
        top = float(finite.max()) + 1.0 if finite.numel() else 1.0
        bottom = float(finite.min()) - 1.0 if finite.numel() else -1.0
        t = torch.nan_to_num(t, posinf=top, neginf=bottom)
    return t


def _ranks(scores: Tensor) -> Tensor:
    """Scores mapped onto [0, 1] by rank, ties kept: torchmetrics applies a sigmoid to scores outside [0, 1],
    which saturates perplexities (every score of a few hundred becomes 1.0 and AUROC 0.5)."""
    unique, inverse = torch.unique(scores, return_inverse=True)
    return inverse.double() / max(1, unique.numel() - 1)


def fpr_at_tpr(id_scores: Tensor, ood_scores: Tensor, tpr: float = 0.95) -> float:
    """False-positive rate (share of ID flagged) at the threshold that flags at least ``tpr`` of the OOD scores.

    Example::

        >>> fpr_at_tpr(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.5, 2.5, 3.5, 4.5]), tpr=0.75)
        0.25
    """
    if not 0 < tpr <= 1:
        raise SstkitError(f"tpr must be in (0, 1], got {tpr}")
    ordered = torch.sort(ood_scores.flatten(), descending=True).values
    # The k highest OOD scores must be flagged; the threshold is the k-th highest (index k-1).
    k = max(1, math.ceil(tpr * ordered.numel() - 1e-9))
    threshold = ordered[k - 1]
    return float((id_scores >= threshold).double().mean())


def ood_metrics(id_scores: Sequence[float] | Tensor, ood_scores: Sequence[float] | Tensor) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FAR95 of scores where higher means more OOD (see the module doc)."""
    s_id, s_ood = _as_tensor(id_scores, "ID scores"), _as_tensor(ood_scores, "OOD scores")
    scores = _ranks(torch.cat([s_id, s_ood]))
    is_ood = torch.cat([torch.zeros_like(s_id), torch.ones_like(s_ood)]).long()
    return {
        "auroc": float(binary_auroc(scores, is_ood)),
        "aupr_out": float(binary_average_precision(scores, is_ood)),
        "aupr_in": float(binary_average_precision(1 - scores, 1 - is_ood)),
        "far95": fpr_at_tpr(s_id, s_ood, 0.95),
    }
