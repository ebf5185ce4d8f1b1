"""One encoder, one classification head per task, and metrics per task and their mean (FM3's output heads).

Every batch carries ``task_id`` (one per example). The model conditions whatever task-aware method is on it
(hypernetwork adapters: :func:`sstkit.nn.hyper_adapter.set_condition`) on those ids before the encoder runs, then
applies each example's own head. Logits are padded to the widest head with a large negative number, so one
cross-entropy and one ``argmax`` serve every task.

Example (YAML; ``num_labels`` is linked from the data module)::

    model:
      class_path: sstkit.models.MultitaskTextClassifier
      init_args: {backbone: minilm, task_names: [sst2, agnews], lr: 1.0e-3}

Example (Python)::

    model = MultitaskTextClassifier("minilm", num_labels=[2, 4], task_names=["sst2", "agnews"])
    logits = model(input_ids, attention_mask, task_ids=torch.tensor([0, 1]))  # (2, 4)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from sstkit.errors import SstkitError
from sstkit.models.base import StepOutput
from sstkit.models.text_classifier import TextClassifier
from sstkit.nn.hyper_adapter import set_condition

PAD_LOGIT = -1e4  # a class a task does not have: softmax weight exp(-1e4) = 0, finite in fp16 too


class MultitaskTextClassifier(TextClassifier):
    """A shared encoder with a linear head per task; logs ``<stage>/acc/<task>`` and ``<stage>/acc/mean``.

    Args:
        backbone: ``minilm``, a Hugging Face name or a local path.
        num_labels: classes of each task, in task-id order (linked from the data module by the CLI).
        task_names: names used in metric keys (default ``task0``, ``task1`` …).
        pooling, pretrained, config_overrides, head_dropout, lr, weight_decay, warmup_steps, warmup_ratio,
            scheduler: see :class:`TextClassifier`.
    """

    def __init__(
        self,
        backbone: str = "minilm",
        num_labels: list[int] | None = None,
        task_names: list[str] | None = None,
        pooling: str = "mean",
        pretrained: bool = True,
        config_overrides: dict[str, Any] | None = None,
        head_dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        scheduler: str = "linear",
    ) -> None:
        labels = list(num_labels or [2])
        if any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in labels):
            raise SstkitError(f"model.num_labels must be a list of ints >= 2 (one per task), got {num_labels!r}")
        names = list(task_names) if task_names is not None else [f"task{i}" for i in range(len(labels))]
        if len(names) != len(labels) or len(set(names)) != len(names):
            raise SstkitError(f"model.task_names must be {len(labels)} distinct names (one per entry of "
                              f"num_labels={labels}), got {task_names!r}")  # fmt: skip
        self.task_labels, self.task_names = labels, names
        super().__init__(backbone, max(labels), pooling, pretrained, config_overrides, head_dropout, lr,
                         weight_decay, warmup_steps, warmup_ratio, scheduler)  # fmt: skip
        self.save_hyperparameters()
        hidden = self.encoder.config.hidden_size
        del self.head
        self.heads = nn.ModuleList(nn.Sequential(nn.Dropout(head_dropout), nn.Linear(hidden, n)) for n in labels)
        # Per-task accuracy next to the base's accuracy over all examples (a ModuleList: moved and synced as one).
        self.task_metrics = nn.ModuleDict({stage: nn.ModuleList(MulticlassAccuracy(n, average="micro") for n in labels)
                                           for stage in ("val", "test")})  # fmt: skip

    @property
    def num_tasks(self) -> int:
        """Number of tasks (= heads); the hypernetwork-adapter callback reads it."""
        return len(self.task_labels)

    def add_task(self, name: str, num_labels: int) -> int:
        """Appends a head (and its metrics) for a new task and returns the task's id (few-shot transfer).

        Example:
            >>> model.add_task("heldout", 2)  # doctest: +SKIP
            2
        """
        if name in self.task_names or num_labels < 2 or num_labels > max(self.task_labels):
            raise SstkitError(f"add_task: need a new name and 2 <= num_labels <= {max(self.task_labels)}, got "
                              f"{name!r}, {num_labels}")  # fmt: skip
        device = next(self.parameters()).device
        first = self.heads[0]
        self.heads.append(nn.Sequential(nn.Dropout(first[0].p), nn.Linear(first[1].in_features, num_labels)).to(device))
        for stage in ("val", "test"):
            self.task_metrics[stage].append(MulticlassAccuracy(num_labels, average="micro").to(device))
        self.task_labels.append(num_labels)
        self.task_names.append(name)
        return self.num_tasks - 1

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(max(self.task_labels), average="micro")})

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                task_ids: Tensor | None = None) -> Tensor:  # fmt: skip
        """Logits of each example's own task, padded to the widest head: shape (batch, max(num_labels))."""
        if task_ids is None:
            task_ids = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= self.num_tasks):
            raise SstkitError(f"task ids must lie in [0, {self.num_tasks}), got {sorted(set(task_ids.tolist()))}")
        set_condition(self, task_ids)
        pooled = self.encode(input_ids, attention_mask, token_type_ids)
        logits = pooled.new_full((pooled.shape[0], max(self.task_labels)), PAD_LOGIT)
        for task in torch.unique(task_ids).tolist():
            rows = task_ids == task
            logits[rows, : self.task_labels[task]] = self.heads[task](pooled[rows]).to(logits.dtype)
        return logits

    def step(self, batch: dict[str, Tensor], stage: str) -> StepOutput:
        task_ids = batch["task_id"]
        logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), task_ids)
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels)
        return StepOutput(loss=loss, preds=logits.detach(), target=labels, batch_size=labels.shape[0],
                          extras={"logits": logits, "task_id": task_ids})

    def _eval_step(self, batch: Any, stage: str) -> StepOutput:
        out = super()._eval_step(batch, stage)
        metrics = self.task_metrics[stage]
        task_ids = out.extras["task_id"]
        for task in torch.unique(task_ids).tolist():
            rows = task_ids == task
            metrics[task].update(out.preds[rows, : self.task_labels[task]], out.target[rows])
        return out

    def _log_task_metrics(self, stage: str) -> None:
        values = []
        for name, metric in zip(self.task_names, self.task_metrics[stage]):
            if not _has_updates(metric):
                continue  # this task had no examples in this evaluation (e.g. a task with no test file)
            value = metric.compute()
            self.log(f"{stage}/acc/{name}", value)
            values.append(value)
            metric.reset()
        if values:
            self.log(f"{stage}/acc/mean", torch.stack(values).mean())

    def on_validation_epoch_end(self) -> None:
        self._log_task_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_task_metrics("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"), batch["task_id"])
        probs = torch.softmax(logits.float(), dim=-1)
        return {"index": batch["index"], "task_id": batch["task_id"], "probs": probs, "preds": probs.argmax(-1)}


def _has_updates(metric: MulticlassAccuracy) -> bool:
    """Whether any process saw an example of the metric's task in this evaluation.

    Under DDP a rank may have seen no example of a task that other ranks saw; every rank takes part in the count
    (a collective), so all ranks agree on whether to call ``compute()``, which is a collective too.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return metric.update_count > 0
    seen = torch.tensor([float(metric.update_count)], device=metric.device)
    dist.all_reduce(seen)
    return bool(seen.item() > 0)
