"""Checks of a table spec against the runs it reads: a typo in a key must stop the table, not reshape it.

A row key that no run has puts every run into one row, and the seed de-duplication then throws most of them away
as "superseded"; a metric that no run has gives a column of "–". Both look like a table, so both are errors here,
naming the key, the closest existing key and the keys that do exist.

- filter keys are checked against every run read; row keys, an explicit ``seed_key`` and metrics against the runs
  the filters keep;
- a key exists if at least one run has it (in its config, or as the run's own name/id/status/seed);
- a metric exists if at least one run logged it, unless the spec marks it ``optional: true``.

Example:
    >>> check_spec_keys(spec, runs)  # doctest: +SKIP
    SstkitError: spec.yaml: rows[0].key: no run has 'methd'; did you mean 'method'? Top-level keys: method, model, ...
"""

from __future__ import annotations

import difflib
from typing import Any

from sstkit.bench.records import MISSING, RUN_FIELDS, RunData, get_path, parse_path, run_value
from sstkit.bench.spec import DEFAULT_SEED_KEY, TableSpec
from sstkit.errors import SstkitError

_SHOWN = 30  # names listed before "and N more"


def _has(run: RunData, path: str) -> bool:
    return run_value(run, path) is not MISSING


def _children(node: Any) -> list[str]:
    """How a path can continue below ``node``: dict keys, ``[ClassName]`` of listed classes, or ``[i]``."""
    if isinstance(node, dict):
        return [str(k) for k in node]
    if isinstance(node, (list, tuple)):
        names = []
        for i, item in enumerate(node):
            cls = item.get("class_path") if isinstance(item, dict) else None
            names.append(f"[{cls.rsplit('.', 1)[-1]}]" if isinstance(cls, str) else f"[{i}]")
        return names
    return []


def all_paths(config: Any, prefix: str = "", depth: int = 8) -> list[str]:
    """Every path into a config, in the syntax of spec keys (``a.b``, ``callbacks[ClassName].init_args.rank``).

    Example:
        >>> all_paths({"model": {"init_args": {"lr": 0.1}}})
        ['model', 'model.init_args', 'model.init_args.lr']
    """
    out: list[str] = []
    if depth == 0:
        return out
    if isinstance(config, dict):
        for key, value in config.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            out.append(path)
            out += all_paths(value, path, depth - 1)
    elif isinstance(config, (list, tuple)):
        for child, value in zip(_children(config), config):
            path = prefix + child
            out.append(path)
            out += all_paths(value, path, depth - 1)
    return out


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _hint(key: str, candidates: list[str]) -> str:
    """``; did you mean 'x'?`` for the closest candidate (not ``key``'s own prefixes), or nothing."""
    candidates = [c for c in candidates if not key.startswith((c + ".", c + "["))]
    guess = difflib.get_close_matches(key, candidates, n=1, cutoff=0.6)
    return f"; did you mean {guess[0]!r}?" if guess else ""


def _deepest_prefix(runs: list[RunData], key: str) -> tuple[str, list[str]]:
    """The longest existing prefix of ``key`` with children, and the children the runs have below it."""
    tokens = parse_path(key)
    text_tokens = [f"[{arg}]" if kind != "key" else f".{arg}" for kind, arg in tokens]
    for cut in range(len(tokens) - 1, 0, -1):
        prefix = "".join(text_tokens[:cut]).lstrip(".")
        children: list[str] = []
        for run in runs:
            for child in _children(get_path(run.config, prefix, default=MISSING)):
                if child not in children:
                    children.append(child)
        if children:
            return prefix, children
    top: list[str] = []
    for run in runs:
        top += [k for k in run.config if k not in top]
    return "", top + [f for f in RUN_FIELDS if f not in top]


def unknown_key_error(spec: TableSpec, where: str, key: str, runs: list[RunData]) -> SstkitError:
    """The error for a key that no run has: closest existing paths and the keys next to where it went wrong."""
    paths: list[str] = []
    seen = set()
    for run in runs:
        for path in all_paths(run.config):
            if path not in seen:
                seen.add(path)
                paths.append(path)
    hint = _hint(key, paths + list(RUN_FIELDS))
    prefix, children = _deepest_prefix(runs, key)
    listed = f"keys under {prefix}" if prefix else "top-level keys (and the run fields name, id, status, seed)"
    return SstkitError(f"{spec.path}: {where}: no run of {len(runs)} has {key!r}{hint} The {listed}: "
                       f"{_listing(children)}")


def check_filter_keys(spec: TableSpec, runs: list[RunData]) -> None:
    """Fails on a filter key that no run read has."""
    for key in spec.filters:
        if runs and not any(_has(r, key) for r in runs):
            raise unknown_key_error(spec, f"filters.{key}", key, runs)


def check_matches(spec: TableSpec, runs: list[RunData], matched: list[RunData]) -> None:
    """Fails when filters keep nothing, showing the values the runs do have, which is usually the typo."""
    if matched or not spec.filters or not runs:
        return
    seen = []
    for key in spec.filters:
        values = sorted({repr(run_value(r, key)) for r in runs})
        shown = ", ".join(values[:6]) + (", ..." if len(values) > 6 else "")
        seen.append(f"{key} is one of {shown}")
    raise SstkitError(f"{spec.path}: filters: no run of {len(runs)} matches {spec.filters}; {'; '.join(seen)}")


def check_row_keys(spec: TableSpec, matched: list[RunData]) -> None:
    """Fails on a row key, or a ``seed_key`` the spec sets, that none of the matched runs has."""
    if not matched:
        return
    for i, row in enumerate(spec.rows):
        if not any(_has(r, row.key) for r in matched):
            raise unknown_key_error(spec, f"rows[{i}].key", row.key, matched)
    # The default seed key falls back to the run's own seed, so only a seed key the spec names must exist.
    if spec.seed_key != DEFAULT_SEED_KEY and not any(_has(r, spec.seed_key) for r in matched):
        raise unknown_key_error(spec, "seed_key", spec.seed_key, matched)


def check_metrics(spec: TableSpec, matched: list[RunData]) -> None:
    """Fails on a metric that none of the matched runs logged, unless the spec marks it ``optional``."""
    if not matched:
        return
    names: list[str] = []
    for run in matched:
        names += [m for m in run.metrics if m not in names]
    for i, metric in enumerate(spec.metrics):
        if metric.optional or any(metric.key in r.metrics for r in matched):
            continue
        hint = _hint(metric.key, names)
        raise SstkitError(
            f"{spec.path}: metrics[{i}].key: no run of {len(matched)} has the metric {metric.key!r}{hint} "
            f"The runs have: {_listing(sorted(names)) or 'no metrics at all'}. "
            f"(Mark a metric `optional: true` if some tables may lack it.)"
        )
