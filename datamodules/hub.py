"""Downloading a split from the Hugging Face hub into the data folder's file layout (users with a network).

Example:
    >>> write_hub_split(("glue", "sst2"), "validation", Path("cache/sst2"), {"test.tsv": 1.0}, "sentence", "label")
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from sstkit.errors import SstkitError


def write_hub_split(
    dataset: tuple[str, ...],
    split: str,
    target: Path,
    parts: dict[str, float],
    text_field: str,
    label_field: str,
    header: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
) -> None:
    """Loads ``dataset`` / ``split`` with ``datasets`` and writes it as TSV files, split by fractions (seed 0)."""
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise SstkitError("downloading from the Hugging Face hub needs the `datasets` package: pip install 'sstkit[hub]'") from err
    try:
        rows = load_dataset(*dataset, split=split)
    except Exception as err:  # the hub raises many kinds of connection errors
        raise SstkitError(f"could not download {'/'.join(dataset)} ({split}) from the Hugging Face hub: {err}") from err
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(0)).tolist()
    target.mkdir(parents=True, exist_ok=True)
    start = 0
    for i, (name, fraction) in enumerate(parts.items()):
        stop = len(order) if i == len(parts) - 1 else start + round(fraction * len(order))
        tmp = target / f".{name}.tmp{os.getpid()}"
        with tmp.open("w", encoding="utf-8") as out:
            if header:
                out.write("\t".join(header) + "\n")
            for j in sorted(order[start:stop]):
                text = " ".join(str(rows[j][text_field]).split())
                label = rows[j][label_field]
                out.write(f"{text}\t{label_names[label] if label_names else label}\n")
        os.replace(tmp, target / name)
        start = stop
