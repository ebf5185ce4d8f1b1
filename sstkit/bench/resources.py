"""A callback that records what a method costs: trainable parameters and the optimizer state's bytes.

Benchmarks add it on the command line, so the numbers land in the run's ``summary.json`` (keys ``stats/…``) next
to the metrics, and ``sstkit table`` can show them:

    sstkit fit --config configs/opt/wikitext2/sst.yaml --trainer.callbacks+=sstkit.bench.resources.ResourceStats
"""

from __future__ import annotations

import resource
import sys
from typing import Any

import lightning as L
import torch
from torch import nn

from sstkit.functional.surgery import method_patterns, name_matches


def optimizer_state_bytes(optimizer: torch.optim.Optimizer, only: set[int] | None = None) -> int:
    """Bytes held by the tensors of an optimizer's state (Adam moments, step counters …).

    Args:
        optimizer: the optimizer.
        only: if given, count only the state of parameters whose ``id`` is in this set.
    """
    total = 0
    for param, state in optimizer.state.items():
        if only is not None and id(param) not in only:
            continue
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total


def projection_parameter_ids(model: nn.Module) -> set[int]:
    """Parameters inside the layers that SST, LoRA and ReLoRA wrap by default (whatever wraps them)."""
    patterns = method_patterns(model, None)
    return {id(p) for name, module in model.named_modules() if name_matches(name, patterns) for p in module.parameters()}


def peak_process_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class ResourceStats(L.Callback):
    """Logs ``stats/trainable_params``, the peak ``stats/optimizer_state_bytes`` seen during training, and the
    optimizer state of the projection layers alone (``stats/projection_state_bytes``: what a method that wraps
    them saves, without the embeddings and norms every arm trains).

    It also logs the process's peak resident memory (``stats/peak_rss_bytes``: Python, Lightning and data
    included, so differences between arms are what matters) and, on CUDA, ``stats/peak_cuda_bytes``
    (``torch.cuda.max_memory_allocated``).

    All are logged after every training batch (on rank 0's values; every rank holds the same model), so the
    run record keeps the values of the last step and the peak of the optimizer state over the run.
    """

    def __init__(self) -> None:
        self.peak_state_bytes = 0
        self.peak_projection_bytes = 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        params = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        state = sum(optimizer_state_bytes(opt) for opt in trainer.optimizers)
        self.peak_state_bytes = max(self.peak_state_bytes, state)
        projections = projection_parameter_ids(pl_module)
        self.peak_projection_bytes = max(self.peak_projection_bytes, sum(
            optimizer_state_bytes(opt, projections) for opt in trainer.optimizers))
        pl_module.log("stats/projection_state_bytes", float(self.peak_projection_bytes), on_step=True,
                      on_epoch=False, rank_zero_only=True)
        pl_module.log("stats/trainable_params", float(params), on_step=True, on_epoch=False, rank_zero_only=True)
        pl_module.log("stats/optimizer_state_bytes", float(self.peak_state_bytes), on_step=True, on_epoch=False,
                      rank_zero_only=True)
        pl_module.log("stats/peak_rss_bytes", float(peak_process_bytes()), on_step=True, on_epoch=False,
                      rank_zero_only=True)
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            pl_module.log("stats/peak_cuda_bytes", float(torch.cuda.max_memory_allocated(pl_module.device)),
                          on_step=True, on_epoch=False, rank_zero_only=True)

    def state_dict(self) -> dict[str, int]:
        return {"peak_state_bytes": self.peak_state_bytes, "peak_projection_bytes": self.peak_projection_bytes}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.peak_state_bytes = int(state.get("peak_state_bytes", 0))
        self.peak_projection_bytes = int(state.get("peak_projection_bytes", 0))
