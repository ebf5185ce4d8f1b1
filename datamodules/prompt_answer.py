"""Prompt → answer pairs for a causal LM (supervised fine-tuning): the loss counts the answer's tokens only.

Each row of a TSV file is ``prompt<TAB>answer``. A training sequence is the prompt's tokens, then the tokens of
``" " + answer`` and the end-of-sequence token; ``labels`` repeat the inputs with the prompt (and padding) set to
-100, so :class:`~sstkit.models.CausalLM` learns to answer and not to write prompts. Greedy decoding from the
prompt's tokens (:meth:`PromptAnswerDataModule.prompt_ids`) continues exactly where training put the answer.

The tokenizer is a byte-level BPE trained on ``tokenizer_file`` (default: the training file) and cached, or a
Hugging Face tokenizer name. Train it on a fixed file when the training file changes between runs that must share
a vocabulary (LLM2LLM's growing dataset, continued fine-tuning).

Example (YAML)::

    data:
      class_path: sstkit.datamodules.PromptAnswerDataModule
      init_args: {dataset_folder: arithmetic, header: [question, answer], bpe_vocab_size: 512, batch_size: 16}
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sstkit.errors import DataError, SstkitError
from sstkit.loaders import load_tokenizer
from sstkit.paths import require_files, resolve_data_dir

from .bpe import load_or_train_bpe
from .resumable import EvalLoaderHooks, eval_loader, train_loader

IGNORE_INDEX = -100
SPLITS = ("train", "val", "test")


def read_pairs(path: Path, header: Sequence[str] | None = ("prompt", "answer")) -> tuple[list[str], list[str]]:
    """Prompts and answers of a two-column TSV file; a missing column or empty field is named with its line."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text (byte {err.start})") from None
    start = 1
    if header:
        if not rows or [c.strip() for c in rows[0]] != list(header):
            raise DataError(path, f"expected the header row {list(header)}, got {rows[0] if rows else []}", 1)
        rows, start = rows[1:], 2
    prompts, answers = [], []
    for number, row in enumerate(rows, start=start):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(path, f"expected 'prompt<TAB>answer', got {row}", number)
        prompts.append(row[0].strip())
        answers.append(row[1].strip())
    return prompts, answers


