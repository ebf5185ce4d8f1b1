"""LoRA as a Lightning callback (the layers are peft's; selection, freezing and merging: :mod:`sstkit.functional.lora`).

Example (YAML, fine-tuning: only the adapters and the classifier head train)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.LoRA
          init_args: {rank: 8, alpha: 16, dropout: 0.1, freeze_other: true}

Example (Python)::

    trainer = L.Trainer(callbacks=[LoRA(rank=8)])
    trainer.fit(model, data)
    merge_lora(model)  # plain nn.Linear layers again
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
from torch import nn

from sstkit.errors import SstkitError, require_int
from sstkit.functional.export import dense_state_dict
from sstkit.functional.lora import apply_lora, merged_linear, set_lora_trainable
from sstkit.functional.surgery import method_patterns
from sstkit.stacking import method_setup

from ._sharding import refuse_sharded

HEAD_PATTERNS = (r"re:(^|\.)(head|classifier|score|lm_head|attribute_head)\.",)


class LoRA(L.Callback):
    """Freezes the selected linears' weights ``W0`` and trains ``W0 + (alpha/r)·B A`` with ``B = 0`` at start.

    Surgery happens in ``setup`` (idempotent, before the optimizer exists), so the optimizer holds only what
    trains and a checkpoint restores into the same structure with no special loading.

    Args:
        rank: ``r`` of every adapter.
        alpha: scaling numerator; updates are multiplied by ``alpha / r``.
        dropout: dropout on the adapters' input.
        patterns: module-name patterns to wrap (fnmatch globs, or ``re:`` regexes); default: the model family's
            ``method_patterns`` (e.g. Lorentz layers' inner linears), else the attention and MLP projections of
            BERT and OPT models.
        exclude: patterns removed from the selection.
        train_bias: train the wrapped layers' biases.
        freeze_other: freeze every parameter outside the wrapped layers except those matching ``trainable``
            (fine-tuning); ``False`` keeps embeddings, norms and heads trainable (pre-training, as ReLoRA does).
        trainable: parameter-name patterns kept trainable when ``freeze_other`` (default: classifier / LM heads).
        export_dense: also store merged dense weights in every checkpoint under ``"dense_state_dict"``.

    Example:
        >>> LoRA(rank=4, alpha=8).scaling
        2.0
    """

    method = "lora"

    def __init__(
        self,
        rank: int = 8,
        alpha: float = 16.0,
        dropout: float = 0.0,
        patterns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        train_bias: bool = True,
        freeze_other: bool = False,
        trainable: Sequence[str] = HEAD_PATTERNS,
        export_dense: bool = False,
    ) -> None:
        super().__init__()
        m = self.method
        require_int(m, "rank", rank)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha <= 0:
            raise SstkitError(f"{m}: alpha must be a number > 0, got {alpha!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
            raise SstkitError(f"{m}: dropout must be in [0, 1), got {dropout!r}")
        if patterns is not None:
            patterns = [patterns] if isinstance(patterns, str) else list(patterns)
            if not patterns:
                raise SstkitError(f"{m}: patterns is empty; use ['*'] to wrap every nn.Linear")
        self.rank, self.alpha, self.dropout = rank, float(alpha), float(dropout)
        self.patterns, self.exclude = patterns, [exclude] if isinstance(exclude, str) else list(exclude)
        self.train_bias, self.freeze_other, self.export_dense = train_bias, freeze_other, export_dense
        self.trainable = [trainable] if isinstance(trainable, str) else list(trainable)
        self.layers: dict[str, nn.Module] = {}

    @property
    def scaling(self) -> float:
        """``alpha / r``, the factor applied to ``B A``."""
        return self.alpha / self.rank

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        refuse_sharded(trainer, self.method)  # peft surgery and merges need whole weights (callbacks/_sharding.py)
        with method_setup(pl_module, self.method):  # refuses methods LoRA cannot be stacked on (sstkit.stacking)
            patterns = method_patterns(pl_module, self.patterns)
            self.layers = apply_lora(pl_module, self.rank, self.alpha, patterns, self.exclude, self.dropout,
                                     method=self.method)  # fmt: skip
            if self.layers:
                set_lora_trainable(pl_module, self.layers, self.train_bias, self.freeze_other, self.trainable)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.export_dense:
            merged = {name: merged_linear(layer) for name, layer in self.layers.items()}
            checkpoint["dense_state_dict"] = dense_state_dict(pl_module, merged)
