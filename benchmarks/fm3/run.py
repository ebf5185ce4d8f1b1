"""FM3 benchmark: few-shot SST-2 + AG News jointly with hypernetwork adapters vs baselines, plus a held-out task.

Every arm uses sstkit's own code: ``MultitaskTextDataModule`` (k-shot subsets, temperature sampling),
``MultitaskTextClassifier`` (per-task heads), ``apply_hyper_adapters`` (``hyper`` / ``per_task`` banks),
``setfit_pairs`` + ``cosine_pair_loss`` (contrastive stage), in a plain PyTorch loop (the functional cores; no
Trainer, to keep the CPU cost down). One invocation runs one shot count and the given seeds, writes
``rows/k<K>-seed<S>.json``, and rewrites ``results.csv`` / ``results.md`` from every JSON file there.

    SSTKIT_DATA=../shared/data nice -n 10 python benchmarks/fm3/run.py --shots 16 --seeds 0 1
    python benchmarks/fm3/run.py --table-only     # regenerate the tables from rows/
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sstkit.datamodules import AGNewsDataModule, MultitaskTextDataModule
from sstkit.datamodules.multitask import TaskTexts, k_shot_indices
from sstkit.datamodules.tokenized import TokenizedTexts
from torch import nn

from sstkit.functional.contrastive_pairs import cosine_pair_loss, setfit_pairs
from sstkit.functional.hyper_adapters import (
    apply_hyper_adapters,
    freeze_for_adapters,
    parameters_per_task,
    train_only_task,
)
from sstkit.models import MultitaskTextClassifier
from sstkit.nn.hyper_adapter import set_condition

HERE = Path(__file__).resolve().parent
TASKS, LABELS = ["sst2", "agnews"], [2, 4]
HELDOUT = "agnews_business_vs_scitech"
HEADS = [r"re:(^|\.)heads\."]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=50, help="joint training steps (adapters, hypernetwork)")
    p.add_argument("--ft-steps", type=int, default=25, help="full fine-tuning steps per task")
    p.add_argument("--heldout-steps", type=int, default=20)
    p.add_argument("--heldout-lr", type=float, default=5e-3, help="new task embedding z_t / new adapter set")
    p.add_argument("--pairs", type=int, default=2, help="SetFit R: pair rounds per example")
    p.add_argument("--eval", type=int, default=200, help="test sentences per task")
    p.add_argument("--max-length", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--adapter-lr", type=float, default=1e-3, help="adapters / hypernetwork (and the contrastive stage)")
    p.add_argument("--head-lr", type=float, default=3e-3, help="heads of the adapter arms (and of held-out tasks)")
    p.add_argument("--ft-lr", type=float, default=1e-4, help="full fine-tuning")
    p.add_argument("--table-only", action="store_true")
    return p.parse_args()


# --- data ------------------------------------------------------------------------------------------------------
def heldout_task(k: int, seed: int, n_eval: int, used: set[int], max_length: int) -> tuple[TokenizedTexts, TokenizedTexts]:
    """AG News restricted to Business (0) vs Sci/Tech (1): k shots per class, none of the joint task's rows."""
    module = AGNewsDataModule(max_length=max_length)
    module.setup("fit"), module.setup("test")
    train, test = module.datasets["train"], module.datasets["test"]
    rows = [i for i in range(len(train)) if int(train.labels[i]) in (2, 3) and i not in used]
    pick = [rows[j] for j in k_shot_indices(train.labels[rows] - 2, k, seed + 100)]
    test_rows = [i for i in range(len(test)) if int(test.labels[i]) in (2, 3)][:n_eval]
    relabel = lambda d: TokenizedTexts(d.ids, d.offsets, d.labels - 2)  # noqa: E731
    return relabel(train.subset(pick)), relabel(test.subset(test_rows))


def loader(parts: list[TokenizedTexts], task_ids: list[int], batch_size: int, seed: int) -> Iterator[dict]:
    """Endless single-task batches, tasks in proportion to their size, each part carrying its given task id."""
    data = TaskTexts(parts, 0)
    remap = torch.tensor(task_ids)
    generator = torch.Generator().manual_seed(seed)
    while True:
        for start in torch.randperm(len(data), generator=generator).tolist():
            task, _ = data.locate(start)
            lo, hi = data.offsets[task], data.offsets[task + 1]
            rows = (torch.randperm(hi - lo, generator=generator)[:batch_size] + lo).tolist()
            batch = data[rows]
            batch["task_id"] = remap[batch["task_id"]]
            yield batch


