"""Transductive fine-tuning: pseudo-label the unlabelled evaluation inputs, keep the confident ones, train on them.

    P = { (x, ŷ) : x ∈ X_eval, ŷ = argmax p_θ(·|x), max p_θ(·|x) ≥ τ }
    continue fine-tuning on D_train ∪ P

Only the inputs of the evaluation split are read: :class:`UnlabelledInputs` takes a tokenised split's token ids
and offsets and never its labels, so test labels cannot leak into training (a run that uses this is transductive
and must say so when reported).

Example::

    inputs = UnlabelledInputs.of(datamodule.datasets["test"])
    labelled = pseudo_label(lambda b: model(b["input_ids"], b["attention_mask"]), inputs, threshold=0.9)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


class UnlabelledInputs(Dataset):
    """The token ids of a tokenised split (``ids[offsets[i]:offsets[i+1]]``), without its labels."""

    def __init__(self, ids: Tensor, offsets: Tensor) -> None:
        self.ids, self.offsets = ids, offsets

    @classmethod
    def of(cls, data: Any) -> UnlabelledInputs:
        """Reads ``data.ids`` and ``data.offsets`` only (a :class:`TokenizedTexts`)."""
        return cls(data.ids, data.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[self.offsets[i] : self.offsets[i + 1]], "index": i}


def pad_batch(examples: list[dict[str, Any]], pad_token_id: int = 0) -> dict[str, Tensor]:
    """Pads inputs (and ``labels`` when present) into a batch with an attention mask."""
    longest = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        input_ids[row, :n] = example["input_ids"]
        mask[row, :n] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask,
             "index": torch.tensor([e["index"] for e in examples], dtype=torch.long)}
    if "labels" in examples[0]:
        batch["labels"] = torch.stack([torch.as_tensor(e["labels"]) for e in examples])
    return batch


@dataclass
class PseudoLabels:
    """The kept inputs' indices into the split, their pseudo-labels and confidences."""

    indices: Tensor
    labels: Tensor
    confidence: Tensor

    def __len__(self) -> int:
        return len(self.indices)


@torch.no_grad()
def pseudo_label(logits_of: Callable[[dict[str, Tensor]], Tensor], inputs: UnlabelledInputs, threshold: float = 0.9,
                 batch_size: int = 64, pad_token_id: int = 0, device: torch.device | None = None) -> PseudoLabels:
    """Predicts every input and keeps those whose top probability is at least ``threshold``."""
    loader = DataLoader(inputs, batch_size=batch_size, shuffle=False, collate_fn=lambda b: pad_batch(b, pad_token_id))
    indices, labels, confidence = [], [], []
    for batch in loader:
        if device is not None:
            batch = {k: v.to(device) for k, v in batch.items()}
        probs = torch.softmax(logits_of(batch).float(), -1)
        top, label = probs.max(-1)
        keep = top >= threshold
        indices.append(batch["index"][keep].cpu())
        labels.append(label[keep].cpu())
        confidence.append(top[keep].cpu())
    cat = (lambda xs: torch.cat(xs)) if indices else (lambda xs: torch.zeros(0))
    return PseudoLabels(cat(indices).long(), cat(labels).long(), cat(confidence))


def pseudo_batch(inputs: UnlabelledInputs, labelled: PseudoLabels, size: int, generator: torch.Generator,
                 pad_token_id: int = 0) -> dict[str, Tensor]:
    """A random batch of ``size`` pseudo-labelled inputs (drawn with replacement from ``generator``)."""
    pick = torch.randint(len(labelled), (size,), generator=generator)
    examples = [{**inputs[int(labelled.indices[j])], "labels": labelled.labels[j]} for j in pick.tolist()]
    return pad_batch(examples, pad_token_id)
