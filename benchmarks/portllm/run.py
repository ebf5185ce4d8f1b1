"""PortLLM benchmark: a LoRA patch from MiniLM fine-tuned on SST-2, applied to MiniLM bases evolved further.

Run from the repository root (sized for a shared 2-core CPU; see README.md for the time it took):

    SSTKIT_DATA=../shared/data nice -n 10 .venv/bin/python benchmarks/portllm/run.py

1. LoRA fine-tuning of all-MiniLM-L6-v2 on a seeded SST-2 subset (configs/bert/sst2/lora_patch.yaml; 4000
   sentences, 2 epochs by default), then ``sstkit patch extract``.
2. Evolution: continued unsupervised training of the encoder on SST-2 + AG News text (SimCSE by default, MLM
   through a fresh head with ``--evolve-objective mlm``) for each length in ``--evolve-steps``; each evolved
   encoder is saved as an HF folder with ``‖θ_t − θ_0‖``.
3. Per evolved base: head only (evolved encoder + the patch's head, no update), PortLLM (``sstkit patch apply``),
   LoRA re-trained on the evolved base (upper bound), and the original fine-tuned model; accuracy on SST-2's
   test.tsv (first 436 sentences by default), and the peak RSS of the process that applies the patch vs the one that trains LoRA.
One summary.json per row goes to ``runs/eval``; ``sstkit table`` renders results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIG = REPO / "configs" / "bert" / "sst2" / "lora_patch.yaml"
# Runs one sstkit command in a fresh interpreter and prints its own peak RSS (MiB) as the last line.
MEASURE = ("import resource, sys\nfrom sstkit.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
           "    assert not e.code, e.code\nprint('peak_rss_mib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")


def sstkit_measured(*args: str) -> float:
    """Runs ``sstkit *args`` in a subprocess; returns its peak resident memory in MiB."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *args], check=True, cwd=REPO, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1].split()[1])


def lora_finetune(runs: Path, name: str, backbone: str, args: argparse.Namespace) -> tuple[Path, float]:
    ckpt = runs / "lora" / name / "seed0" / "checkpoints" / "last.ckpt"
    rss_file = ckpt.parent.parent / "peak_rss.json"
    if not ckpt.is_file():
        rss = sstkit_measured("fit", "--config", str(CONFIG), "--name", name, "--run_root", str(runs / "lora"),
                              "--model.init_args.backbone", backbone,
                              "--data.init_args.limit_train_samples", str(args.train_samples),
                              "--data.init_args.max_length", str(args.max_length),
                              "--data.init_args.limit_eval_samples", "256", "--trainer.val_check_interval", "1.0",
                              "--trainer.max_epochs", str(args.epochs),
                              "--trainer.enable_progress_bar", "false")
        rss_file.write_text(json.dumps({"peak_rss_mib": rss}))
    return ckpt, json.loads(rss_file.read_text())["peak_rss_mib"]


def evolve(out: Path, steps: int, args: argparse.Namespace) -> float:
    """Continued training of MiniLM for ``steps`` steps; writes an HF encoder folder; returns ‖θ_t − θ_0‖.

    ``--evolve-objective simcse`` (default) continues MiniLM's own kind of training, contrastive sentence
    embeddings (unsupervised SimCSE: two dropout views of each sentence are positives, the batch the negatives);
    ``mlm`` trains masked-language modelling through a fresh MLM head (MiniLM ships without one).
    """
    import torch

    from sstkit.commands.classifier_io import read_texts
    from sstkit.loaders import load_encoder, load_tokenizer

    if (out / "norm.json").is_file():
        return json.loads((out / "norm.json").read_text())["delta_norm"]
    torch.manual_seed(0)
    tokenizer = load_tokenizer("minilm")
    base = load_encoder("minilm")
    initial = {k: v.clone() for k, v in base.state_dict().items()}
    sst, _ = read_texts(Path(args.data) / "sst2" / "train.tsv", limit=20000, offset=20000)
    agnews = [line.split("\t")[0] for line in (Path(args.data) / "agnews" / "train.tsv").read_text().splitlines()[:20000]]
    texts = [t for pair in zip(sst, agnews, strict=False) for t in pair]
    generator = torch.Generator().manual_seed(0)

    def batches(n: int):
        for step in range(n):
            idx = torch.randint(len(texts), (args.batch_size,), generator=generator).tolist()
            yield step, tokenizer([texts[i] for i in idx], truncation=True, max_length=args.max_length,
                                  padding=True, return_tensors="pt")

    encoder = evolve_simcse(base, batches(steps), args) if args.evolve_objective == "simcse" else \
        evolve_mlm(base, tokenizer, batches, steps, args)
    encoder.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    evolved = load_encoder(str(out)).state_dict()
    norm = sum(float((evolved[k].float() - v.float()).pow(2).sum()) for k, v in initial.items()) ** 0.5
    (out / "norm.json").write_text(json.dumps({"delta_norm": norm, "steps": steps, "objective": args.evolve_objective}))
    return norm


