"""Decoder-only language models (Hugging Face OPT) trained from scratch at a named size, or from pretrained weights.

OPT has no weights that load offline here, so the usual way is a random model from a size preset; users with a
network (or a local copy) pass ``pretrained: facebook/opt-125m``. The vocabulary size comes from the data module's
tokenizer (the CLI links ``data.vocab_size`` → ``model.vocab_size``).

Example (YAML)::

    model:
      class_path: sstkit.models.CausalLM
      init_args: {size: small, lr: 1.0e-3, scheduler: cosine, warmup_steps: 100}

Example (Python)::

    model = CausalLM("tiny", vocab_size=512)
    logits = model(input_ids)            # (batch, time, vocab)
    out = model.step({"input_ids": input_ids}, "val")
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection

from sstkit.errors import SstkitError
from sstkit.models.base import SstkitModule, StepOutput

# OPT shapes. word_embed_proj_dim equals hidden_size (OPT-350m's projected embeddings are the exception upstream).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "ffn_dim": 256,
             "max_position_embeddings": 512},
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "ffn_dim": 1024,
              "max_position_embeddings": 1024},
    "125m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "ffn_dim": 3072,
             "max_position_embeddings": 2048},
    "1.3b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32, "ffn_dim": 8192,
             "max_position_embeddings": 2048},
}
IGNORE_INDEX = -100


class TokenPerplexity(MeanMetric):
    """exp of the token-weighted mean negative log-likelihood.

    ``update(nll, mask)`` takes per-token losses and a 0/1 (or weight) tensor of the same shape. The states are
    MeanMetric's sums, reduced by summation across processes, so the value under DDP with uneven shards equals
    the single-process one exactly (no padding, no mean of means).
    """

    def compute(self) -> Tensor:
        return torch.exp(super().compute())


class CausalLM(SstkitModule):
    """An ``OPTForCausalLM`` trained with next-token cross-entropy; logs ``val/loss`` and ``val/ppl``.

    Args:
        size: a preset from :data:`SIZES` (``tiny``, ``small``, ``125m``, ``1.3b``); ignored with ``pretrained``.
        pretrained: a Hugging Face name or local path of a causal-LM checkpoint (OPT, Llama, chat models; needs a
            network or a local copy), or ``smollm2`` (packaged, offline); None builds a random OPT from ``size``.
        vocab_size: embedding rows; linked from the data module's tokenizer by the CLI.
        pad_token_id: the tokenizer's pad id (OPT and sstkit's BPE both use 1). Its embedding row gets no gradient.
        config_overrides: changes to the OPT config (e.g. ``{dropout: 0.0, num_hidden_layers: 3}``).
        lr, weight_decay, warmup_steps, warmup_ratio, scheduler: see :class:`SstkitModule`.

    The LM head is tied to the token embeddings (OPT's default) and stays tied. Batches hold ``input_ids``
    (batch, time) and optionally ``labels`` (same shape, ``-100`` = ignored); labels default to the inputs and are
    shifted here, so a block of T tokens gives T - 1 predictions.
    """

    def __init__(
        self,
        size: str = "tiny",
        pretrained: str | None = None,
        vocab_size: int | None = None,
        pad_token_id: int = 1,
        config_overrides: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int | None = None,
        warmup_ratio: float = 0.06,
        scheduler: str = "cosine",
    ) -> None:
        super().__init__(lr, weight_decay, warmup_steps, warmup_ratio, scheduler)
        if pretrained is None and size not in SIZES:
            raise SstkitError(f"model.size must be one of {sorted(SIZES)}, got {size!r} (or give model.pretrained)")
        if vocab_size is not None and vocab_size < 2:
            raise SstkitError(f"model.vocab_size must be >= 2, got {vocab_size}")
        self.save_hyperparameters()
        self.lm = build_opt(size, pretrained, vocab_size, pad_token_id, config_overrides)
        self.setup_metrics()

    @property
    def max_positions(self) -> int:
        """The longest sequence the position embeddings cover."""
        return int(self.lm.config.max_position_embeddings)

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"ppl": TokenPerplexity()})

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Next-token logits, shape (batch, time, vocab)."""
        if input_ids.shape[1] > self.max_positions:
            raise SstkitError(
                f"sequences of {input_ids.shape[1]} tokens exceed the model's {self.max_positions} positions: lower "
                "data.block_size or raise model.config_overrides.max_position_embeddings"
            )
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def token_nll(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Per-position negative log-likelihood of the next token and the mask of counted positions, (B, T-1)."""
        input_ids = batch["input_ids"]
        labels = batch.get("labels", input_ids)
        logits = self(input_ids, batch.get("attention_mask"))[:, :-1]
        targets = labels[:, 1:]
        # fp32 log-softmax: under bf16/fp16 autocast the loss would otherwise lose digits of the perplexity.
        nll = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX,
            reduction="none",
        ).view_as(targets)
        return nll, targets != IGNORE_INDEX

    def step(self, batch: dict[str, Tensor], stage: str) -> StepOutput:
        nll, mask = self.token_nll(batch)
        if "labels" in batch:
            count = int(mask.sum())  # a sync, only when labels may hold ignored positions
        else:
            count = mask.numel()
        loss = nll.sum() / max(count, 1)
        # batch_size = predicted tokens, so the base's val/loss is the token-weighted mean, consistent with ppl.
        return StepOutput(loss=loss, preds=nll.detach(), target=mask, batch_size=count)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """Per block: its index, summed next-token NLL and counted tokens (``sstkit predict`` scores a corpus)."""
        nll, mask = self.token_nll(batch)
        return {"index": batch["index"], "nll_sum": (nll * mask).sum(1), "tokens": mask.sum(1)}


def build_opt(
    size: str,
    pretrained: str | None,
    vocab_size: int | None,
    pad_token_id: int,
    config_overrides: dict[str, Any] | None,
) -> Any:
    """An ``OPTForCausalLM`` in training mode from a size preset, or any pretrained causal LM (name, path, ``smollm2``)."""
    from transformers import OPTConfig, OPTForCausalLM

    overrides = dict(config_overrides or {})
    if pretrained is not None:
        from sstkit.loaders import load_causal_lm

        # Any causal LM loads here (chat models too, `smollm2` from its packaged GGUF file), not only OPT.
        try:
            lm = load_causal_lm(pretrained, **overrides)
        except SstkitError as err:
            raise SstkitError(
                f"model.pretrained={pretrained!r}: {err} Drop `pretrained` to train a model of `size` from scratch."
            ) from err
        if vocab_size is not None and vocab_size > lm.config.vocab_size:
            raise SstkitError(
                f"the tokenizer has {vocab_size} tokens but {pretrained} has only {lm.config.vocab_size} embeddings: "
                "use the checkpoint's own tokenizer (data.tokenizer)"
            )
        # from_pretrained() returns eval mode; Lightning keeps module modes, so dropout would stay off.
        return lm.train()
    shape = copy.deepcopy(SIZES[size])
    shape.update(overrides)
    shape.setdefault("word_embed_proj_dim", shape["hidden_size"])
    if vocab_size is not None:
        shape["vocab_size"] = vocab_size
    shape.setdefault("pad_token_id", pad_token_id)
    if not 0 <= shape["pad_token_id"] < shape.get("vocab_size", 50272):
        raise SstkitError(f"model.pad_token_id={pad_token_id} is outside the vocabulary")
    if shape["hidden_size"] % shape["num_attention_heads"]:
        raise SstkitError(
            f"hidden_size {shape['hidden_size']} is not divisible by num_attention_heads {shape['num_attention_heads']}"
        )
    try:
        config = OPTConfig(**shape)
    except (TypeError, ValueError) as err:
        raise SstkitError(f"model.config_overrides: {err}") from err
    return OPTForCausalLM(config).train()
