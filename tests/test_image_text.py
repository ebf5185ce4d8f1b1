"""FM3's multimodal toy path: a small CNN matched to text embeddings with InfoNCE learns digits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sstkit.datamodules.multitask import k_shot_indices

from sstkit.nn.image_text import ImageTextMatcher, SmallImageEncoder, clip_loss

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
