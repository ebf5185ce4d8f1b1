"""Reads runs from Lightning ``CSVLogger`` folders (``metrics.csv`` + ``hparams.yaml``), sstkit's ``csv/`` included.

A ``CSVLogger(save_dir, name)`` writes ``<save_dir>/<name>/version_<n>/`` with ``metrics.csv`` (one column per
logged key plus ``epoch`` and ``step``, one row per logging call, empty cells for keys not logged in that call) and
``hparams.yaml`` (the module's hyperparameters). sstkit's runs keep theirs in ``<run folder>/csv/version_<n>/``,
where LightningCLI also saves the full ``config.yaml``.

How a folder becomes a run:

- config: ``config.yaml`` (the full CLI config) if the folder has one, else ``hparams.yaml`` as written;
- metrics: the last non-empty value of every column (as W&B's summary keeps the last logged value), ``epoch`` and
  ``step`` included under those names;
- name: the config's ``name``, else the logger's folder name (the run folder's name for sstkit's ``csv/``);
  seed: ``seed_everything`` (or ``seed``) of the config;
- status: ``finished``. A CSV log records no exit status, so a run that crashed after its last flush cannot be told
  from a finished one; ``summary.json`` and W&B sources know better, so prefer them where they exist.
- in sstkit's layout (``<name>/seed<n>/csv/version_<k>``) the versions are the segments of one run (a new version
  per ``fit``, resume or ``test``): they merge into one run, later versions winning. Elsewhere every version folder
  is a run of its own (a plain Lightning script writes a new version per run).

A damaged folder (truncated or corrupt ``metrics.csv``, unreadable YAML) raises :class:`~sstkit.errors.DataError`,
or is appended to ``unreadable`` when the caller passes that list.

Example:
    >>> runs = read_csv_logs("runs/sst2_finetune")  # doctest: +SKIP
    >>> runs[0].metrics["val/acc"], runs[0].config["model"]["init_args"]["backbone"]  # doctest: +SKIP
    (0.84, 'minilm')
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any

import yaml

from sstkit.bench.records import RunData, Unreadable, collect, seed_from_config
from sstkit.errors import DataError

METRICS_NAME = "metrics.csv"
_VERSION = re.compile(r"version_(\d+)$")


def find_log_folders(root: str | os.PathLike) -> list[Path]:
    """Every folder under ``root`` (or ``root`` itself) that holds a ``metrics.csv``, sorted by path."""
    root = Path(root)
    if root.is_file():
        return [root.parent]
    found = [Path(d) for d, _dirs, files in os.walk(root) if METRICS_NAME in files]
    return sorted(found, key=lambda p: (str(p.parent), _version_number(p), p.name))


def _version_number(folder: Path) -> int:
    match = _VERSION.search(folder.name)
    return int(match.group(1)) if match else -1


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads Python-tagged values as plain data instead of failing or running code.

    Lightning dumps hyperparameters with ``yaml.dump``, so an enum or an object becomes ``!!python/object/...``;
    such a value is kept as its plain mapping, list or text, and the rest of the file stays readable.
    """


def _plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", _plain)


def _yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # safe: a SafeLoader subclass
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(path, f"corrupt: not readable YAML ({type(err).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DataError(path, f"corrupt: expected a YAML mapping, got {type(data).__name__}")
    return data


def read_metrics_csv(path: Path) -> dict[str, float]:
    """The last non-empty value of every column of a ``metrics.csv``.

    Raises:
        DataError: if the file is empty, ends in a cut-off line, has a row of the wrong width or a cell that is
            not a number; the message names the line.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read metrics: {err}") from None
    if not text.strip():
        raise DataError(path, "empty metrics.csv (no header)")
    if not text.endswith("\n"):
        # Lightning ends every row with a newline; a file without one was cut off mid-row.
        raise DataError(path, "truncated: the last line has no newline", line=text.count("\n") + 1)
    try:
        rows = list(csv.reader(text.splitlines()))
    except csv.Error as err:
        raise DataError(path, f"corrupt: {err}") from None
    header, last = rows[0], {}
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataError(path, f"corrupt: {len(row)} fields where the header has {len(header)}", line=lineno)
        for key, cell in zip(header, row):
            if cell == "":
                continue
            try:
                last[key] = float(cell)
            except ValueError:
                raise DataError(path, f"corrupt: {key} is {cell!r}, not a number", line=lineno) from None
    return last


def _is_sstkit_segment(folder: Path) -> bool:
    """``<run folder>/csv/version_<k>``: one segment of an sstkit run, whose run folder is ``seed<n>``."""
    return bool(_VERSION.search(folder.name)) and folder.parent.name == "csv" and folder.parent.parent.name.startswith(
        "seed")


def _name(config: dict[str, Any], folder: Path) -> str:
    if isinstance(config.get("name"), str) and config["name"]:
        return config["name"]
    if _is_sstkit_segment(folder):  # <run_root>/<name>/seed<seed>/csv/version_n: the logger folder is just "csv"
        return folder.parent.parent.parent.name
    return folder.parent.name if _VERSION.search(folder.name) else folder.name


def read_log_folder(folder: str | os.PathLike) -> RunData:
    """Reads one ``version_<n>`` folder into a :class:`RunData` (see the module docstring for the rules)."""
    folder = Path(folder)
    metrics = read_metrics_csv(folder / METRICS_NAME)
    hparams = _yaml(folder / "hparams.yaml")
    config = _yaml(folder / "config.yaml") or hparams
    config.pop("_instantiator", None)
    seed = seed_from_config(config)
    return RunData(
        id=str(folder),
        name=_name(config, folder),
        seed=seed,
        status="finished",
        config=config,
        metrics=metrics,
        source=str(folder / METRICS_NAME),
        extra={"hparams": hparams, "folders": [str(folder)]},
    )


def _merge(segments: list[RunData]) -> RunData:
    run = segments[-1]
    metrics: dict[str, float] = {}
    for segment in segments:
        metrics.update(segment.metrics)
    run.metrics = metrics
    run.id = segments[0].id  # the first segment's folder names the run, however many segments follow
    run.extra["folders"] = [f for s in segments for f in s.extra["folders"]]
    return run


def read_csv_logs(root: str | os.PathLike, unreadable: list[Unreadable] | None = None) -> list[RunData]:
    """Reads every CSVLogger folder under ``root``, in path order, merging the segments of resumed runs.

    Args:
        root: a folder searched recursively (a run folder, a sweep, a ``lightning_logs/`` folder), or a
            ``metrics.csv``.
        unreadable: if given, a damaged folder is appended here and skipped instead of raising.

    Raises:
        DataError: if ``root`` does not exist, or a folder is damaged and ``unreadable`` is None.
    """
    if not Path(root).exists():
        raise DataError(root, "folder of CSV logs not found")
    groups: dict[str, list[RunData]] = {}
    for folder in find_log_folders(root):
        run = collect(unreadable, read_log_folder, folder)
        if run is None:
            continue
        groups.setdefault(str(folder.parent) if _is_sstkit_segment(folder) else str(folder), []).append(run)
    return [_merge(segments) for segments in groups.values()]
