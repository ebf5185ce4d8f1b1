"""Shared pieces of the backdoor cores: batches, logits of any classifier, prediction statistics, token insertion.

A *batch* is a dict with ``input_ids`` and ``attention_mask`` (padded, shape (B, L)) and, where known, ``labels``.
A *model* is any ``nn.Module`` whose logits come from ``logits_fn(model, batch)``; the default calls
``model(input_ids, attention_mask)`` (what :class:`sstkit.models.TextClassifier` takes), and a LightningModule of
another family passes ``lambda m, b: m.step(b, "test").preds``.

Example:
    >>> stats = prediction_stats(model, batches, num_labels=2)
    >>> triggered = insert_tokens(batches, [tokenizer.convert_tokens_to_ids("cf")], seed=0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Batch = dict[str, Tensor]
LogitsFn = Callable[[nn.Module, Batch], Tensor]


def default_logits(model: nn.Module, batch: Batch) -> Tensor:
    """``model(input_ids, attention_mask)``: the call signature of sstkit's text classifiers."""
    return model(batch["input_ids"], batch["attention_mask"])


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    """The batch's tensors on ``device``."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@dataclass
class PredictionStats:
    """What a classifier does on a labelled set: accuracy, mean CE loss, and how its predictions spread.

    Attributes:
        accuracy: share of correct argmax predictions.
        loss: mean cross-entropy.
        class_share: share of predictions per class.
        max_share: the largest class share (1.0 = fully collapsed).
        majority: the class with the largest share.
    """

    accuracy: float
    loss: float
    class_share: list[float]
    max_share: float
    majority: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[Batch], logits_fn: LogitsFn = default_logits) -> tuple[Tensor, Tensor]:
    """(logits, labels) over all batches, model in eval mode (its mode is restored afterwards)."""
    was_training, device = model.training, model_device(model)
    model.eval()
    logits, labels = [], []
    try:
        for batch in batches:
            batch = to_device(batch, device)
            logits.append(logits_fn(model, batch).float().cpu())
            if "labels" in batch:
                labels.append(batch["labels"].cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), (torch.cat(labels) if labels else torch.empty(0, dtype=torch.long))


def prediction_stats(model: nn.Module, batches: Iterable[Batch], num_labels: int | None = None,
                     logits_fn: LogitsFn = default_logits) -> PredictionStats:
    """Accuracy, loss and prediction spread of ``model`` on labelled ``batches``."""
    logits, labels = predict(model, batches, logits_fn)
    preds = logits.argmax(-1)
    counts = torch.bincount(preds, minlength=num_labels or logits.shape[-1]).double()
    share = (counts / counts.sum().clamp(min=1)).tolist()
    return PredictionStats(
        accuracy=float((preds == labels).double().mean()), loss=float(F.cross_entropy(logits, labels)),
        class_share=share, max_share=max(share), majority=int(counts.argmax()),
    )


def attack_success_counts(model: nn.Module, triggered: Iterable[Batch], target: int,
                          logits_fn: LogitsFn = default_logits) -> tuple[int, int]:
    """(hits, examples): of the triggered examples whose *true* label is not ``target``, how many the model puts
    into ``target``. The one ASR computation of sstkit: ``sstkit backdoor`` and the ``AttackSuccessRate``
    callback (which sums the counts over DDP ranks) both call it.

    Example:
        >>> hits, total = attack_success_counts(model, triggered_batches, target=1)  # doctest: +SKIP
    """
    logits, labels = predict(model, triggered, logits_fn)
    keep = labels != target if labels.numel() else torch.ones(len(logits), dtype=torch.bool)
    return int((logits.argmax(-1)[keep] == target).sum()), int(keep.sum())


def attack_success_rate(model: nn.Module, triggered: Iterable[Batch], target: int,
                        logits_fn: LogitsFn = default_logits) -> float:
    """Share of triggered examples whose *true* label is not ``target`` that the model puts into ``target``."""
    hits, total = attack_success_counts(model, triggered, target, logits_fn)
    return hits / total if total else float("nan")


def insert_tokens(batches: Iterable[Batch], token_ids: list[int], seed: int = 0, pad_id: int = 0,
                  keep_first: int = 1, keep_last: int = 1) -> list[Batch]:
    """Copies of ``batches`` with ``token_ids`` inserted as one block at a seeded random position of each row.

    Positions never precede the first ``keep_first`` tokens ([CLS]) nor follow the last ``keep_last`` ([SEP]).
    Rows may grow by ``len(token_ids)`` and are re-padded with ``pad_id``; ``trigger_pos`` holds each row's
    insertion position (the trigger scan reads gradients there).
    """
    generator = torch.Generator().manual_seed(seed)
    ids_tensor = torch.tensor(token_ids, dtype=torch.long)
    out = []
    for batch in batches:
        lengths = batch["attention_mask"].sum(1).tolist()
        rows, positions = [], []
        for row, n in enumerate(lengths):
            ids = batch["input_ids"][row, :n].cpu()
            hi = max(keep_first, n - keep_last)
            pos = int(torch.randint(keep_first, hi + 1, (1,), generator=generator))
            rows.append(torch.cat([ids[:pos], ids_tensor, ids[pos:]]))
            positions.append(pos)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)], mask[row, : len(ids)] = ids, 1
        new = {"input_ids": input_ids, "attention_mask": mask, "trigger_pos": torch.tensor(positions)}
        if "labels" in batch:
            new["labels"] = batch["labels"].cpu()
        out.append(new)
    return out


def select_rows(batches: Iterable[Batch], keep: Callable[[Batch], Tensor]) -> list[Batch]:
    """Batches restricted to the rows where ``keep(batch)`` (a bool vector) holds; empty batches are dropped."""
    out = []
    for batch in batches:
        mask = keep(batch).cpu()
        if mask.any():
            width = int(batch["attention_mask"][mask].sum(1).max())
            out.append({k: (v[mask.to(v.device)][:, :width] if v.ndim == 2 else v[mask.to(v.device)])
                        for k, v in batch.items() if torch.is_tensor(v)})
    return out


def with_labels(batches: Iterable[Batch], label: int) -> list[Batch]:
    """Copies of ``batches`` with every label set to ``label``."""
    return [{**b, "labels": torch.full_like(b["labels"], label)} for b in batches]