def schedule(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warm = max(1, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))


def train(model: MultitaskTextClassifier, batches: Iterator[dict], steps: int, lr: float, weight_decay: float = 0.01,
          head_lr: float | None = None) -> None:  # fmt: skip
    """AdamW, warm-up + linear decay, gradients clipped at norm 1; heads at ``head_lr`` if given."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    heads = [p for n, p in named if n.startswith("heads.")] if head_lr else []
    rest = [p for n, p in named if not (head_lr and n.startswith("heads."))]
    groups = [{"params": rest, "lr": lr}] + ([{"params": heads, "lr": head_lr}] if heads else [])
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    params = [p for _, p in named]
    sched = schedule(optimizer, steps)
    model.train()
    for _ in range(steps):
        batch = next(batches)
        logits = model(batch["input_ids"], batch["attention_mask"], task_ids=batch["task_id"])
        loss = F.cross_entropy(logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        # A hypernetwork's generated weights move by lr × |h| per generator entry: clipping keeps early steps sane.
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        sched.step()


@torch.no_grad()
def embed(model: MultitaskTextClassifier, data: TokenizedTexts, task: int, batch_size: int = 64) -> torch.Tensor:
    model.eval()
    texts, out = TaskTexts([data], 0), []
    for start in range(0, len(texts), batch_size):
        batch = texts[list(range(start, min(start + batch_size, len(texts))))]
        set_condition(model, torch.full((batch["input_ids"].shape[0],), task))
        out.append(model.encode(batch["input_ids"], batch["attention_mask"]))
    return torch.cat(out)


@torch.no_grad()
def accuracy(model: MultitaskTextClassifier, data: TokenizedTexts, task: int, batch_size: int = 64) -> float:
    model.eval()
    texts, correct = TaskTexts([data], 0), 0
    for start in range(0, len(texts), batch_size):
        batch = texts[list(range(start, min(start + batch_size, len(texts))))]
        ids = torch.full((batch["input_ids"].shape[0],), task)
        logits = model(batch["input_ids"], batch["attention_mask"], task_ids=ids)[:, : model.task_labels[task]]
        correct += int((logits.argmax(-1) == batch["labels"]).sum())
    return correct / len(texts)


def logreg(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor) -> float:
    clf = LogisticRegression(max_iter=2000).fit(train_x.numpy(), train_y.numpy())
    return float((torch.from_numpy(clf.predict(test_x.numpy())) == test_y).float().mean())


def contrastive(model: MultitaskTextClassifier, data: TokenizedTexts, task: int, rounds: int, seed: int, lr: float,
                batch_size: int) -> None:  # fmt: skip
    """SetFit's stage: one pass over R·2·n pairs with the cosine-similarity loss (whatever of ``model`` trains)."""
    pairs, targets = setfit_pairs(data.labels, rounds, seed)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    steps = math.ceil(len(order) / batch_size)
    sched, texts = schedule(optimizer, steps), TaskTexts([data], 0)
    model.train()
    for s in range(steps):
        chunk = order[s * batch_size : (s + 1) * batch_size]
        both = texts[[int(pairs[i, 0]) for i in chunk] + [int(pairs[i, 1]) for i in chunk]]
        set_condition(model, torch.full((len(chunk) * 2,), task))
        z = model.encode(both["input_ids"], both["attention_mask"])
        loss = cosine_pair_loss(z[: len(chunk)], z[len(chunk) :], targets[chunk])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sched.step()


def n_params(model: nn.Module, prefix: str = "") -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith(prefix))


def head_params(labels: int, hidden: int = 384) -> int:
    return hidden * labels + labels


