"""``sstkit explain``: CD-T word and phrase scores of a text classifier's decision.

One sentence: prints it coloured by word score (green supports the explained class, red opposes it), the top
phrases, and writes an HTML page. A data split: writes every sentence's explanation to a JSON file.

Example::

    sstkit explain --model runs/bert-sst2-finetune/seed0/checkpoints/last.ckpt --text "a gripping , funny film" \\
        --html explain.html
    sstkit explain --model runs/bert-sst2-finetune/seed0/checkpoints/last.ckpt --dataset sst2 --split test \\
        --limit 100 --out explanations.json
"""

from __future__ import annotations

import argparse
import html
import json
import time
from pathlib import Path

from sstkit.errors import SstkitError
from sstkit.functional.cdt.explain import Explanation, explain_text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sstkit explain", description="CD-T local explanations of a classifier.")
    parser.add_argument("--model", required=True, help="a TextClassifier: .ckpt file or exported folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="one sentence to explain")
    source.add_argument("--dataset", choices=("sst2", "agnews"), help="explain rows of a data split (batch mode)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="test")
    parser.add_argument("--data-dir", default=None, help="data folder (default $SSTKIT_DATA, else ./data)")
    parser.add_argument("--limit", type=int, default=None, help="rows of the split to explain (default: all)")
    parser.add_argument("--out", default="explanations.json", help="JSON file written in batch mode")
    parser.add_argument("--html", default="explanation.html", help="HTML page written for --text ('' to skip)")
    parser.add_argument("--label", type=int, default=None, help="class to explain (default: the prediction)")
    parser.add_argument("--max-phrase", type=int, default=3, help="longest phrase (in words) to score")
    parser.add_argument("--top-phrases", type=int, default=5, help="phrases printed for --text")
    parser.add_argument("--attention", choices=("total", "beta"), default="total", help="CD-T attention rule")
    parser.add_argument("--sign-fix", choices=("layer", "all", "none"), default="layer",
                        help="where CD-T applies its sign fix: block ends (default), every operation, nowhere")
    parser.add_argument("--max-length", type=int, default=128)
    return parser


def _colour(score: float, scale: float) -> tuple[int, int, int]:
    """White for 0, green for support, red for opposition, saturating at ``scale``."""
    strength = min(abs(score) / scale, 1.0) if scale > 0 else 0.0
    fade = int(255 * (1 - 0.75 * strength))
    return (fade, 255, fade) if score >= 0 else (255, fade, fade)


def _scale(explanation: Explanation) -> float:
    return max((abs(s) for s in explanation.word_scores), default=0.0)


def render_html(explanation: Explanation, names: list[str] | None = None) -> str:
    """A standalone HTML page: the sentence with word backgrounds by score, and the phrase table."""
    scale = _scale(explanation)
    spans = []
    for word, score in zip(explanation.words, explanation.word_scores):
        r, g, b = _colour(score, scale)
        spans.append(f'<span style="background: rgb({r},{g},{b}); padding: 2px" title="{score:+.3f}">'
                     f"{html.escape(word)}</span>")
    label = names[explanation.label] if names else str(explanation.label)
    rival = names[explanation.competitor] if names else str(explanation.competitor)
    rows = "".join(f"<tr><td>{html.escape(' '.join(explanation.words[a:b + 1]))}</td><td>{s:+.3f}</td></tr>"
                   for a, b, s in sorted(explanation.phrases, key=lambda p: -p[2])[:20])
    return ("<!doctype html><html><head><meta charset='utf-8'><title>CD-T explanation</title></head>"
            "<body style='font-family: sans-serif'>"
            f"<p>Explained class <b>{html.escape(label)}</b> against <b>{html.escape(rival)}</b> "
            f"(probabilities {', '.join(f'{p:.3f}' for p in explanation.probs)}). Green supports, red opposes.</p>"
            f"<p style='font-size: 1.4em; line-height: 2'>{' '.join(spans)}</p>"
            f"<table border='1' cellpadding='4'><tr><th>phrase</th><th>score</th></tr>{rows}</table>"
            "</body></html>")


def print_explanation(explanation: Explanation, top_phrases: int) -> None:
    """The coloured sentence, the scores and the top phrases on the terminal (rich)."""
    from rich.console import Console
    from rich.text import Text

    console, scale, line = Console(), _scale(explanation), Text()
    for word, score in zip(explanation.words, explanation.word_scores):
        r, g, b = _colour(score, scale)
        line.append(word, style=f"black on rgb({r},{g},{b})")
        line.append(" ")
    console.print(f"class {explanation.label} vs {explanation.competitor}, probabilities "
                  + ", ".join(f"{p:.3f}" for p in explanation.probs))
    console.print(line)
    console.print("  ".join(f"{w} {s:+.2f}" for w, s in zip(explanation.words, explanation.word_scores)))
    for a, b, s in sorted(explanation.phrases, key=lambda p: -p[2])[:top_phrases]:
        console.print(f"  phrase {' '.join(explanation.words[a:b + 1])!r}: {s:+.3f}")


def explain_main(argv: list[str]) -> int:
    """Entry point of ``sstkit explain``."""
    args = build_parser().parse_args(argv)
    if args.max_phrase < 1:
        raise SstkitError(f"--max-phrase must be >= 1, got {args.max_phrase}")
    from sstkit.commands.classifier_io import backbone_of, load_classifier
    from sstkit.loaders import load_tokenizer

    model = load_classifier(args.model)
    if args.label is not None and not 0 <= args.label < model.num_labels:
        raise SstkitError(f"--label must be in [0, {model.num_labels}), got {args.label}")
    tokenizer = load_tokenizer(backbone_of(model))
    options = {"label": args.label, "max_phrase": args.max_phrase, "max_length": args.max_length,
               "attention": args.attention, "sign_fix": args.sign_fix}
    if args.text is not None:
        if not args.text.split():
            raise SstkitError("--text is empty")
        explanation = explain_text(model, tokenizer, args.text, **options)
        print_explanation(explanation, args.top_phrases)
        if args.html:
            Path(args.html).write_text(render_html(explanation), encoding="utf-8")
            print(f"wrote {args.html}")
        return 0
    from sstkit.commands.backdoor_data import DATASETS

    texts, labels = DATASETS[args.dataset](data_dir=args.data_dir).read_split(args.split)
    texts, labels = texts[: args.limit], labels[: args.limit]
    start, rows = time.perf_counter(), []
    for text, gold in zip(texts, labels):
        if text.split():
            rows.append({**explain_text(model, tokenizer, text, **options).to_dict(), "gold": gold})
    seconds = time.perf_counter() - start
    report = {"model": args.model, "dataset": args.dataset, "split": args.split, "attention": args.attention,
              "seconds_per_sentence": seconds / max(len(rows), 1), "explanations": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"explained {len(rows)} sentences in {seconds:.1f} s; wrote {args.out}")
    return 0
