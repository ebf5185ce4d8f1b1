"""FM3's multimodal path: a small CNN matched to text embeddings with InfoNCE learns digits; a Hugging Face CLIP
model (tiny, random, saved locally) loads by path, matches images to texts and takes task adapters on its text tower."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sstkit.datamodules.multitask import k_shot_indices
from transformers import BertConfig, BertModel, CLIPConfig, CLIPModel

from sstkit.errors import SstkitError
from sstkit.functional.hyper_adapters import adapter_slots, apply_hyper_adapters, set_condition
from sstkit.loaders import load_vision_language
from sstkit.nn.image_text import ImageTextMatcher, PretrainedImageTextMatcher, SmallImageEncoder, clip_loss

torch.set_num_threads(1)


def test_clip_loss_is_low_for_matching_pairs_and_symmetric() -> None:
    good = torch.eye(4) * 20.0
    assert float(clip_loss(good)) < 1e-6
    assert float(clip_loss(torch.zeros(4, 4))) == torch.tensor(math.log(4.0)).item()
    a = torch.randn(5, 5)
    assert torch.isclose(clip_loss(a), clip_loss(a.T))


def test_image_text_matching_learns_digits_from_few_shots() -> None:
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target)
    train = k_shot_indices(labels, 10, seed=0)
    test = sorted(set(range(len(labels))) - set(train))[:300]
    torch.manual_seed(0)
    texts = torch.randn(10, 24)  # stand-ins for the ten prompts' sentence embeddings
    model = ImageTextMatcher(SmallImageEncoder(1, width=8, embed_dim=16), text_dim=24)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for step in range(60):
        rows = torch.tensor(train)[torch.randperm(len(train), generator=torch.Generator().manual_seed(step))[:32]]
        loss = F.cross_entropy(model(images[rows], texts), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        acc = (model(images[test], texts).argmax(-1) == labels[test]).float().mean()
    assert acc > 0.6  # chance is 0.1


def tiny_clip_config() -> CLIPConfig:
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "vocab_size": 100, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    vision = {"hidden_size": 24, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 8, "patch_size": 4}  # fmt: skip
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)


def test_a_hugging_face_clip_model_loads_from_a_path_and_matches_images_to_texts(tmp_path: Path) -> None:
    torch.manual_seed(0)
    CLIPModel(tiny_clip_config()).save_pretrained(tmp_path / "clip")  # a local "checkpoint": no download
    matcher = PretrainedImageTextMatcher(load_vision_language(str(tmp_path / "clip")))
    random = load_vision_language(str(tmp_path / "clip"), pretrained=False)
    assert type(random).__name__ == "CLIPModel"
    saved = CLIPModel.from_pretrained(tmp_path / "clip")
    torch.testing.assert_close(matcher.model.logit_scale, saved.logit_scale)
    pixels, ids = torch.randn(3, 3, 8, 8), torch.randint(3, 100, (3, 6))
    ids[:, -1] = 2  # CLIP pools the text at its end-of-text token
    logits = matcher(pixels, ids)
    assert logits.shape == (3, 3)
    expected = saved.logit_scale.exp() * F.normalize(saved.get_image_features(pixel_values=pixels).pooler_output, dim=-1) \
        @ F.normalize(saved.get_text_features(input_ids=ids).pooler_output, dim=-1).T
    torch.testing.assert_close(logits, expected)
    clip_loss(logits).backward()
    assert matcher.model.logit_scale.grad is not None
    # Task adapters on the text tower: identity at step 0, then per task.
    before = matcher.embed_texts(ids).detach()
    bank = apply_hyper_adapters(matcher.text_tower, num_tasks=2, bottleneck=4, task_dim=8, hyper_dim=8)
    assert len(adapter_slots(matcher.text_tower)) == 4  # out_proj and fc2 of both layers
    torch.testing.assert_close(matcher.embed_texts(ids), before, atol=0, rtol=0)
    torch.nn.init.normal_(bank.up_generator.weight, std=0.5)
    set_condition(matcher.text_tower, torch.tensor([0, 1, 1]))
    mixed = matcher.embed_texts(ids)
    set_condition(matcher.text_tower, torch.tensor([0, 0, 0]))
    alone = matcher.embed_texts(ids)
    assert torch.allclose(mixed[0], alone[0], atol=1e-5) and not torch.allclose(mixed[1], alone[1], atol=1e-3)
    with pytest.raises(ValueError, match="differ in width"):
        apply_hyper_adapters(CLIPModel(tiny_clip_config()), num_tasks=2)
    BertModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)).save_pretrained(
        tmp_path / "bert")
    with pytest.raises(SstkitError, match="not a vision-language dual encoder"):
        load_vision_language(str(tmp_path / "bert"))
