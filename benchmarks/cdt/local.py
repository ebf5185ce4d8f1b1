"""Local-explanation benchmark: CD-T vs Integrated Gradients, gradient × input, LIME, KernelSHAP and random.

For each test sentence and the model's predicted class, every method scores each word; the scores are compared with
leave-one-out occlusion (the drop of the logit margin to the closest competitor when the word is removed) by
Pearson, Spearman and top-1 match, and by the deletion curve: AOPC = mean over k = 1…K of p(x) − p(x without the
method's top-k words), K = min(10, words), p the predicted class probability. A word is removed by masking its
tokens out of attention and pooling (so LIME / SHAP perturb the same way). Seconds per sentence per method.

    python benchmarks/cdt/local.py --model CKPT --dataset sst2 --limit 100 --out benchmarks/cdt/local_sst2
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from sstkit.commands.backdoor_data import DATASETS
from sstkit.commands.classifier_io import backbone_of, load_classifier
from sstkit.functional.cdt.explain import closest_competitor, explain_text, word_positions
from sstkit.loaders import load_tokenizer

METHODS = ("cdt", "cdt_fix_every_op", "integrated_gradients", "gradient_x_input", "lime", "kernel_shap", "random")


class Scorer:
    """The model's margin / probability with words masked out, as captum forward functions."""

    def __init__(self, model, pad_id: int) -> None:
        self.model, self.pad = model, pad_id
        self.label = self.competitor = 0

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids, (ids != self.pad).long())

    def margin(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.logits(ids)
        return out[:, self.label] - out[:, self.competitor]

    def prob(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(ids), -1)[:, self.label]


def _masked(ids: torch.Tensor, positions: list[list[int]], groups: list[list[int]], pad: int) -> torch.Tensor:
    """One row per group of words, with those words' tokens replaced by padding."""
    rows = ids.repeat(len(groups), 1)
    for r, words in enumerate(groups):
        for w in words:
            rows[r, positions[w]] = pad
    return rows


def _to_words(token_scores: torch.Tensor, positions: list[list[int]]) -> np.ndarray:
    return np.array([float(token_scores[p].sum()) if p else 0.0 for p in positions])


def explain_all(model, tokenizer, scorer: Scorer, text: str, args, rng: random.Random) -> dict:
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import KernelShap, LayerGradientXActivation, LayerIntegratedGradients, Lime

    inputs, words, positions = word_positions(tokenizer, text, args.max_length)
    ids = inputs["input_ids"]
    with torch.no_grad():
        logits = model(ids, inputs["attention_mask"])[0]
    scorer.label = int(logits.argmax())
    scorer.competitor = closest_competitor(logits, scorer.label)
    n = len(words)
    out, seconds = {}, {}
    with torch.no_grad():
        base = float(scorer.margin(ids))
        occl = base - scorer.margin(_masked(ids, positions, [[w] for w in range(n)], scorer.pad)).numpy()
    feature = torch.full_like(ids, n)  # special tokens: one extra feature, its score ignored
    for w, p in enumerate(positions):
        feature[0, p] = w
    baseline = torch.full_like(ids, scorer.pad)
    layer = model.encoder.embeddings.word_embeddings
    for method in METHODS:
        start = time.perf_counter()
        if method.startswith("cdt"):
            scores = np.array(explain_text(model, tokenizer, text, label=scorer.label, max_phrase=1,
                                           max_length=args.max_length,
                                           sign_fix="all" if method == "cdt_fix_every_op" else "layer").word_scores)
        elif method == "integrated_gradients":
            attr = LayerIntegratedGradients(scorer.margin, layer).attribute(ids, baseline, n_steps=args.ig_steps)
            scores = _to_words(attr[0].sum(-1).detach(), positions)
        elif method == "gradient_x_input":
            attr = LayerGradientXActivation(scorer.margin, layer).attribute(ids)
            scores = _to_words(attr[0].sum(-1).detach(), positions)
        elif method in ("lime", "kernel_shap"):
            explainer = (Lime(scorer.margin, interpretable_model=SkLearnRidge(alpha=1.0)) if method == "lime"
                         else KernelShap(scorer.margin))
            with torch.no_grad():
                attr = explainer.attribute(ids, baselines=scorer.pad, feature_mask=feature,
                                           n_samples=args.samples, perturbations_per_eval=args.samples)
            scores = np.array([float(attr[0, p[0]]) if p else 0.0 for p in positions])
        else:
            scores = np.array([rng.random() for _ in range(n)])
        seconds[method] = time.perf_counter() - start
        out[method] = scores
    return {"words": words, "positions": positions, "ids": ids, "occlusion": occl, "scores": out,
            "seconds": seconds}


@torch.no_grad()
def aopc(scorer: Scorer, ids: torch.Tensor, positions: list[list[int]], scores: np.ndarray) -> float:
    order = list(np.argsort(-scores))
    k_max = min(10, len(order))
    p0 = float(scorer.prob(ids))
    groups = [order[:k] for k in range(1, k_max + 1)]
    probs = scorer.prob(_masked(ids, positions, groups, scorer.pad)).numpy()
    return float(np.mean(p0 - probs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="sst2")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--ig-steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=100, help="perturbations of LIME and KernelSHAP")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="output prefix: writes <out>.csv, <out>.md, <out>.json")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = load_classifier(args.model)
    # Tables name the run (run/seed/checkpoints/file), not this machine's absolute path.
    model_name = "/".join(Path(args.model).parts[-4:])
    tokenizer = load_tokenizer(backbone_of(model))
    scorer = Scorer(model, tokenizer.pad_token_id)
    texts, _ = DATASETS[args.dataset]().read_split(args.split)
    texts = [t for t in texts if len(t.split()) >= 3][: args.limit]
    rng = random.Random(args.seed)
    per = {m: {"pearson": [], "spearman": [], "top1": [], "aopc": [], "seconds": []} for m in METHODS}
    per["occlusion"] = {"aopc": [], "seconds": []}
    for i, text in enumerate(texts):
        res = explain_all(model, tokenizer, scorer, text, args, rng)
        occl = res["occlusion"]
        per["occlusion"]["aopc"].append(aopc(scorer, res["ids"], res["positions"], occl))
        for method, scores in res["scores"].items():
            row = per[method]
            if np.std(scores) > 0 and np.std(occl) > 0:
                row["pearson"].append(pearsonr(scores, occl)[0])
                row["spearman"].append(spearmanr(scores, occl)[0])
            row["top1"].append(float(np.argmax(scores) == np.argmax(occl)))
            row["aopc"].append(aopc(scorer, res["ids"], res["positions"], scores))
            row["seconds"].append(res["seconds"][method])
        if i % 10 == 0:
            print(f"{i + 1}/{len(texts)} sentences", flush=True)
    rows = []
    for method, vals in per.items():
        rows.append({"method": method, "sentences": len(texts),
                     **{k: round(float(np.mean(v)), 4) if v else "" for k, v in vals.items()}})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = ["method", "sentences", "pearson", "spearman", "top1", "aopc", "seconds"]
    with open(f"{out}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in keys} for r in rows)
    lines = [f"Local explanations, {args.dataset} {args.split}, {len(texts)} sentences (≥ 3 words), model "
             f"`{model_name}`; agreement with leave-one-out occlusion (mean over sentences), deletion AOPC of the "
             f"predicted-class probability (K = min(10, words)), seconds per sentence (one CPU core).", "",
             "| method | Pearson | Spearman | top-1 match | AOPC | s / sentence |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r.get('pearson', '')} | {r.get('spearman', '')} | {r.get('top1', '')} | "
                     f"{r['aopc']} | {r['seconds']} |")
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    Path(f"{out}.json").write_text(json.dumps({"args": {**vars(args), "model": model_name}, "rows": rows}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
