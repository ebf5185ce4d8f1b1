"""Test perplexity and singular-value pruning of the sst_opt benchmark's checkpoints (used by run.py).

For every chosen-rate run and seed: the final checkpoint is loaded into a plain OPT (SST, LoRA and ReLoRA*
checkpoints carry their merged ``dense_state_dict``; SST is also rebuilt with its SpectralLinear layers so pruning
uses its own spectrum), perplexity on the first TEST_BLOCKS blocks of test.txt is written into the run's
summary.json as ``bench/test_ppl``, and for the pruned arms the perplexity after
:func:`sstkit.functional.spectral_prune.prune_singular_values` at every ratio of PRUNE_FRACTIONS is returned.

Example:
    python benchmarks/sst_opt/run.py   # calls evaluate_runs after training
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import torch
import yaml
from sstkit.datamodules import WikiText2DataModule

from sstkit.functional.spectral_prune import prune_singular_values
from sstkit.functional.sst import apply_sst
from sstkit.functional.surgery import method_patterns, name_matches
from sstkit.models import CausalLM

TEST_BLOCKS = 512  # 32k tokens of test.txt: the same blocks for every arm, seed and pruning ratio
PRUNE_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def run_dir(runs: Path, name: str, seed: int) -> Path:
    return runs / name / f"seed{seed}"


def load_model(folder: Path, spectral: bool) -> CausalLM:
    """The run's final model: dense (merged) weights, or for ``spectral`` the SST layers as trained."""
    ckpt = torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    accepted = inspect.signature(CausalLM.__init__).parameters
    model = CausalLM(**{k: v for k, v in ckpt["hyper_parameters"].items() if k in accepted})
    if spectral:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        sst = next(c["init_args"] for c in config["trainer"]["callbacks"] if c["class_path"].endswith("SparseSpectralTraining"))
        apply_sst(model, sst["rank"], method_patterns(model, sst.get("patterns")), sst.get("seed", 0))
        model.load_state_dict(ckpt["state_dict"])
    else:
        model.load_state_dict(ckpt.get("dense_state_dict") or ckpt["state_dict"])
    return model.eval()


def test_loader(folder: Path) -> torch.utils.data.DataLoader:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    init = {**config["data"]["init_args"], "limit_eval_blocks": TEST_BLOCKS}
    data = WikiText2DataModule(**init)
    data.setup("test")
    return data.test_dataloader()


@torch.no_grad()
def perplexity(model: CausalLM, loader: torch.utils.data.DataLoader) -> float:
    total, count = 0.0, 0
    for batch in loader:
        nll, mask = model.token_nll(batch)
        total += float((nll * mask).sum())
        count += int(mask.sum())
    return math.exp(total / count)


def wrapped_share(model: CausalLM) -> float:
    """Share of the model's parameters inside the layers the methods wrap (weights and biases)."""
    patterns = method_patterns(model, None)
    wrapped = sum(p.numel() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                  and name_matches(n, patterns) for p in m.parameters())
    # The LM head is tied to the embedding: count each tensor once.
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return wrapped / total


def evaluate_runs(runs: Path, names: dict[str, str], seeds: list[int],
                  prune_arms: tuple[str, ...] = ("full", "sst")) -> dict[str, dict[int, dict[float, float]]]:
    """Writes ``bench/test_ppl`` and ``bench/wrapped_share_pct`` into each finished run's summary.json and returns
    ``{arm: {seed: {prune_fraction: test ppl}}}`` for ``prune_arms`` (results cached in ``pruning.json``)."""
    torch.set_num_threads(1)
    pruning: dict[str, dict[int, dict[float, float]]] = {}
    loader = None
    for arm, name in names.items():
        for seed in seeds:
            folder = run_dir(runs, name, seed)
            summary = folder / "summary.json"
            if not summary.is_file() or json.loads(summary.read_text()).get("status") != "finished":
                continue
            cache = folder / "pruning.json"
            if cache.is_file():
                result = {float(k): v for k, v in json.loads(cache.read_text()).items()}
            else:
                loader = loader or test_loader(folder)
                result = {}
                for fraction in PRUNE_FRACTIONS if arm in prune_arms else (0.0,):
                    model = load_model(folder, spectral=arm == "sst")
                    if fraction:
                        prune_singular_values(model, fraction)
                    result[fraction] = perplexity(model, loader)
                    print(f"{name} seed {seed} prune {fraction:.1f}: test ppl {result[fraction]:.2f}", flush=True)
                cache.write_text(json.dumps(result, indent=2))
            record = json.loads(summary.read_text())
            record["metrics"]["bench/test_ppl"] = result[0.0]
            record["metrics"]["bench/wrapped_share_pct"] = 100 * wrapped_share(load_model(folder, spectral=False))
            summary.write_text(json.dumps(record, indent=2))
            if arm in prune_arms:
                pruning.setdefault(arm, {})[seed] = result
    return pruning
