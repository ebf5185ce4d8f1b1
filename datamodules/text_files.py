"""Reading labelled text files (TSV / CSV) with errors that name the file, the line and what was expected.

Example:
    >>> texts, labels = read_labelled_file(Path("sst2/train.tsv"), header=("sentence", "label"), num_labels=2)
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from sstkit.errors import DataError


def _rows(path: Path, fmt: str) -> Iterator[tuple[int, list[str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        if fmt == "csv":
            for row in csv.reader(handle):
                yield 0, row
        else:
            # TSV text may hold quotes, so no CSV quoting rules: one tab separates text and label.
            for line in handle:
                yield 0, line.rstrip("\r\n").split("\t")


def read_labelled_file(
    path: Path,
    header: Sequence[str] | None = None,
    text_column: int = 0,
    label_column: int = 1,
    label_names: Sequence[str] | None = None,
    num_labels: int | None = None,
    fmt: str = "tsv",
) -> tuple[list[str], list[int]]:
    """Reads ``text, label`` rows.

    Args:
        path: the file.
        header: expected header row (checked exactly), or None when the file has no header.
        text_column, label_column: column indices.
        label_names: class names; a label may then be a name or an integer index. Without names labels must be
            integers in ``[0, num_labels)``.
        num_labels: number of classes when ``label_names`` is None.
        fmt: ``tsv`` or ``csv``.

    Raises:
        DataError: naming the file and line of the first bad row, or an empty file.
    """
    names = {name: i for i, name in enumerate(label_names or [])}
    n_classes = len(names) if names else num_labels
    texts, labels = [], []
    width = max(text_column, label_column) + 1
    for lineno, (_, row) in enumerate(_rows(path, fmt), start=1):
        if lineno == 1 and header is not None:
            if [c.strip() for c in row] != list(header):
                raise DataError(path, f"expected the header {'<TAB>'.join(header)!r}, found {'<TAB>'.join(row)!r}", 1)
            continue
        if row == [""] or not row:
            continue  # blank lines, usually a trailing newline
        if len(row) < width:
            raise DataError(path, f"expected {width} columns (text, label), found {len(row)}", lineno)
        text, raw = row[text_column].strip(), row[label_column].strip()
        if not text:
            raise DataError(path, "empty text", lineno)
        if raw in names:
            label = names[raw]
        else:
            try:
                label = int(raw)
            except ValueError:
                allowed = f"one of {sorted(names)} or an integer" if names else "an integer"
                raise DataError(path, f"label {raw!r} is not {allowed}", lineno) from None
            if n_classes is not None and not 0 <= label < n_classes:
                raise DataError(path, f"label {label} is outside [0, {n_classes})", lineno)
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DataError(path, "the split is empty (no data rows)")
    return texts, labels
