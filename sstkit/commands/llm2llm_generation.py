"""An LLM2LLM generation student: a causal LM fine-tuned on prompt → answer pairs by an sstkit run per iteration.

The student's config names a :class:`~sstkit.models.CausalLM` (a random OPT of a size preset, or a pretrained causal
LM); each iteration's ``fit.yaml`` replaces its data section with a
:class:`~sstkit.datamodules.PromptAnswerDataModule` reading the iteration's ``train.tsv`` (loss on the answer
tokens only) and runs ``sstkit fit`` and ``sstkit test`` (answer-token loss and perplexity) into the run folder,
as :class:`~sstkit.commands.llm2llm_student.SstkitRunStudent` does for classifiers. Answers are then decoded
greedily from the last checkpoint: on the test file for ``test/exact_match`` (written to the run folder's
``test_answers.jsonl``) and on the student's own training data for LLM2LLM's wrong-set. Every iteration trains
the BPE on the same file (``tokenizer_file``), so vocabularies match and continued fine-tuning can load weights.

Example:
    >>> student = CausalLMRunStudent(Path("configs/opt/arithmetic/sft.yaml"), task, Path("runs"), "l2l")  # doctest: +SKIP
    >>> student.answer(student.train(0, Path("runs/l2l/iter0/train.tsv"), None), ["Ann has 2 pens and ..."])  # doctest: +SKIP
    ['5']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from sstkit.commands.llm2llm_student import SstkitRunStudent
from sstkit.errors import SstkitError
from sstkit.functional.llm2llm.data import Example

# Data settings of the student's config that carry over to the per-iteration DataModule.
CARRIED = ("tokenizer", "bpe_vocab_size", "max_length", "batch_size", "eval_batch_size", "num_workers")
METRIC = "test/exact_match"


GENERATORS = ("arithmetic",)


def is_generation_student(config: Path) -> bool:
    """Whether a student config trains a causal LM (a generation student) rather than a classifier."""
    if not config.is_file():
        raise SstkitError(f"student.config: no such file {config}")
    loaded = yaml.safe_load(config.read_text()) or {}
    model = loaded.get("model") if isinstance(loaded, dict) else None
    return isinstance(model, dict) and str(model.get("class_path", "")).endswith("CausalLM")


def write_generated_task(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Writes a procedural task's ``train.tsv``, ``dev.tsv``, ``test.tsv`` into ``folder``; returns ``data`` naming them.

    ``data.generator`` names the task (``arithmetic``: one-step word problems, see
    :mod:`sstkit.functional.llm2llm.arithmetic`) and ``data.generator_sizes`` the three files' rows. The problems
    are drawn with a fixed seed, not the run's, so every seed and baseline is tested on the same problems; files
    that already exist are kept (every run writes the same ones).
    """
    if data["generator"] not in GENERATORS:
        raise SstkitError(f"data.generator must be one of {list(GENERATORS)}, got {data['generator']!r}")
    sizes = data["generator_sizes"]
    if not (isinstance(sizes, list | tuple) and len(sizes) == 3 and all(isinstance(n, int) and n > 0 for n in sizes)):
        raise SstkitError(f"data.generator_sizes: expected three positive row counts [train, dev, test], got {sizes}")
    from sstkit.functional.llm2llm.arithmetic import make_problems
    from sstkit.functional.llm2llm.data import atomic_write, clean_text

    header = list(data["header"])
    names = ("train.tsv", "dev.tsv", "test.tsv")
    if not all((folder / name).is_file() for name in names):
        problems = make_problems(sum(sizes), seed=0)
        if len(problems) < sum(sizes):
            raise SstkitError(f"data.generator_sizes: the {data['generator']} task has only {len(problems)} distinct "
                              f"problems, {sum(sizes)} asked for")
        folder.mkdir(parents=True, exist_ok=True)
        start = 0
        for name, size in zip(names, sizes, strict=True):
            rows = ["\t".join(header)] + [f"{clean_text(q)}\t{a}" for q, a in problems[start:start + size]]
            atomic_write(folder / name, "\n".join(rows) + "\n")
            start += size
    return {**data, "data_dir": str(folder.resolve()), "dataset_folder": "", "train_file": names[0],
            "val_file": names[1], "test_file": names[2]}


