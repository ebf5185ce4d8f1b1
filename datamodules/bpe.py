"""Offline tokenizers for language modelling: a byte-level BPE trained on the training text, cached.

Machines without a network cannot download OPT's GPT-2 BPE, so sstkit trains one of the same kind (byte-level,
so nothing is ever unknown) on the training split with the Hugging Face ``tokenizers`` library. It is trained once
and cached in the writable cache folder, keyed by a fingerprint of the training file, the vocabulary size and the
part of the file used, so later runs and every DDP rank load it instead of training again. The special tokens take
OPT's ids (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3), so ``pad_token_id: 1`` is right for both.

Example:
    >>> tokenizer = load_or_train_bpe(Path("data/wikitext2/valid.txt"), vocab_size=8192)
    >>> tokenizer("Homarus gammarus", add_special_tokens=False)["input_ids"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sstkit.errors import SstkitError
from sstkit.paths import cache_dir, fingerprint

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")


def bpe_cache_path(train_file: Path, vocab_size: int, line_range: Sequence[int | None] = (None, None),
                   extra_files: Sequence[Path] = ()) -> Path:
    """The folder a BPE trained on ``train_file[lines]`` (and ``extra_files``) with ``vocab_size`` tokens is cached in."""
    # Without extra files the key is the one earlier versions wrote, so their cached tokenizers stay valid.
    key = fingerprint(train_file, vocab_size, list(line_range), "bytelevel-bpe-v1", *extra_files)
    return cache_dir("tokenizers") / f"bpe{vocab_size}-{train_file.stem}-{key}"


def train_bpe(lines: Sequence[str], vocab_size: int) -> Any:
    """Trains a byte-level BPE on ``lines`` and wraps it as a ``PreTrainedTokenizerFast``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise SstkitError(f"data.bpe_vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (the byte alphabet), got {vocab_size}")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(lines, vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                            show_progress=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def load_or_train_bpe(
    train_file: Path, vocab_size: int, lines: Sequence[str] | None = None, line_range: Sequence[int | None] = (None, None),
    extra_files: Sequence[Path] = (),
) -> Any:
    """The cached BPE for ``train_file`` (its lines ``line_range``), trained and saved on first use.

    Args:
        train_file: the training text; its path, size and mtime key the cache.
        vocab_size: tokens in the vocabulary (byte alphabet and special tokens included).
        lines: the training lines, if the caller already read them (else read from ``train_file``).
        line_range: the ``[start, stop)`` slice of the file's lines the tokenizer is trained on (a held-out tail
            of the file must not shape the vocabulary).
    """
    from transformers import PreTrainedTokenizerFast

    folder = bpe_cache_path(train_file, vocab_size, line_range, extra_files)
    if not (folder / "tokenizer.json").is_file():
        if lines is None:
            lines = train_file.read_text(encoding="utf-8").splitlines(keepends=True)[slice(*line_range)]
        tokenizer = train_bpe(lines, vocab_size)
        # Save into a private folder and rename it into place: concurrent ranks never see half a tokenizer.
        tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
        tokenizer.save_pretrained(str(tmp))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
    return PreTrainedTokenizerFast.from_pretrained(str(folder))
