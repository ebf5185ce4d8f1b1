"""Reads runs from the ``summary.json`` files that sstkit's run-record callback writes.

Each run folder holds one ``summary.json`` (name, seed, status, the full CLI config, final metrics, timings,
versions and the W&B id). The reader searches folders recursively, so one folder can hold a whole sweep.
Top-level numeric fields (``wall_time_s``, ``train_steps_per_s``, ``global_step``) become metrics too, so a table
can show timings next to accuracies.

Example:
    >>> runs = read_summaries("runs/sst2_finetune")  # doctest: +SKIP
    >>> [(r.seed, r.metrics["test/acc"]) for r in runs]  # doctest: +SKIP
    [(0, 0.84), (1, 0.85), (2, 0.83)]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sstkit.bench.records import STATUSES, RunData, Unreadable, collect, flatten_numbers, is_number, seed_from_config
from sstkit.errors import DataError

SUMMARY_NAME = "summary.json"
# Summary fields that describe the run rather than its metrics; every other numeric top-level field is a metric.
_NOT_METRICS = {"seed", "config", "metrics", "versions", "wandb", "segments", "name", "status", "run_dir", "world_size"}


def run_statistics(record: dict[str, Any]) -> dict[str, Any]:
    """The run statistics of a summary record: its numeric top-level fields (``global_step``, ``wall_time_s``, ...).

    The run record sends exactly these to the W&B run summary, so a table reads the same values from
    ``summary.json`` and from W&B.

    Example:
        >>> run_statistics({"seed": 0, "global_step": 30, "wall_time_s": 12.5, "status": "finished"})
        {'global_step': 30, 'wall_time_s': 12.5}
    """
    return {k: v for k, v in record.items() if k not in _NOT_METRICS and is_number(v)}


def find_summary_files(root: str | os.PathLike) -> list[Path]:
    """All ``summary.json`` files under ``root`` (or ``root`` itself if it is one), sorted by path.

    Symlinked folders are not followed, so a ``latest`` link does not count a run twice.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    found: list[Path] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        if SUMMARY_NAME in filenames:
            found.append(Path(dirpath) / SUMMARY_NAME)
    return sorted(found)


def parse_summary(data: dict[str, Any], source: str = "") -> RunData:
    """Turns one parsed ``summary.json`` into a :class:`RunData`.

    Example:
        >>> parse_summary({"name": "a", "seed": 0, "status": "finished", "metrics": {"val/acc": 0.9}}).metrics
        {'val/acc': 0.9}
    """
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    if not isinstance(data.get("metrics") or {}, dict):
        raise DataError(source or "summary", f"metrics must be a JSON object, got {type(data['metrics']).__name__}")
    metrics = flatten_numbers(data.get("metrics") or {}, sep=".")
    for key, value in run_statistics(data).items():
        metrics.setdefault(key, float(value))
    seed = data.get("seed")
    if not (isinstance(seed, int) and not isinstance(seed, bool)):
        seed = seed_from_config(config)
    status = data.get("status")
    if status not in STATUSES:
        # "interrupted" (Ctrl-C, a SLURM time limit) and an absent status both mean the run stopped early.
        status = "crashed"
    wandb_info = data.get("wandb") if isinstance(data.get("wandb"), dict) else {}
    segments = data.get("segments") if isinstance(data.get("segments"), list) else []
    run_dir = data.get("run_dir") or (str(Path(source).parent) if source else "")
    name = data.get("name") or config.get("name") or Path(run_dir).name or "run"
    extra: dict[str, Any] = {
        "run_dir": run_dir,
        "versions": data.get("versions") or {},
        "wandb": wandb_info,
        "segments": segments,
    }
    if data.get("created"):
        extra["started"] = str(data["created"])
    elif segments and isinstance(segments[0], dict) and segments[0].get("started"):
        extra["started"] = str(segments[0]["started"])
    if data.get("status") not in STATUSES:
        extra["status"] = data.get("status")
    return RunData(
        id=str(wandb_info.get("id") or run_dir or source),
        name=str(name),
        seed=seed,
        status=status,
        config=config,
        metrics=metrics,
        source=source,
        extra=extra,
    )


def read_summary_file(path: str | os.PathLike) -> RunData:
    """Reads one ``summary.json``.

    Raises:
        DataError: if the file is not a JSON object; the message names the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read run summary: {err}") from None
    except json.JSONDecodeError as err:
        raise DataError(path, f"run summary is not valid JSON ({err.msg})", line=err.lineno) from None
    if not isinstance(data, dict):
        raise DataError(path, f"run summary must be a JSON object, got {type(data).__name__}")
    return parse_summary(data, source=str(path))


def read_summaries(root: str | os.PathLike, unreadable: list[Unreadable] | None = None) -> list[RunData]:
    """Reads every ``summary.json`` under ``root``, in path order.

    Args:
        root: a folder searched recursively, or one ``summary.json``.
        unreadable: if given, a damaged summary (truncated, not JSON, not an object) is appended here and
            skipped instead of raising, so one bad file does not stop a whole table.

    Raises:
        DataError: if ``root`` does not exist, or a summary cannot be parsed and ``unreadable`` is None.

    Example:
        >>> read_summaries("runs/")  # doctest: +SKIP
    """
    if not Path(root).exists():
        raise DataError(root, "folder of runs not found")
    runs = [collect(unreadable, read_summary_file, p) for p in find_summary_files(root)]
    return [r for r in runs if r is not None]
