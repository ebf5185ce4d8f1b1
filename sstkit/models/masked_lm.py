"""Masked language models (BERT-style MLM) for substitution attacks and fill-mask, trained with ``sstkit fit``.

Starts from any Hugging Face encoder: ``backbone: minilm`` is the packaged all-MiniLM-L6-v2, a BERT encoder whose
checkpoint has no MLM head, so a ``BertForMaskedLM`` is built from its config, the encoder weights are loaded, the
head's transform is new and its decoder is tied to the word embeddings. A backbone with an MLM head
(``bert-base-uncased``, ``roberta-large``, with a network) keeps its head. Corpus blocks (no special tokens) are
framed with [CLS] … [SEP]; training masks 15 % of the tokens (80 % [MASK], 10 % random, 10 % kept); evaluation
replaces a fixed (per-block seeded) 15 % with [MASK] and reports recovery accuracy ``val/top1``, ``val/top10``.

Example (YAML)::

    model:
      class_path: sstkit.models.MaskedLM
      init_args: {backbone: minilm, lr: 1.0e-4, mlm_probability: 0.15}

Example (Python)::

    model = MaskedLM("minilm")
    logits = model(input_ids, attention_mask)          # (batch, time, vocab)
    model.mlm.save_pretrained("out/"); tokenizer.save_pretrained("out/")   # a plain HF masked LM
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from sstkit.errors import SstkitError
from sstkit.loaders import build_masked_lm, load_tokenizer
from sstkit.models.base import SstkitModule, StepOutput

IGNORE_INDEX = -100


class MaskedLM(SstkitModule):
    """An encoder with an MLM head, trained by masked-token cross-entropy.

    Args:
        backbone: ``minilm`` (packaged), a Hugging Face name or a local path.
        pretrained: load the encoder's weights (False: a random model from its config, for tests).
        config_overrides: changes to the backbone's config (``{num_hidden_layers: 1}`` for tiny models).
        mlm_probability: share of tokens masked per block.
        freeze_encoder: train only the MLM head (the encoder stays the sentence model the attacks also use).
        vocab_size: linked from the data module; must equal the backbone's vocabulary.
        lr, weight_decay, warmup_steps, warmup_ratio, scheduler: see :class:`SstkitModule`.
    """

    def __init__(
        self,
        backbone: str = "minilm",
        pretrained: bool = True,
        config_overrides: dict[str, Any] | None = None,
        mlm_probability: float = 0.15,
        freeze_encoder: bool = False,
        vocab_size: int | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        scheduler: str = "linear",
    ) -> None:
        super().__init__(lr, weight_decay, warmup_steps, warmup_ratio, scheduler)
        if not 0.0 < mlm_probability < 1.0:
            raise SstkitError(f"model.mlm_probability must be in (0, 1), got {mlm_probability}")
        self.save_hyperparameters()
        self.mlm = build_masked_lm(backbone, pretrained, config_overrides)
        tok = load_tokenizer(backbone)
        vocab = self.mlm.config.vocab_size
        if vocab_size is not None and vocab_size != vocab:
            raise SstkitError(f"model.vocab_size {vocab_size} (from the data's tokenizer) differs from backbone "
                              f"'{backbone}' ({vocab}): give the data module tokenizer: {backbone}")
        if tok.mask_token_id is None:
            raise SstkitError(f"backbone '{backbone}': its tokenizer has no mask token")
        self.cls_id, self.sep_id, self.mask_id = tok.cls_token_id, tok.sep_token_id, tok.mask_token_id
        self.vocab = vocab
        # from_pretrained() returns eval mode and Lightning keeps module modes: set them here.
        self.mlm.train()
        if freeze_encoder:
            base = getattr(self.mlm, self.mlm.base_model_prefix)
            for p in base.parameters():
                p.requires_grad_(False)
            base.eval()  # a frozen encoder gives its features without dropout
            # The decoder is tied to the (frozen) word embeddings: only the head's transform and bias train.
        self.setup_metrics()

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"top1": MulticlassAccuracy(self.vocab, top_k=1, average="micro"),
                                 "top10": MulticlassAccuracy(self.vocab, top_k=10, average="micro")})

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Token logits, shape (batch, time, vocab)."""
        return self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits

    def frame(self, block: Tensor) -> Tensor:
        """[CLS] block [SEP] (special tokens may be None for tokenizers without them)."""
        parts = [block]
        if self.cls_id is not None:
            parts.insert(0, torch.full_like(block[:, :1], self.cls_id))
        if self.sep_id is not None:
            parts.append(torch.full_like(block[:, :1], self.sep_id))
        return torch.cat(parts, 1)

    def mask_tokens(self, ids: Tensor, generator: torch.Generator | None, train: bool) -> tuple[Tensor, Tensor]:
        """(masked inputs, labels): BERT's 80/10/10 corruption in training, all [MASK] in evaluation."""
        inner = torch.ones_like(ids, dtype=torch.bool)
        inner[:, 0] = self.cls_id is None
        inner[:, -1] = self.sep_id is None
        rand = torch.rand(ids.shape, generator=generator, device="cpu").to(ids.device)
        chosen = (rand < self.hparams.mlm_probability) & inner
        labels = ids.masked_fill(~chosen, IGNORE_INDEX)
        inputs = ids.clone()
        if not train:
            return inputs.masked_fill(chosen, self.mask_id), labels
        roll = torch.rand(ids.shape, generator=generator, device="cpu").to(ids.device)
        inputs = inputs.masked_fill(chosen & (roll < 0.8), self.mask_id)
        random_ids = torch.randint(self.vocab, ids.shape, generator=generator, device="cpu").to(ids.device)
        swap = chosen & (roll >= 0.8) & (roll < 0.9)
        return torch.where(swap, random_ids, inputs), labels

    def step(self, batch: dict[str, Tensor], stage: str) -> StepOutput:
        ids = self.frame(batch["input_ids"].long())
        generator = None
        if stage != "train":  # the same masks every evaluation: seeded by the first block's index
            generator = torch.Generator().manual_seed(int(batch["index"][0]) if "index" in batch else 0)
        inputs, labels = self.mask_tokens(ids, generator, train=stage == "train")
        picked = labels != IGNORE_INDEX
        logits = self.masked_logits(inputs, picked)
        loss = F.cross_entropy(logits.float(), labels[picked]) if picked.any() else logits.sum() * 0.0
        return StepOutput(loss=loss, preds=logits.detach(), target=labels[picked], batch_size=int(picked.sum()))

    def masked_logits(self, inputs: Tensor, picked: Tensor) -> Tensor:
        """Logits at the ``picked`` positions only, (n_picked, vocab): the vocabulary projection costs as much as
        the whole MiniLM encoder per token, so it runs on the 15 % of positions that have labels."""
        head = getattr(self.mlm, "cls", None) or getattr(self.mlm, "lm_head", None)
        if head is None:  # an architecture without a separable head: full logits, then select
            return self(inputs, torch.ones_like(inputs))[picked]
        base = getattr(self.mlm, self.mlm.base_model_prefix)
        hidden = base(input_ids=inputs, attention_mask=torch.ones_like(inputs)).last_hidden_state
        return head(hidden[picked])

    @classmethod
    def load_trained(cls, path: str) -> MaskedLM:
        """A trained model from its Lightning checkpoint, in eval mode, without a Trainer."""
        from sstkit.commands.classifier_io import read_checkpoint

        ckpt = read_checkpoint(path)
        hp = {k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}
        model = cls(**{**hp, "pretrained": False})
        model.load_state_dict(ckpt["state_dict"])
        return model.eval()
