"""Reads runs of a W&B project through the public API (``wandb.Api().runs``).

This is the reader for runs that were logged online or synced. It needs a network and a W&B login; the other
readers (``summary.json`` files, offline run files) work without either. The ``api`` argument takes any object
with a ``runs(path, filters=...)`` method, which is how the tests run without a network.

Requests: the run list is fetched with ``lazy=False``, so each page of ``PER_PAGE`` runs arrives with its configs
and summaries and a table of N runs makes ceil(N / 50) requests. (wandb's default, ``lazy=True``, would fetch each
run's config and summary with one more request per run: N + ceil(N / 50).)

Example:
    >>> runs = read_wandb_api("my-team/sstkit", filters={"config.seed_everything": {"$in": [0, 1, 2]}})  # doctest: +SKIP
    >>> runs[0].status, runs[0].metrics["test/acc"]  # doctest: +SKIP
    ('finished', 0.84)
"""

from __future__ import annotations

import inspect
from typing import Any

from sstkit.bench.records import RunData, flatten_numbers, seed_from_config
from sstkit.errors import SstkitError

PER_PAGE = 50  # runs per API request (wandb's default page size)

# W&B run states -> the four states tables know about.
_STATES = {
    "finished": "finished",
    "running": "running",
    "pending": "running",
    "preempting": "running",
    "failed": "failed",
    "killed": "failed",
    "crashed": "crashed",
    "preempted": "crashed",
}


def _unwrap_config(config: Any) -> dict[str, Any]:
    """Plain config values: older API versions return ``{"key": {"value": v, "desc": ...}}``."""
    if not isinstance(config, dict):
        try:
            config = dict(config)
        except (TypeError, ValueError):
            return {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key == "_wandb":
            continue
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        out[key] = value
    return out


def _summary_dict(run: Any) -> dict[str, Any]:
    summary = getattr(run, "summary", None)
    if summary is None:
        return {}
    # ``_json_dict`` is the raw summary without lazy-loading every media file; fall back to iterating.
    raw = getattr(summary, "_json_dict", None)
    if isinstance(raw, dict):
        return dict(raw)
    try:
        return dict(summary)
    except (TypeError, ValueError):
        return {}


def convert_api_run(run: Any, path: str = "") -> RunData:
    """Turns one ``wandb.apis.public.Run`` (or an object with the same attributes) into a :class:`RunData`.

    Example:
        >>> convert_api_run(api.run("team/project/abc123"))  # doctest: +SKIP
    """
    config = _unwrap_config(getattr(run, "config", {}) or {})
    summary = _summary_dict(run)
    summary.pop("_wandb", None)
    # W&B's ``_runtime`` keeps its name: sstkit's ``wall_time_s`` (summed over segments) is in the summary itself.
    metrics = flatten_numbers(summary)
    state = str(getattr(run, "state", "") or "").lower()
    run_id = str(getattr(run, "id", "") or "")
    extra: dict[str, Any] = {"state": state, "summary": summary}
    for attr, key in (("url", "url"), ("created_at", "started"), ("group", "run_group"), ("tags", "tags")):
        value = getattr(run, attr, None)
        if value:
            extra[key] = value if isinstance(value, (str, list)) else str(value)
    return RunData(
        id=run_id,
        name=str(getattr(run, "name", "") or config.get("name") or run_id),
        seed=seed_from_config(config),
        status=_STATES.get(state, "crashed"),  # type: ignore[arg-type]
        config=config,
        metrics=metrics,
        source=str(extra.get("url") or f"wandb:{path}/{run_id}"),
        extra=extra,
    )


def read_wandb_api(path: str, filters: dict[str, Any] | None = None, api: Any = None) -> list[RunData]:
    """Reads the runs of a W&B project.

    Args:
        path: ``entity/project`` (or ``project`` for the default entity).
        filters: a W&B (MongoDB-style) filter passed to the server, e.g. ``{"config.seed_everything": 0}``.
        api: an object with ``runs(path, filters=...)``; defaults to ``wandb.Api()``.

    Raises:
        SstkitError: if the API cannot be reached or the project cannot be read; the message names the project.
    """
    if api is None:
        try:
            import wandb

            api = wandb.Api()
        except Exception as err:  # noqa: BLE001 - login, network and config errors all mean the same to the user
            raise SstkitError(f"cannot open the W&B API to read {path!r}: {err}") from None
    kwargs: dict[str, Any] = {}
    try:
        params = inspect.signature(api.runs).parameters
    except (TypeError, ValueError):
        params = {}
    if "lazy" in params:  # newer wandb: configs and summaries come with the list, not one request per run
        kwargs.update(lazy=False, per_page=PER_PAGE)
    try:
        return [convert_api_run(run, path) for run in api.runs(path, filters=filters or {}, **kwargs)]
    except SstkitError:
        raise
    except Exception as err:  # noqa: BLE001 - the public API raises many transport-specific errors
        raise SstkitError(f"cannot read W&B runs of {path!r}: {type(err).__name__}: {err}") from None
