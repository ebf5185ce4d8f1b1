"""The classifier baselines of ``sstkit ood score --classifier``: MSP, energy, Mahalanobis and kNN scores of a
text classifier (``TextClassifier`` or ``BagOfWordsClassifier`` checkpoint, or an exported classifier folder)
trained on the labelled ID texts.

MSP and energy need only the classifier's logits; Mahalanobis and kNN also need its pooled features of the ID
training texts (``--fit FILE:TEXT_COLUMN:LABEL_COLUMN``), from which class means, the tied covariance and the
kNN bank are fitted. Scores are "higher = more OOD" (``sstkit.functional.ood.classifier_scores``).

Example::

    scores = classifier_scores("runs/bow-sst2/seed0/checkpoints/last.ckpt", {"id": id_texts, "ood": ood_texts},
                               fit=(train_texts, train_labels), k=1, batch_size=64, device=torch.device("cpu"))
    scores["mahalanobis"]["ood"]   # (N_ood,) tensor
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import Tensor

from sstkit.errors import DataError, SstkitError
from sstkit.functional.ood.classifier_scores import KNN, Mahalanobis, energy_score, msp_score
from sstkit.paths import resolve_data_dir

DETECTORS = ("msp", "energy", "mahalanobis", "knn")


def read_labelled(spec: str, option: str = "--fit") -> tuple[list[str], list[str]]:
    """Texts and labels of ``FILE:TEXT_COLUMN:LABEL_COLUMN``: header names, or 0-based indices (no header row)."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise SstkitError(f"{option} {spec!r}: expected FILE:TEXT_COLUMN:LABEL_COLUMN (names or 0-based indices)")
    name, text_col, label_col = parts
    path = Path(name)
    if not path.is_file():
        path = resolve_data_dir(None) / name
    if not path.is_file():
        raise SstkitError(f"{option} {spec}: no such file (also looked under the data folder)")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [r for r in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if r]
    by_index = text_col.isdigit() and label_col.isdigit()
    if by_index:
        ti, li = int(text_col), int(label_col)
    else:
        header, rows = (rows[0], rows[1:]) if rows else ([], [])
        for col in (text_col, label_col):
            if col not in header:
                raise DataError(path, f"{option}: no column {col!r} in the header row {header}", 1)
        ti, li = header.index(text_col), header.index(label_col)
    texts, labels = [], []
    for number, row in enumerate(rows, start=1 if by_index else 2):
        if max(ti, li) >= len(row):
            raise DataError(path, f"{option}: row has {len(row)} columns, need {max(ti, li) + 1}", number)
        if row[ti].strip():
            texts.append(row[ti].strip())
            labels.append(row[li].strip())
    if not texts:
        raise SstkitError(f"{option} {spec}: no texts")
    return texts, labels


@torch.no_grad()
def logits_and_features(model: torch.nn.Module, texts: list[str], tokenizer_name: str, batch_size: int,
                        device: torch.device) -> tuple[Tensor, Tensor]:
    """The classifier's logits (N, C) and pooled features (N, D), in eval mode."""
    from sstkit.commands.classifier_io import make_batches

    logits, feats = [], []
    for batch in make_batches(texts, None, tokenizer_name, max_length=128, batch_size=batch_size):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        features = model.encode(ids, mask)
        feats.append(features.float().cpu())
        logits.append(model.head(features).float().cpu())
    return torch.cat(logits), torch.cat(feats)


def classifier_scores(path: str, sets: dict[str, list[str]], fit: tuple[list[str], list[str]] | None, k: int,
                      batch_size: int, device: torch.device) -> dict[str, dict[str, Tensor]]:
    """``{detector: {set: scores}}`` for MSP and energy, and with ``fit`` (ID training texts, labels) also
    Mahalanobis and kNN."""
    from sstkit.commands.classifier_io import backbone_of, load_classifier

    model = load_classifier(path).to(device)
    tokenizer = backbone_of(model)  # type: ignore[arg-type]
    out: dict[str, dict[str, Tensor]] = {"msp": {}, "energy": {}}
    features = {}
    for which, texts in sets.items():
        logits, features[which] = logits_and_features(model, texts, tokenizer, batch_size, device)
        out["msp"][which], out["energy"][which] = msp_score(logits), energy_score(logits)
    if fit is not None:
        texts, labels = fit
        _, train = logits_and_features(model, texts, tokenizer, batch_size, device)
        names = sorted(set(labels))
        maha = Mahalanobis().fit(train, torch.tensor([names.index(lab) for lab in labels]))
        knn = KNN(k).fit(train)
        out["mahalanobis"] = {w: maha.score(f) for w, f in features.items()}
        out["knn"] = {w: knn.score(f) for w, f in features.items()}
    return out
