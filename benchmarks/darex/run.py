"""DAREx benchmark: delta pruning of MiniLM fine-tuned on SST-2 — DARE vs DAREx-q (3 ways) vs importance pruning.

Run from the repository root (sized for a shared 2-core CPU; see README.md for the time it took):

    SSTKIT_DATA=../shared/data nice -n 10 .venv/bin/python benchmarks/darex/run.py

Fine-tuned checkpoints and finished evaluations are reused, so adding a seed or a λ only runs what is new.

Step 1 fine-tunes all-MiniLM-L6-v2 with ``sstkit fit`` (configs/bert/sst2/finetune.yaml, or adamr.yaml for the
AdamR arms) on a seeded subset of SST-2's train.tsv, with a learning rate and length large enough for sizeable
deltas. Step 2 splits test.tsv into a validation half (q / η choice, rows 0–435) and a test half (rows 436–871),
and for each fine-tuned model and drop rate p evaluates: FT, the no-delta control (pretrained encoder + fine-tuned
head), DARE, DAREx-q with global / analytic (the paper's full q scan, and the official code's scan that stops once 80 % of
a layer's rows passed their minimum) / unsupervised q, magnitude and WANDA. Stochastic arms are averaged
over mask seeds that differ from the ones used to choose q. One summary.json per (model, arm, p, mask seed) goes
to ``runs/``; step 3 renders the table with ``sstkit table``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SSTKIT = [sys.executable, "-m", "sstkit"]


def finetune(runs: Path, optimizer: str, lam: float, seed: int, args: argparse.Namespace) -> Path:
    """Fine-tunes one model (skipped when its checkpoint exists) and returns the checkpoint path."""
    name = f"ft-{optimizer}{'' if optimizer == 'adam' else f'-{lam:g}'}"
    ckpt = runs / "finetune" / name / f"seed{seed}" / "checkpoints" / "last.ckpt"
    if ckpt.is_file():
        return ckpt
    # Both arms use adamr.yaml (same schedule); AdamR with λ = 0 is exactly torch Adam.
    config = REPO / "configs" / "bert" / "sst2" / "adamr.yaml"
    cmd = [*SSTKIT, "fit", "--config", str(config), "--name", name, "--run_root", str(runs / "finetune"),
           "--seed_everything", str(seed), "--data.init_args.limit_train_samples", str(args.train_samples),
           "--data.init_args.max_length", str(args.max_length), "--data.init_args.limit_eval_samples", "256",
           "--trainer.max_epochs", str(args.epochs), "--trainer.val_check_interval", "1.0",
           "--trainer.enable_progress_bar", "false", "--optimizer.init_args.lr", str(args.lr),
           "--optimizer.init_args.delta_decay", str(lam)]
    print(" ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    return ckpt


def write(runs: Path, model_name: str, ft_seed: int, arm: str, p: float | None, mask_seed: int, acc: float,
          extra: dict) -> None:
    folder = runs / "eval" / model_name / f"{arm}-p{p}" / f"ft{ft_seed}-mask{mask_seed}"
    folder.mkdir(parents=True, exist_ok=True)
    record = {"name": "darex", "seed": 1000 * ft_seed + mask_seed, "status": "finished",
              "config": {"finetune": model_name, "arm": arm, "p": "-" if p is None else p, "ft_seed": ft_seed,
                         "mask_seed": mask_seed},
              "metrics": {"test/acc": acc, **extra}}
    (folder / "summary.json").write_text(json.dumps(record, indent=2))


def done_marker(runs: Path, model_name: str, ft_seed: int, args: argparse.Namespace) -> Path:
    """Written when a model's evaluation finished; names the drop rates and mask seeds it covered."""
    tag = "-".join(f"{p:g}" for p in args.p)
    return runs / "eval" / model_name / f".done-ft{ft_seed}-p{tag}-m{args.mask_seeds}"