class PromptAnswerPairs(Dataset):
    """Tokenised pairs: item i holds ``input_ids`` (prompt + answer + eos) and ``prompt_length``."""

    def __init__(self, prompts: list[list[int]], answers: list[list[int]], eos: int, max_length: int) -> None:
        self.items = []
        for prompt, answer in zip(prompts, answers, strict=True):
            ids = (prompt + answer + [eos])[-max_length:]  # keep the answer if a prompt is too long
            self.items.append((torch.tensor(ids, dtype=torch.long), max(0, len(ids) - len(answer) - 1)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ids, prompt_length = self.items[i]
        return {"input_ids": ids, "prompt_length": prompt_length, "index": i}


class PadAnswers:
    """Right-pads a batch; ``labels`` are the inputs with prompt and padding positions set to -100."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        longest = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for row, example in enumerate(examples):
            n, start = len(example["input_ids"]), example["prompt_length"]
            input_ids[row, :n] = example["input_ids"]
            labels[row, start:n] = example["input_ids"][start:]
            mask[row, :n] = 1
        index = torch.tensor([e["index"] for e in examples], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "index": index}


class PromptAnswerDataModule(EvalLoaderHooks, L.LightningDataModule):
    """TSV prompt/answer files → batches for answer-only next-token training.

    Args:
        data_dir: the data folder; None means ``$SSTKIT_DATA``, else ``./data``.
        dataset_folder: the task's sub-folder of the data folder.
        train_file, val_file, test_file: file names (or absolute paths) in that folder (None: no such split).
        header: the expected header row (None: files without one).
        tokenizer: ``bpe`` (trained on ``tokenizer_file`` and cached) or a Hugging Face tokenizer name / path.
        tokenizer_file: the text the BPE is trained on (default: the training file).
        bpe_vocab_size: vocabulary size of the trained BPE.
        max_length: longest sequence in tokens (prompts are cut from the left).
        batch_size, eval_batch_size, num_workers: as every sstkit DataModule.
    """

    def __init__(self, data_dir: str | None = None, dataset_folder: str = "", train_file: str | None = "train.tsv",
                 val_file: str | None = "dev.tsv", test_file: str | None = "test.tsv",
                 header: list[str] | None = None, tokenizer: str = "bpe", tokenizer_file: str | None = None,
                 bpe_vocab_size: int = 512, max_length: int = 128, batch_size: int = 16,
                 eval_batch_size: int | None = None, num_workers: int = 0) -> None:
        super().__init__()
        for key, value in (("batch_size", batch_size), ("max_length", max_length)):
            if value < 2:
                raise SstkitError(f"data.{key} must be >= 2, got {value}")
        if tokenizer == "bpe" and not (tokenizer_file or train_file):
            raise SstkitError("data.tokenizer: bpe needs a data.tokenizer_file or data.train_file to be trained on")
        self.root = resolve_data_dir(data_dir) / dataset_folder
        self.files = {"train": train_file, "val": val_file, "test": test_file}
        require_files(self.root, sorted({f for f in self.files.values() if f}), dataset_folder or "prompt/answer task")
        self.header = list(header) if header else None
        self.tokenizer_name, self.bpe_vocab_size = tokenizer, bpe_vocab_size
        self.tokenizer_file = self.root / (tokenizer_file or train_file or "")
        self.max_length, self.batch_size, self.num_workers = max_length, batch_size, num_workers
        self.eval_batch_size = eval_batch_size or batch_size
        self._tokenizer: Any = None
        self.datasets: dict[str, PromptAnswerPairs] = {}

    @property
    def tokenizer(self) -> Any:
        """The tokenizer (trained on first use when it is a BPE)."""
        if self._tokenizer is None:
            if self.tokenizer_name == "bpe":
                if not self.tokenizer_file.is_file():
                    raise SstkitError(f"data.tokenizer_file: no such file {self.tokenizer_file}")
                self._tokenizer = load_or_train_bpe(self.tokenizer_file, self.bpe_vocab_size)
            else:
                self._tokenizer = load_tokenizer(self.tokenizer_name)
            if self._tokenizer.pad_token_id is None:  # chat tokenizers often have none: pad with end-of-sequence
                self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Number of token ids; the CLI links it to ``model.vocab_size``."""
        return len(self.tokenizer)

    def prompt_ids(self, prompt: str) -> list[int]:
        """The token ids a prompt starts a sequence with (training and greedy decoding alike)."""
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def answer_ids(self, answer: str) -> list[int]:
        return self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"]

    def read(self, split: str) -> tuple[list[str], list[str]]:
        """A split's prompts and answers."""
        return read_pairs(self.root / str(self.files[split]), self.header)

    def check_data(self, stage: str | None = None) -> None:
        """Reads every configured file; raises :class:`DataError` at the first bad row (before any run folder)."""
        for split in SPLITS:
            if self.files[split]:
                self.read(split)

    def setup(self, stage: str | None = None) -> None:
        eos = self.tokenizer.eos_token_id
        for split in SPLITS:
            if self.files[split] and split not in self.datasets:
                prompts, answers = self.read(split)
                self.datasets[split] = PromptAnswerPairs([self.prompt_ids(p) for p in prompts],
                                                         [self.answer_ids(a) for a in answers], eos, self.max_length)

    def _dataset(self, split: str) -> PromptAnswerPairs:
        if split not in self.datasets:
            raise SstkitError(f"prompt/answer data: no {split} split configured (data.{split}_file is null)")
        return self.datasets[split]

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._dataset("train"), self.batch_size, PadAnswers(self.tokenizer.pad_token_id),
                            self.num_workers)

    def _eval_loader(self, split: str) -> DataLoader:
        return eval_loader(self._dataset(split), self.eval_batch_size, PadAnswers(self.tokenizer.pad_token_id),
                           self.num_workers)
