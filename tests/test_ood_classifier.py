"""Classifier OOD baselines (MSP, energy, Mahalanobis, kNN) against hand-computed values, and
``sstkit ood score --classifier`` end to end on a tiny bag-of-words classifier."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from sstkit.commands.ood import ood_main
from sstkit.commands.ood_classifier import read_labelled
from sstkit.errors import SstkitError
from sstkit.functional.ood.classifier_scores import KNN, Mahalanobis, energy_score, msp_score


def test_msp_and_energy_match_hand_computed_values() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    torch.testing.assert_close(msp_score(logits), torch.tensor([-0.5, -0.75], dtype=torch.float64))
    # -T logsumexp(z / T): [0, 0] -> -log 2 (T = 1) and -2 log 2 (T = 2); [log 3, 0] -> -log 4 (T = 1).
    torch.testing.assert_close(energy_score(logits), -torch.tensor([math.log(2), math.log(4)], dtype=torch.float64))
    assert float(energy_score(logits[:1], temperature=2.0)) == pytest.approx(-2 * math.log(2))
    with pytest.raises(SstkitError, match="temperature must be > 0"):
        energy_score(logits, temperature=0)


def test_mahalanobis_uses_class_means_and_the_tied_covariance() -> None:
    # Class 0 at -1, 1 (mean 0), class 1 at 9, 11 (mean 10): pooled within-class variance (1+1+1+1)/4 = 1.
    # Second dimension: 0, 0, 0, 0 -> zero variance, pinv ignores it.
    feats = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [9.0, 0.0], [11.0, 0.0]])
    maha = Mahalanobis().fit(feats, torch.tensor([0, 0, 1, 1]))
    scores = maha.score(torch.tensor([[2.0, 0.0], [10.0, 0.0], [5.0, 0.0]]))
    torch.testing.assert_close(scores, torch.tensor([4.0, 0.0, 25.0], dtype=torch.float64))
    # Doubling the spread halves (squared: quarters) the distance: the covariance is really used.
    wide = Mahalanobis().fit(feats * 2, torch.tensor([0, 0, 1, 1]))
    assert float(wide.score(torch.tensor([[4.0, 0.0]]))) == pytest.approx(4.0)
    with pytest.raises(SstkitError, match="before fit"):
        Mahalanobis().score(feats)


def test_knn_is_the_kth_distance_between_normalised_features() -> None:
    knn = KNN(k=1).fit(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))  # normalised: e1, e2
    scores = knn.score(torch.tensor([[2.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(scores, torch.tensor([0.0, math.sqrt(2 - math.sqrt(2))], dtype=torch.float64))
    assert float(KNN(k=2).fit(torch.tensor([[1.0, 0.0], [0.0, 3.0]])).score(torch.tensor([[2.0, 0.0]]))) == \
        pytest.approx(math.sqrt(2))
    with pytest.raises(SstkitError, match="k must be >= 1"):
        KNN(k=0)
    with pytest.raises(SstkitError, match="N >= k=3"):
        KNN(k=3).fit(torch.zeros(2, 4))


ID = ["a fine film", "a dull film", "quite good acting", "the plot is thin", "warm and funny", "too long by half"]
OOD = ["stocks fell today in tokyo", "team wins the cup final", "oil prices rise again"]


def test_ood_score_runs_the_four_classifier_detectors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sstkit.models import BagOfWordsClassifier

    monkeypatch.setenv("SSTKIT_CACHE", str(tmp_path / "cache"))
    train = tmp_path / "train.tsv"
    train.write_text("sentence\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(ID * 2)))
    (tmp_path / "id.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t1\n" for t in ID))
    (tmp_path / "news.tsv").write_text("".join(f"{t}\tWorld\n" for t in OOD))
    torch.manual_seed(0)
    model = BagOfWordsClassifier(tokenizer="minilm", embed_dim=8)
    ckpt = tmp_path / "bow.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    out = tmp_path / "out"
    assert ood_main(["score", "--classifier", f"bow={ckpt}", "--fit", f"{train}:sentence:label", "--knn-k", "2",
                     "--id", f"{tmp_path}/id.tsv:sentence", "--ood", f"{tmp_path}/news.tsv:0", "--device", "cpu",
                     "--out", str(out)]) == 0
    table = json.loads((out / "metrics.json").read_text())["models"]
    assert [m["model"] for m in table] == ["bow/msp", "bow/energy", "bow/mahalanobis", "bow/knn"]
    assert all(0.0 <= m["auroc"] <= 1.0 and m["n_ood"] == len(OOD) for m in table)
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 4 * (len(ID) + len(OOD)) and rows[0]["ppl"] == ""
    # The written MSP scores are the model's own negative max-softmax on the OOD texts.
    from sstkit.commands.ood_classifier import logits_and_features

    logits, _ = logits_and_features(model.eval(), OOD, "minilm", 4, torch.device("cpu"))
    written = torch.tensor([float(r["score"]) for r in rows if r["model"] == "bow/msp" and r["set"] == "ood"])
    torch.testing.assert_close(written, msp_score(logits).float(), rtol=1e-5, atol=1e-6)


def test_bad_classifier_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(SstkitError, match="expected FILE:TEXT_COLUMN:LABEL_COLUMN"):
        read_labelled("train.tsv:sentence")
    bad = tmp_path / "t.tsv"
    bad.write_text("sentence\tlabel\na film\t1\n")
    with pytest.raises(SstkitError, match="no column 'y'"):
        read_labelled(f"{bad}:sentence:y")
    assert read_labelled(f"{bad}:sentence:label") == (["a film"], ["1"])
    with pytest.raises(SstkitError, match="at least one --model"):
        ood_main(["score", "--id", f"{bad}:sentence", "--ood", f"{bad}:sentence", "--out", str(tmp_path / "o")])
    with pytest.raises(SstkitError, match="--model needs --data-config"):
        ood_main(["score", "--model", "x.ckpt", "--id", f"{bad}:sentence", "--ood", f"{bad}:sentence",
                  "--out", str(tmp_path / "o")])
