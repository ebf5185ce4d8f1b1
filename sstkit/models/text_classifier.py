"""BERT-type sequence classifiers over any Hugging Face encoder.

Example (YAML)::

    model:
      class_path: sstkit.models.TextClassifier
      init_args: {backbone: minilm, pooling: mean, lr: 5.0e-5}

Example (Python)::

    model = TextClassifier("minilm", num_labels=2)
    logits = model(input_ids, attention_mask)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from sstkit.errors import SstkitError
from sstkit.loaders import load_encoder
from sstkit.models.base import SstkitModule, StepOutput

POOLINGS = ("cls", "mean")


class TextClassifier(SstkitModule):
    """An encoder, a pooling of its last hidden states, and a linear head.

    Args:
        backbone: ``minilm`` (packaged all-MiniLM-L6-v2), a Hugging Face model name, or a local path.
        num_labels: number of classes; linked from the data module when the CLI builds both.
        pooling: ``cls`` (first token) or ``mean`` (mask-weighted mean, what all-MiniLM-L6-v2 was trained with).
        pretrained: load the backbone's weights; False builds a random encoder from its config.
        config_overrides: changes to the backbone's config (e.g. ``{num_hidden_layers: 2}``) for small models.
        head_dropout: dropout before the classification head.
        lr, weight_decay, warmup_steps, warmup_ratio, scheduler: see :class:`SstkitModule`.
    """

    def __init__(
        self,
        backbone: str = "minilm",
        num_labels: int = 2,
        pooling: str = "mean",
        pretrained: bool = True,
        config_overrides: dict[str, Any] | None = None,
        head_dropout: float = 0.1,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        scheduler: str = "linear",
    ) -> None:
        super().__init__(lr, weight_decay, warmup_steps, warmup_ratio, scheduler)
        if pooling not in POOLINGS:
            raise SstkitError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        if num_labels < 2:
            raise SstkitError(f"model.num_labels must be >= 2, got {num_labels}")
        self.save_hyperparameters()
        self.num_labels, self.pooling = num_labels, pooling
        # from_pretrained() returns a model in eval mode; Lightning keeps module modes, so dropout would stay off.
        self.encoder = load_encoder(backbone, pretrained, config_overrides).train()
        hidden = self.encoder.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(hidden, num_labels))
        self.setup_metrics()

    def build_metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(self.num_labels, average="micro"),
                "f1": MulticlassF1Score(self.num_labels, average="macro"),
            }
        )

    def encode(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Pooled sentence representation, shape (batch, hidden)."""
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return self.pool(hidden, attention_mask)

    def pool(self, hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """(batch, length, hidden) token states → (batch, hidden) by ``self.pooling``."""
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Class logits, shape (batch, num_labels)."""
        return self.head(self.encode(input_ids, attention_mask, token_type_ids))

    def step(self, batch: dict[str, Tensor], stage: str) -> StepOutput:
        logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels)
        # extras["logits"] keeps the graph, for methods that regularise the predictions (SMART, self-calibration).
        return StepOutput(loss=loss, preds=logits.detach(), target=labels, batch_size=labels.shape[0],
                          extras={"logits": logits})

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        logits = self(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        probs = torch.softmax(logits.float(), dim=-1)
        return {"index": batch["index"], "probs": probs, "preds": probs.argmax(-1)}
