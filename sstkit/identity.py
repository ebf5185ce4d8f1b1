"""Which configuration a run folder belongs to, and the check that keeps two experiments out of one record.

A run folder is pinned by name and seed (:class:`sstkit.runs.RunFolder`). Its ``summary.json`` stores the config
the run was built with; a later ``sstkit fit / test …`` with the same name and seed but another experiment (other
model, data, optimizer, scheduler or method callbacks) is refused with the keys that differ, unless the user asks to
continue. Trainer settings (steps, devices, precision, logging) may change between segments: a resumed job often
runs longer or on other hardware.

Example:
    >>> changes = config_changes(stored_record["config"], new_config)
    >>> changes
    {'data.class_path': ('sstkit.datamodules.SST2DataModule', 'sstkit.datamodules.AGNewsDataModule')}
"""

from __future__ import annotations

import json
from typing import Any

# Top-level sections that define an experiment; method callbacks (class paths under ``sstkit.``) join them.
EXPERIMENT_SECTIONS = ("seed_everything", "model", "data", "optimizer", "lr_scheduler")
# Keys that say where or how fast, not what: a data folder moved to a cluster is the same experiment.
IGNORED_KEYS = {"data.init_args.data_dir", "data.init_args.num_workers", "data.init_args.download",
                "data.init_args.eval_batch_size"}


def public(value: Any) -> Any:
    """``value`` without keys that start with ``_`` (LightningCLI's ``_class_path`` / ``_instantiator`` in hparams)."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list):
        return [public(v) for v in value]
    return value


def resolved_config(parser: Any, config: Any, hparams: dict[str, Any] | None) -> dict[str, Any]:
    """The CLI config as a plain dict, with the model's own record of its arguments (linked values included).

    Values linked at instantiation (``num_labels``, ``vocab_size``) are not in the parsed config, so the model's
    hyperparameters are merged into ``model.init_args``; their internal keys are dropped.
    """
    as_dict = json.loads(parser.dump(config, skip_none=False, format="json"))
    as_dict.pop("config", None)
    model_args = as_dict.get("model", {}).get("init_args")
    if isinstance(model_args, dict) and hparams:
        model_args.update(public(json.loads(json.dumps(dict(hparams), default=str))))
    return public(as_dict)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def experiment_keys(config: dict[str, Any]) -> dict[str, Any]:
    """The flat ``{dotted.key: value}`` view of what defines the experiment in a resolved config."""
    config = public(config)
    out: dict[str, Any] = {}
    for section in EXPERIMENT_SECTIONS:
        if config.get(section) is not None:
            _flatten(config[section], section, out)
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else []:
        path = callback.get("class_path", "") if isinstance(callback, dict) else ""
        if path.startswith("sstkit."):
            _flatten(callback.get("init_args") or {}, f"trainer.callbacks[{path.rsplit('.', 1)[-1]}]", out)
    return {k: v for k, v in out.items() if k not in IGNORED_KEYS}


def config_changes(stored: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys of the experiment whose values differ: ``{key: (stored value, new value)}`` (missing: None)."""
    old_keys, new_keys = experiment_keys(stored), experiment_keys(new)
    return {k: (old_keys.get(k), new_keys.get(k)) for k in sorted(old_keys.keys() | new_keys.keys())
            if old_keys.get(k) != new_keys.get(k)}


def describe_changes(changes: dict[str, tuple[Any, Any]], limit: int = 6) -> str:
    """``data.class_path: SST2DataModule -> AGNewsDataModule; …`` (at most ``limit`` keys, then a count)."""
    parts = [f"{k}: {json.dumps(a, default=str)} -> {json.dumps(b, default=str)}"
             for k, (a, b) in list(changes.items())[:limit]]
    if len(changes) > limit:
        parts.append(f"… and {len(changes) - limit} more")
    return "; ".join(parts)