def normalise(answer: str) -> str:
    """An answer as compared: whitespace collapsed."""
    return " ".join(str(answer).split())


@torch.no_grad()
def greedy_answers(lm: Any, encode: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 8,
                   batch_size: int = 64) -> list[str]:
    """Greedy continuations of ``prompts`` up to the end-of-sequence token, decoded and stripped.

    Prompts are left-padded so that every row's answer starts right after its own prompt; ``encode(prompt)``
    gives the ids training put before the answer.
    """
    lm.eval()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        rows = [encode(p) for p in prompts[start:start + batch_size]]
        longest = max(len(r) for r in rows)
        ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for k, row in enumerate(rows):
            ids[k, longest - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[k, longest - len(row):] = 1
        generated = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=pad, eos_token_id=eos)
        for row in generated[:, longest:].tolist():
            row = row[:row.index(eos)] if eos in row else row
            out.append(normalise(tokenizer.decode(row, skip_special_tokens=True)))
    return out


class CausalLMRunStudent(SstkitRunStudent):
    """Trains and tests a causal LM with sstkit runs; predicts (greedily) answers, not classes.

    Args:
        config, run_root, name, seed, overrides, keep_checkpoints: as :class:`SstkitRunStudent`.
        task: ``val_file``, ``test_file``, ``tokenizer_file`` (absolute paths) and ``header``.
        max_new_tokens: the longest answer decoded.
    """

    metric = METRIC

    def __init__(self, config: Path, task: dict[str, Any], run_root: Path, name: str, seed: int = 0,
                 overrides: dict[str, Any] | None = None, keep_checkpoints: bool = False,
                 max_new_tokens: int = 8) -> None:
        super().__init__(config, task, run_root, name, seed, overrides, keep_checkpoints)
        class_path = str((self.base.get("model") or {}).get("class_path", ""))
        if not class_path.endswith("CausalLM"):
            raise SstkitError(f"student.config {config}: a generation student needs model.class_path CausalLM, "
                              f"got {class_path!r}")
        self.max_new_tokens = max_new_tokens

    data_class = "sstkit.datamodules.PromptAnswerDataModule"
    carried = CARRIED

    def task_data_args(self, train_file: Path) -> dict[str, Any]:
        # One BPE file for every iteration, so continued fine-tuning shares the vocabulary.
        return {"tokenizer_file": self.task["tokenizer_file"]}

    def train(self, iteration: int, train_file: Path, init_from: dict[str, Any] | None) -> dict[str, Any]:
        """``sstkit fit`` and ``sstkit test``, then greedy exact match on the test file."""
        record = super().train(iteration, train_file, init_from)
        from sstkit.datamodules.prompt_answer import read_pairs

        prompts, answers = read_pairs(Path(self.task["test_file"]), self.task["header"])
        predicted = self.answer(record, prompts)
        rows = [{"prompt": p, "answer": a, "predicted": y, "correct": normalise(a) == y}
                for p, a, y in zip(prompts, answers, predicted, strict=True)]
        (Path(record["run"]) / "test_answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        record["metrics"][METRIC] = sum(r["correct"] for r in rows) / max(len(rows), 1)
        return record

    def predict(self, record: dict[str, Any], examples: Sequence[Example]) -> list[str]:
        """Greedy answers to the examples' prompts (compared with their answers by the loop)."""
        return self.answer(record, [e.text for e in examples])

    def answer(self, record: dict[str, Any], prompts: Sequence[str]) -> list[str]:
        """Greedy answers of a trained iteration's last checkpoint."""
        from sstkit.datamodules import PromptAnswerDataModule
        from sstkit.models import CausalLM

        fit = yaml.safe_load(Path(record["config_file"]).read_text())
        data = PromptAnswerDataModule(**fit["data"]["init_args"])
        checkpoint = Path(record["run"]) / "checkpoints" / "last.ckpt"
        model = CausalLM.load_from_checkpoint(checkpoint, map_location="cpu")
        return greedy_answers(model.lm, data.prompt_ids, data.tokenizer, prompts, self.max_new_tokens,
                              int(fit["data"]["init_args"].get("eval_batch_size") or 64))
