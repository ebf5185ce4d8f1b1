"""MLKD benchmark driver: SST-2 vs AG News and AG News one-vs-rest, per seed, then the results table.

Not run at full size: the committed ``results.md`` holds one seed each of SST-2 vs AG News, AG News 0 and 1 at CPU
scales (README.md has the commands; each row says its steps). ``--smoke`` runs the whole chain at toy size (tiny OPT, a few dozen steps, 200 texts per side) to
check that it works; its numbers mean nothing.

    python benchmarks/mlkd/run.py --settings sst2-agnews agnews-0 agnews-1 agnews-2 agnews-3 --seeds 0 1 2
    python benchmarks/mlkd/run.py --smoke --settings sst2-agnews --seeds 0

Per setting and seed it writes the ID/OOD files (AG News one-vs-rest: class k is ID, the other three OOD), trains
the ID language model (``configs/opt/sst2_ood/lm.yaml``: the from-scratch baseline and the teacher), the MLKD
student and the "no intermediate loss" ablation (``configs/opt/sst2_ood/mlkd.yaml``), scores ID vs OOD test texts
with ``sstkit ood score`` and collects ``results.csv`` / ``results.md`` (mean ± std over seeds, run counts).

``--pretrain-steps N`` adds the paper's pretrained teacher without downloadable weights: an OPT of the same size
is pretrained once per seed on a mixed corpus (``configs/opt/sst2_ood/pretrain_mixed.yaml``: AG News training
texts of all four classes, SST-2 training sentences, WikiText-2 lines; no test text), exported with
``sstkit ood export``, and fine-tuned on the ID texts: that is the fine-tuned-LM baseline and MLKD's teacher, and
it adds the "student from pretrained weights" ablation. Every model of such a run uses the pretraining tokenizer.
``--classifier-steps N`` adds the classifier baselines where the ID texts have labels (SST-2 vs AG News): a
bag-of-words SST-2 classifier (``configs/bow/sst2/fit.yaml``, N steps) scored by MSP, energy, and Mahalanobis and
kNN fitted on the SST-2 training sentences (``sstkit ood score --classifier``). AG News one-vs-rest has one ID
class, so no classifier there.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRETRAIN_CONFIG = "configs/opt/sst2_ood/pretrain_mixed.yaml"
AGNEWS = ("World", "Sports", "Business", "Sci/Tech")
METRICS = ("auroc", "aupr_in", "aupr_out", "far95")


@dataclass
class Scale:
    """What a run changes from the configs' full size: extra ``fit`` arguments, the tokenizer's vocabulary (it
    must reach ``ood score`` too), how many ID and OOD test texts are scored, how often to validate."""

    fit_args: list[str] = field(default_factory=list)
    bpe_vocab: int | None = None
    limit_test: int | None = None
    val_every: int | None = None
    pretrain_steps: int = 0
    arms: tuple[str, ...] = ("mlkd", "mlkd_no_hidden", "mlkd_pretrained_student")


def scale_of(args: argparse.Namespace) -> Scale:
    """``--smoke`` (toy: tiny OPT, 1024-token vocabulary, 200 texts a side) or the sizes given on the command line."""
    if args.smoke:
        return Scale(["--model.init_args.size=tiny", "--data.init_args.bpe_vocab_size=1024",
                      "--data.init_args.limit_eval_blocks=8"], 1024, 200, 20, args.pretrain_steps, tuple(args.arms))
    fit_args = [f"--model.init_args.config_overrides={{{args.model_overrides}}}"] if args.model_overrides else []
    if args.bpe_vocab:
        fit_args.append(f"--data.init_args.bpe_vocab_size={args.bpe_vocab}")
    if args.limit_eval_blocks:
        fit_args.append(f"--data.init_args.limit_eval_blocks={args.limit_eval_blocks}")
    if args.batch_size:
        fit_args.append(f"--data.init_args.batch_size={args.batch_size}")
    return Scale(fit_args, args.bpe_vocab, args.limit_test, None, args.pretrain_steps, tuple(args.arms))


def _rows(path: Path, header: bool) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1 if header else 0 :]
    return [line.split("\t") for line in lines if line.strip()]


def _write(path: Path, texts: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [t.replace("\t", " ").strip() for t in texts if t.strip()]
    path.write_text("sentence\tlabel\n" + "".join(f"{t}\t0\n" for t in clean), encoding="utf-8")


def prepare(setting: str, data: Path, out: Path, seed: int, limit: int | None) -> None:
    """Writes ``out/{train,dev,id_test,ood}.tsv`` (column ``sentence``); OOD texts seen in training are dropped."""
    rng = random.Random(seed)
    if setting == "sst2-agnews":
        train = [r[0] for r in _rows(data / "sst2" / "train.tsv", True)]
        dev = [r[0] for r in _rows(data / "sst2" / "dev.tsv", True)]
        id_test, ood = dev, [r[0] for r in _rows(data / "agnews" / "test.tsv", False)]
    elif setting.startswith("agnews-"):
        label = AGNEWS[int(setting.split("-")[1])]
        rows = _rows(data / "agnews" / "train.tsv", False)
        train = [r[0] for r in rows if r[1] == label]
        rng.shuffle(train)
        cut = len(train) // 10
        dev, train = train[:cut], train[cut:]
        test = _rows(data / "agnews" / "test.tsv", False)
        id_test, ood = [r[0] for r in test if r[1] == label], [r[0] for r in test if r[1] != label]
    else:
        raise SystemExit(f"unknown setting {setting!r}: sst2-agnews or agnews-0..3")
    seen = {t.strip() for t in train}
    ood = [t for t in ood if t.strip() not in seen]
    if limit:
        id_test, ood = rng.sample(id_test, min(limit, len(id_test))), rng.sample(ood, min(limit, len(ood)))
    for name, texts in (("train", train), ("dev", dev), ("id_test", id_test), ("ood", ood)):
        _write(out / f"{name}.tsv", texts)


def prepare_pretrain(data: Path, out: Path, seed: int) -> None:
    """Writes the mixed pretraining corpus ``out/{train,dev}.tsv``: every AG News training text (all four classes,
    so the OOD classes of the one-vs-rest settings are in it, as WebText was in GPT-2's), 10,000 SST-2 training
    sentences and the WikiText-2 validation lines; no AG News test text and no SST-2 dev sentence (the ID and OOD
    test texts of every setting) is kept."""
    rng = random.Random(seed)
    sst = [r[0] for r in _rows(data / "sst2" / "train.tsv", True)]
    wiki = [t for t in (data / "wikitext2" / "valid.txt").read_text(encoding="utf-8").splitlines()
            if t.strip() and not t.strip().startswith("=")]
    texts = [r[0] for r in _rows(data / "agnews" / "train.tsv", False)] + rng.sample(sst, min(10_000, len(sst))) + wiki
    held = {r[0].strip() for r in _rows(data / "agnews" / "test.tsv", False)}
    held |= {r[0].strip() for r in _rows(data / "sst2" / "dev.tsv", True)}
    texts = [t for t in texts if t.strip() not in held]
    rng.shuffle(texts)
    _write(out / "dev.tsv", texts[:500])
    _write(out / "train.tsv", texts[500:])


def sstkit(*args: str) -> None:
    print("+ sstkit", " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "sstkit", *args], check=True, cwd=REPO)


def pretrain(work: Path, seed: int, scale: Scale) -> Path:
    """Pretrains the mixed-corpus OPT for ``seed`` (once) and exports it as a Hugging Face folder (model and
    tokenizer), which the fine-tuned LM starts from and every model of the run tokenises with."""
    hf = work / "pretrained" / f"s{seed}"
    if (hf / "config.json").is_file():
        return hf
    data, folder = work / "data", f"pretrain-mixed-s{seed}"
    prepare_pretrain(Path(os.environ.get("SSTKIT_DATA", "data")), data / folder, seed)
    source = Path(os.environ.get("SSTKIT_DATA", "data")).resolve()
    held = f"{{{source / 'agnews' / 'test.tsv'}: 0, {source / 'sst2' / 'dev.tsv'}: sentence}}"
    args = [f"--data.init_args.data_dir={data}", f"--data.init_args.dataset_folder={folder}",
            f"--data.init_args.ood_files={held}", f"--seed_everything={seed}", f"--run_root={work / 'runs'}", "--trainer.logger=false",
            f"--trainer.max_steps={scale.pretrain_steps}", f"--trainer.val_check_interval={scale.pretrain_steps}",
            *scale.fit_args]
    sstkit("fit", "--config", PRETRAIN_CONFIG, f"--name=pretrain-s{seed}", *args)
    sets = [f"data.init_args.data_dir={data}", f"data.init_args.dataset_folder={folder}", "data.init_args.ood_files=null"]
    if scale.bpe_vocab:
        sets.append(f"data.init_args.bpe_vocab_size={scale.bpe_vocab}")
    sstkit("ood", "export", "--model", str(work / "runs" / f"pretrain-s{seed}" / f"seed{seed}" / "checkpoints" /
                                            "last.ckpt"), "--data-config", PRETRAIN_CONFIG,
           *(a for kv in sets for a in ("--set", kv)), "--out", str(hf))
    return hf


def run_one(setting: str, seed: int, work: Path, steps: int, scale: Scale) -> dict:
    """Trains and scores one (setting, seed); a finished one (its ``metrics.json`` exists) is read back.

    Without pretraining the ID LM trained from scratch is also MLKD's teacher; with it (``scale.pretrain_steps``)
    the teacher is the pretrained LM fine-tuned on ID, as in the paper."""
    data = work / "data"
    folder = f"{setting}-pt-s{seed}" if scale.pretrain_steps else f"{setting}-s{seed}"
    out = work / "scores" / folder
    if (out / "metrics.json").is_file():
        print(f"{folder}: already scored, reading {out / 'metrics.json'}", flush=True)
        return json.loads((out / "metrics.json").read_text())
    hf = pretrain(work, seed, scale) if scale.pretrain_steps else None
    prepare(setting, Path(os.environ.get("SSTKIT_DATA", "data")), data / folder, seed, scale.limit_test)
    tokenizer = [f"--data.init_args.tokenizer={hf}"] if hf else []
    common = [f"--data.init_args.data_dir={data}", f"--data.init_args.dataset_folder={folder}",
              f"--data.init_args.ood_files={{{folder}/ood.tsv: sentence}}", f"--seed_everything={seed}",
              f"--trainer.max_steps={steps}", f"--run_root={work / 'runs'}", "--trainer.logger=false",
              f"--trainer.val_check_interval={scale.val_every or steps}", *scale.fit_args, *tokenizer]
    runs = work / "runs"
    ckpt = lambda name: runs / name / f"seed{seed}" / "checkpoints" / "last.ckpt"  # noqa: E731
    lm_name = f"lm-{folder}"
    sstkit("fit", "--config", "configs/opt/sst2_ood/lm.yaml", f"--name={lm_name}", *common)
    models = [f"scratch_lm={ckpt(lm_name)}"]
    teacher, start = lm_name, []
    if hf:
        teacher, start = f"finetuned_lm-{folder}", [f"--model.init_args.pretrained={hf}"]
        sstkit("fit", "--config", "configs/opt/sst2_ood/lm.yaml", f"--name={teacher}", *common, *start)
        models.append(f"finetuned_lm={ckpt(teacher)}")
    arms = {"mlkd": [], "mlkd_no_hidden": ["--trainer.callbacks.init_args.hidden_weight=0"],
            "mlkd_pretrained_student": ["--trainer.callbacks.init_args.student_init=keep"]}
    for arm in scale.arms:
        if arm == "mlkd_pretrained_student" and not hf:
            continue  # the ablation needs pretrained weights
        sstkit("fit", "--config", "configs/opt/sst2_ood/mlkd.yaml", f"--name={arm}-{folder}", *common, *start,
               *arms[arm], f"--trainer.callbacks.init_args.teacher={ckpt(teacher)}")
        models.append(f"{arm}={ckpt(f'{arm}-{folder}')}")
    sets = ["--set", f"data.init_args.data_dir={data}", "--set", f"data.init_args.dataset_folder={folder}",
            "--set", "data.init_args.ood_files=null"]
    if scale.bpe_vocab:
        sets += ["--set", f"data.init_args.bpe_vocab_size={scale.bpe_vocab}"]
    if hf:
        sets += ["--set", f"data.init_args.tokenizer={hf}"]
    sstkit("ood", "score", *(a for m in models for a in ("--model", m)), "--data-config",
           "configs/opt/sst2_ood/mlkd.yaml", *sets, "--id", f"{data / folder}/id_test.tsv:sentence",
           "--ood", f"{data / folder}/ood.tsv:sentence", "--out", str(out))
    return json.loads((out / "metrics.json").read_text())


def run_classifier(setting: str, seed: int, work: Path, steps: int) -> dict:
    """Trains the bag-of-words SST-2 classifier and scores the setting's ID / OOD test texts with its four
    detectors; read back when its ``metrics.json`` exists. Needs the test files ``run_one`` wrote."""
    if setting != "sst2-agnews":
        raise SystemExit(f"--classifier-steps: {setting} has no labelled ID texts (only sst2-agnews has)")
    folder = f"{setting}-s{seed}"
    out = work / "scores" / folder / f"classifier-{steps}"
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    tests = work / "data" / folder
    if not (tests / "id_test.tsv").is_file():  # the scratch-teacher run of this seed writes them
        prepare(setting, Path(os.environ.get("SSTKIT_DATA", "data")), tests, seed, None)
    name = f"bow-{folder}-{steps}"
    sstkit("fit", "--config", "configs/bow/sst2/fit.yaml", f"--name={name}", f"--seed_everything={seed}",
           f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1", f"--trainer.val_check_interval={steps}",
           "--trainer.check_val_every_n_epoch=null",  # validate once, at the end, even across epochs
           f"--run_root={work / 'runs'}", "--trainer.logger=false")
    train = Path(os.environ.get("SSTKIT_DATA", "data")).resolve() / "sst2" / "train.tsv"
    sstkit("ood", "score", "--classifier", f"bow={work / 'runs' / name / f'seed{seed}' / 'checkpoints' / 'last.ckpt'}",
           "--fit", f"{train}:sentence:label", "--id", f"{tests}/id_test.tsv:sentence", "--ood",
           f"{tests}/ood.tsv:sentence", "--out", str(out))
    return json.loads((out / "metrics.json").read_text())


KEYS = ("setting", "seed", "teacher", "steps", "pretrain_steps", "model")


def table(records: list[dict], out: Path) -> None:
    """``results.csv`` (one row per setting, seed, teacher, scale, model) and ``results.md`` (mean ± std over
    seeds). ``steps`` / ``pretrain_steps`` label each row with the scale it was run at."""
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*KEYS, *METRICS, "n_id", "n_ood"])
        writer.writeheader()
        writer.writerows(records)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["setting"], r["teacher"], r["steps"], r["pretrain_steps"], r["model"]), []).append(r)
    head = "| setting | teacher | steps | pretrain steps | model | runs | "
    lines = [head + " | ".join(METRICS) + " |", "|" + " --- |" * (6 + len(METRICS))]
    for (setting, teacher, steps, pre, model), rs in groups.items():
        cells = []
        for m in METRICS:
            values = [100 * r[m] for r in rs]
            # One run has no spread: print its value alone rather than a "± 0.00" that reads as a measured std.
            mean = statistics.mean(values)
            cells.append(f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}")
        lines.append(f"| {setting} | {teacher} | {steps} | {pre} | {model} | {len(rs)} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` rows (a committed ``results.csv``) with those of ``new`` that share their keys replaced."""
    key = lambda r: tuple(str(r[k]) for k in KEYS)  # noqa: E731
    fresh = {key(r) for r in new}
    return [r for r in old if key(r) not in fresh] + new


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--settings", nargs="+", default=["sst2-agnews", "agnews-0", "agnews-1", "agnews-2", "agnews-3"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=None, help="Training steps per model (default 3000; smoke 40).")
    p.add_argument("--smoke", action="store_true", help="Toy sizes: checks the chain, numbers mean nothing.")
    p.add_argument("--work", default=None, help="Work folder (default benchmarks/mlkd/work or /tmp for smoke).")
    p.add_argument("--model-overrides", default=None,
                   help="OPT config changes for every model, YAML flow mapping without braces, e.g. "
                        "'dropout: 0.1, hidden_size: 128, ffn_dim: 512' (replaces the configs' {dropout: 0.1}).")
    p.add_argument("--bpe-vocab", type=int, default=None, help="BPE vocabulary size (configs: 8192).")
    p.add_argument("--limit-test", type=int, default=None,
                   help="Score a seeded sample of N ID and N OOD test texts (default: all).")
    p.add_argument("--limit-eval-blocks", type=int, default=None, help="Validation blocks during training.")
    p.add_argument("--batch-size", type=int, default=None, help="Training batch size (configs: 32).")
    p.add_argument("--pretrain-steps", type=int, default=0,
                   help="Pretrain an OPT on the mixed corpus for N steps, fine-tune it on ID as the teacher and the "
                        "fine-tuned-LM baseline (0: no pretraining; the scratch LM is the teacher).")
    p.add_argument("--arms", nargs="+", default=["mlkd", "mlkd_no_hidden", "mlkd_pretrained_student"],
                   choices=["mlkd", "mlkd_no_hidden", "mlkd_pretrained_student"],
                   help="MLKD students to train (the last needs --pretrain-steps).")
    p.add_argument("--classifier-steps", type=int, default=0,
                   help="Also train a bag-of-words SST-2 classifier for N steps and score MSP / energy / Mahalanobis "
                        "/ kNN (sst2-agnews only; 0: no classifier baselines).")
    p.add_argument("--table-only", action="store_true", help="Rewrite results.md from the committed results.csv.")
    return p


def read_records(path: Path) -> list[dict]:
    """The rows of a ``results.csv`` written by :func:`table`, metrics as floats."""
    with path.open(newline="") as handle:
        return [{k: float(v) if k in METRICS else v for k, v in row.items()} for row in csv.DictReader(handle)]


def main() -> None:
    args = build_parser().parse_args()
    if args.table_only:
        here = REPO / "benchmarks" / "mlkd"
        table(read_records(here / "results.csv"), here)
        return
    scale = scale_of(args)
    work = Path(args.work or ("/tmp/mlkd-smoke" if args.smoke else REPO / "benchmarks" / "mlkd" / "work"))
    steps = args.steps or (40 if args.smoke else 3000)
    out = work if args.smoke else REPO / "benchmarks" / "mlkd"
    # Rows of other settings / scales already in the table stay; a rerun of the same keys replaces its rows.
    old = read_records(out / "results.csv") if (out / "results.csv").is_file() else []
    teacher = "finetuned_lm" if scale.pretrain_steps else "scratch_lm"
    records: list[dict] = []
    for setting in args.settings:
        for seed in args.seeds:
            result = run_one(setting, seed, work.resolve(), steps, scale)
            records += [{"setting": setting, "seed": seed, "teacher": teacher, "steps": steps,
                         "pretrain_steps": scale.pretrain_steps, **m} for m in result["models"]]
            if args.classifier_steps:
                result = run_classifier(setting, seed, work.resolve(), args.classifier_steps)
                records += [{"setting": setting, "seed": seed, "teacher": "none", "steps": args.classifier_steps,
                             "pretrain_steps": 0, **m} for m in result["models"]]
            table(merge(old, records), out)  # after every seed: a stopped run leaves the finished ones tabulated


if __name__ == "__main__":
    main()
