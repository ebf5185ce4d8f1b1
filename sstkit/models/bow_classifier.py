"""A fastText-style bag-of-words sentence classifier: the mean of token embeddings and a linear head.

It reads the same batches as :class:`~sstkit.models.TextClassifier` (``input_ids``, ``attention_mask`` from any
sstkit text data module's tokenizer), so one data config serves both; it has no pretrained weights and no word
order, which makes it a cheap, architecturally different victim or transfer target for attacks.

Example (YAML)::

    model:
      class_path: sstkit.models.BagOfWordsClassifier
      init_args: {tokenizer: minilm, embed_dim: 64, lr: 5.0e-3}

Example (Python)::

    model = BagOfWordsClassifier("minilm", num_labels=2)
    logits = model(input_ids, attention_mask)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from sstkit.errors import SstkitError
from sstkit.loaders import load_tokenizer
from sstkit.models.base import SstkitModule, StepOutput


class BagOfWordsClassifier(SstkitModule):
    """Token embeddings averaged over the attention mask, dropout, and a linear head (Joulin et al., 2017).

    Args:
        tokenizer: the data module's tokenizer name (``minilm``, a Hugging Face name or a path); it fixes the
            vocabulary size unless ``vocab_size`` is given.
        num_labels: number of classes; linked from the data module when the CLI builds both.
        vocab_size: rows of the embedding table; None reads it from the tokenizer (tests pass a small one).
        embed_dim: width of the word vectors.
        dropout: dropout on the averaged vector.
        lr, weight_decay, warmup_steps, warmup_ratio, scheduler: see :class:`SstkitModule`.
    """

    def __init__(
        self,
        tokenizer: str = "minilm",
        num_labels: int = 2,
        vocab_size: int | None = None,
        embed_dim: int = 64,
        dropout: float = 0.2,
        lr: float = 5e-3,
        weight_decay: float = 0.0,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.0,
        scheduler: str = "linear",
    ) -> None:
        super().__init__(lr, weight_decay, warmup_steps, warmup_ratio, scheduler)
        if num_labels < 2:
            raise SstkitError(f"model.num_labels must be >= 2, got {num_labels}")
        if embed_dim < 1:
            raise SstkitError(f"model.embed_dim must be >= 1, got {embed_dim}")
        if vocab_size is None:
            vocab_size = len(load_tokenizer(tokenizer))
        self.save_hyperparameters()
        self.num_labels = num_labels
        # One row per tokenizer entry: the attack's gradient scorer finds this table as the input embeddings.
        self.embeddings = nn.Embedding(vocab_size, embed_dim)
        nn.init.normal_(self.embeddings.weight, std=0.1)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(embed_dim, num_labels))
        self.setup_metrics()

    def build_metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "acc": MulticlassAccuracy(self.num_labels, average="micro"),
                "f1": MulticlassF1Score(self.num_labels, average="macro"),
            }
        )

    def get_input_embeddings(self) -> nn.Embedding:
        """The word-vector table (the Hugging Face name, so attacks and probes find it)."""
        return self.embeddings

    def encode(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Mask-weighted mean of the token embeddings, shape (batch, embed_dim); word order is ignored."""
        mask = attention_mask.unsqueeze(-1).to(self.embeddings.weight.dtype)
        return (self.embeddings(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> Tensor:
        """Class logits, shape (batch, num_labels)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.head(self.encode(input_ids, attention_mask))

    def step(self, batch: dict[str, Tensor], stage: str) -> StepOutput:
        logits = self(batch["input_ids"], batch["attention_mask"])
        labels = batch["labels"]
        loss = F.cross_entropy(logits.float(), labels)
        return StepOutput(loss=loss, preds=logits.detach(), target=labels, batch_size=labels.shape[0],
                          extras={"logits": logits})

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        probs = torch.softmax(self(batch["input_ids"], batch["attention_mask"]).float(), dim=-1)
        return {"index": batch["index"], "probs": probs, "preds": probs.argmax(-1)}