def evaluate(runs: Path, ckpt: Path, model_name: str, ft_seed: int, args: argparse.Namespace) -> None:
    from sstkit.commands.classifier_io import accuracy, load_classifier, make_batches, read_texts
    from sstkit.commands.delta_session import DeltaSession
    from sstkit.functional.delta import delta_stats
    from sstkit.loaders import load_encoder

    texts, labels = read_texts(Path(args.data) / "sst2" / "test.tsv")
    half = len(texts) // 2
    n_val = min(args.val_samples, half)  # a prefix of the validation half: q / η search is most of the cost
    val = make_batches(texts[:n_val], labels[:n_val], "minilm", args.max_length)
    end = half + min(args.test_samples, len(texts) - half)
    test = make_batches(texts[half:end], labels[half:end], "minilm", args.max_length)
    session = DeltaSession(load_classifier(ckpt), load_encoder("minilm"))
    stats = delta_stats(session.delta, session.mean_inputs(val))
    search_seeds, test_seeds = list(range(args.search_seeds)), [100 + s for s in range(args.mask_seeds)]
    write(runs, model_name, ft_seed, "FT", None, 0, session.score(None, test), stats)
    write(runs, model_name, ft_seed, "control (no delta)", None, 0, accuracy(session.control(), test), stats)
    norms = session.wanda_norms(val)
    for p in args.p:
        start = time.perf_counter()
        for arm, method in (("magnitude", "magnitude"), ("WANDA", "wanda")):
            write(runs, model_name, ft_seed, arm, p, 0, session.score(session.prune(method, p, 0, None, norms), test),
                  stats)
        choices = {"DARE": None,
                   "DAREx-q global": session.choose_global(p, val, search_seeds, fine_span=args.fine_span,
                                                           coarse_step=args.coarse_step),
                   "DAREx-q analytic": session.choose_analytic(p, val, None, val, search_seeds, args.eta_grid),
                   "DAREx-q analytic, stop 0.8": session.choose_analytic(p, val, None, val, search_seeds,
                                                                         args.eta_grid, stop_share=0.8),
                   "DAREx-q unsupervised": session.choose_unsupervised(p, val, search_seeds[:1],
                                                                       fine_span=args.fine_span,
                                                                       coarse_step=args.coarse_step)}
        for arm, choice in choices.items():
            method = "dare" if choice is None else "darex-q"
            extra = dict(stats, q=1 - p) if choice is None else dict(stats, q=choice.mean_q)
            if choice is not None and choice.eta is not None:
                extra["eta"] = choice.eta
            for seed in test_seeds:
                acc = session.score(session.prune(method, p, seed, None if choice is None else choice.q), test)
                write(runs, model_name, ft_seed, arm, p, seed, acc, extra)
            print(f"{model_name} seed{ft_seed} p={p} {arm}: q={extra['q']:.4f}", flush=True)
        print(f"{model_name} p={p}: {time.perf_counter() - start:.0f} s", flush=True)
    done_marker(runs, model_name, ft_seed, args).touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--data", default=None, help="data folder (default $SSTKIT_DATA)")
    parser.add_argument("--ft-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--adamr-lambdas", type=float, nargs="*", default=[1.0, 0.1])
    parser.add_argument("--p", type=float, nargs="+", default=[0.99, 0.9])
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--mask-seeds", type=int, default=3, help="mask seeds of the test evaluation")
    parser.add_argument("--search-seeds", type=int, default=1, help="mask seeds per point of the q search")
    parser.add_argument("--val-samples", type=int, default=200, help="validation rows used for q / η")
    parser.add_argument("--test-samples", type=int, default=436, help="test-half rows evaluated")
    parser.add_argument("--coarse-step", type=float, default=None, help="coarse q step (default min(1-p, 0.1))")
    parser.add_argument("--fine-span", type=float, default=0.3, help="fine grid half-width in coarse steps")
    parser.add_argument("--eta-grid", type=float, nargs="+", default=None, help="default: the session's ETA_GRID")
    args = parser.parse_args()
    args.data = args.data or os.environ.get("SSTKIT_DATA", "data")
    if args.eta_grid is None:
        from sstkit.commands.delta_session import ETA_GRID

        args.eta_grid = list(ETA_GRID)
    arms = [("adam", 0.0)] + [("adamr", lam) for lam in args.adamr_lambdas]
    for seed in args.ft_seeds:
        for optimizer, lam in arms:
            ckpt = finetune(args.runs, optimizer, lam, seed, args)
            name = "Adam" if optimizer == "adam" else f"AdamR λ={lam:g}"
            if done_marker(args.runs, name, seed, args).is_file():
                print(f"{name} seed{seed}: evaluated earlier, skipping", flush=True)
                continue
            evaluate(args.runs, ckpt, name, seed, args)
    subprocess.run([*SSTKIT, "table", str(HERE / "spec.yaml")], check=True, cwd=REPO)


if __name__ == "__main__":
    main()
