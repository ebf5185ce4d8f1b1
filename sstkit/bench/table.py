"""Builds a benchmark table from runs and renders it as Markdown and CSV.

Rules, in order:

0. A filter, row or seed key that no run has, or a metric that no run logged (unless ``optional``), is an error
   (:mod:`~sstkit.bench.checks`): a typo must not silently merge rows or empty a column. Run files that could not
   be read (truncated, corrupt) are named in a note.
1. Runs that do not match the spec's ``filters`` are dropped.
2. Runs are grouped into rows by the values of the spec's row keys. Rows keep the order in which their first run
   was read (sources in spec order, files in path order), except that values listed in a row key's ``values``
   mapping come first, in the listed order.
3. Within a row, runs with the same seed (``seed_key``) are repeats of one another: one is kept, a finished run
   before any other and then the most recently started, and the rest are noted as superseded.
4. Failed, crashed and still-running runs are left out of the aggregates and named in a note; so is a finished
   run that lacks a metric, for that metric only (the cell then shows its own count, e.g. ``(n=2)``).
5. Each metric cell is the mean ± the sample standard deviation (ddof=1) over the row's runs, times ``scale``.
   With one run the standard deviation is undefined and the cell shows the value alone (the CSV ``_std`` cell is
   empty): ``± 0.00`` would claim a measured spread of zero.
6. ``n`` is the number of runs aggregated; with ``expect_runs`` set, rows with fewer runs are marked ``*``.
7. Paths in notes and sources are relative to the spec file's folder, so a committed table names no machine.

The CSV has one column per row key (raw config values), ``n``, and ``<metric>_mean`` / ``<metric>_std`` per
metric in the metric's own units (not scaled; 12 significant digits), for further processing.

Example:
    >>> table = build_table(spec, runs)  # doctest: +SKIP
    >>> print(render_markdown(table))  # doctest: +SKIP
    | Backbone | n | Test acc (%) |
    | --- | ---: | ---: |
    | minilm | 3 | 84.10 ± 0.52 |
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from sstkit.bench.checks import check_filter_keys, check_matches, check_metrics, check_row_keys
from sstkit.bench.records import MISSING, RunData, Unreadable, display_path, run_value
from sstkit.bench.spec import TableSpec

_NOTE_LIMIT = 8  # runs named per note before "and N more", so a broken sweep does not drown the table


def values_equal(value: Any, wanted: Any) -> bool:
    """Loose equality for filters: ``1e-3`` in YAML (a string to PyYAML) equals ``0.001`` in a config."""
    if isinstance(wanted, list):
        return any(values_equal(value, w) for w in wanted)
    if value is MISSING:
        return False
    if value == wanted and type(value) is type(wanted):
        return True
    if isinstance(value, bool) or isinstance(wanted, bool):
        return str(value).lower() == str(wanted).lower()
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == str(wanted)


def select_runs(runs: list[RunData], filters: dict[str, Any]) -> list[RunData]:
    """The runs whose value at every filter path equals the filter's value (or one of its listed values)."""
    return [r for r in runs if all(values_equal(run_value(r, k), v) for k, v in filters.items())]


@dataclass
class Cell:
    """One metric of one row, in the metric's own units."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None


@dataclass
class Row:
    """A table row: the row keys' values, the runs aggregated, and one cell per metric."""

    values: list[Any]
    runs: list[RunData]
    cells: list[Cell]
    flagged: bool = False

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass
class Table:
    """A built table, ready to render."""

    spec: TableSpec
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    runs_read: int = 0
    runs_matched: int = 0


def _group_key(values: list[Any]) -> str:
    # Config values can be lists or dicts, which cannot be dict keys; their JSON form can.
    return json.dumps(
        [None if v is MISSING else v for v in values] + [[v is MISSING for v in values]], sort_keys=True, default=str
    )


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _run_list(runs: list[RunData] | list[Unreadable], base: Any = None, sep: str = ", ") -> str:
    names = [r.describe(base) for r in runs[:_NOTE_LIMIT]]
    if len(runs) > _NOTE_LIMIT:
        names.append(f"and {len(runs) - _NOTE_LIMIT} more")
    return sep.join(names)


