"""RTD + SimCSE continued pretraining as a callback on the BERT classifier family (Vega v1's phase 2).

The functional core is :mod:`sstkit.functional.rtd_simcse`. ``setup`` adds a small generator (a
``BertForMaskedLM`` built from the encoder's config at ``generator_scale`` of its width, random weights; no
pretrained masked LM ships with sstkit) as ``model.rtd_generator`` and a token-level discriminator head
``model.rtd_head``; both train with the encoder and are saved in checkpoints. The callback replaces the training
loss through the model base's training-loss wrapper: the batch's labels are not used, so any text-classification
data module is a source of unlabelled text (SST-2, AG News). At the end of training it can write the adapted
encoder with its tokenizer to ``export_dir``, from which a normal fine-tuning run starts with
``model.init_args.backbone: <export_dir>``. Gradient-disentangled embedding sharing is not implemented (the
generator has its own, narrower embeddings).

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.ReplacedTokenDetection
          init_args: {rtd_weight: 50.0, simcse_weight: 1.0, temperature: 0.05, export_dir: runs/minilm-rtd}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.functional.rtd_simcse import (
    mask_for_mlm,
    mlm_loss,
    rtd_labels,
    rtd_loss,
    sample_tokens,
    simcse_loss,
)
from sstkit.stacking import check_pair, method_setup, methods_on

from .freelb import require_sstkit_module


def build_generator(config: Any, scale: float) -> nn.Module:
    """A random ``BertForMaskedLM`` with the encoder's vocabulary and depth, ``scale`` of its width."""
    from transformers import BertConfig, BertForMaskedLM

    heads = max(1, round(config.num_attention_heads * scale))
    head_dim = max(1, config.hidden_size // config.num_attention_heads)
    gen = BertConfig(**{k: v for k, v in config.to_dict().items() if k in BertConfig().to_dict()})
    gen.num_attention_heads, gen.hidden_size = heads, heads * head_dim
    gen.intermediate_size = max(4, round(config.intermediate_size * scale))
    return BertForMaskedLM(gen)


class ReplacedTokenDetection(L.Callback):
    """Continued pretraining of the classifier's encoder with L_MLM(G) + λ·L_RTD(D) + μ·L_SimCSE.

    Args:
        rtd_weight: λ of the replaced-token-detection loss (ELECTRA: 50).
        simcse_weight: μ of the SimCSE loss (0: RTD only).
        temperature: τ of SimCSE.
        mask_prob: share of real, non-special tokens the generator fills in.
        generator_scale: the generator's width as a share of the encoder's (ELECTRA: 1/4 to 1/3).
        export_dir: folder to write the adapted encoder and its tokenizer to at the end of training (None: no export).
    """

    # The classification head takes no part in the pretraining objective: DDP must expect unused parameters.
    ddp_find_unused_parameters = True

    def __init__(self, rtd_weight: float = 50.0, simcse_weight: float = 1.0, temperature: float = 0.05,
                 mask_prob: float = 0.15, generator_scale: float = 0.25, export_dir: str | None = None) -> None:
        for name, value in (("rtd_weight", rtd_weight), ("simcse_weight", simcse_weight)):
            if not value >= 0:
                raise SstkitError(f"ReplacedTokenDetection.{name} must be >= 0, got {value}")
        if not temperature > 0:
            raise SstkitError(f"ReplacedTokenDetection.temperature must be > 0, got {temperature}")
        if not 0 < mask_prob < 1:
            raise SstkitError(f"ReplacedTokenDetection.mask_prob must be in (0, 1), got {mask_prob}")
        if not 0 < generator_scale <= 1:
            raise SstkitError(f"ReplacedTokenDetection.generator_scale must be in (0, 1], got {generator_scale}")
        self.rtd_weight, self.simcse_weight, self.temperature = rtd_weight, simcse_weight, temperature
        self.mask_prob, self.generator_scale, self.export_dir = mask_prob, generator_scale, export_dir
        self.special_ids: list[int] = []
        self.mask_token_id = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        require_sstkit_module(pl_module, "ReplacedTokenDetection")
        for other in methods_on(pl_module):  # a refused pair is named before the family check
            if other != "rtd":
                check_pair("rtd", other)
        if not hasattr(pl_module, "encoder") or not hasattr(pl_module, "encode"):
            raise SstkitError("ReplacedTokenDetection needs the BERT classifier family (sstkit.models.TextClassifier)")
        from sstkit.loaders import load_tokenizer

        tokenizer = load_tokenizer(pl_module.hparams.get("backbone", "minilm"))
        if tokenizer.mask_token_id is None:
            raise SstkitError("ReplacedTokenDetection: the backbone's tokenizer has no [MASK] token")
        self.mask_token_id, self.special_ids = int(tokenizer.mask_token_id), list(tokenizer.all_special_ids)
        with method_setup(pl_module, "rtd"):
            if not hasattr(pl_module, "rtd_generator"):  # surgery once: setup runs again for validate/test
                config = pl_module.encoder.config
                pl_module.rtd_generator = build_generator(config, self.generator_scale)
                hidden = config.hidden_size
                pl_module.rtd_head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 1))
            pl_module.wrap_training_loss("rtd", self.training_loss)

    def training_loss(self, pl_module: Any, batch: dict[str, Tensor], loss_of: Any) -> Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        masked, chosen = mask_for_mlm(ids, mask, self.special_ids, self.mask_token_id, self.mask_prob)
        gen_logits = pl_module.rtd_generator(input_ids=masked, attention_mask=mask).logits
        mlm = mlm_loss(gen_logits, ids, chosen)
        corrupted = ids.clone()
        if bool(chosen.any()):
            corrupted[chosen] = sample_tokens(gen_logits[chosen])
        labels = rtd_labels(ids, corrupted, mask)
        hidden = pl_module.encoder(input_ids=corrupted, attention_mask=mask).last_hidden_state
        rtd = rtd_loss(pl_module.rtd_head(hidden).squeeze(-1), labels, mask)
        loss = mlm + self.rtd_weight * rtd
        size = ids.shape[0]
        if self.simcse_weight > 0:
            simcse = simcse_loss(pl_module.encode(ids, mask), pl_module.encode(ids, mask), self.temperature)
            loss = loss + self.simcse_weight * simcse
            pl_module.log("method/rtd/simcse", simcse.detach(), batch_size=size)
        pl_module.log("method/rtd/mlm", mlm.detach(), batch_size=size)
        pl_module.log("method/rtd/rtd", rtd.detach(), batch_size=size)
        pl_module.log("method/rtd/replaced_share", labels.sum() / mask.sum().clamp(min=1), batch_size=size)
        pl_module._last_batch_size = size
        return loss

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.export_dir is None or not trainer.is_global_zero:
            return
        from sstkit.loaders import load_tokenizer

        out = Path(self.export_dir)
        out.mkdir(parents=True, exist_ok=True)
        encoder = copy.deepcopy(pl_module.encoder).cpu()
        with torch.no_grad():
            encoder.save_pretrained(out)
        load_tokenizer(pl_module.hparams.get("backbone", "minilm")).save_pretrained(out)
