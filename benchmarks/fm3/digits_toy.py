"""FM3's multimodal path as a toy: scikit-learn's 8×8 digits classified by image–text matching.

Each digit class gets a text prompt ("a handwritten digit seven"), embedded once by the frozen packaged MiniLM
(mean pooling, the multitask classifier's ``encode``). A small CNN trained by sstkit (``SmallImageEncoder``) is
projected into that text space (``ImageTextMatcher``) and trained with the image→text InfoNCE over the ten prompts
(cross-entropy of cos/τ against the image's own prompt); prediction is the most similar prompt. The control is the
same CNN with a plain linear 10-way head. k shots per class for training (seeded), every other image for testing.

    python benchmarks/fm3/digits_toy.py --shots 16 --seeds 0 1 2   # writes digits_results.md / .csv
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from sstkit.datamodules.multitask import k_shot_indices
from sstkit.loaders import load_tokenizer
from sstkit.models import MultitaskTextClassifier
from sstkit.nn.image_text import ImageTextMatcher, SmallImageEncoder

HERE = Path(__file__).resolve().parent
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@torch.no_grad()
def prompt_embeddings() -> torch.Tensor:
    model = MultitaskTextClassifier("minilm", num_labels=[2]).eval()
    batch = load_tokenizer("minilm")([f"a handwritten digit {n}" for n in NAMES], padding=True, return_tensors="pt")
    return model.encode(batch["input_ids"], batch["attention_mask"])


def train_eval(images: torch.Tensor, labels: torch.Tensor, train: list[int], test: list[int], texts: torch.Tensor | None,
               steps: int, seed: int) -> float:  # fmt: skip
    torch.manual_seed(seed)
    encoder = SmallImageEncoder(1, width=16, embed_dim=64)
    model: nn.Module = ImageTextMatcher(encoder, text_dim=texts.shape[1]) if texts is not None else nn.Sequential(encoder, nn.Linear(64, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    x, y = images[train], labels[train]
    model.train()
    for _ in range(steps):
        rows = torch.randint(len(train), (32,), generator=generator)
        logits = model(x[rows], texts) if texts is not None else model(x[rows])
        loss = F.cross_entropy(logits, y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(images[test], texts) if texts is not None else model(images[test])
    return float((logits.argmax(-1) == labels[test]).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shots", type=int, nargs="+", default=[16])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target)
    texts = prompt_embeddings()
    results: dict[tuple[int, str], list[float]] = {}
    for k in args.shots:
        for seed in args.seeds:
            train = k_shot_indices(labels, k, seed)
            test = sorted(set(range(len(labels))) - set(train))
            for arm, t in (("CNN + text-prompt matching (InfoNCE over 10 prompts)", texts), ("CNN + linear head", None)):
                acc = train_eval(images, labels, train, test, t, args.steps, seed)
                results.setdefault((k, arm), []).append(100 * acc)
                print(k, seed, arm, round(100 * acc, 2), flush=True)
    lines = ["k,arm,acc_mean,acc_std,n"]
    md = ["| k per class | arm | test acc % (mean ± std) | n seeds |", "| --- | --- | --- | --- |"]
    for (k, arm), accs in sorted(results.items()):
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        lines.append(f"{k},{arm},{statistics.mean(accs):.2f},{std:.2f},{len(accs)}")
        md.append(f"| {k} | {arm} | {statistics.mean(accs):.2f} ± {std:.2f} | {len(accs)} |")
    (HERE / "digits_results.csv").write_text("\n".join(lines) + "\n")
    (HERE / "digits_results.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
