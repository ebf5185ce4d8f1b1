"""A language-modelling corpus mixed from several local files: plain text (``.txt``) and the text column of
labelled TSVs (``.tsv``: SST-2, AG News), each split one token stream cut into blocks as in
:class:`TextCorpusDataModule`. Used to train the masked LM behind the substitution attacks on local data.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.MixedTextCorpusDataModule
      init_args:
        train_files: [sst2/train.tsv, agnews/train.tsv, wikitext2/valid.txt]
        test_files: [sst2/test.tsv, wikitext2/test.txt]
        tokenizer: minilm
        block_size: 64

With ``tokenizer: bpe`` a byte-level BPE is trained on all training files together (cached), and every line
keeps its line break in the token stream, as in :class:`TextCorpusDataModule`, so a causal LM learns where
sentences end (``configs/opt/mixed/ppc_lm.yaml``: SST-2 + WikiText-2 for the PPC generator).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sstkit.errors import DataError, SstkitError
from sstkit.paths import cache_dir, fingerprint, require_files

from .bpe import load_or_train_bpe
from .text_corpus import TextCorpusDataModule


def corpus_lines(path: Path, max_lines: int | None = None) -> list[str]:
    """The text lines of a file: a ``.tsv``'s first column (its ``sentence``/``text`` header row dropped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".tsv":
        lines = [line.split("\t")[0] for line in lines]
        if lines and lines[0].strip().lower() in ("sentence", "text"):
            lines = lines[1:]
    lines = [line for line in lines if line.strip()]
    return lines[:max_lines] if max_lines else lines


class MixedTextCorpusDataModule(TextCorpusDataModule):
    """Several files per split, relative to the data folder; see :class:`TextCorpusDataModule` for the rest.

    Args:
        train_files, val_files, test_files: paths relative to the data folder (``sst2/train.tsv``); empty: no split.
        max_lines_per_file: read at most this many lines of each file (keeps tokenising large files short).
        tokenizer: a Hugging Face tokenizer name or path, ``minilm`` for the packaged one, or ``bpe`` (trained on
            the training files, ``bpe_vocab_size`` tokens).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        train_files: list[str] | None = None,
        val_files: list[str] | None = None,
        test_files: list[str] | None = None,
        max_lines_per_file: int | None = None,
        tokenizer: str = "minilm",
        bpe_vocab_size: int = 8192,
        block_size: int = 64,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        limit_train_blocks: int | None = None,
        limit_eval_blocks: int | None = None,
        seed: int = 0,
    ) -> None:
        if tokenizer == "bpe" and not train_files:
            raise SstkitError("data.tokenizer: bpe is trained on the training text; give data.train_files")
        # The base class trains a BPE on its one train_file; here the BPE comes from all train_files (below).
        super().__init__(data_dir=data_dir, dataset_folder="", train_file=None, val_file=None, test_file=None,
                         tokenizer="minilm" if tokenizer == "bpe" else tokenizer, bpe_vocab_size=bpe_vocab_size,
                         block_size=block_size, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, num_workers=num_workers,
                         limit_train_blocks=limit_train_blocks, limit_eval_blocks=limit_eval_blocks, seed=seed)
        self.dataset_name, self.tokenizer_name = "mixed", tokenizer
        self.sources = {"train": list(train_files or []), "val": list(val_files or []),
                        "test": list(test_files or [])}
        self.max_lines_per_file = max_lines_per_file
        require_files(self.root, sorted({f for files in self.sources.values() for f in files}), "mixed corpus")

    def _source(self, split: str) -> tuple[Path, tuple[None, None]] | None:
        files = self.sources.get(split) or []
        return (self.root / files[0], (None, None)) if files else None

    def _lines(self, split: str) -> list[str]:
        """The split's text lines in file order; with BPE each keeps a line break (sentence boundaries)."""
        end = "\n" if self.tokenizer_name == "bpe" else ""
        return [line + end for f in self.sources[split]
                for line in corpus_lines(self.root / f, self.max_lines_per_file)]

    @property
    def tokenizer(self) -> Any:
        """The named tokenizer, or a BPE trained on all training files (cached by their fingerprint)."""
        if self._tokenizer is None and self.tokenizer_name == "bpe":
            paths = [self.root / f for f in self.sources["train"]]
            self._tokenizer = load_or_train_bpe(paths[0], self.bpe_vocab_size, self._lines("train"),
                                                line_range=[None, self.max_lines_per_file], extra_files=paths[1:])
        return super().tokenizer

    def _tokenizer_key(self) -> str:
        if self.tokenizer_name == "bpe":
            paths = [self.root / f for f in self.sources["train"]]
            return f"bpe:{fingerprint(*paths, self.bpe_vocab_size, self.max_lines_per_file)}"
        return super()._tokenizer_key()

    def token_stream(self, split: str) -> Tensor:
        paths = [self.root / f for f in self.sources[split]]
        key = fingerprint(*paths, self._tokenizer_key(), self.max_lines_per_file)
        cached = cache_dir("tokenized") / f"mixed-{split}-{key}.pt"
        if cached.is_file():
            return torch.load(cached, map_location="cpu", weights_only=True)
        text = self._lines(split)
        if not text:
            raise DataError(paths[0], f"the {split} split is empty (no text)")
        encoded = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        ids = torch.tensor([t for line in encoded for t in line], dtype=torch.int32)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        torch.save(ids, tmp)
        os.replace(tmp, cached)
        return ids
