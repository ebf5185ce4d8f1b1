r"""A small image encoder and a CLIP-style image–text matcher: FM3's multimodal path at toy scale.

An image classification task is framed as text–image matching (CLIP): each class c has a text prompt
("a handwritten digit seven"), encoded once by a sentence encoder into t_c; an image x is encoded by a small CNN
and projected into the same space, u = P · CNN(x). Training minimises the symmetric InfoNCE loss over a batch of
(image, its class prompt) pairs,

    L = ½ [CE(τ⁻¹ · û ť^T, I) + CE(τ⁻¹ · ť û^T, I)],   û, ť: L2-normalised, τ: learned temperature

(:func:`clip_loss`), and prediction is ``argmax_c cos(u, t_c)``. The text encoder is whatever the caller uses
(the multitask classifier's encoder with or without hypernetwork adapters). :class:`PretrainedImageTextMatcher`
takes a Hugging Face vision-language dual encoder instead (CLIP, SigLIP: :func:`sstkit.loaders
.load_vision_language` loads one by name or path, or builds it from a config), with its own towers, projections
and temperature; hypernetwork adapters go on its text tower (``apply_hyper_adapters(matcher.text_tower, …)``).

Example:
    >>> encoder = SmallImageEncoder(in_channels=1, embed_dim=16)
    >>> matcher = ImageTextMatcher(encoder, text_dim=16)
    >>> logits = matcher(torch.randn(4, 1, 8, 8), torch.randn(10, 16))
    >>> logits.shape
    torch.Size([4, 10])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SmallImageEncoder(nn.Module):
    """Two conv blocks and global average pooling: enough for 8×8 digits or 28×28 Fashion-MNIST.

    Args:
        in_channels: image channels.
        width: channels of the first conv block (the second has twice as many).
        embed_dim: output width.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, embed_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8 * width, embed_dim),
        )  # fmt: skip

    def forward(self, images: Tensor) -> Tensor:
        """(batch, channels, H, W) → (batch, embed_dim)."""
        return self.net(images)


class ImageTextMatcher(nn.Module):
    """Projects image features into the text space and scores them against text embeddings (cosine / τ).

    Args:
        image_encoder: maps images to features of width ``image_encoder.net[-1].out_features`` or ``image_dim``.
        text_dim: width of the text embeddings (384 for MiniLM).
        image_dim: width of the image features (default: read from the encoder's last linear).
        init_temperature: τ at the start (CLIP: 0.07).
    """

    def __init__(self, image_encoder: nn.Module, text_dim: int, image_dim: int | None = None,
                 init_temperature: float = 0.07) -> None:  # fmt: skip
        super().__init__()
        if image_dim is None:
            image_dim = [m for m in image_encoder.modules() if isinstance(m, nn.Linear)][-1].out_features
        self.image_encoder = image_encoder
        self.image_projection = nn.Linear(image_dim, text_dim, bias=False)
        self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def embed_images(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings in the text space."""
        return F.normalize(self.image_projection(self.image_encoder(images)), dim=-1)

    def forward(self, images: Tensor, texts: Tensor) -> Tensor:
        """Logits (batch of images × texts): ``cos(image, text) / τ``; ``texts`` are raw text embeddings."""
        scale = self.log_inv_temperature.clamp(max=math.log(100.0)).exp()  # CLIP caps 1/τ at 100
        return scale * self.embed_images(images) @ F.normalize(texts, dim=-1).T


class PretrainedImageTextMatcher(nn.Module):
    """CLIP-style matching with a Hugging Face vision-language model's two towers: ``exp(logit_scale) · cos``.

    Args:
        model: a model with ``get_image_features`` and ``get_text_features`` (CLIPModel, SiglipModel, …), e.g.
            from :func:`sstkit.loaders.load_vision_language`.

    Example:
        >>> matcher = PretrainedImageTextMatcher(load_vision_language("openai/clip-vit-base-patch32"))  # doctest: +SKIP
        >>> clip_loss(matcher(pixel_values, input_ids, attention_mask))  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not all(callable(getattr(model, f, None)) for f in ("get_image_features", "get_text_features")):
            raise ValueError(f"{type(model).__name__} has no get_image_features / get_text_features")
        self.model = model
        if not isinstance(getattr(model, "logit_scale", None), nn.Parameter):
            self.log_inv_temperature = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))

    @property
    def text_tower(self) -> nn.Module:
        """The text encoder (where task adapters go): ``text_model`` of CLIP-type models, else the whole model."""
        return getattr(self.model, "text_model", self.model)

    def embed_images(self, pixel_values: Tensor) -> Tensor:
        """L2-normalised projected image embeddings."""
        return F.normalize(_features(self.model.get_image_features(pixel_values=pixel_values)), dim=-1)

    def embed_texts(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """L2-normalised projected text embeddings."""
        out = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(_features(out), dim=-1)

    def forward(self, pixel_values: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Logits (images × texts)."""
        scale = getattr(self.model, "logit_scale", None)
        scale = scale if isinstance(scale, nn.Parameter) else self.log_inv_temperature
        scale = scale.clamp(max=math.log(100.0)).exp()
        return scale * self.embed_images(pixel_values) @ self.embed_texts(input_ids, attention_mask).T


def _features(out: Tensor | object) -> Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected embeddings; 4.x a tensor.
    return out if isinstance(out, Tensor) else out.pooler_output  # type: ignore[attr-defined]


def clip_loss(logits: Tensor) -> Tensor:
    """Symmetric InfoNCE over a square matrix of image × text logits whose diagonal holds the matching pairs."""
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
