"""LightningDataModules, one per dataset, plus the wrappers and loaders they share (installed as sstkit.datamodules)."""

from .agnews import AGNewsDataModule
from .sst2 import SST2DataModule
from .text_classification import TextClassificationDataModule

__all__ = ["AGNewsDataModule", "SST2DataModule", "TextClassificationDataModule"]
