"""``sstkit table SPEC.yaml``: reads the runs a table spec names and writes the table.

Usage::

    sstkit table benchmarks/sst2_finetune/spec.yaml            # print Markdown, write results.md and results.csv
    sstkit table spec.yaml --out /tmp/tables --format md       # write only /tmp/tables/results.md
    sstkit table spec.yaml --print                             # print only, write nothing

User errors (a bad spec, a missing run folder, no matching runs, a row/filter/seed key or metric that no run
has) print ``error: <message>`` and exit with 2. Damaged run files do not stop the table: they are a note.

Example:
    >>> table_main(["benchmarks/sst2_finetune/spec.yaml", "--print"])  # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from sstkit.bench.csv_reader import read_csv_logs
from sstkit.bench.records import RunData, Unreadable
from sstkit.bench.spec import SourceSpec, TableSpec, load_spec
from sstkit.bench.summary_reader import read_summaries
from sstkit.bench.table import build_table, render_csv, render_markdown
from sstkit.bench.wandb_api import read_wandb_api
from sstkit.bench.wandb_offline import read_wandb_offline
from sstkit.errors import SstkitError


def read_source(source: SourceSpec, api: Any = None, unreadable: list[Unreadable] | None = None) -> list[RunData]:
    """Reads the runs of one source of a spec (``api`` replaces ``wandb.Api()`` for ``wandb:`` sources).

    With an ``unreadable`` list, damaged run files are appended there instead of stopping the read.
    """
    if source.kind == "summary":
        return read_summaries(source.location, unreadable)
    if source.kind == "wandb_offline":
        return read_wandb_offline(source.location, unreadable)
    if source.kind == "csv":
        return read_csv_logs(source.location, unreadable)
    return read_wandb_api(source.location, filters=source.filters, api=api)


def read_runs(spec: TableSpec, api: Any = None, unreadable: list[Unreadable] | None = None) -> list[RunData]:
    """Reads all runs of a spec, sources in spec order.

    Args:
        spec: the table spec.
        api: replaces ``wandb.Api()`` for ``wandb:`` sources.
        unreadable: if given, damaged run files are collected here (for the table's notes) instead of raising.

    Raises:
        SstkitError: if a source is missing, or no source holds a readable run (most likely a wrong path).
    """
    runs: list[RunData] = []
    for source in spec.sources:
        runs.extend(read_source(source, api=api, unreadable=unreadable))
    if not runs:
        where = "; ".join(str(s) for s in spec.sources)
        damaged = f" ({len(unreadable)} unreadable: {unreadable[0].describe(spec.path.resolve().parent)}, ...)"
        raise SstkitError(f"{spec.path}: no runs found in {where}{damaged if unreadable else ''}")
    return runs


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory if it lies below it, else its name.

    Generated tables never embed a machine's absolute path: a spec outside the working directory is named as it
    is run from its own folder (``sstkit table spec.yaml``).
    """
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path.name
    return path.name if relative.startswith("..") else relative


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sstkit table",
        description="Build a benchmark table (mean ± std over seeds) from runs, as a table spec describes.",
    )
    parser.add_argument("spec", help="table spec YAML file (see sstkit.bench.spec for its format)")
    parser.add_argument("--out", metavar="DIR", help="folder for the files (default: the spec's `output`)")
    parser.add_argument("--format", choices=("md", "csv", "both"), default="both", help="files to write")
    parser.add_argument(
        "--print",
        dest="print_only",
        action="store_true",
        help="print the table (Markdown, or CSV with --format csv) and write no files",
    )
    return parser


def table_main(argv: list[str] | None = None, api: Any = None) -> int:
    """Runs ``sstkit table``; returns the exit code (0 ok, 2 user error).

    Args:
        argv: arguments after ``table``; defaults to ``sys.argv[2:]``.
        api: replaces ``wandb.Api()`` for ``wandb:`` sources (tests).
    """
    args = make_parser().parse_args(sys.argv[2:] if argv is None else argv)
    try:
        spec = load_spec(args.spec)
        unreadable: list[Unreadable] = []
        runs = read_runs(spec, api=api, unreadable=unreadable)
        table = build_table(spec, runs, unreadable)
        markdown = render_markdown(table, command=f"sstkit table {_display_path(Path(args.spec))}")
        csv_text = render_csv(table)
        if args.print_only:
            sys.stdout.write(csv_text if args.format == "csv" else markdown)
            return 0
        stem = spec.output or spec.path.parent / "results"
        if args.out:
            stem = Path(args.out) / stem.name
        wanted = {"md": markdown, "csv": csv_text}
        written = []
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            for suffix, text in wanted.items():
                if args.format in (suffix, "both"):
                    # Not with_suffix: an output name like "results.v2" must keep its dot.
                    target = stem.parent / f"{stem.name}.{suffix}"
                    target.write_text(text, encoding="utf-8")
                    written.append(target)
        except OSError as err:
            raise SstkitError(f"cannot write the table next to {stem}: {err}") from None
    except SstkitError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(markdown)
    # The file list goes to stderr so stdout stays a clean Markdown table for piping.
    # Messages (unlike the table) may name absolute paths: outside the working directory they are the clearest.
    print("wrote " + ", ".join(str(p) if _display_path(p) == p.name else _display_path(p) for p in written),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(table_main(sys.argv[1:]))
