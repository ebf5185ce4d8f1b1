"""Text classification from TSV / CSV files in the data folder: the generic DataModule SST-2 and AG News share.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.TextClassificationDataModule
      init_args: {dataset_folder: my_task, header: [text, label], num_labels: 3, batch_size: 32}
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import torch
from torch.utils.data import DataLoader

from sstkit.errors import SstkitError
from sstkit.loaders import load_tokenizer
from sstkit.paths import cache_dir, fingerprint, require_files, resolve_data_dir

from .resumable import EvalLoaderHooks, eval_loader, train_loader
from .text_files import read_labelled_file
from .tokenized import PadCollate, TokenizedTexts

SPLITS = ("train", "val", "test", "predict")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}


class TextClassificationDataModule(EvalLoaderHooks, L.LightningDataModule):
    """Labelled text files → tokenised, cached, dynamically padded batches.

    Args:
        data_dir: the data folder; None means ``$SSTKIT_DATA``, else ``./data``.
        dataset_folder: the dataset's sub-folder of the data folder.
        train_file, val_file, test_file: file names in that folder (None: no such split).
        predict_file: file for ``sstkit predict``; defaults to the test file.
        header: expected header row, or None for files without one.
        text_column, label_column: column indices.
        label_names: class names (labels may then be names); otherwise ``num_labels`` integer classes.
        num_labels: number of classes when ``label_names`` is None.
        format: ``tsv`` or ``csv``.
        tokenizer: the model's backbone name or path (linked from ``model.backbone`` by the CLI).
        max_length: truncation length in tokens.
        batch_size: training batch size per process.
        eval_batch_size: batch size for val/test/predict (default: ``batch_size``).
        num_workers: DataLoader workers.
        limit_train_samples: train on a seeded random subset of this many examples.
        limit_eval_samples: evaluate on the first this many examples of val/test (quick runs).
        seed: seed of the training subset.
        download: fetch the data from the Hugging Face hub into the cache when the files are missing.
    """

    predict_split = "predict"  # the predict_file, which defaults to the test file

    def __init__(
        self,
        data_dir: str | None = None,
        dataset_folder: str = "",
        train_file: str | None = "train.tsv",
        val_file: str | None = "dev.tsv",
        test_file: str | None = "test.tsv",
        predict_file: str | None = None,
        header: list[str] | None = None,
        text_column: int = 0,
        label_column: int = 1,
        label_names: list[str] | None = None,
        num_labels: int | None = None,
        format: str = "tsv",
        tokenizer: str = "minilm",
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        limit_train_samples: int | None = None,
        limit_eval_samples: int | None = None,
        seed: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__()
        if format not in ("tsv", "csv"):
            raise SstkitError(f"data.format must be 'tsv' or 'csv', got {format!r}")
        if label_names is None and (num_labels is None or num_labels < 2):
            raise SstkitError("data: give either label_names or num_labels >= 2")
        for key, value in (("batch_size", batch_size), ("max_length", max_length)):
            if value < 1:
                raise SstkitError(f"data.{key} must be >= 1, got {value}")
        # Explicit settings: save_hyperparameters() would record the subclass's (SST2DataModule's) arguments instead.
        self.opts = SimpleNamespace(
            dataset_folder=dataset_folder, header=header, text_column=text_column, label_column=label_column,
            label_names=label_names, num_labels=num_labels, format=format, tokenizer=tokenizer,
            max_length=max_length, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
            limit_train_samples=limit_train_samples, limit_eval_samples=limit_eval_samples, seed=seed,
        )
        self.files = {"train": train_file, "val": val_file, "test": test_file, "predict": predict_file or test_file}
        self.download = download
        self.root = resolve_data_dir(data_dir) / dataset_folder
        if not download:
            require_files(self.root, sorted({f for f in self.files.values() if f}), self.dataset_name)
        self.datasets: dict[str, TokenizedTexts] = {}

    @property
    def dataset_name(self) -> str:
        """Name used in messages and cache keys."""
        return self.opts.dataset_folder or "text"

    @property
    def num_labels(self) -> int:
        """Number of classes; the CLI links it to ``model.num_labels``."""
        names = self.opts.label_names
        return len(names) if names else int(self.opts.num_labels)

    def fetch_from_hub(self, target: Path) -> None:
        """Writes the dataset's files into ``target`` from the Hugging Face hub (datasets with a recipe only)."""
        raise SstkitError(f"{type(self).__name__} has no download recipe; put the files in {self.root}")

    def _split_path(self, split: str) -> Path:
        name = self.files[split]
        path = self.root / name
        if self.download and not path.is_file():
            # The data folder may be read-only: downloaded copies live in the cache.
            target = cache_dir("datasets", self.dataset_name)
            if not (target / name).is_file():
                self.fetch_from_hub(target)
            path = target / name
        return path

    def _load_split(self, split: str) -> TokenizedTexts:
        hp = self.opts
        path = self._split_path(split)
        key = fingerprint(path, hp.tokenizer, hp.max_length, hp.header, hp.text_column, hp.label_column, hp.label_names)
        return self.tokenize_cached(f"{path.stem}-{key}", lambda: self.read_split(split))

    def read_split(self, split: str) -> tuple[list[str], list[int]]:
        """The raw texts and integer labels of a split (hook for text-level wrappers such as poisoning)."""
        return self._read_file(split)

    def _read_file(self, split: str) -> tuple[list[str], list[int]]:
        hp = self.opts
        return read_labelled_file(
            self._split_path(split), hp.header, hp.text_column, hp.label_column, hp.label_names, self.num_labels,
            hp.format,
        )

    def check_data(self, stage: str | None = None) -> None:
        """Reads every file ``stage`` needs and raises :class:`DataError` at its first bad row.

        The CLI calls it before it creates a run folder, loggers or a W&B run, so bad data writes nothing.
        Reading is cheap next to tokenising (SST-2's 60k rows take a fraction of a second).

        Example:
            >>> SST2DataModule(data_dir="data").check_data("fit")  # doctest: +SKIP
        """
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            if self.files[split]:
                self._read_file(split)

    def tokenize_cached(self, stem: str, make: Callable[[], tuple[list[str], list[int]]]) -> TokenizedTexts:
        """Tokenises ``make()``'s texts with this module's tokenizer, cached as ``<dataset>-<stem>.pt``."""
        cached = cache_dir("tokenized") / f"{self.dataset_name}-{stem}.pt"
        if cached.is_file():
            return TokenizedTexts.load(cached)
        texts, labels = make()
        data = TokenizedTexts.build(texts, labels, load_tokenizer(self.opts.tokenizer), self.opts.max_length)
        data.save(cached)
        return data

    def prepare_data(self) -> None:
        # Runs on one process per node: tokenise every split once so the other ranks read the cache.
        for split, name in self.files.items():
            if name:
                self._load_split(split)

    def setup(self, stage: str | None = None) -> None:
        for split in STAGE_SPLITS.get(stage or "", SPLITS):
            if self.files[split] and split not in self.datasets:
                self.datasets[split] = self._limit(split, self._load_split(split))

    def _limit(self, split: str, data: TokenizedTexts) -> TokenizedTexts:
        keep = self.limit_indices(split, len(data))
        return data if keep is None else data.subset(keep)

    def limit_indices(self, split: str, size: int) -> list[int] | None:
        """Rows of a ``size``-row split that ``limit_*_samples`` keep (None: all of them)."""
        hp = self.opts
        if split == "train" and hp.limit_train_samples and hp.limit_train_samples < size:
            order = torch.randperm(size, generator=torch.Generator().manual_seed(hp.seed))
            return sorted(order[: hp.limit_train_samples].tolist())
        if split != "train" and hp.limit_eval_samples and hp.limit_eval_samples < size:
            return list(range(hp.limit_eval_samples))
        return None

    def _collate(self) -> PadCollate:
        return PadCollate(load_tokenizer(self.opts.tokenizer).pad_token_id)

    def _dataset(self, split: str) -> TokenizedTexts:
        if split not in self.datasets:
            raise SstkitError(f"{self.dataset_name}: no {split} split configured (data.{split}_file is null)")
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._dataset("train"), self.opts.batch_size, self._collate(), self.opts.num_workers)

    def _eval_loader(self, split: str) -> DataLoader:
        batch_size = self.opts.eval_batch_size or self.opts.batch_size
        return eval_loader(self._dataset(split), batch_size, self._collate(), self.opts.num_workers)
