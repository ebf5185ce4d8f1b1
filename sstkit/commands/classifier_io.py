"""Loading and writing text classifiers for the delta and patch commands, and plain evaluation loops.

A classifier is read from a Lightning checkpoint of :class:`sstkit.models.TextClassifier` (or of the bag-of-words
:class:`sstkit.models.BagOfWordsClassifier`, e.g. as an attack victim) or from an *exported* folder, and written
as an exported folder: a plain Hugging Face encoder (``config.json``, ``model.safetensors``, tokenizer files) plus
``head.safetensors`` and ``sstkit_classifier.json``. The folder loads without sstkit as an HF model, and with
sstkit as ``backbone: <folder>`` or through :func:`load_classifier`.

Example:
    >>> model = load_classifier("runs/bert-sst2-finetune/seed0/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> save_classifier(model, "out/pruned", extra={"method": "dare"})  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sstkit.errors import SstkitError
from sstkit.loaders import load_tokenizer
from sstkit.models.bow_classifier import BagOfWordsClassifier
from sstkit.models.text_classifier import TextClassifier

META_FILE = "sstkit_classifier.json"
HEAD_FILE = "head.safetensors"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw content of a Lightning checkpoint, with a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise SstkitError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # a truncated or non-torch file
        raise SstkitError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise SstkitError(f"{path}: not a Lightning checkpoint of an sstkit model (no state_dict / hyper_parameters)")
    return ckpt


def resolve_device(name: str = "auto", option: str = "--device") -> torch.device:
    """The device ``name`` names: ``auto`` is the GPU when there is one, else the CPU; errors name ``option``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise SstkitError(f"{option} {name!r}: not a device name (auto, cpu, cuda, cuda:N)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SstkitError(f"{option} {name}: CUDA is not available on this machine; use {option} cpu")
    return device


def load_classifier(path: str | Path) -> TextClassifier | BagOfWordsClassifier:
    """A :class:`TextClassifier` (checkpoint file or exported folder) or a :class:`BagOfWordsClassifier`
    (checkpoint file) in eval mode."""
    path = Path(path)
    if path.is_dir():
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise SstkitError(f"{path}: not an exported classifier folder (no {META_FILE}); give a .ckpt file")
        from safetensors.torch import load_file

        meta = json.loads(meta_path.read_text())
        model = TextClassifier(backbone=str(path), num_labels=int(meta["num_labels"]), pooling=meta["pooling"],
                               pretrained=True)
        model.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        return model.eval()
    ckpt = read_checkpoint(path)
    state = ckpt["state_dict"]
    if any(".lora_" in key for key in state) and isinstance(ckpt.get("dense_state_dict"), dict):
        state = ckpt["dense_state_dict"]  # LoRA with export_dense: the merged dense weights load as they are
    if any(".lora_" in key for key in state):
        raise SstkitError(f"{path}: a LoRA checkpoint; merge it first or use `sstkit patch extract`")
    raw_hp = ckpt["hyper_parameters"]
    hp = {k: v for k, v in raw_hp.items() if not k.startswith("_")}
    # LightningCLI records the class as _class_path; checkpoints saved without it are told apart by their arguments
    is_bow = str(raw_hp.get("_class_path", "")).endswith("BagOfWordsClassifier") or "embed_dim" in hp
    family = BagOfWordsClassifier if is_bow else TextClassifier
    try:
        model = family(**hp)
    except TypeError as err:
        raise SstkitError(f"{path}: not a {family.__name__} checkpoint ({err})") from err
    model.load_state_dict(state)
    return model.eval()


def backbone_of(model: TextClassifier) -> str:
    """The name or path the classifier's encoder and tokenizer came from."""
    hp = model.hparams
    return str(hp.get("backbone") or hp.get("tokenizer") or "minilm")  # a bag-of-words model names its tokenizer


def save_classifier(model: TextClassifier, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes the exported folder (HF encoder + tokenizer + head + metadata) and returns its path."""
    from safetensors.torch import save_file

    if not isinstance(model, TextClassifier):
        raise SstkitError(f"only a TextClassifier exports as a Hugging Face folder, not a {type(model).__name__}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.encoder.save_pretrained(str(out))
    try:
        load_tokenizer(backbone_of(model)).save_pretrained(str(out))
    except SstkitError:  # a random test encoder may have no tokenizer of its own; the model is still usable
        pass
    save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, str(out / HEAD_FILE))
    meta = {"num_labels": model.num_labels, "pooling": model.pooling, "source_backbone": backbone_of(model),
            **(extra or {})}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return out


def read_texts(path: str | Path, limit: int | None = None, offset: int = 0) -> tuple[list[str], list[int]]:
    """``sentence<TAB>label`` rows of an SST-2-style TSV (header ``sentence label``), rows offset…offset+limit."""
    from sstkit.datamodules.text_files import read_labelled_file

    path = Path(path)
    if not path.is_file():
        raise SstkitError(f"{path}: no such data file (a TSV with header 'sentence<TAB>label')")
    texts, labels = read_labelled_file(path, ["sentence", "label"], 0, 1, None, 2, "tsv")
    end = None if limit is None else offset + limit
    return texts[offset:end], labels[offset:end]


def make_batches(texts: list[str], labels: list[int] | None, tokenizer_name: str, max_length: int = 64,
                 batch_size: int = 64) -> list[dict[str, Tensor]]:
    """Tokenised, padded batches (kept in memory: evaluation sets here are small)."""
    tokenizer = load_tokenizer(tokenizer_name)
    batches = []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if labels is not None:
            batch["labels"] = torch.tensor(labels[start:start + batch_size])
        batches.append(batch)
    return batches


@torch.no_grad()
def accuracy(model: TextClassifier, batches: list[dict[str, Tensor]]) -> float:
    """Share of correct argmax predictions over labelled batches."""
    model.eval()
    correct = total = 0
    for batch in batches:
        logits = model(batch["input_ids"], batch["attention_mask"])
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
        total += int(batch["labels"].numel())
    return correct / max(total, 1)


@torch.no_grad()
def last_hidden(model: TextClassifier, batches: list[dict[str, Tensor]]) -> Iterator[Tensor]:
    """The encoder's last hidden state per batch."""
    model.eval()
    for batch in batches:
        yield model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