def _dedupe(runs: list[RunData], seed_key: str) -> tuple[list[RunData], list[RunData]]:
    """Keeps one run per seed (finished first, then latest started); returns (kept, superseded)."""
    best: dict[str, tuple[tuple[bool, str, int], RunData]] = {}
    kept_order: list[str] = []
    unseeded: list[tuple[int, RunData]] = []
    for index, run in enumerate(runs):
        seed = run_value(run, seed_key)
        if seed is MISSING or seed is None:
            seed = run.seed
        if seed is None:
            unseeded.append((index, run))
            continue
        key = json.dumps(seed, default=str)
        rank = (run.status == "finished", str(run.extra.get("started") or ""), -index)
        if key not in best:
            kept_order.append(key)
            best[key] = (rank, run)
        elif rank > best[key][0]:
            best[key] = (rank, run)
    kept_ids = {id(best[k][1]) for k in kept_order} | {id(r) for _, r in unseeded}
    kept = [r for r in runs if id(r) in kept_ids]
    return kept, [r for r in runs if id(r) not in kept_ids]


def _sort_rows(groups: list[list[Any]], spec: TableSpec) -> list[int]:
    def rank(i: int) -> tuple[tuple[int, int], ...]:
        out = []
        for value, row in zip(groups[i], spec.rows):
            order = list(row.values)
            text = str(value)
            out.append((0, order.index(text)) if value is not MISSING and text in order else (1, 0))
        return tuple(out)

    return sorted(range(len(groups)), key=rank)


def build_table(spec: TableSpec, runs: list[RunData], unreadable: list[Unreadable] | None = None) -> Table:
    """Groups, filters and aggregates runs as the spec says (see the module docstring for the rules).

    ``unreadable`` (damaged run files the readers skipped) become a note. Paths in notes are relative to the
    spec's folder.

    Raises:
        SstkitError: if a filter, row or seed key, or a metric not marked optional, is in no run
            (:mod:`~sstkit.bench.checks`), or the filters keep no run.

    Example:
        >>> table = build_table(load_spec("spec.yaml"), runs)  # doctest: +SKIP
        >>> table.rows[0].n, table.rows[0].cells[0].mean  # doctest: +SKIP
        (3, 0.841)
    """
    check_filter_keys(spec, runs)
    matched = select_runs(runs, spec.filters)
    check_matches(spec, runs, matched)
    check_row_keys(spec, matched)
    check_metrics(spec, matched)
    base = spec.path.resolve().parent
    groups: dict[str, list[RunData]] = {}
    group_values: dict[str, list[Any]] = {}
    for run in matched:
        values = [run_value(run, row.key) for row in spec.rows]
        key = _group_key(values)
        groups.setdefault(key, []).append(run)
        group_values.setdefault(key, values)

    keys = list(groups)
    order = _sort_rows([group_values[k] for k in keys], spec)
    by_status: dict[str, list[RunData]] = {"failed": [], "crashed": [], "running": []}
    superseded: list[RunData] = []
    lacking: dict[str, list[RunData]] = {m.key: [] for m in spec.metrics}
    rows: list[Row] = []
    for i in order:
        kept, dropped = _dedupe(groups[keys[i]], spec.seed_key)
        superseded.extend(dropped)
        finished = [r for r in kept if r.status == "finished"]
        for run in kept:
            if run.status != "finished":
                by_status.setdefault(run.status, []).append(run)
        cells = []
        for metric in spec.metrics:
            cells.append(Cell([r.metrics[metric.key] for r in finished if metric.key in r.metrics]))
            lacking[metric.key].extend(r for r in finished if metric.key not in r.metrics)
        flagged = spec.expect_runs is not None and len(finished) < spec.expect_runs
        rows.append(Row(values=group_values[keys[i]], runs=finished, cells=cells, flagged=flagged))

    notes = []
    if unreadable:
        notes.append(f"{_plural(len(unreadable), 'run', 'runs')} unreadable: {_run_list(unreadable, base, '; ')}")
    for status, verb in (
        ("failed", "failed"),
        ("crashed", "crashed or ended without an exit record"),
        ("running", "still running"),
    ):
        if by_status.get(status):
            runs_text = _run_list(by_status[status], base)
            notes.append(f"{_plural(len(by_status[status]), 'run', 'runs')} {verb}: {runs_text}")
    if superseded:
        notes.append(
            f"{_plural(len(superseded), 'run was', 'runs were')} superseded by another run of the same "
            f"row and seed: {_run_list(superseded, base)}"
        )
    for metric_key, missing in lacking.items():
        if missing:
            verb = "lacks" if len(missing) == 1 else "lack"
            notes.append(f"{_plural(len(missing), 'run', 'runs')} {verb} {metric_key}: {_run_list(missing, base)}")
    return Table(spec=spec, rows=rows, notes=notes, runs_read=len(runs), runs_matched=len(matched))


