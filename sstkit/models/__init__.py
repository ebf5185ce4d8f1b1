"""Model families: one LightningModule each, on the shared :class:`SstkitModule` base."""

from sstkit.models.base import SstkitModule, StepOutput
from sstkit.models.bow_classifier import BagOfWordsClassifier
from sstkit.models.causal_lm import CausalLM
from sstkit.models.hyperbolic_gnn import HyperbolicGNN
from sstkit.models.masked_lm import MaskedLM
from sstkit.models.multitask_classifier import MultitaskTextClassifier
from sstkit.models.point_segmenter import PointSegmenter
from sstkit.models.text_classifier import TextClassifier

__all__ = ["BagOfWordsClassifier", "CausalLM", "HyperbolicGNN", "MaskedLM", "MultitaskTextClassifier", "PointSegmenter", "SstkitModule", "StepOutput", "TextClassifier"]
