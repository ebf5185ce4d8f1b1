"""Several text- and token-classification tasks in one DataModule: k-shot subsets, task sampling by size or temperature.

Tasks: ``sst2`` (2-way sentiment), ``agnews`` (4-way topic) and ``agnews_names``, a token-classification task
(per-word tags O / B-NAME / I-NAME / NUM by a capitalisation rule: a stand-in for NER, see
:mod:`sstkit.datamodules.token_tagging`). Batches holding a token task carry ``token_labels`` (batch, length);
its examples' sentence ``labels`` are -100, as are a sentence task's ``token_labels``.

Every example carries ``task_id`` (its task's position in ``tasks``). Training batches are single-task: each batch
first draws a task with probability

    p_t ∝ n_t^(1/T)      (T = 1: by size; T → ∞: uniform; ``sampling: uniform`` sets T = ∞)

over the tasks' training-set sizes ``n_t`` (after the k-shot cut), then takes the next ``batch_size`` examples of
that task's own shuffled stream. Evaluation concatenates the tasks' val/test sets in order (batches may then span
two tasks; the multitask model and the adapters handle per-example task ids).

Example (YAML)::

    data:
      class_path: sstkit.datamodules.MultitaskTextDataModule
      init_args: {tasks: [sst2, agnews], k_shot: 16, sampling: temperature, temperature: 2.0, batch_size: 16}
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sstkit.errors import SstkitError

from .agnews import AGNewsDataModule
from .resumable import EvalLoaderHooks, ResumableDataLoader, eval_loader
from .sst2 import SST2DataModule
from .text_classification import STAGE_SPLITS, TextClassificationDataModule
from .token_tagging import AGNewsNamesDataModule, TagCollate, TokenTaggedTexts, k_shot_tagged_indices
from .tokenized import TokenizedTexts

TASKS: dict[str, type[TextClassificationDataModule]] = {"sst2": SST2DataModule, "agnews": AGNewsDataModule,
                                                        "agnews_names": AGNewsNamesDataModule}  # fmt: skip
SAMPLINGS = ("size", "temperature", "uniform")


def k_shot_indices(labels: torch.Tensor, k: int, seed: int) -> list[int]:
    """``k`` examples of every class, drawn with ``seed``; sorted row indices.

    Example:
        >>> k_shot_indices(torch.tensor([0, 1, 0, 1, 0, 1]), 2, seed=0)  # doctest: +SKIP
        [0, 1, 2, 5]
    """
    generator = torch.Generator().manual_seed(seed)
    keep: list[int] = []
    for label in sorted(set(labels.tolist())):
        rows = (labels == label).nonzero().flatten()
        if len(rows) < k:
            raise SstkitError(f"data.k_shot={k}, but class {label} has only {len(rows)} training examples")
        keep += rows[torch.randperm(len(rows), generator=generator)[:k]].tolist()
    return sorted(keep)


def task_probabilities(sizes: Sequence[int], sampling: str, temperature: float = 1.0) -> list[float]:
    """``p_t ∝ n_t^(1/T)``; ``size`` is T = 1 and ``uniform`` T = ∞.

    Example:
        >>> task_probabilities([100, 400], "temperature", 2.0)
        [0.3333333333333333, 0.6666666666666666]
    """
    power = {"size": 1.0, "uniform": 0.0}.get(sampling, 1.0 / temperature)
    weights = [n**power for n in sizes]
    return [w / sum(weights) for w in weights]


class TaskTexts(Dataset):
    """The tasks' tokenised texts end to end; item ``i`` is an example with its ``task_id``, a list is a batch."""

    def __init__(self, parts: Sequence[TokenizedTexts], pad_token_id: int) -> None:
        self.parts, self.collate = list(parts), TaskCollate(pad_token_id)
        self.offsets = [0]
        for part in self.parts:
            self.offsets.append(self.offsets[-1] + len(part))

    def __len__(self) -> int:
        return self.offsets[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """(task id, row within the task) of global index ``i``."""
        task = next(t for t in range(len(self.parts)) if i < self.offsets[t + 1])
        return task, i - self.offsets[task]

    def __getitem__(self, i: int | list[int]) -> dict[str, Any]:
        if isinstance(i, list):  # a whole batch from TaskBatchSampler
            return self.collate([self[j] for j in i])
        task, row = self.locate(i)
        return {**self.parts[task][row], "index": i, "task_id": task}


class TaskCollate(TagCollate):
    """:class:`TagCollate` (``token_labels`` when a token task is in the batch) plus each example's ``task_id``."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {**super().__call__(examples), "task_id": torch.tensor([e["task_id"] for e in examples])}


class TaskBatchSampler(Sampler[list[int]]):
    """Single-task batches: a task drawn by ``probs`` per batch, then the next examples of its shuffled stream.

    The order depends only on (seed, epoch), so a resumed run draws the same batches. Under DDP Lightning wraps
    this sampler and hands each rank a share of the batches.
    """

    def __init__(self, offsets: Sequence[int], batch_size: int, probs: Sequence[float], seed: int = 0) -> None:
        self.offsets, self.batch_size, self.probs, self.seed = list(offsets), batch_size, list(probs), seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.offsets[-1] / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        tasks = torch.multinomial(torch.tensor(self.probs), len(self), replacement=True, generator=generator)
        streams: dict[int, list[int]] = {}
        for task in tasks.tolist():
            start, size = self.offsets[task], self.offsets[task + 1] - self.offsets[task]
            batch: list[int] = []
            while len(batch) < min(self.batch_size, size):
                if not streams.get(task):  # exhausted: a new pass over the task in a new order
                    order = (torch.randperm(size, generator=generator) + start).tolist()
                    # What this batch already holds goes last, so a batch never repeats an example.
                    taken = set(batch)
                    streams[task] = ([i for i in order if i in taken] + [i for i in order if i not in taken])
                batch.append(streams[task].pop())
            yield batch


def _identity(batch: Any) -> Any:
    return batch  # TaskTexts already collated the batch the sampler asked for


class MultitaskTextDataModule(EvalLoaderHooks, L.LightningDataModule):
    """SST-2, AG News, AG News name tagging (any of :data:`TASKS`) mixed, with per-task ``task_id``.

    Args:
        tasks: task names, in task-id order (``sst2``, ``agnews``, ``agnews_names``).
        task_args: per-task extra arguments of the task's DataModule (e.g. ``{agnews: {val_file: test.tsv}}``).
        data_dir: the data folder (default ``$SSTKIT_DATA``, else ``./data``).
        tokenizer: linked from ``model.backbone`` by the CLI.
        max_length: truncation length in tokens.
        batch_size, eval_batch_size, num_workers: as in :class:`TextClassificationDataModule`.
        k_shot: keep ``k`` training examples per class of every classification task, and for a tagging task texts
            until every entity tag occurs at least ``k`` times (greedy, :func:`k_shot_tagged_indices`); None: all.
        sampling: ``size``, ``temperature`` or ``uniform`` (see the module doc).
        temperature: ``T`` of ``temperature`` sampling.
        limit_eval_samples: evaluate on the first this many examples of every task's val/test set.
        seed: seed of the k-shot subsets (task ``t`` uses ``seed + t``) and of the batch order.
        download: fetch missing files from the Hugging Face hub.
    """

    predict_split = "test"

    def __init__(
        self,
        tasks: list[str] | None = None,
        task_args: dict[str, dict[str, Any]] | None = None,
        data_dir: str | None = None,
        tokenizer: str = "minilm",
        max_length: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        k_shot: int | None = None,
        sampling: str = "temperature",
        temperature: float = 2.0,
        limit_eval_samples: int | None = None,
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__()
        tasks = list(tasks or ["sst2", "agnews"])
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise SstkitError(f"data.tasks must be distinct names from {sorted(TASKS)}, got {tasks}")
        if sampling not in SAMPLINGS:
            raise SstkitError(f"data.sampling must be one of {SAMPLINGS}, got {sampling!r}")
        if temperature <= 0:
            raise SstkitError(f"data.temperature must be > 0, got {temperature}")
        if k_shot is not None and k_shot < 1:
            raise SstkitError(f"data.k_shot must be >= 1 or null, got {k_shot}")
        extra = task_args or {}
        if set(extra) - set(tasks):
            raise SstkitError(f"data.task_args names tasks not in data.tasks: {sorted(set(extra) - set(tasks))}")
        self.tasks, self.k_shot, self.sampling, self.temperature = tasks, k_shot, sampling, temperature
        self.batch_size, self.eval_batch_size, self.num_workers, self.seed = batch_size, eval_batch_size, num_workers, seed
        self.task_modules = [TASKS[name](data_dir=data_dir, tokenizer=tokenizer, max_length=max_length,
                                    limit_eval_samples=limit_eval_samples, seed=seed, download=download,
                                    **extra.get(name, {})) for name in tasks]  # fmt: skip
        self.datasets: dict[str, TaskTexts] = {}

    @property
    def num_labels(self) -> list[int]:
        """Classes of each task, in task-id order; the CLI links it to ``model.num_labels``."""
        return [m.num_labels for m in self.task_modules]

    @property
    def task_types(self) -> list[str]:
        """``sequence`` or ``token`` for each task; the CLI links it to ``model.task_types``."""
        return [getattr(m, "task_type", "sequence") for m in self.task_modules]

    def check_data(self, stage: str | None = None) -> None:
        """Reads every file of every task that ``stage`` needs (see :meth:`TextClassificationDataModule.check_data`)."""
        for module in self.task_modules:
            module.check_data(stage)

    def prepare_data(self) -> None:
        for module in self.task_modules:
            module.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "", ("train", "val", "test")):
            split = "test" if split == "predict" else split  # predictions are for the tasks' test sets
            if split in self.datasets:
                continue
            parts = []
            for task, module in enumerate(self.task_modules):
                module.setup("fit" if split in ("train", "val") else "test")
                data = module.datasets[split]
                if split == "train" and self.k_shot and isinstance(data, TokenTaggedTexts):
                    data = data.subset(k_shot_tagged_indices(data, self.k_shot, self.seed + task, module.counted_tags))
                elif split == "train" and self.k_shot:
                    data = data.subset(k_shot_indices(data.labels, self.k_shot, self.seed + task))
                parts.append(data)
            self.datasets[split] = TaskTexts(parts, self.task_modules[0]._collate().pad_token_id)

    def task_probabilities(self) -> list[float]:
        """Each task's share of the training batches."""
        data = self.datasets["train"]
        return task_probabilities([len(p) for p in data.parts], self.sampling, self.temperature)

    def train_dataloader(self) -> DataLoader:
        data = self.datasets["train"]
        sampler = TaskBatchSampler(data.offsets, self.batch_size, self.task_probabilities(), self.seed)
        # batch_size=None: the sampler yields whole batches and TaskTexts collates them, so Lightning can shard
        # the batches across DDP ranks like any sampler's items.
        return ResumableDataLoader(data, batch_size=None, sampler=sampler, collate_fn=_identity,
                                   num_workers=self.num_workers)  # fmt: skip

    def _eval_loader(self, split: str) -> DataLoader:
        data = self.datasets[split]
        return eval_loader(data, self.eval_batch_size or self.batch_size, data.collate, self.num_workers)