def format_value(value: Any, labels: dict[str, str] | None = None) -> str:
    """A row key's value as shown in Markdown: its display name if the spec gives one, ``–`` if missing."""
    if value is MISSING:
        return "–"
    if labels and str(value) in labels:
        return labels[str(value)]
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def format_cell(cell: Cell, scale: float, digits: int, row_n: int) -> str:
    """``84.10 ± 0.52``; the value alone for one run; ``(n=2)`` appended when runs lack the metric."""
    if cell.mean is None:
        return "–"

    def fmt(x: float) -> str:
        return "nan" if math.isnan(x) else f"{x * scale:.{digits}f}"

    text = fmt(cell.mean) if cell.std is None else f"{fmt(cell.mean)} ± {fmt(abs(cell.std))}"
    return text if cell.n == row_n else f"{text} (n={cell.n})"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(table: Table, command: str | None = None) -> str:
    """The table as Markdown: title, description, table, the aggregation rule, notes, and how it was made.

    Args:
        table: from :func:`build_table`.
        command: the command that regenerates it, e.g. ``sstkit table benchmarks/sst2/spec.yaml``.
    """
    spec = table.spec
    header = [r.label for r in spec.rows] + ["n"] + [m.label for m in spec.metrics]
    align = ["---"] * len(spec.rows) + ["---:"] * (1 + len(spec.metrics))
    lines = [f"## {spec.title}", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
    lines.append("| " + " | ".join(align) + " |")
    for row in table.rows:
        cells = [format_value(v, rs.values) for v, rs in zip(row.values, spec.rows)]
        cells.append(f"{row.n}*" if row.flagged else str(row.n))
        cells += [format_cell(c, m.scale, m.digits, row.n) for c, m in zip(row.cells, spec.metrics)]
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    lines.append("")
    legend = "Mean ± sample standard deviation (ddof=1) over seeds; n = runs aggregated; one run shows its value alone."
    if any(row.flagged for row in table.rows):
        legend += f" \\* fewer than the {spec.expect_runs} runs expected."
    lines += [legend, ""]
    if table.notes:
        lines += ["Notes:", ""] + [f"- {_md_escape(note)}" for note in table.notes] + [""]
    base = spec.path.resolve().parent
    sources = "; ".join(f"{s.kind}: {s.location if s.kind == 'wandb' else display_path(s.location, base)}"
                        for s in spec.sources)
    made_by = f"`{command}`" if command else "`sstkit table`"
    read = (
        f"{table.runs_matched} of {table.runs_read}" if table.runs_matched != table.runs_read else f"{table.runs_read}"
    )
    lines.append(f"<sub>Generated by {made_by} from {read} runs ({sources}); do not edit by hand.</sub>")
    return "\n".join(lines) + "\n"


def _csv_number(x: float | None) -> str:
    # 12 significant digits: exact enough for any metric, and free of float noise (0.010000000000000009).
    return "" if x is None else f"{x:.12g}"


def render_csv(table: Table) -> str:
    """The table as CSV: row keys (raw values), ``n``, then ``<metric>_mean`` and ``<metric>_std`` per metric."""
    spec = table.spec
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = [r.key for r in spec.rows] + ["n"]
    for metric in spec.metrics:
        header += [f"{metric.key}_mean", f"{metric.key}_std"]
    writer.writerow(header)
    for row in table.rows:
        line = ["" if v is MISSING else format_value(v) for v in row.values] + [str(row.n)]
        for cell in row.cells:
            line += [_csv_number(cell.mean), _csv_number(cell.std)]
        writer.writerow(line)
    return out.getvalue()
