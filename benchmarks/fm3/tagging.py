"""FM3 with a token-classification task: one hypernetwork for SST-2, AG News and AG News name tagging (CPU-sized).

``agnews_names`` tags every word of an AG News text O / B-NAME / I-NAME / NUM by a capitalisation rule (a stand-in
for NER, whose data do not ship; see ``sstkit.datamodules.token_tagging``). Arms, in sstkit's code, in a plain
PyTorch loop over ``MultitaskTextClassifier.step`` (the loss of both task kinds):

* frozen MiniLM + logistic regression on each tagged token's hidden state (and on mean-pooled sentences);
* per-task adapters (one adapter set per task) + heads, the three tasks jointly;
* hypernetwork adapters (one generator, z_t per task) + heads, jointly;
* the same after the in-fit contrastive stage (``HyperAdapters(contrastive_steps=…)``'s loss, SetFit pairs
  within each sentence-task batch, the heads waiting), here run by the same loop.

Writes ``tagging_rows/steps<N>-seed<S>.json`` per run and ``tagging_results.md`` / ``.csv`` from all of them.

    SSTKIT_DATA=../shared/data nice -n 10 python benchmarks/fm3/tagging.py --seeds 0 1 2
    SSTKIT_DATA=../shared/data nice -n 10 python benchmarks/fm3/tagging.py --seeds 0 --steps 200
    python benchmarks/fm3/tagging.py --table-only
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression
from sstkit.datamodules import MultitaskTextDataModule
from sstkit.datamodules.multitask import TaskTexts

from sstkit.functional.contrastive_pairs import in_batch_pair_loss
from sstkit.functional.hyper_adapters import apply_hyper_adapters, freeze_for_adapters, parameters_per_task
from sstkit.models import MultitaskTextClassifier
from sstkit.models.multitask_classifier import IGNORE, _f1_without_outside, _tag_counts
from sstkit.nn.hyper_adapter import set_condition

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import head_params, schedule  # noqa: E402  (the main benchmark's schedule and head count)

TASKS, LABELS, TYPES = ["sst2", "agnews", "agnews_names"], [2, 4, 4], ["sequence", "sequence", "token"]
HEADS = [r"re:(^|\.)heads\."]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shots", type=int, default=16, help="k per class; for tagging: each entity tag >= k times")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=60, help="joint training steps")
    p.add_argument("--contrastive-steps", type=int, default=20, help="of --steps, the contrastive stage's")
    p.add_argument("--eval", type=int, default=200, help="test texts per task")
    p.add_argument("--max-length", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--adapter-lr", type=float, default=1e-3)
    p.add_argument("--head-lr", type=float, default=3e-3)
    p.add_argument("--table-only", action="store_true")
    return p.parse_args()


def batches(dm: MultitaskTextDataModule, seed: int) -> Iterator[dict]:
    loader, epoch = dm.train_dataloader(), 0
    while True:
        loader.sampler.set_epoch(epoch + 1000 * seed)
        yield from loader
        epoch += 1


def train(model: MultitaskTextClassifier, data: Iterator[dict], args: argparse.Namespace, contrastive: int) -> None:
    """AdamW (heads at head_lr), warm-up + linear decay, clip 1; the first ``contrastive`` steps as the callback's."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if not n.startswith("heads.")], "lr": args.adapter_lr},
              {"params": [p for n, p in named if n.startswith("heads.")], "lr": args.head_lr}]  # fmt: skip
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    sched = schedule(optimizer, args.steps)
    model.train()
    for step in range(args.steps):
        batch = next(data)
        loss = None
        if step < contrastive:  # what HyperAdapters.contrastive_loss does inside `sstkit fit`
            set_condition(model, batch["task_id"])
            emb = model.encode(batch["input_ids"], batch["attention_mask"])
            loss = in_batch_pair_loss(emb, batch["labels"], 2, seed=step)
        if loss is None:
            loss = model.step(batch, "train").loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
        optimizer.step()
        sched.step()


