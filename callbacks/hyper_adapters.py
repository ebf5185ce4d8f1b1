"""Hypernetwork adapters (FM3's task adaptation, after HyperFormer) as a Lightning callback.

The core is :mod:`sstkit.functional.hyper_adapters`; this callback does the surgery in ``setup`` and freezes the
backbone. On :class:`sstkit.models.MultitaskTextClassifier` the model conditions the adapters on each batch's
``task_id`` itself; on a single-task family every example is task 0 unless the batch carries ``task_id``.

FM3's contrastive stage (``contrastive_steps > 0``): for the first that many optimizer steps the training loss is
SetFit's cosine-similarity loss on pairs drawn within each batch (:func:`sstkit.functional.contrastive_pairs
.in_batch_pair_loss`, R = ``contrastive_pairs`` per example) on the pooled, task-conditioned embeddings, so only
the adapters (hypernetwork) move and the heads wait; then the family's own loss takes over. A batch without
sentence labels (a token task) keeps its own loss throughout.

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.HyperAdapters
          init_args: {bottleneck: 16, task_dim: 64, hyper_dim: 32, contrastive_steps: 50}

Example (Python)::

    trainer = L.Trainer(callbacks=[HyperAdapters(bottleneck=8)])
    trainer.fit(MultitaskTextClassifier(task_names=["sst2", "agnews"], num_labels=[2, 4]), MultitaskTextDataModule(...))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L

from sstkit.errors import SstkitError, require_int
from sstkit.functional.contrastive_pairs import in_batch_pair_loss
from sstkit.functional.hyper_adapters import (
    KINDS,
    apply_hyper_adapters,
    freeze_for_adapters,
    parameters_per_task,
    set_condition,
)
from sstkit.stacking import method_setup

HEAD_PATTERNS = (r"re:(^|\.)(head|heads|classifier|score)\.",)


class HyperAdapters(L.Callback):
    """Adapters after every attention and FFN sublayer, their weights generated from task/layer/position embeddings.

    Args:
        kind: ``hyper`` (one shared hypernetwork, only ``z_t`` per task) or ``per_task`` (plain adapters, one full
            set per task: the baseline).
        num_tasks: tasks served; default: the model's ``num_tasks`` (multitask family), else 1.
        bottleneck: adapter width ``r``.
        task_dim: width of the task, layer, position (and language) embeddings.
        hyper_dim: width of the projected source embedding that the generators read.
        num_languages: rows of the language embedding (0: tasks carry no language).
        activation: ``relu``, ``gelu`` or ``swish``.
        trainable: parameter-name patterns that train besides the adapters (default: classification heads);
            everything else (the backbone) is frozen.
        contrastive_steps: optimizer steps of the contrastive stage before the head stage (0: none).
        contrastive_pairs: SetFit's R, pair rounds per example of a batch in that stage.

    Example:
        >>> HyperAdapters(bottleneck=8).kind
        'hyper'
    """

    method = "hyper_adapters"

    def __init__(
        self,
        kind: str = "hyper",
        num_tasks: int | None = None,
        bottleneck: int = 16,
        task_dim: int = 64,
        hyper_dim: int = 32,
        num_languages: int = 0,
        activation: str = "relu",
        trainable: Sequence[str] = HEAD_PATTERNS,
        contrastive_steps: int = 0,
        contrastive_pairs: int = 2,
    ) -> None:
        super().__init__()
        m = self.method
        if kind not in KINDS:
            raise SstkitError(f"{m}: kind must be one of {KINDS}, got {kind!r}")
        for key, value in (("num_tasks", num_tasks), ("bottleneck", bottleneck), ("task_dim", task_dim),
                           ("hyper_dim", hyper_dim)):  # fmt: skip
            if value is not None:
                require_int(m, key, value)
        require_int(m, "num_languages", num_languages, minimum=0)
        require_int(m, "contrastive_steps", contrastive_steps, minimum=0)
        require_int(m, "contrastive_pairs", contrastive_pairs)
        if kind == "per_task" and num_languages:
            raise SstkitError(f"{m}: kind 'per_task' has no language embedding; set num_languages: 0")
        if activation not in ("relu", "gelu", "swish"):
            raise SstkitError(f"{m}: activation must be relu, gelu or swish, got {activation!r}")
        self.kind, self.num_tasks, self.bottleneck = kind, num_tasks, bottleneck
        self.task_dim, self.hyper_dim, self.num_languages, self.activation = task_dim, hyper_dim, num_languages, activation
        self.trainable = [trainable] if isinstance(trainable, str) else list(trainable)
        self.contrastive_steps, self.contrastive_pairs = contrastive_steps, contrastive_pairs
        self.bank = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with method_setup(pl_module, self.method):
            num_tasks = self.num_tasks or int(getattr(pl_module, "num_tasks", 1))
            model_tasks = getattr(pl_module, "num_tasks", None)
            if model_tasks is not None and num_tasks < model_tasks:
                raise SstkitError(f"{self.method}: num_tasks={num_tasks} but the model has {model_tasks} tasks")
            self.bank = apply_hyper_adapters(pl_module, num_tasks, self.kind, self.bottleneck, self.num_languages,
                                             self.task_dim, self.hyper_dim, self.activation, method=self.method)  # fmt: skip
            if self.bank is not None:
                freeze_for_adapters(pl_module, self.trainable)
            if self.contrastive_steps:
                if not (callable(getattr(pl_module, "encode", None)) and hasattr(pl_module, "wrap_training_loss")):
                    raise SstkitError(f"{self.method}: contrastive_steps needs a text classifier family with "
                                      f"pooled embeddings (encode), got {type(pl_module).__name__}")  # fmt: skip
                pl_module.wrap_training_loss(self.method, self.contrastive_loss)

    def contrastive_loss(self, pl_module: Any, batch: Any, loss_of: Any) -> Any:
        """The training loss: SetFit's pair loss during the first ``contrastive_steps`` steps, then ``loss_of``."""
        trainer = pl_module._trainer
        if trainer is None or trainer.global_step >= self.contrastive_steps or "labels" not in batch:
            return loss_of(batch)
        set_condition(pl_module, batch.get("task_id"), batch.get("language_id"))
        embeddings = pl_module.encode(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        # Seeded by the step (and rank): a resumed run draws the same pairs.
        seed = trainer.global_step * 1_000_003 + trainer.global_rank
        loss = in_batch_pair_loss(embeddings, batch["labels"], self.contrastive_pairs, seed)
        if loss is None:
            return loss_of(batch)
        if trainer.world_size > 1:
            # DDP expects a gradient for every trainable parameter; the heads get none in this stage.
            loss = loss + 0.0 * sum(p.sum() for p in pl_module.parameters() if p.requires_grad)
        pl_module.log(f"method/{self.method}/contrastive_loss", loss.detach(), batch_size=len(batch["labels"]))
        return loss

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The numbers FM3's claim is about: what one more task costs, and what all tasks share.
        if self.bank is not None:
            for key, value in parameters_per_task(self.bank).items():
                pl_module.log(f"method/{self.method}/params_{key}", float(value), on_step=False, on_epoch=True)

    def _condition(self, pl_module: L.LightningModule, batch: Any) -> None:
        # Families that condition in their own forward (the multitask classifier) set it again there; this covers
        # single-task families whose batches carry a task id.
        if self.bank is not None and isinstance(batch, dict) and "task_id" in batch:
            set_condition(pl_module, batch["task_id"], batch.get("language_id"))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self._condition(pl_module, batch)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:  # fmt: skip
        self._condition(pl_module, batch)

    def on_test_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                            dataloader_idx: int = 0) -> None:  # fmt: skip
        self._condition(pl_module, batch)

    def on_predict_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int,
                               dataloader_idx: int = 0) -> None:  # fmt: skip
        self._condition(pl_module, batch)

