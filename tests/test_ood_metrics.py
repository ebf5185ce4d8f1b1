"""OOD metrics against values computed by hand on tiny score lists (OOD = positive, higher score = more OOD)."""

from __future__ import annotations

import pytest
import torch

from sstkit.errors import SstkitError
from sstkit.functional.ood.metrics import fpr_at_tpr, ood_metrics


def test_metrics_match_hand_computed_values() -> None:
    # ID 0.1 0.2 0.3, OOD 0.25 0.9. Pairs (ood > id): 0.25 beats 2 of 3, 0.9 beats 3 -> AUROC 5/6.
    # Ranking (desc): O I O I I -> AUPR-Out = (1/1 + 2/3) / 2 = 5/6.
    # ID as positive on -score (desc): I I O I O -> AUPR-In = (1 + 1 + 3/4) / 3 = 11/12.
    # FAR95: both OOD must be flagged -> threshold 0.25 -> ID >= 0.25 is {0.3} -> 1/3.
    r = ood_metrics([0.1, 0.2, 0.3], [0.25, 0.9])
    assert r["auroc"] == pytest.approx(5 / 6, abs=1e-6)
    assert r["aupr_out"] == pytest.approx(5 / 6, abs=1e-6)
    assert r["aupr_in"] == pytest.approx(11 / 12, abs=1e-6)
    assert r["far95"] == pytest.approx(1 / 3)


def test_large_scores_such_as_perplexities_are_not_squashed() -> None:
    # The same ordering as above at perplexity scale (torchmetrics would sigmoid these to 1.0 and tie them).
    r = ood_metrics([310.0, 420.0, 530.0], [480.0, 9000.0])
    assert r["auroc"] == pytest.approx(5 / 6, abs=1e-6)
    assert r["aupr_out"] == pytest.approx(5 / 6, abs=1e-6)
    assert r["aupr_in"] == pytest.approx(11 / 12, abs=1e-6)
    assert r["far95"] == pytest.approx(1 / 3)
    # Ties count as ties: one ID and one OOD example with the same score -> AUROC 1/2.
    assert ood_metrics([700.0], [700.0])["auroc"] == pytest.approx(0.5)


def test_far95_uses_the_95_percent_recall_threshold() -> None:
    # 20 OOD scores 1..20: 95 % recall keeps the 19 highest -> threshold 2. ID 0, 1.5, 2, 3 -> 2 of 4 flagged.
    ood = torch.arange(1, 21, dtype=torch.float64)
    assert fpr_at_tpr(torch.tensor([0.0, 1.5, 2.0, 3.0], dtype=torch.float64), ood) == 0.5
    # 10 OOD scores: ceil(9.5) = 10 must be flagged -> threshold = the lowest OOD score 1.
    assert fpr_at_tpr(torch.tensor([0.5, 1.0], dtype=torch.float64), torch.arange(1, 11).double()) == 0.5


def test_perfect_and_inverted_separation() -> None:
    perfect = ood_metrics([1.0, 2.0, 3.0], [4.0, 5.0])
    assert perfect == pytest.approx({"auroc": 1.0, "aupr_out": 1.0, "aupr_in": 1.0, "far95": 0.0})
    inverted = ood_metrics([4.0, 5.0], [1.0, 2.0, 3.0])
    assert inverted["auroc"] == pytest.approx(0.0) and inverted["far95"] == 1.0


def test_infinite_perplexity_counts_as_most_ood_and_nan_is_refused() -> None:
    assert ood_metrics([1.0, 2.0], [float("inf"), 3.0])["auroc"] == pytest.approx(1.0)
    with pytest.raises(SstkitError, match="NaN"):
        ood_metrics([float("nan")], [1.0])
    with pytest.raises(SstkitError, match="no scores"):
        ood_metrics([], [1.0])
