"""sstkit: a PyTorch Lightning framework for Sparse Spectral Training and the methods around SST-2.

The package imports lazily (PEP 562): ``import sstkit.functional.sst`` loads neither Lightning nor the model
families, and ``sstkit.TextClassifier`` imports :mod:`sstkit.models` on first use. Short class names in YAML
(``class_path: TextClassifier``) resolve because the ``fit / validate / test / predict`` commands import the
models, data modules, callbacks and optimizers before parsing (:func:`register_classes`).

Example:
    >>> import sstkit
    >>> sstkit.TextClassifier.__module__
    'sstkit.models.text_classifier'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public short names -> the package that defines them (kept equal to those packages' __all__ by a test).
_LAZY_NAMES: dict[str, str] = {
    **dict.fromkeys(
        ["BagOfWordsClassifier", "CausalLM", "HyperbolicGNN", "MaskedLM", "PointSegmenter", "SstkitModule", "StepOutput", "TextClassifier"],
        "sstkit.models",
    ),
    **dict.fromkeys(
        ["AGNewsDataModule", "PlanetoidDataModule", "PointScenesDataModule", "PointceptScenesDataModule",
         "PoisonedTextDataModule", "SST2DataModule", "SyntheticGraphDataModule", "SyntheticScenesDataModule",
         "TextClassificationDataModule", "TextCorpusDataModule", "WikiText2DataModule", "collate_points"],
        "sstkit.datamodules",
    ),
    "ColumnCorpusDataModule": "sstkit.datamodules",
    "MixedTextCorpusDataModule": "sstkit.datamodules",
    "MultitaskTextClassifier": "sstkit.models",
    "MultitaskTextDataModule": "sstkit.datamodules",
    "AGNewsNamesDataModule": "sstkit.datamodules",
    "PromptAnswerDataModule": "sstkit.datamodules",
}
_SUBPACKAGES = ("bench", "callbacks", "cli", "commands", "datamodules", "functional", "models", "nn", "optim")

# Packages whose classes LightningCLI may name by short class_path (it searches the loaded subclasses).
REGISTERED_PACKAGES = ("sstkit.models", "sstkit.datamodules", "sstkit.callbacks", "sstkit.optim")


def register_classes() -> None:
    """Imports every model, data module, callback and optimizer so that short ``class_path`` names resolve."""
    for package in REGISTERED_PACKAGES:
        importlib.import_module(package)


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        value = getattr(importlib.import_module(_LAZY_NAMES[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"sstkit.{name}")
    raise AttributeError(f"module 'sstkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES) | set(_SUBPACKAGES))
