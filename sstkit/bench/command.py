"""``sstkit table SPEC.yaml``: reads the runs a table spec names and writes the table.

Usage::

    sstkit table benchmarks/sst2_finetune/spec.yaml            # print Markdown, write results.md and results.csv
    sstkit table spec.yaml --out /tmp/tables --format md       # write only /tmp/tables/results.md
    sstkit table spec.yaml --print                             # print only, write nothing

User errors (a bad spec, a missing run folder, no matching runs) print ``error: <message>`` and exit with 2.

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

from sstkit.bench.records import RunData
from sstkit.bench.spec import SourceSpec, TableSpec, load_spec
from sstkit.bench.summary_reader import read_summaries
from sstkit.bench.table import build_table, render_csv, render_markdown, run_value
from sstkit.bench.wandb_api import read_wandb_api
from sstkit.bench.wandb_offline import read_wandb_offline
from sstkit.errors import SstkitError


def read_source(source: SourceSpec, api: Any = None) -> list[RunData]:
    """Reads the runs of one source of a spec (``api`` replaces ``wandb.Api()`` for ``wandb:`` sources)."""
    if source.kind == "summary":
        return read_summaries(source.location)
    if source.kind == "wandb_offline":
        return read_wandb_offline(source.location)
    return read_wandb_api(source.location, filters=source.filters, api=api)


def read_runs(spec: TableSpec, api: Any = None) -> list[RunData]:
    """Reads all runs of a spec, sources in spec order.

    Raises:
        SstkitError: if a source is missing, or no source holds a run (most likely a wrong path in the spec).
    """
    runs: list[RunData] = []
    for source in spec.sources:
        runs.extend(read_source(source, api=api))
    if not runs:
        where = "; ".join(f"{s.kind}: {s.location}" for s in spec.sources)
        raise SstkitError(f"{spec.path}: no runs found in {where}")
    return runs


def _check_matches(spec: TableSpec, runs: list[RunData], matched: int) -> None:
    """Fails when filters keep nothing, showing the values the runs do have, which is usually the typo."""
    if matched or not spec.filters:
        return
    seen = []
    for key in spec.filters:
        values = sorted({repr(run_value(r, key)) for r in runs})
        shown = ", ".join(values[:6]) + (", ..." if len(values) > 6 else "")
        seen.append(f"{key} is one of {shown}")
    raise SstkitError(f"{spec.path}: filters: no run of {len(runs)} matches {spec.filters}; {'; '.join(seen)}")


def _display_path(path: Path) -> str:
    # Relative to the working directory where possible, so generated tables do not embed a home folder.
    try:
        return os.path.relpath(path) if not os.path.relpath(path).startswith("..") else str(path)
    except ValueError:  # another drive on Windows
        return str(path)


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
        runs = read_runs(spec, api=api)
        table = build_table(spec, runs)
        _check_matches(spec, runs, table.runs_matched)
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
    print("wrote " + ", ".join(_display_path(p) for p in written), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(table_main(sys.argv[1:]))
