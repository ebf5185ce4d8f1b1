"""One encoder, one classification head per task, and metrics per task and their mean (FM3's output heads).

Every batch carries ``task_id`` (one per example). The model conditions whatever task-aware method is on it
(hypernetwork adapters: :func:`sstkit.nn.hyper_adapter.set_condition`) on those ids before the encoder runs, then
applies each example's own head. Logits are padded to the widest head with a large negative number, so one
cross-entropy and one ``argmax`` serve every task.

A task is of type ``sequence`` (a head on the pooled sentence, target ``labels``) or ``token`` (a head on every
token's hidden state, target ``token_labels`` (batch, length) with -100 where no tag counts, e.g. NER-style
tagging). ``task_types`` is linked from the data module by the CLI. A token task logs ``<stage>/acc/<task>``
(accuracy over the tagged tokens, which enters ``acc/mean``) and ``<stage>/f1/<task>``, the micro F1 over every tag
but tag 0, which by convention is the outside tag ``O`` (token level, not entity spans).

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
from torchmetrics.classification import MulticlassAccuracy, MulticlassStatScores

from sstkit.errors import SstkitError
from sstkit.models.base import StepOutput
from sstkit.models.text_classifier import TextClassifier
from sstkit.nn.hyper_adapter import set_condition

PAD_LOGIT = -1e4  # a class a task does not have: softmax weight exp(-1e4) = 0, finite in fp16 too
IGNORE = -100  # a target no loss or metric counts (cross-entropy's default ignore_index)
TASK_TYPES = ("sequence", "token")


class MultitaskTextClassifier(TextClassifier):
    """A shared encoder with a linear head per task; logs ``<stage>/acc/<task>`` and ``<stage>/acc/mean``.

    Args:
        backbone: ``minilm``, a Hugging Face name or a local path.
        num_labels: classes of each task, in task-id order (linked from the data module by the CLI).
        task_names: names used in metric keys (default ``task0``, ``task1`` …).
        task_types: ``sequence`` or ``token`` per task (default: all ``sequence``; linked from the data module).
        pooling, pretrained, config_overrides, head_dropout, lr, weight_decay, warmup_steps, warmup_ratio,
            scheduler: see :class:`TextClassifier`.
    """

    def __init__(
        self,
        backbone: str = "minilm",
        num_labels: list[int] | None = None,
        task_names: list[str] | None = None,
        task_types: list[str] | None = None,
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
        types = list(task_types) if task_types is not None else ["sequence"] * len(labels)
        if len(types) != len(labels) or set(types) - set(TASK_TYPES):
            raise SstkitError(f"model.task_types must be {len(labels)} entries (one per task) from {TASK_TYPES}, got "
                              f"{task_types!r}")  # fmt: skip
        self.task_labels, self.task_names, self.task_types = labels, names, types
        super().__init__(backbone, max(labels), pooling, pretrained, config_overrides, head_dropout, lr,
                         weight_decay, warmup_steps, warmup_ratio, scheduler)  # fmt: skip
        self.save_hyperparameters()
        hidden = self.encoder.config.hidden_size
        del self.head
        self.heads = nn.ModuleList(nn.Sequential(nn.Dropout(head_dropout), nn.Linear(hidden, n)) for n in labels)
        # Per-task accuracy next to the base's accuracy over all examples (a ModuleList: moved and synced as one).
        self.task_metrics = nn.ModuleDict({stage: nn.ModuleList(_accuracy(n) for n in labels)
                                           for stage in ("val", "test")})  # fmt: skip
        # Tag counts (tp, fp, tn, fn per tag) of token tasks, for the F1 without the outside tag; keyed by task id.
        self.tag_metrics = nn.ModuleDict({stage: nn.ModuleDict({str(t): _tag_counts(n) for t, n in enumerate(labels)
                                                                if types[t] == "token"})
                                          for stage in ("val", "test")})  # fmt: skip

    @property
    def num_tasks(self) -> int:
        """Number of tasks (= heads); the hypernetwork-adapter callback reads it."""
        return len(self.task_labels)

    def add_task(self, name: str, num_labels: int, task_type: str = "sequence") -> int:
        """Appends a head (and its metrics) for a new task and returns the task's id (few-shot transfer).

        Example:
            >>> model.add_task("heldout", 2)  # doctest: +SKIP
            2
        """
        if name in self.task_names or num_labels < 2 or num_labels > max(self.task_labels) or task_type not in TASK_TYPES:
            raise SstkitError(f"add_task: need a new name, 2 <= num_labels <= {max(self.task_labels)} and a type from "
                              f"{TASK_TYPES}, got {name!r}, {num_labels}, {task_type!r}")  # fmt: skip
        device = next(self.parameters()).device
        first = self.heads[0]
        self.heads.append(nn.Sequential(nn.Dropout(first[0].p), nn.Linear(first[1].in_features, num_labels)).to(device))
        for stage in ("val", "test"):
            self.task_metrics[stage].append(_accuracy(num_labels).to(device))
            if task_type == "token":
                self.tag_metrics[stage][str(self.num_tasks)] = _tag_counts(num_labels).to(device)
        self.task_labels.append(num_labels)
        self.task_names.append(name)
        self.task_types.append(task_type)
        return self.num_tasks - 1

    def build_metrics(self) -> MetricCollection:
        # Over the sentence-level examples of all tasks; a token task's examples carry label -100 and are skipped.
        return MetricCollection({"acc": _accuracy(max(self.task_labels))})

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                task_ids: Tensor | None = None) -> Tensor:  # fmt: skip
        """Logits of each example's own task, padded to the widest head: shape (batch, max(num_labels)).

        Rows of token tasks hold only padding here; :meth:`forward_tasks` also returns their per-token logits.
        """
        return self.forward_tasks(input_ids, attention_mask, token_type_ids, task_ids)[0]

    def forward_tasks(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None,
                      task_ids: Tensor | None = None) -> tuple[Tensor, Tensor | None]:  # fmt: skip
        """Sentence logits (batch, C) and, when the batch holds a token task, token logits (batch, length, C).

        C = max(num_labels); classes a task lacks, and rows of the other type, are ``PAD_LOGIT``.
        """
        if task_ids is None:
            task_ids = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= self.num_tasks):
            raise SstkitError(f"task ids must lie in [0, {self.num_tasks}), got {sorted(set(task_ids.tolist()))}")
        set_condition(self, task_ids)
        present = torch.unique(task_ids).tolist()
        width = max(self.task_labels)
        if any(self.task_types[t] == "token" for t in present):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state  # fmt: skip
            pooled = self.pool(hidden, attention_mask)
            token_logits = hidden.new_full((*hidden.shape[:2], width), PAD_LOGIT)
        else:  # sentence tasks only: exactly the single-task family's path
            pooled, token_logits = self.encode(input_ids, attention_mask, token_type_ids), None
        logits = pooled.new_full((pooled.shape[0], width), PAD_LOGIT)
        for task in present:
            rows, n = task_ids == task, self.task_labels[task]
            if self.task_types[task] == "token":
                token_logits[rows, :, :n] = self.heads[task](hidden[rows]).to(token_logits.dtype)
            else:
                logits[rows, :n] = self.heads[task](pooled[rows]).to(logits.dtype)
        return logits, token_logits

    def step(self, batch: dict[str, Tensor], stage: str) -> StepOutput:
        task_ids = batch["task_id"]
        logits, token_logits = self.forward_tasks(batch["input_ids"], batch["attention_mask"],
                                                  batch.get("token_type_ids"), task_ids)  # fmt: skip
        labels = batch["labels"]
        # Each present kind of target adds its own mean; a batch of one task (training) has one term.
        terms = []
        if bool((labels != IGNORE).any()):
            terms.append(F.cross_entropy(logits.float(), labels, ignore_index=IGNORE))
        token_labels = batch.get("token_labels")
        if token_logits is not None and token_labels is not None and bool((token_labels != IGNORE).any()):
            terms.append(F.cross_entropy(token_logits.float().flatten(0, 1), token_labels.flatten(), ignore_index=IGNORE))
        loss = torch.stack(terms).sum() if terms else logits.float().sum() * 0.0
        return StepOutput(loss=loss, preds=logits.detach(), target=labels, batch_size=labels.shape[0],
                          extras={"logits": logits, "token_logits": token_logits, "task_id": task_ids})

    def _eval_step(self, batch: Any, stage: str) -> StepOutput:
        out = super()._eval_step(batch, stage)
        metrics = self.task_metrics[stage]
        task_ids = out.extras["task_id"]
        for task in torch.unique(task_ids).tolist():
            rows, n = task_ids == task, self.task_labels[task]
            if self.task_types[task] == "token":
                preds = out.extras["token_logits"][rows, :, :n].detach().flatten(0, 1)
                target = batch["token_labels"][rows].flatten()
                metrics[task].update(preds, target)
                self.tag_metrics[stage][str(task)].update(preds, target)
            else:
                metrics[task].update(out.preds[rows, :n], out.target[rows])
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
        for task, counts in self.tag_metrics[stage].items():
            if _has_updates(counts):
                self.log(f"{stage}/f1/{self.task_names[int(task)]}", _f1_without_outside(counts.compute()))
                counts.reset()
        if values:
            self.log(f"{stage}/acc/mean", torch.stack(values).mean())

    def on_validation_epoch_end(self) -> None:
        self._log_task_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_task_metrics("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        logits, token_logits = self.forward_tasks(batch["input_ids"], batch["attention_mask"],
                                                  batch.get("token_type_ids"), batch["task_id"])  # fmt: skip
        probs = torch.softmax(logits.float(), dim=-1)
        out = {"index": batch["index"], "task_id": batch["task_id"], "probs": probs, "preds": probs.argmax(-1)}
        if token_logits is not None:  # a tag per token; -100 on padding and on the rows of sentence tasks
            tags = token_logits.argmax(-1).masked_fill(batch["attention_mask"] == 0, IGNORE)
            token_rows = torch.tensor([self.task_types[t] == "token" for t in batch["task_id"].tolist()],
                                      device=tags.device)  # fmt: skip
            out["token_preds"] = tags.masked_fill(~token_rows.unsqueeze(1), IGNORE)
        return out


def _accuracy(num_labels: int) -> MulticlassAccuracy:
    return MulticlassAccuracy(num_labels, average="micro", ignore_index=IGNORE)


def _tag_counts(num_labels: int) -> MulticlassStatScores:
    return MulticlassStatScores(num_labels, average=None, ignore_index=IGNORE)


def _f1_without_outside(stats: Tensor) -> Tensor:
    """Micro F1 over tags 1…C-1 from per-tag (tp, fp, tn, fn, support) rows: 2·TP / (2·TP + FP + FN)."""
    tp, fp, fn = stats[1:, 0].sum(), stats[1:, 1].sum(), stats[1:, 3].sum()
    return (2 * tp / (2 * tp + fp + fn).clamp(min=1)).float()


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
