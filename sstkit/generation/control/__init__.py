"""Attribute-controlled generation: steerable LMs, an attribute discriminator, decoding-time controllers (none,
fixed prompt, PPLM-style hidden-state perturbation, PPC soft-prompt steering) and RLDAF fine-tuning.

Example:
    >>> from sstkit.generation.control import SteerableLM, PPCController, controlled_generate  # doctest: +SKIP
    >>> out = controlled_generate(SteerableLM(model, tok), ["the movie"], PPCController(head), [1])  # doctest: +SKIP
"""

from sstkit.generation.control.controllers import (
    Context,
    ControlledOutput,
    Controller,
    DecodeSettings,
    PPCController,
    PPLMController,
    PromptController,
    controlled_generate,
    decoder_layers,
    next_token_kl,
)
from sstkit.generation.control.discriminator import (
    ATTRIBUTES,
    CHECKPOINT_PREFIX,
    AttributeHead,
    attribute_index,
    attribute_loss,
    fit_attribute_head,
    head_accuracy,
)
from sstkit.generation.control.metrics import conditional_perplexity, distinct_n
from sstkit.generation.control.rldaf import RLDAF, SUBSETS, RLDAFStats, reference_kl, reinforce_loss, select_trainable
from sstkit.generation.control.steerable import LMOutput, SteerableLM, masked_mean, sample_next

__all__ = ["ATTRIBUTES", "AttributeHead", "CHECKPOINT_PREFIX", "Context", "ControlledOutput", "Controller", "DecodeSettings", "LMOutput",
           "PPCController", "PPLMController", "PromptController", "RLDAF", "RLDAFStats", "SUBSETS", "SteerableLM",
           "attribute_index", "attribute_loss", "conditional_perplexity", "controlled_generate", "decoder_layers", "distinct_n",
           "fit_attribute_head", "head_accuracy", "masked_mean", "next_token_kl", "reference_kl", "reinforce_loss",
           "sample_next", "select_trainable"]
