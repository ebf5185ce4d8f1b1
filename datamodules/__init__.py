"""LightningDataModules, one per dataset, plus the wrappers and loaders they share (installed as sstkit.datamodules)."""

from .agnews import AGNewsDataModule
from .column_corpus import ColumnCorpusDataModule
from .mixed_corpus import MixedTextCorpusDataModule
from .multitask import MultitaskTextDataModule
from .planetoid import PlanetoidDataModule
from .point_scenes import PointScenesDataModule, collate_points
from .pointcept_scenes import PointceptScenesDataModule
from .poisoning import PoisonedTextDataModule
from .prompt_answer import PromptAnswerDataModule
from .sst2 import SST2DataModule
from .synthetic_graphs import SyntheticGraphDataModule
from .synthetic_scenes import SyntheticScenesDataModule
from .text_classification import TextClassificationDataModule
from .text_corpus import TextCorpusDataModule
from .token_tagging import AGNewsNamesDataModule
from .wikitext2 import WikiText2DataModule

__all__ = [
    "AGNewsDataModule",
    "AGNewsNamesDataModule",
    "ColumnCorpusDataModule",
    "MixedTextCorpusDataModule",
    "MultitaskTextDataModule",
    "PlanetoidDataModule",
    "PointScenesDataModule",
    "PointceptScenesDataModule",
    "PoisonedTextDataModule",
    "PromptAnswerDataModule",
    "SST2DataModule",
    "SyntheticGraphDataModule",
    "SyntheticScenesDataModule",
    "TextClassificationDataModule",
    "TextCorpusDataModule",
    "WikiText2DataModule",
    "collate_points",
]
