"""Optimizer wrappers, injected through LightningCLI's ``optimizer:`` key (``class_path: sstkit.optim.AdamR``)."""

from sstkit.optim.adamr import AdamR
from sstkit.optim.galore import GaLoreAdamW

__all__ = ["AdamR", "GaLoreAdamW"]
