"""``sstkit predict`` writes what the model's ``predict_step`` returns to ``<run folder>/predictions.jsonl``.

Each family's ``predict_step`` returns a dict of tensors with the batch as first dimension (``index``, ``preds``,
``probs`` for classifiers); every example becomes one JSON line, in dataset order, from every rank.

Example:
    sstkit predict --config configs/bert/sst2/finetune.yaml --ckpt_path runs/bert-sst2-finetune/seed0/checkpoints/last.ckpt
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Writes one JSON line per example; under DDP each rank writes its own part file first.

    Args:
        out_dir: folder for ``predictions.jsonl``.
    """

    def __init__(self, out_dir: str | Path) -> None:
        super().__init__(write_interval="epoch")
        self.out_dir = Path(out_dir)

    @staticmethod
    def rows(output: Any) -> list[dict[str, Any]]:
        """Splits a dict of batch tensors into per-example dicts of plain numbers and lists."""
        if not isinstance(output, dict):
            return [{"prediction": output.tolist() if torch.is_tensor(output) else output}]
        size = next(len(v) for v in output.values() if torch.is_tensor(v) and v.ndim > 0)
        return [{k: (v[i].tolist() if torch.is_tensor(v) and v.ndim > 0 else v) for k, v in output.items()}
                for i in range(size)]

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any,
                           batch_indices: Any) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        outputs = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        rows = [row for output in outputs for row in self.rows(output)]
        name = "predictions.jsonl" if trainer.world_size == 1 else f"predictions.rank{trainer.global_rank}.jsonl"
        rows.sort(key=lambda row: row.get("index", 0))
        with open(self.out_dir / name, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
