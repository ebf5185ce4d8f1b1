"""The attribute discriminator of PPC / PPLM steering as a callback on the causal-LM family.

The Lightning face of :mod:`sstkit.generation.control.discriminator`. ``setup`` adds an
:class:`~sstkit.generation.control.AttributeHead` (a linear layer on the LM's mean last-layer hidden states) to
the model as ``attribute_head``, so the optimizer, checkpoints and resume see it. Every training step then adds
``weight · CE(head(mean_t h_t(x)), y)`` on ``batch_size`` labelled sentences drawn from ``data_file`` (SST-2 rows)
through the model base's extra-loss protocol; the sentences are encoded as the controllers encode prompts (a line
break first), so the head learns the very features it later steers. With ``lm_gradient: true`` (default) the
loss also trains the LM (multitask: the hidden states learn to carry sentiment next to the next-token loss); with
``false`` only the head trains, a probe of the LM's features as PPLM's discriminator on a frozen LM. After each
validation the head's accuracy on ``dev_rows`` rows of ``dev_file`` is logged as
``method/attribute_head/dev_acc``; ``export`` writes the head as a discriminator file at the end of training.
``sstkit generate --controller ppc`` uses the head in the checkpoint when no ``--discriminator`` is given.

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.AttributeDiscriminator
          init_args: {data_file: sst2/train.tsv, batch_size: 16, weight: 1.0, export: runs/ppc/discriminator.pt}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from sstkit.errors import SstkitError, require_int
from sstkit.generation.control.discriminator import AttributeHead, attribute_loss, head_accuracy
from sstkit.generation.control.steerable import SteerableLM
from sstkit.paths import resolve_data_dir
from sstkit.stacking import method_setup

METHOD = "attribute_head"
NUM_LABELS = 2  # SST-2 sentiment: 0 negative, 1 positive (the labels sstkit generate --attribute names)


class AttributeDiscriminator(L.Callback):
    """Trains ``p_D(a | x) = softmax(W · mean_t h_t(x) + b)`` on labelled sentences alongside a causal LM.

    Args:
        data_file: labelled TSV (``sentence<TAB>label``, header row) under the data folder, or a path.
        dev_file: labelled TSV for the logged accuracy (None: none logged).
        data_dir: the data folder; default the data module's folder (or its parent), else ``$SSTKIT_DATA``.
        batch_size: labelled sentences per training step.
        weight: weight of the head's cross-entropy next to the LM loss.
        lm_gradient: let the head's loss train the LM too (multitask) or only the head (a probe).
        max_rows: use the first rows of ``data_file`` only (None: all).
        dev_rows: rows of ``dev_file`` the accuracy is measured on.
        export: write the head there at the end of training (``AttributeHead.save`` format; None: no file).
        seed: seed of the sentence sampling (with the step and rank, so a resumed run draws the same rows).
    """

    def __init__(self, data_file: str = "sst2/train.tsv", dev_file: str | None = "sst2/dev.tsv",
                 data_dir: str | None = None, batch_size: int = 16, weight: float = 1.0, lm_gradient: bool = True,
                 max_rows: int | None = None, dev_rows: int = 1000, export: str | None = None, seed: int = 0) -> None:
        require_int("AttributeDiscriminator", "batch_size", batch_size, 1)
        require_int("AttributeDiscriminator", "dev_rows", dev_rows, 1)
        if max_rows is not None:
            require_int("AttributeDiscriminator", "max_rows", max_rows, 2)
        if not weight > 0:
            raise SstkitError(f"AttributeDiscriminator.weight must be > 0, got {weight}")
        self.data_file, self.dev_file, self.data_dir = data_file, dev_file, data_dir
        self.batch_size, self.weight, self.lm_gradient = batch_size, float(weight), bool(lm_gradient)
        self.max_rows, self.dev_rows, self.export, self.seed = max_rows, dev_rows, export, seed
        self.texts: list[str] = []
        self.labels: list[int] = []
        self.tokenizer: Any = None

    # --- setup ------------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer | None, pl_module: L.LightningModule, stage: str) -> None:
        with method_setup(pl_module, METHOD):  # refuses methods it cannot be stacked on (sstkit.stacking)
            lm = getattr(pl_module, "lm", None)
            if lm is None or not hasattr(lm, "config") or not hasattr(pl_module, "add_extra_loss"):
                raise SstkitError("AttributeDiscriminator trains a head on a causal LM's hidden states "
                                  f"(sstkit.models.CausalLM), got {type(pl_module).__name__}")
            if not hasattr(pl_module, "attribute_head"):  # surgery once: setup runs again for validate/test
                pl_module.attribute_head = AttributeHead(int(lm.config.hidden_size), NUM_LABELS).to(pl_module.device)
        if stage == "fit" and trainer is not None:
            if not self.texts:
                self._read(trainer)
            self.tokenizer = _tokenizer_of(trainer)
        pl_module.add_extra_loss(METHOD, self._loss, self.weight)

    def _read(self, trainer: L.Trainer) -> None:
        self.texts, self.labels = _read_rows(self._path(trainer, self.data_file), self.max_rows)
        if len(set(self.labels)) < NUM_LABELS:
            raise SstkitError(f"AttributeDiscriminator.data_file {self.data_file}: rows of only one label")

    def _path(self, trainer: L.Trainer, name: str) -> Path:
        if Path(name).is_file():
            return Path(name)
        if self.data_dir:
            return resolve_data_dir(self.data_dir) / name
        # A corpus data module's root is the data folder or one corpus folder inside it (wikitext2/).
        root = getattr(getattr(trainer, "datamodule", None), "root", None)
        folders = [Path(root), Path(root).parent] if root is not None else []
        found = [f / name for f in folders if (f / name).is_file()]
        return found[0] if found else resolve_data_dir(None) / name

    # --- the loss term ----------------------------------------------------------------------------------------
    def _loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Tensor:
        if self.tokenizer is None or not self.texts:
            raise SstkitError("AttributeDiscriminator: no labelled data or tokenizer (setup did not run for fit)")
        # Rows from (seed, step, rank) alone: a resumed run draws the same rows, each rank different ones.
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + module.global_step * 64 + module.global_rank)
        rows = torch.randint(len(self.texts), (self.batch_size,), generator=generator).tolist()
        lm = SteerableLM(module.lm, self.tokenizer, prefix="\n")
        loss, correct = attribute_loss(lm, module.attribute_head, [self.texts[r] for r in rows],
                                       [self.labels[r] for r in rows], self.lm_gradient)
        module.log(f"method/{METHOD}/train_acc", correct.float().mean(), batch_size=self.batch_size)
        return loss

    # --- measurement and export -------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.dev_file is None or self.tokenizer is None or trainer.sanity_checking:
            return
        texts, labels = _read_rows(self._path(trainer, self.dev_file), self.dev_rows)
        acc = head_accuracy(pl_module.attribute_head, SteerableLM(pl_module.lm, self.tokenizer, "\n"), texts, labels)
        # Every rank measures the same rows, so the value needs no sync.
        pl_module.log(f"method/{METHOD}/dev_acc", acc, rank_zero_only=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.export is not None and trainer.is_global_zero:
            head = AttributeHead(pl_module.attribute_head.linear.in_features, pl_module.attribute_head.linear.out_features)
            head.load_state_dict({k: v.detach().cpu() for k, v in pl_module.attribute_head.state_dict().items()})
            head.save(self.export)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}


def _tokenizer_of(trainer: L.Trainer) -> Any:
    tokenizer = getattr(getattr(trainer, "datamodule", None), "tokenizer", None)
    if tokenizer is None:
        raise SstkitError("AttributeDiscriminator needs the data module's tokenizer (a text-corpus data module)")
    return tokenizer


def _read_rows(path: Path, limit: int | None) -> tuple[list[str], list[int]]:
    from sstkit.datamodules.text_files import read_labelled_file

    if not path.is_file():
        raise SstkitError(f"AttributeDiscriminator: no such labelled file {path} (a TSV 'sentence<TAB>label'; "
                          "set data_dir or $SSTKIT_DATA)")
    texts, labels = read_labelled_file(path, ["sentence", "label"], 0, 1, None, NUM_LABELS, "tsv")
    return texts[:limit], [int(y) for y in labels[:limit]]
