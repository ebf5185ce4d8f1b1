"""Language-modelling data from one text column of TSV files (SST-2 sentences, AG News texts), kept apart from
the OOD texts it will be tested against.

Each split's column is written once, one text per line, into a cache folder; :class:`TextCorpusDataModule`
then tokenises and blocks it as any corpus. ``ood_files`` names the texts that must never reach training (the
MLKD student, and its teacher, learn the ID distribution only): a training text that also appears in one of them
stops the run with a message naming both files.

Example (YAML)::

    data:
      class_path: sstkit.datamodules.ColumnCorpusDataModule
      init_args: {dataset_folder: sst2, train_file: train.tsv, val_file: dev.tsv, test_file: null,
                  text_column: sentence, ood_files: {agnews/test.tsv: 0}, block_size: 64}
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from sstkit.errors import DataError, SstkitError
from sstkit.paths import cache_dir, fingerprint, require_files, resolve_data_dir

from .text_corpus import TextCorpusDataModule

SPLIT_NAMES = {"train": "train.txt", "val": "valid.txt", "test": "test.txt"}


def read_column(path: Path, column: str | int) -> list[str]:
    """The texts of one TSV column (a name: the first row is the header; an index: no header); ``.txt``: lines.

    Example::

        read_column(Path("data/sst2/dev.tsv"), "sentence")[:2]
    """
    try:
        if path.suffix == ".txt":
            return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text (byte {err.start})") from None
    if isinstance(column, str):
        if not rows or column not in rows[0]:
            raise DataError(path, f"no column {column!r} in the header row {rows[0] if rows else []}", 1)
        index, rows = rows[0].index(column), rows[1:]
    else:
        index = column
    texts = []
    for number, row in enumerate(rows, start=2 if isinstance(column, str) else 1):
        if index >= len(row):
            raise DataError(path, f"row has {len(row)} columns, text_column {column!r} needs {index + 1}", number)
        if row[index].strip():
            texts.append(row[index].strip())
    return texts


class ColumnCorpusDataModule(TextCorpusDataModule):
    """A :class:`TextCorpusDataModule` over one column of TSV files, with a check that no OOD text is trained on.

    Args:
        text_column: the column's header name (files with a header row) or 0-based index (files without).
        ood_files: ``{path under the data folder: column}`` of OOD texts; a training text found there (after
            stripping) is an error. ``.txt`` files are read one text per line (the column is ignored).
        data_dir, dataset_folder, train_file, val_file, test_file, …: see :class:`TextCorpusDataModule` (the
            file names are the TSV files of ``dataset_folder``).
    """

    def __init__(self, data_dir: str | None = None, dataset_folder: str = "", train_file: str | None = "train.tsv",
                 val_file: str | None = "dev.tsv", test_file: str | None = None, text_column: str | int = "sentence",
                 ood_files: dict[str, str | int] | None = None, **corpus_args: object) -> None:
        if corpus_args.get("val_holdout"):
            raise SstkitError("ColumnCorpusDataModule: give val_file instead of data.val_holdout")
        base = resolve_data_dir(data_dir)
        root = base / dataset_folder
        files = {"train": train_file, "val": val_file, "test": test_file}
        require_files(root, sorted({f for f in files.values() if f}), dataset_folder or "corpus")
        sources = {split: root / name for split, name in files.items() if name}
        folder = cache_dir("datasets", "columns", fingerprint(*sources.values(), text_column, sorted(sources)))
        train_texts: list[str] | None = None
        for split, path in sources.items():
            texts = read_column(path, text_column)
            if not texts:
                raise DataError(path, f"no text in column {text_column!r}")
            if split == "train":
                train_texts = texts
            target = folder / SPLIT_NAMES[split]
            if not target.is_file():
                tmp = target.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
                os.replace(tmp, target)  # atomic: ranks writing at once never leave half a file
        if train_texts is not None:
            check_no_ood(sources["train"], train_texts, base, ood_files or {})
        super().__init__(
            data_dir=str(folder), dataset_folder="",
            **{f"{s}_file": SPLIT_NAMES[s] if s in sources else None for s in files},  # type: ignore[arg-type]
            **corpus_args,  # type: ignore[arg-type]
        )
        self.dataset_name = f"{dataset_folder or 'corpus'}-{text_column}"
        self.text_column, self.ood_files = text_column, dict(ood_files or {})


def check_no_ood(train_path: Path, train_texts: list[str], data_dir: Path, ood_files: dict[str, str | int]) -> None:
    """Raises :class:`DataError` when a training text also appears in one of the OOD files."""
    seen = set(train_texts)
    for name, column in ood_files.items():
        path = data_dir / name
        if not path.is_file():
            raise DataError(path, "ood_files: no such file")
        leaked = [t for t in read_column(path, column) if t in seen]
        if leaked:
            raise DataError(train_path, f"{len(leaked)} training texts also appear in the OOD file {path} (e.g. "
                                        f"{leaked[0][:60]!r}): the model must never see OOD data; remove them")
