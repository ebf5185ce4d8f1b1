"""Model families: one LightningModule each, on the shared :class:`SstkitModule` base."""

from sstkit.models.base import SstkitModule, StepOutput
from sstkit.models.causal_lm import CausalLM
from sstkit.models.text_classifier import TextClassifier

__all__ = ["CausalLM", "SstkitModule", "StepOutput", "TextClassifier"]