def evolve_simcse(encoder, batches, args: argparse.Namespace):
    """Unsupervised SimCSE on mean-pooled embeddings (temperature 0.05); returns the trained encoder."""
    import torch
    import torch.nn.functional as F

    optimizer = torch.optim.AdamW(encoder.parameters(), lr=args.evolve_lr)
    encoder.train()  # dropout makes the two views differ
    for step, batch in batches:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        views = [F.normalize((encoder(**batch).last_hidden_state * mask).sum(1) / mask.sum(1), dim=-1) for _ in range(2)]
        loss = F.cross_entropy(views[0] @ views[1].T / 0.05, torch.arange(len(mask)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"evolve (simcse): step {step} loss {loss.item():.3f}", flush=True)
    return encoder.eval()


def evolve_mlm(base, tokenizer, batches, steps: int, args: argparse.Namespace):
    """MLM through a fresh head, trained alone first (``--head-warmup`` steps at ``--head-lr``)."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    mlm = BertForMaskedLM(BertConfig(**base.config.to_dict()))
    mlm.bert.load_state_dict(base.state_dict(), strict=False)
    mlm.tie_weights()
    collate = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)

    def train(n: int, params: list, lr: float, tag: str) -> None:
        optimizer = torch.optim.AdamW(params, lr=lr)
        mlm.train()
        for step, enc in batches(n):
            batch = collate([{"input_ids": ids[m.bool()]} for ids, m in zip(enc["input_ids"], enc["attention_mask"], strict=True)])
            loss = mlm(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step % 50 == 0:
                print(f"evolve {steps} ({tag}): step {step} mlm loss {loss.item():.3f}", flush=True)

    # Gradients through a random head wreck the encoder instead of evolving it: train the head alone first.
    encoder_params = list(mlm.bert.parameters())
    head_params = [p for n, p in mlm.named_parameters() if not n.startswith("bert.")]
    for param in encoder_params:
        param.requires_grad_(False)
    train(args.head_warmup, head_params, args.head_lr, "head warm-up")
    for param in encoder_params:
        param.requires_grad_(True)
    train(steps, list(mlm.parameters()), args.evolve_lr, "evolution")
    return mlm.bert


def write(runs: Path, arm: str, steps: int, acc: float, extra: dict) -> None:
    folder = runs / "eval" / f"steps{steps}" / arm.replace(" ", "_")
    folder.mkdir(parents=True, exist_ok=True)
    record = {"name": "portllm", "seed": 0, "status": "finished", "config": {"arm": arm, "evolve_steps": steps},
              "metrics": {"test/acc": acc, **extra}}
    (folder / "summary.json").write_text(json.dumps(record, indent=2))
    print(f"steps {steps} {arm}: acc {acc:.4f} {extra}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=HERE / "runs")
    parser.add_argument("--data", default=None, help="data folder (default $SSTKIT_DATA)")
    parser.add_argument("--evolve-steps", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--evolve-lr", type=float, default=1e-4)
    parser.add_argument("--evolve-objective", choices=("simcse", "mlm"), default="simcse")
    parser.add_argument("--head-warmup", type=int, default=100, help="mlm: head-only steps before each evolution")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the head warm-up")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of the MLM evolution")
    parser.add_argument("--train-samples", type=int, default=4000, help="SST-2 sentences of each LoRA fine-tuning")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each LoRA fine-tuning")
    parser.add_argument("--test-samples", type=int, default=436, help="first rows of test.tsv evaluated")
    parser.add_argument("--max-length", type=int, default=64)
    args = parser.parse_args()
    args.data = args.data or os.environ.get("SSTKIT_DATA", "data")
    from safetensors.torch import load_file

    from sstkit.commands.classifier_io import accuracy, load_classifier, make_batches, read_texts
    from sstkit.models.text_classifier import TextClassifier

    texts, labels = read_texts(Path(args.data) / "sst2" / "test.tsv", limit=args.test_samples)
    test = make_batches(texts, labels, "minilm", args.max_length)
    ckpt, train_rss = lora_finetune(args.runs, "lora-original", "minilm", args)
    patch = args.runs / "patch"
    sstkit_measured("patch", "extract", "--finetuned", str(ckpt), "--out", str(patch))
    original = args.runs / "patched" / "original"
    sstkit_measured("patch", "apply", "--base", "minilm", "--patch", str(patch), "--out", str(original))
    original_acc = accuracy(load_classifier(original), test)
    head = {k.removeprefix("save/head."): v for k, v in load_file(str(patch / "patch.safetensors")).items()
            if k.startswith("save/head.")}

    def head_only(backbone: str) -> float:
        model = TextClassifier(backbone=backbone, num_labels=2)
        model.head.load_state_dict(head)
        return accuracy(model.eval(), test)

    # Step 0: the original base with the trained head but without the LoRA update, what the patch adds.
    write(args.runs, "evolved base + head only", 0, head_only("minilm"), {"theta_t_minus_theta_0": 0.0})
    write(args.runs, "original fine-tuned", 0, original_acc, {"peak_rss_mib": train_rss})
    for steps in args.evolve_steps:
        evolved = args.runs / "evolved" / f"steps{steps}"
        norm = evolve(evolved, steps, args)
        common = {"theta_t_minus_theta_0": norm}
        write(args.runs, "evolved base + head only", steps, head_only(str(evolved)), common)
        out = args.runs / "patched" / f"steps{steps}"
        apply_rss = sstkit_measured("patch", "apply", "--base", str(evolved), "--patch", str(patch), "--out", str(out))
        write(args.runs, "PortLLM (evolved + old patch)", steps, accuracy(load_classifier(out), test),
              {**common, "peak_rss_mib": apply_rss})
        retrained, rss = lora_finetune(args.runs, f"lora-steps{steps}", str(evolved), args)
        sstkit_measured("patch", "extract", "--finetuned", str(retrained), "--out", str(args.runs / f"patch{steps}"))
        sstkit_measured("patch", "apply", "--base", str(evolved), "--patch", str(args.runs / f"patch{steps}"),
                        "--out", str(args.runs / "patched" / f"retrained{steps}"))
        write(args.runs, "LoRA re-trained on evolved", steps,
              accuracy(load_classifier(args.runs / "patched" / f"retrained{steps}"), test), {**common, "peak_rss_mib": rss})
    subprocess.run([sys.executable, "-m", "sstkit", "table", str(HERE / "spec.yaml")], check=True, cwd=REPO)


if __name__ == "__main__":
    main()
