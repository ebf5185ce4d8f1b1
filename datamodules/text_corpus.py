"""Language-modelling data from plain text files: tokenised once, cached, cut into contiguous blocks of tokens.

Every split's lines are tokenised (no special tokens added), concatenated into one token stream and cut into
non-overlapping blocks of ``block_size`` tokens; the tail shorter than a block is dropped. A batch holds
``input_ids`` (batch, block_size) and the block ``index``; the model uses the inputs as labels and shifts them.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.TextCorpusDataModule
      init_args: {dataset_folder: my_corpus, train_file: train.txt, val_file: valid.txt, test_file: test.txt,
                  tokenizer: bpe, bpe_vocab_size: 8192, block_size: 256, batch_size: 16}
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sstkit.errors import DataError, SstkitError
from sstkit.loaders import load_tokenizer
from sstkit.paths import cache_dir, fingerprint, require_files, resolve_data_dir

from .bpe import load_or_train_bpe
from .resumable import EvalLoaderHooks, eval_loader, train_loader

SPLITS = ("train", "val", "test")
LineRange = tuple[int | None, int | None]


@dataclass
class TokenBlocks(Dataset):
    """Contiguous blocks of one token stream: item i is ``ids[b*size:(b+1)*size]`` with ``b = blocks[i]``."""

    ids: Tensor
    block_size: int
    blocks: Tensor

    @classmethod
    def from_stream(cls, ids: Tensor, block_size: int) -> TokenBlocks:
        """All full blocks of ``ids``, in order."""
        return cls(ids, block_size, torch.arange(len(ids) // block_size))

    def subset(self, positions: list[int]) -> TokenBlocks:
        """The blocks at ``positions`` of this dataset, in that order."""
        return TokenBlocks(self.ids, self.block_size, self.blocks[positions])

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, Any]:
        start = int(self.blocks[i]) * self.block_size
        return {"input_ids": self.ids[start : start + self.block_size].long(), "index": i}


class TextCorpusDataModule(EvalLoaderHooks, L.LightningDataModule):
    """Plain text files → a tokenizer (given or trained), cached token streams, contiguous blocks.

    Args:
        data_dir: the data folder; None means ``$SSTKIT_DATA``, else ``./data``. It is only read.
        dataset_folder: the corpus's sub-folder of the data folder.
        train_file, val_file, test_file: file names in that folder (None: no such split).
        val_holdout: if > 0, the last ``val_holdout`` share of the training file's lines is the validation split
            (and ``val_file`` is not used); the tokenizer is trained without it.
        tokenizer: ``bpe`` (a byte-level BPE trained on the training split and cached, works offline), or a Hugging
            Face tokenizer name / path such as ``facebook/opt-125m``.
        bpe_vocab_size: vocabulary size of the trained BPE.
        block_size: tokens per block (the model sees ``block_size - 1`` next-token predictions per block).
        batch_size: training blocks per batch and process.
        eval_batch_size: blocks per validation/test batch (default: ``batch_size``).
        num_workers: DataLoader workers.
        limit_train_blocks: train on a seeded random subset of this many blocks.
        limit_eval_blocks: evaluate on the first this many blocks of val/test (quick runs).
        seed: seed of the training subset (the epoch order follows ``seed_everything``).
        download: fetch the corpus from the Hugging Face hub into the cache when the files are missing.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        dataset_folder: str = "",
        train_file: str | None = "train.txt",
        val_file: str | None = "valid.txt",
        test_file: str | None = "test.txt",
        val_holdout: float = 0.0,
        tokenizer: str = "bpe",
        bpe_vocab_size: int = 8192,
        block_size: int = 128,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        limit_train_blocks: int | None = None,
        limit_eval_blocks: int | None = None,
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__()
        if block_size < 2:
            raise SstkitError(f"data.block_size must be >= 2 (one input and one next token), got {block_size}")
        if batch_size < 1:
            raise SstkitError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= val_holdout < 1.0:
            raise SstkitError(f"data.val_holdout must be in [0, 1), got {val_holdout}")
        if val_holdout and not train_file:
            raise SstkitError("data.val_holdout needs a train_file to hold the validation lines out of")
        if tokenizer == "bpe" and not train_file:
            raise SstkitError("data.tokenizer: bpe is trained on the training text; give data.train_file or a tokenizer name")
        self.files = {"train": train_file, "val": None if val_holdout else val_file, "test": test_file}
        self.val_holdout, self.tokenizer_name, self.bpe_vocab_size = val_holdout, tokenizer, bpe_vocab_size
        self.block_size, self.batch_size, self.eval_batch_size = block_size, batch_size, eval_batch_size or batch_size
        self.num_workers, self.seed, self.download = num_workers, seed, download
        self.limit_train_blocks, self.limit_eval_blocks = limit_train_blocks, limit_eval_blocks
        self.root = resolve_data_dir(data_dir) / dataset_folder
        self.dataset_name = dataset_folder or "corpus"
        if not download:
            require_files(self.root, sorted({f for f in self.files.values() if f}), self.dataset_name)
        self._tokenizer: Any = None
        self._line_counts: dict[Path, int] = {}
        self.datasets: dict[str, TokenBlocks] = {}

    # --- files and lines ---------------------------------------------------------------------------------
    def fetch_from_hub(self, target: Path) -> None:
        """Writes the corpus's files into ``target`` from the Hugging Face hub (corpora with a recipe only)."""
        raise SstkitError(f"{type(self).__name__} has no download recipe; put the files in {self.root}")

    def _path(self, name: str) -> Path:
        path = self.root / name
        if self.download and not path.is_file():
            # The data folder may be read-only: downloaded copies live in the cache.
            target = cache_dir("datasets", self.dataset_name)
            if not (target / name).is_file():
                self.fetch_from_hub(target)
            path = target / name
        return path

    def _source(self, split: str) -> tuple[Path, LineRange] | None:
        """The file and line range a split is read from, or None when the split is not configured."""
        if split == "val" and self.val_holdout:
            train, _ = self._source("train")  # type: ignore[misc]
            return train, (self._holdout_cut(train), None)
        if not self.files[split]:
            return None
        path = self._path(self.files[split])
        if split == "train" and self.val_holdout:
            return path, (0, self._holdout_cut(path))
        return path, (None, None)

    def _holdout_cut(self, path: Path) -> int:
        if path not in self._line_counts:
            self._line_counts[path] = len(_read_lines(path))
        lines = self._line_counts[path]
        return lines - max(1, round(self.val_holdout * lines))

    # --- tokenizer ---------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The tokenizer: loaded (or, for ``bpe``, trained and cached) on first use."""
        if self._tokenizer is None:
            if self.tokenizer_name == "bpe":
                path, lines = self._source("train")  # type: ignore[misc]
                text = _read_lines(path)[slice(*lines)]
                if not "".join(text).strip():
                    raise DataError(path, "the train split is empty (no text to train the tokenizer on)")
                self._tokenizer = load_or_train_bpe(path, self.bpe_vocab_size, text, line_range=lines)
            else:
                self._tokenizer = load_tokenizer(self.tokenizer_name)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Number of token ids; the CLI links it to ``model.vocab_size``."""
        return len(self.tokenizer)

    def _tokenizer_key(self) -> str:
        if self.tokenizer_name == "bpe":
            path, lines = self._source("train")  # type: ignore[misc]
            return f"bpe:{fingerprint(path, self.bpe_vocab_size, list(lines))}"
        return self.tokenizer_name

    # --- token streams -----------------------------------------------------------------------------------
    def token_stream(self, split: str) -> Tensor:
        """All token ids of a split in order, int32; tokenised once and cached."""
        path, lines = self._source(split)  # type: ignore[misc]
        key = fingerprint(path, self._tokenizer_key(), list(lines))
        cached = cache_dir("tokenized") / f"{self.dataset_name}-{split}-{path.stem}-{key}.pt"
        if cached.is_file():
            return torch.load(cached, map_location="cpu", weights_only=True)
        text = _read_lines(path)[slice(*lines)]
        if not "".join(text).strip():
            raise DataError(path, f"the {split} split is empty (no text)")
        # verbose=False: the long-line warning of tokenizers with a model_max_length is meaningless for a stream.
        encoded = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        ids = torch.tensor([t for line in encoded for t in line], dtype=torch.int32)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        torch.save(ids, tmp)
        os.replace(tmp, cached)  # atomic: concurrent ranks never read half a file
        return ids

    def _blocks(self, split: str) -> TokenBlocks:
        path, _ = self._source(split)  # type: ignore[misc]
        ids = self.token_stream(split)
        if len(ids) < self.block_size:
            raise DataError(path, f"the {split} split has {len(ids)} tokens, fewer than data.block_size={self.block_size}")
        data = TokenBlocks.from_stream(ids, self.block_size)
        if split == "train" and self.limit_train_blocks and self.limit_train_blocks < len(data):
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.seed))
            return data.subset(sorted(order[: self.limit_train_blocks].tolist()))
        if split != "train" and self.limit_eval_blocks and self.limit_eval_blocks < len(data):
            return data.subset(list(range(self.limit_eval_blocks)))
        return data

    def check_data(self, stage: str | None = None) -> None:
        """Raises :class:`DataError` for a split file that is not UTF-8 text or holds no text, before the CLI
        creates a run folder, loggers or a W&B run.

        Example:
            >>> WikiText2DataModule(data_dir="data").check_data("fit")  # doctest: +SKIP
        """
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", SPLITS):
            source = self._source(split)
            if source is None:
                continue
            path, lines = source
            if not "".join(_read_lines(path)[slice(*lines)]).strip():
                raise DataError(path, f"the {split} split is empty (no text)")

    # --- Lightning hooks ---------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        # One process per node trains the tokenizer and tokenises every split; the other ranks read the cache.
        for split in SPLITS:
            if self._source(split) is not None:
                self.token_stream(split)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", SPLITS):
            if split not in self.datasets and self._source(split) is not None:
                self.datasets[split] = self._blocks(split)

    def _dataset(self, split: str) -> TokenBlocks:
        if split not in self.datasets:
            raise SstkitError(f"{self.dataset_name}: no {split} split configured (data.{split}_file is null)")
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._dataset("train"), self.batch_size, num_workers=self.num_workers)

    def _eval_loader(self, split: str) -> DataLoader:
        return eval_loader(self._dataset(split), self.eval_batch_size, num_workers=self.num_workers)



def _read_lines(path: Path) -> list[str]:
    """The file's lines with their line ends (so the token stream keeps the line breaks)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines(keepends=True)
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text (byte {err.start})", data[: err.start].count(b"\n") + 1) from None
