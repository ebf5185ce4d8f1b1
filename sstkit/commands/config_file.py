"""A YAML config given to an sstkit subcommand (``--data-config FILE --set KEY=VALUE``), read without LightningCLI.

Example::

    config = load_config("configs/bert/sst2/finetune.yaml", ["data.init_args.batch_size=8"], sections=("data",))
    DataModule = import_class(config["data"]["class_path"], "sstkit.datamodules")
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml

from sstkit.errors import SstkitError


def load_config(path: str, overrides: list[str], sections: tuple[str, ...] = ("data",)) -> dict[str, Any]:
    """The config at ``path`` with dotted ``KEY=VALUE`` overrides applied; each of ``sections`` must name a class."""
    if not Path(path).is_file():
        raise SstkitError(f"--data-config {path}: no such file")
    config = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SstkitError(f"--set {item!r}: expected KEY=VALUE")
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(raw)
    for key in sections:
        if not isinstance(config.get(key), dict) or "class_path" not in config[key]:
            raise SstkitError(f"--data-config {path}: needs a '{key}' section with a class_path")
    return config


def import_class(class_path: str, default_module: str = "sstkit") -> type:
    """The class a config's ``class_path`` names; a bare name is looked up in ``default_module``."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module or default_module), name)
    except (ImportError, AttributeError):
        raise SstkitError(f"class_path {class_path!r}: cannot import it") from None
