"""Where sstkit reads data from and writes caches and runs to.

The data folder may be read-only (it is in CI), so everything sstkit derives from it (tokenised splits, trained
tokenizers, processed graphs) goes to a separate writable cache folder.

Example:
    >>> resolve_data_dir(None)  # data_dir argument, else $SSTKIT_DATA, else ./data  # doctest: +SKIP
    PosixPath('/work/shared/data')
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sstkit.errors import DataError

DATA_ENV = "SSTKIT_DATA"
CACHE_ENV = "SSTKIT_CACHE"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """Returns the data folder: the explicit argument, else ``$SSTKIT_DATA``, else ``./data``."""
    if data_dir:
        return Path(data_dir).expanduser()
    return Path(os.environ.get(DATA_ENV) or "data").expanduser()


def require_files(root: Path, names: list[str], dataset: str) -> None:
    """Fails with one message naming the first missing file and the two ways to get the data.

    Args:
        root: the dataset's folder inside the data folder.
        names: file names that must exist under ``root``.
        dataset: what the user would call the dataset, for the message.
    """
    for name in names:
        path = root / name
        if not path.is_file():
            raise DataError(
                path,
                f"{dataset} file not found. Point the data folder at a copy (set `data_dir:` in the config or the "
                f"environment variable {DATA_ENV}), or set `download: true` to fetch it from the Hugging Face hub.",
            )


def cache_dir(*parts: str) -> Path:
    """A writable cache folder: ``$SSTKIT_CACHE``, else ``$XDG_CACHE_HOME/sstkit``, else ``~/.cache/sstkit``."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        base = str(Path(xdg) / "sstkit")
    path = Path(base).expanduser().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(*items: Any) -> str:
    """A short stable hash of files (path, size, mtime) and plain values, for cache keys."""
    h = hashlib.sha1()
    for item in items:
        if isinstance(item, Path):
            st = item.stat()
            h.update(f"{item.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        else:
            h.update(json.dumps(item, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