@torch.no_grad()
def evaluate(model: MultitaskTextClassifier, part, task: int) -> tuple[float, float | None]:
    """Accuracy (sentences, or tagged tokens) and, for the tagging task, the token F1 without O."""
    model.eval()
    texts, counts = TaskTexts([part], 0), _tag_counts(LABELS[task])
    right = total = 0
    for start in range(0, len(texts), 64):
        batch = texts[list(range(start, min(start + 64, len(texts))))]
        logits, token_logits = model.forward_tasks(batch["input_ids"], batch["attention_mask"],
                                                   task_ids=torch.full((len(batch["labels"]),), task))  # fmt: skip
        if TYPES[task] == "token":
            keep = batch["token_labels"] != IGNORE
            pred, gold = token_logits[..., : LABELS[task]].argmax(-1)[keep], batch["token_labels"][keep]
            counts.update(pred, gold)
        else:
            pred, gold = logits[:, : LABELS[task]].argmax(-1), batch["labels"]
        right, total = right + int((pred == gold).sum()), total + len(gold)
    return right / total, (float(_f1_without_outside(counts.compute())) if TYPES[task] == "token" else None)


@torch.no_grad()
def features(model: MultitaskTextClassifier, part, task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen features and targets: tagged tokens' hidden states, or mean-pooled sentences."""
    texts, xs, ys = TaskTexts([part], 0), [], []
    for start in range(0, len(texts), 64):
        batch = texts[list(range(start, min(start + 64, len(texts))))]
        hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        if TYPES[task] == "token":
            keep = batch["token_labels"] != IGNORE
            xs.append(hidden[keep]), ys.append(batch["token_labels"][keep])
        else:
            xs.append(model.pool(hidden, batch["attention_mask"])), ys.append(batch["labels"])
    return torch.cat(xs), torch.cat(ys)


def run_one(args: argparse.Namespace, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    dm = MultitaskTextDataModule(tasks=TASKS, k_shot=args.shots, seed=seed, max_length=args.max_length,
                                 batch_size=args.batch_size, limit_eval_samples=args.eval)  # fmt: skip
    dm.setup("fit"), dm.setup("test")
    train_parts, test_parts = dm.datasets["train"].parts, dm.datasets["test"].parts
    base = MultitaskTextClassifier("minilm", num_labels=LABELS, task_names=TASKS, task_types=TYPES).eval()
    rows: list[dict] = []

    def record(method: str, task: int, acc: float, f1: float | None, per_task: int, shared: int, t: float) -> None:
        rows.append({"k": args.shots, "seed": seed, "method": method, "task": TASKS[task], "acc": round(100 * acc, 2),
                     "f1_no_o": None if f1 is None else round(100 * f1, 2), "train_texts": len(train_parts[task]),
                     "trainable_per_task": per_task, "trainable_shared": shared, "seconds": round(time.time() - t, 1)})
        print(json.dumps(rows[-1]), flush=True)

    for task in range(3):
        t = time.time()
        (x, y), (tx, ty) = features(base, train_parts[task], task), features(base, test_parts[task], task)
        pred = torch.from_numpy(LogisticRegression(max_iter=2000).fit(x.numpy(), y.numpy()).predict(tx.numpy()))
        f1 = None
        if TYPES[task] == "token":
            counts = _tag_counts(LABELS[task])
            counts.update(pred, ty)
            f1 = float(_f1_without_outside(counts.compute()))
        record("frozen+logreg", task, float((pred == ty).float().mean()), f1, head_params(LABELS[task]), 0, t)

    for method, kind, contrastive in (("per-task adapters", "per_task", 0), ("hypernetwork adapters", "hyper", 0),
                                      ("FM3: in-fit contrastive stage + hypernetwork", "hyper", args.contrastive_steps)):  # fmt: skip
        t = time.time()
        model = copy.deepcopy(base)
        bank = apply_hyper_adapters(model, 3, kind, bottleneck=16, task_dim=64, hyper_dim=32)
        freeze_for_adapters(model, HEADS)
        train(model, batches(dm, seed), args, contrastive)
        cost, scores = parameters_per_task(bank), [evaluate(model, test_parts[task], task) for task in range(3)]
        for task, (acc, f1) in enumerate(scores):  # every row of the arm records the arm's whole time
            record(method, task, acc, f1, cost["per_task"] + head_params(LABELS[task]), cost["shared"], t)
    return rows


def tables() -> None:
    files = sorted((HERE / "tagging_rows").glob("*.json"))
    rows = [{**r, "steps": json.loads(f.read_text())["settings"]["steps"]} for f in files
            for r in json.loads(f.read_text())["rows"]]
    settings = sorted({json.dumps(json.loads(f.read_text())["settings"], sort_keys=True) for f in files})
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["steps"], r["task"], r["method"]), []).append(r)

    def stat(values: list[float]) -> str:
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"

    md = ["## FM3 with a token-classification task (MiniLM; SST-2 + AG News + AG News name tagging; CPU-sized)", "",
          f"Settings: {'; '.join(settings)}. Test: the first `eval` test texts per task. agnews_names: per-word tags "
          "O / B-NAME / I-NAME / NUM by a capitalisation rule, a stand-in for NER; acc = accuracy over tagged tokens "
          "(first sub-word of each word), F1 = token-level micro F1 over the three non-O tags. n = seeds; s = wall "
          "seconds of the arm (adapter arms: training and evaluating all three tasks; logreg: the task) on a shared 2-core "
          "machine.", "",
          "| steps | task | method | acc % (mean ± std) | F1 w/o O % | n | train texts | trainable per task | shared | s |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    csv = ["steps,task,method,acc_mean,acc_std,f1_no_o_mean,n,seeds,train_texts_mean,trainable_per_task,trainable_shared"]
    for (steps, task, method), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], TASKS.index(kv[0][1]), kv[0][2])):
        accs, f1s = [r["acc"] for r in rs], [r["f1_no_o"] for r in rs if r["f1_no_o"] is not None]
        texts = statistics.mean(r["train_texts"] for r in rs)
        md.append(f"| {steps} | {task} | {method} | {stat(accs)} | {stat(f1s) if f1s else '–'} | {len(rs)} | {texts:.0f} | "
                  f"{rs[0]['trainable_per_task']:,} | {rs[0]['trainable_shared']:,} | "
                  f"{statistics.mean(r['seconds'] for r in rs):.0f} |")  # fmt: skip
        csv.append(f"{steps},{task},{method},{statistics.mean(accs):.2f},{statistics.stdev(accs) if len(accs) > 1 else 0:.2f},"
                   f"{statistics.mean(f1s) if f1s else ''},{len(rs)},{' '.join(str(r['seed']) for r in rs)},{texts:.0f},"
                   f"{rs[0]['trainable_per_task']},{rs[0]['trainable_shared']}")  # fmt: skip
    md += ["", "<sub>Generated by `python benchmarks/fm3/tagging.py --table-only` from tagging_rows/*.json; do not edit "
           "by hand.</sub>"]
    (HERE / "tagging_results.md").write_text("\n".join(md) + "\n")
    (HERE / "tagging_results.csv").write_text("\n".join(csv) + "\n")


def main() -> None:
    args = parse()
    if not args.table_only:
        torch.set_num_threads(1)
        (HERE / "tagging_rows").mkdir(exist_ok=True)
        settings = {key: v for key, v in vars(args).items() if key not in ("seeds", "table_only")}
        for seed in args.seeds:
            rows = run_one(args, seed)
            (HERE / "tagging_rows" / f"steps{args.steps}-seed{seed}.json").write_text(json.dumps({"settings": settings, "rows": rows},
                                                                               indent=1) + "\n")  # fmt: skip
    tables()


if __name__ == "__main__":
    main()
