"""Optimizer wrappers, injected through LightningCLI's ``optimizer:`` key (``class_path: sstkit.optim.AdamR``)."""

from sstkit.optim.adamr import AdamR

__all__ = ["AdamR"]
