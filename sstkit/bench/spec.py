"""The YAML spec of a benchmark table, as read by ``sstkit table SPEC.yaml``.

Format (only ``runs`` and ``metrics`` are required)::

    title: SST-2 fine-tuning (MiniLM)          # heading of results.md (default: the spec file's name)
    description: Accuracy after 30 steps.      # optional paragraph under the heading
    runs:                                      # one or more sources, read in this order
      - summary: ../../runs/sst2_finetune      # folder searched recursively for summary.json
      - wandb_offline: ../../runs/x/wandb      # folder (or file) searched for run-*.wandb
      - csv: ../../lightning_logs              # Lightning CSVLogger folders (metrics.csv + hparams.yaml)
      - wandb: my-team/sstkit                  # W&B API; filters go to the server (MongoDB syntax)
        filters: {config.seed_everything: {$in: [0, 1, 2]}}
    filters:                                   # keep runs whose value at each path equals the given value
      name: sst2_finetune                      #   (a list means "any of these")
      model.init_args.backbone: [minilm, bert-base-uncased]
    rows:                                      # one table row per distinct combination of these values
      - key: model.init_args.backbone          # a config path (see below)
        label: Backbone                        # column heading (default: the key)
        values: {minilm: MiniLM}               # optional: display names; listed values come first, in this order
      - trainer.callbacks[SparseSpectralTraining].init_args.rank   # a bare string is {key: ...}
    seed_key: seed_everything                  # what tells repeats apart (default seed_everything)
    metrics:                                   # one column each: mean ± std over the row's runs
      - {key: test/acc, label: "Test acc (%)", scale: 100, digits: 2}
      - {key: train_steps_per_s, label: steps/s}   # summary.json's wall_time_s etc. are metrics too
      - {key: val/f1, optional: true}          # no error if no run logged it (the column shows "–")
    expect_runs: 3                             # rows with fewer runs are flagged
    output: results                            # results.md / results.csv next to the spec (or a path)

Paths (rows, filters, ``seed_key``) are config paths: ``model.init_args.lr``, ``trainer.callbacks[0].class_path``
or ``trainer.callbacks[ClassName].init_args.rank`` (the list item whose ``class_path`` ends in ``ClassName``).
Where a path is not in a run's config, ``name``, ``id``, ``status`` and ``seed`` refer to the run itself.
Metric keys are the flat names the run logged (``test/acc``), not paths. Relative paths in ``runs`` and
``output`` are relative to the spec file, so a spec works from any working directory; the paths that a generated
table names (runs in notes, sources) are relative to the spec file too.

Every problem raises :class:`~sstkit.errors.SstkitError` naming the spec file, the key and what was expected.
So does a key that no run has (:mod:`~sstkit.bench.checks`): a row, filter or seed key that no run has, and a metric
that no run logged unless the metric says ``optional: true``; the message lists the keys or metrics that exist.

Example:
    >>> spec = load_spec("benchmarks/sst2_finetune/spec.yaml")  # doctest: +SKIP
    >>> [m.label for m in spec.metrics]  # doctest: +SKIP
    ['Test acc (%)', 'steps/s']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sstkit.bench.records import parse_path
from sstkit.errors import SstkitError

SOURCE_KINDS = ("summary", "wandb_offline", "wandb", "csv")
_TOP_KEYS = ("title", "description", "runs", "filters", "rows", "seed_key", "metrics", "expect_runs", "output")
_ROW_KEYS = ("key", "label", "values")
_METRIC_KEYS = ("key", "label", "scale", "digits", "optional")
DEFAULT_SEED_KEY = "seed_everything"


@dataclass(frozen=True)
class SourceSpec:
    """Where runs come from: ``kind`` is one of ``summary``, ``wandb_offline``, ``wandb``, ``csv``."""

    kind: str
    location: str  # an absolute path, or entity/project for ``wandb``
    filters: dict[str, Any] | None = None
    given: str = ""  # as written in the spec, for messages and the "generated from" line

    def __str__(self) -> str:
        return f"{self.kind}: {self.given or self.location}"


@dataclass(frozen=True)
class RowSpec:
    """A config path that splits runs into rows, with its column heading and display names of its values."""

    key: str
    label: str
    values: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """A metric column: shown as ``mean * scale`` with ``digits`` decimals."""

    key: str
    label: str
    scale: float = 1.0
    digits: int = 2
    optional: bool = False  # True: no error when no run has the metric (the column then shows "–")


@dataclass
class TableSpec:
    """A validated table spec; build it with :func:`load_spec` or :func:`parse_spec`."""

    path: Path
    title: str
    sources: list[SourceSpec]
    metrics: list[MetricSpec]
    rows: list[RowSpec] = field(default_factory=list)
    filters: dict[str, Any] = field(default_factory=dict)
    seed_key: str = DEFAULT_SEED_KEY
    expect_runs: int | None = None
    output: Path | None = None
    description: str = ""


class _Checker:
    """Raises errors that name the spec file and the key, so the user knows where to look."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, expected: str, got: Any = None, show_got: bool = True) -> SstkitError:
        got_text = f", got {got!r}" if show_got else ""
        return SstkitError(f"{self.path}: {key}: expected {expected}{got_text}")

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"a mapping with keys {', '.join(allowed)}", value)
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else str(name)
                raise self.fail(where, f"one of the keys {', '.join(allowed)} (unknown key)", show_got=False)
        return value

    def text(self, value: Any, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string", value)
        return value

    def config_path(self, value: Any, key: str) -> str:
        text = self.text(value, key)
        try:
            parse_path(text)
        except ValueError as err:
            raise self.fail(key, f"a config path like model.init_args.lr ({err})", value) from None
        return text

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, "a number", value)
        return float(value)

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def integer(self, value: Any, key: str, low: int, high: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            span = f"of at least {low}" if high is None else f"from {low} to {high}"
            raise self.fail(key, f"an integer {span}", value)
        return value


def _parse_source(check: _Checker, entry: Any, key: str, base: Path) -> SourceSpec:
    if not isinstance(entry, dict):
        raise check.fail(key, f"a mapping with one of {', '.join(SOURCE_KINDS)}", entry)
    check.mapping(entry, key, (*SOURCE_KINDS, "filters"))
    kinds = [k for k in SOURCE_KINDS if k in entry]
    if len(kinds) != 1:
        raise check.fail(key, f"exactly one of {', '.join(SOURCE_KINDS)}", sorted(entry))
    kind = kinds[0]
    location = given = check.text(entry[kind], f"{key}.{kind}")
    filters = entry.get("filters")
    if filters is not None:
        if kind != "wandb":
            raise check.fail(
                f"{key}.filters", "server filters only on a `wandb:` source (use top-level filters)", show_got=False
            )
        if not isinstance(filters, dict):
            raise check.fail(f"{key}.filters", "a mapping (a W&B API filter)", filters)
    if kind == "wandb":
        if location.count("/") > 1 or location.startswith("/") or location.endswith("/"):
            raise check.fail(f"{key}.wandb", "entity/project or project", location)
    else:
        location = str((base / os.path.expanduser(location)).resolve())
    return SourceSpec(kind=kind, location=location, filters=filters, given=given)


def _parse_row(check: _Checker, entry: Any, key: str) -> RowSpec:
    if isinstance(entry, str):
        entry = {"key": entry}
    entry = check.mapping(entry, key, _ROW_KEYS)
    if "key" not in entry:
        raise check.fail(f"{key}.key", "a config path (the key is missing)", show_got=False)
    path = check.config_path(entry["key"], f"{key}.key")
    label = check.text(entry["label"], f"{key}.label") if "label" in entry else path
    values = entry.get("values") or {}
    if not isinstance(values, dict) or not all(isinstance(v, (str, int, float)) for v in values.values()):
        raise check.fail(f"{key}.values", "a mapping from config values to display names", values)
    return RowSpec(key=path, label=label, values={str(k): str(v) for k, v in values.items()})


def _parse_metric(check: _Checker, entry: Any, key: str) -> MetricSpec:
    if isinstance(entry, str):
        entry = {"key": entry}
    entry = check.mapping(entry, key, _METRIC_KEYS)
    if "key" not in entry:
        raise check.fail(f"{key}.key", "a metric name such as test/acc (the key is missing)", show_got=False)
    name = check.text(entry["key"], f"{key}.key")
    return MetricSpec(
        key=name,
        label=check.text(entry["label"], f"{key}.label") if "label" in entry else name,
        scale=check.number(entry["scale"], f"{key}.scale") if "scale" in entry else 1.0,
        digits=check.integer(entry["digits"], f"{key}.digits", 0, 12) if "digits" in entry else 2,
        optional=check.boolean(entry["optional"], f"{key}.optional") if "optional" in entry else False,
    )


def _list(check: _Checker, value: Any, key: str, required: bool) -> list[Any]:
    if value is None and not required:
        return []
    if not isinstance(value, list) or (required and not value):
        raise check.fail(key, "a non-empty list" if required else "a list", value)
    return value


def parse_spec(data: Any, path: str | os.PathLike) -> TableSpec:
    """Validates a parsed spec; ``path`` is used for messages and to resolve relative paths.

    Raises:
        SstkitError: naming ``path``, the offending key and what was expected.

    Example:
        >>> parse_spec({"runs": [{"summary": "runs"}], "metrics": ["test/acc"]}, "spec.yaml").metrics[0].key
        'test/acc'
    """
    path = Path(path)
    check = _Checker(path)
    if not isinstance(data, dict):
        raise SstkitError(f"{path}: expected a YAML mapping with keys runs, metrics, ... at the top level")
    check.mapping(data, "", _TOP_KEYS)
    for required in ("runs", "metrics"):
        if required not in data:
            raise check.fail(required, "this key (it is required)", show_got=False)
    base = path.resolve().parent
    sources = [
        _parse_source(check, e, f"runs[{i}]", base) for i, e in enumerate(_list(check, data["runs"], "runs", True))
    ]
    rows = [_parse_row(check, e, f"rows[{i}]") for i, e in enumerate(_list(check, data.get("rows"), "rows", False))]
    metrics = [
        _parse_metric(check, e, f"metrics[{i}]") for i, e in enumerate(_list(check, data["metrics"], "metrics", True))
    ]
    filters = data.get("filters") or {}
    if not isinstance(filters, dict):
        raise check.fail("filters", "a mapping from config paths to values", filters)
    for name, wanted in filters.items():
        check.config_path(name, f"filters.{name}")
        if isinstance(wanted, dict) or (isinstance(wanted, list) and any(isinstance(w, (dict, list)) for w in wanted)):
            raise check.fail(f"filters.{name}", "a value or a list of values", wanted)
    output = data.get("output", "results")
    output = check.text(output, "output")
    out_path = base / os.path.expanduser(output)
    if out_path.suffix in (".md", ".csv"):
        out_path = out_path.with_suffix("")
    expect = data.get("expect_runs")
    return TableSpec(
        path=path,
        title=check.text(data["title"], "title") if "title" in data else _default_title(path),
        description=str(data.get("description") or ""),
        sources=sources,
        metrics=metrics,
        rows=rows,
        filters=dict(filters),
        seed_key=check.config_path(data.get("seed_key", DEFAULT_SEED_KEY), "seed_key"),
        expect_runs=None if expect is None else check.integer(expect, "expect_runs", 1),
        output=out_path,
    )


def _default_title(path: Path) -> str:
    # benchmarks/<name>/spec.yaml is the usual layout, where the folder names the benchmark.
    return path.resolve().parent.name if path.stem == "spec" else path.stem


def load_spec(path: str | os.PathLike) -> TableSpec:
    """Reads and validates a table spec file.

    Raises:
        SstkitError: if the file is missing, is not YAML, or does not follow the format above.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SstkitError(f"{path}: table spec not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SstkitError(f"{path}: cannot read table spec: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        hint = ""
        lines = text.splitlines()
        if mark is not None and mark.line < len(lines) and "{" in lines[mark.line] and "[" in lines[mark.line]:
            # The usual culprit: a callback path like a[Cls].b inside {...} needs quotes in YAML's flow style.
            hint = " (inside {...}, quote paths that contain [ ], e.g. key: 'trainer.callbacks[Cls].init_args.rank')"
        raise SstkitError(f"{where}: not valid YAML: {getattr(err, 'problem', None) or err}{hint}") from None
    return parse_spec(data, path)
