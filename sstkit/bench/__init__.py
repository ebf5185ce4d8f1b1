"""Run readers and benchmark tables: ``sstkit table SPEC.yaml``.

Runs come from ``summary.json`` files (:mod:`~sstkit.bench.summary_reader`), offline W&B run files
(:mod:`~sstkit.bench.wandb_offline`), the W&B API (:mod:`~sstkit.bench.wandb_api`) or Lightning CSVLogger folders
(:mod:`~sstkit.bench.csv_reader`), all as :class:`RunData`; damaged files become :class:`Unreadable` notes.
:mod:`~sstkit.bench.spec` describes the table, :mod:`~sstkit.bench.checks` checks its keys against the runs and
:mod:`~sstkit.bench.table` builds and renders it.

Example:
    >>> from sstkit.bench import load_spec, read_runs, build_table, render_markdown
    >>> spec = load_spec("benchmarks/sst2_finetune/spec.yaml")  # doctest: +SKIP
    >>> print(render_markdown(build_table(spec, read_runs(spec))))  # doctest: +SKIP
"""

from __future__ import annotations

from sstkit.bench.command import read_runs, table_main
from sstkit.bench.csv_reader import read_csv_logs
from sstkit.bench.records import MISSING, RunData, Unreadable, get_path
from sstkit.bench.spec import MetricSpec, RowSpec, SourceSpec, TableSpec, load_spec, parse_spec
from sstkit.bench.summary_reader import read_summaries
from sstkit.bench.table import Table, build_table, render_csv, render_markdown
from sstkit.bench.wandb_api import read_wandb_api
from sstkit.bench.wandb_offline import parse_run_file, read_wandb_offline

__all__ = [
    "MISSING",
    "MetricSpec",
    "RowSpec",
    "RunData",
    "SourceSpec",
    "Table",
    "TableSpec",
    "Unreadable",
    "build_table",
    "get_path",
    "load_spec",
    "parse_run_file",
    "parse_spec",
    "read_csv_logs",
    "read_runs",
    "read_summaries",
    "read_wandb_api",
    "read_wandb_offline",
    "render_csv",
    "render_markdown",
    "table_main",
]