# --- one (k, seed) --------------------------------------------------------------------------------------------
def run_one(args: argparse.Namespace, k: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    dm = MultitaskTextDataModule(tasks=TASKS, k_shot=k, seed=seed, max_length=args.max_length,
                                 batch_size=args.batch_size, limit_eval_samples=args.eval)  # fmt: skip
    dm.setup("fit"), dm.setup("test")
    train_parts, test_parts = dm.datasets["train"].parts, dm.datasets["test"].parts
    agnews_full = dm.task_modules[1].datasets["train"]
    used = set(k_shot_indices(agnews_full.labels, k, seed + 1))
    held_train, held_test = heldout_task(k, seed, args.eval, used, args.max_length)
    base = MultitaskTextClassifier("minilm", num_labels=LABELS, task_names=TASKS)
    rows: list[dict] = []

    def record(method: str, task: str, acc: float, per_task: int, shared: int, seconds: float) -> None:
        rows.append({"k": k, "seed": seed, "method": method, "task": task, "acc": round(100 * acc, 2),
                     "trainable_per_task": per_task, "trainable_shared": shared, "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
        save(args, k, seed, rows, complete=False)  # a killed run keeps what it measured

    def joint_batches(s: int) -> Iterator[dict]:
        sampler_loader = dm.train_dataloader()
        epoch = 0
        while True:
            sampler_loader.sampler.set_epoch(epoch + 1000 * s)
            yield from sampler_loader
            epoch += 1

    # Frozen encoder + logistic regression (also the frozen features' own baseline on the held-out task).
    t = time.time()
    for task, name in enumerate(TASKS + [HELDOUT]):
        tr, te = (train_parts[task], test_parts[task]) if task < 2 else (held_train, held_test)
        acc = logreg(embed(base, tr, 0), tr.labels, embed(base, te, 0), te.labels)
        record("frozen+logreg", name, acc, head_params(int(tr.labels.max()) + 1), 0, time.time() - t)

    # Full fine-tuning, one model per task.
    for task, name in enumerate(TASKS):
        t = time.time()
        model = MultitaskTextClassifier("minilm", num_labels=[LABELS[task]], task_names=[name])
        train(model, loader([train_parts[task]], [0], args.batch_size, seed), args.ft_steps, args.ft_lr)
        record("full fine-tuning", name, accuracy(model, test_parts[task], 0), n_params(model), 0, time.time() - t)

    # SetFit: contrastive full fine-tuning of the body, then logistic regression, one model per task.
    for task, name in enumerate(TASKS):
        t = time.time()
        model = copy.deepcopy(base)
        contrastive(model, train_parts[task], 0, args.pairs, seed, 2e-5, args.batch_size)
        acc = logreg(embed(model, train_parts[task], 0), train_parts[task].labels, embed(model, test_parts[task], 0),
                     test_parts[task].labels)  # fmt: skip
        record("setfit (contrastive body + logreg)", name, acc, n_params(model.encoder) + head_params(LABELS[task]), 0,
               time.time() - t)  # fmt: skip

    # Adapters: the per-task baseline, the hypernetwork, and the hypernetwork after a contrastive stage (FM3).
    for method, kind, stage in (("per-task adapters", "per_task", False), ("hypernetwork adapters", "hyper", False),
                                ("FM3: contrastive + hypernetwork", "hyper", True)):  # fmt: skip
        t = time.time()
        model = copy.deepcopy(base)
        bank = apply_hyper_adapters(model, 3 if kind == "per_task" else 2, kind, bottleneck=16, task_dim=64, hyper_dim=32)
        if stage:  # the contrastive stage moves only the adapters (the backbone stays frozen)
            freeze_for_adapters(model)
            for task in range(2):
                contrastive(model, train_parts[task], task, args.pairs, seed, args.adapter_lr, args.batch_size)
        freeze_for_adapters(model, HEADS)
        train(model, joint_batches(seed), args.steps, args.adapter_lr, head_lr=args.head_lr)
        cost = parameters_per_task(bank)
        for task, name in enumerate(TASKS):
            record(method, name, accuracy(model, test_parts[task], task), cost["per_task"] + head_params(LABELS[task]),
                   cost["shared"], time.time() - t)  # fmt: skip
        # Held-out task: a new task id; hypernetwork: only a new z_t (+ head) trains; per-task: a new adapter set.
        t = time.time()
        new = model.add_task(HELDOUT, 2)
        if kind == "hyper":
            bank.add_task()
        freeze_for_adapters(model, [rf"re:^heads\.{new}\."])
        if kind == "hyper":
            handle = train_only_task(bank, new)
        train(model, loader([held_train], [new], args.batch_size, seed), args.heldout_steps, args.heldout_lr,
              weight_decay=0.0, head_lr=args.head_lr)
        if kind == "hyper":
            handle.remove()
        record(method, HELDOUT, accuracy(model, held_test, new), cost["per_task"] + head_params(2), 0, time.time() - t)
    return rows


# --- tables -------------------------------------------------------------------------------------------------------
def tables() -> None:
    rows = [r for f in sorted((HERE / "rows").glob("*.json")) for r in json.loads(f.read_text())["rows"]]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["k"], r["method"], r["task"]), []).append(r)
    lines = ["k,method,task,acc_mean,acc_std,n,seeds,trainable_per_task,trainable_shared,seconds_mean"]
    settings = sorted({json.dumps(json.loads(f.read_text())["settings"], sort_keys=True)
                       for f in (HERE / "rows").glob("*.json")})  # fmt: skip
    md = ["## FM3: few-shot SST-2 + AG News jointly, and a held-out task (MiniLM; CPU-sized, see README.md)", "",
          f"Settings: {'; '.join(settings)}. Test accuracy on the first {json.loads(settings[0])['eval'] if settings else '?'} "
          "test rows per task; n = seeds; s = wall seconds of the arm on a shared 2-core machine (noisy). "
          "Trainable per task includes the task's head; hypernetwork arms share the rest.", "",
          "| k | method | task | test acc % (mean ± std) | n | trainable per task | shared trainable | s |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for (k, method, task), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        accs = [r["acc"] for r in rs]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        seeds = " ".join(str(r["seed"]) for r in rs)
        secs = statistics.mean(r["seconds"] for r in rs)
        lines.append(f"{k},{method},{task},{statistics.mean(accs):.2f},{std:.2f},{len(rs)},{seeds},"
                     f"{rs[0]['trainable_per_task']},{rs[0]['trainable_shared']},{secs:.0f}")  # fmt: skip
        md.append(f"| {k} | {method} | {task} | {statistics.mean(accs):.2f} ± {std:.2f} | {len(rs)} | "
                  f"{rs[0]['trainable_per_task']:,} | {rs[0]['trainable_shared']:,} | {secs:.0f} |")  # fmt: skip
    means: dict[tuple, list[float]] = {}
    for (k, method, task), rs in groups.items():
        if task in TASKS:
            for r in rs:
                means.setdefault((k, method, r["seed"]), []).append(r["acc"])
    md += ["", "Mean over SST-2 and AG News (per seed, then mean ± std over seeds):", "",
           "| k | method | mean acc % | n |", "| --- | --- | --- | --- |"]
    per_method: dict[tuple, list[float]] = {}
    for (k, method, _seed), accs in means.items():
        if len(accs) == len(TASKS):
            per_method.setdefault((k, method), []).append(statistics.mean(accs))
    for (k, method), accs in sorted(per_method.items()):
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        md.append(f"| {k} | {method} | {statistics.mean(accs):.2f} ± {std:.2f} | {len(accs)} |")
    md += ["", "<sub>Generated by `python benchmarks/fm3/run.py --table-only` from rows/*.json; do not edit by hand.</sub>"]
    (HERE / "results.csv").write_text("\n".join(lines) + "\n")
    (HERE / "results.md").write_text("\n".join(md) + "\n")


def save(args: argparse.Namespace, k: int, seed: int, rows: list[dict], complete: bool) -> None:
    settings = {key: v for key, v in vars(args).items() if key not in ("seeds", "table_only")}
    (HERE / "rows" / f"k{k}-seed{seed}.json").write_text(
        json.dumps({"settings": settings, "complete": complete, "rows": rows}, indent=1) + "\n")


def main() -> None:
    args = parse()
    if not args.table_only:
        torch.set_num_threads(1)
        (HERE / "rows").mkdir(exist_ok=True)
        for seed in args.seeds:
            save(args, args.shots, seed, run_one(args, args.shots, seed), complete=True)
            tables()
    tables()


if __name__ == "__main__":
    main()
