"""A backdoor-poisoning wrapper around any :class:`TextClassificationDataModule`.

The wrapper edits the *texts* of the wrapped module's splits (before tokenisation) and hands the result to the
wrapped module's own tokenised-cache and loader machinery, so batching, caching, resume and DDP behave exactly as
for clean data:

- ``train``: a seeded share ``rate`` of the training set gets the trigger; in ``dirty`` mode the poisoned
  examples are drawn from the non-target classes and relabelled to ``target_label``, in ``clean`` mode they are
  drawn from the target class and keep their label. The poisoned row numbers are exact and kept in
  :attr:`PoisonedTextDataModule.poisoned_indices`.
- ``defense``: ``defense_size`` clean training examples held out *before* poisoning (the defender's small clean
  set); ``train_on: defense`` makes them the training set (for clean unlearning runs).
- ``val_triggered`` / ``test_triggered``: the non-target examples of val / test with the trigger inserted and
  their true labels; :meth:`triggered_dataloader` serves them and the ``AttackSuccessRate`` callback logs
  ``val/asr`` and ``test/asr`` from them. The clean val/test loaders are the wrapped module's (CA = ``test/acc``).

Example (YAML)::

    data:
      class_path: sstkit.datamodules.PoisonedTextDataModule
      init_args:
        base: {class_path: sstkit.datamodules.SST2DataModule, init_args: {limit_train_samples: 3000}}
        attack: badnets
        rate: 0.1
        target_label: 1
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from sstkit.errors import SstkitError
from sstkit.paths import fingerprint

from .attacks import Attack, make_attack
from .text_classification import TextClassificationDataModule
from .tokenized import TokenizedTexts

MODES = ("dirty", "clean")
TRAIN_ON = ("poisoned", "defense")


def choose_poisoned(labels: list[int], rate: float, target_label: int, mode: str, seed: int) -> list[int]:
    """Row numbers to poison: ``round(rate * len(labels))`` rows, drawn (seeded) from the rows the mode allows.

    Raises:
        SstkitError: when the allowed rows are fewer than the requested number.
    """
    count = round(rate * len(labels))
    allowed = [i for i, y in enumerate(labels) if (y != target_label if mode == "dirty" else y == target_label)]
    if count > len(allowed):
        kind = "non-target" if mode == "dirty" else "target-class"
        raise SstkitError(f"data.rate {rate}: {count} poisoned examples needed but only {len(allowed)} {kind} "
                          f"examples exist in mode {mode!r}; lower the rate")
    return sorted(random.Random(seed).sample(allowed, count))


def triggered_texts(attack: Attack, texts: list[str], labels: list[int], target_label: int,
                    seed: int) -> tuple[list[str], list[int]]:
    """The ASR set: the non-target examples with the trigger inserted (seeded), with their true labels."""
    rows = [r for r, y in enumerate(labels) if y != target_label]
    return attack.apply_all([texts[r] for r in rows], random.Random(seed + 104729)), [labels[r] for r in rows]


class PoisonedTextDataModule(L.LightningDataModule):
    """Backdoor-poisoned training data, clean evaluation data, and triggered evaluation sets for ASR.

    Args:
        base: the wrapped text-classification data module (any :class:`TextClassificationDataModule`).
        attack: ``badnets`` or ``addsent`` (see :mod:`sstkit.datamodules.attacks`), or an :class:`Attack`.
        rate: share of the training set that is poisoned (0 gives a clean model with the same pipeline).
        target_label: the class the backdoor maps to.
        mode: ``dirty`` (poison non-target examples, relabel) or ``clean`` (poison target examples, keep labels).
        triggers, num_triggers: BadNets options (default words cf, mn, bb, tq; one per example).
        sentence: AddSent's trigger sentence (default "I watch this 3D movie").
        defense_size: clean training examples held out as the defender's set (an int, or a share if < 1).
        train_on: ``poisoned`` (the attacker's training set) or ``defense`` (the held-out clean set).
        tokenizer: overrides the wrapped module's tokenizer (the CLI links ``model.backbone`` here).
        seed: seed of the poisoned-row choice, the trigger positions and the defense split.
    """

    def __init__(
        self,
        base: TextClassificationDataModule,
        attack: str = "badnets",
        rate: float = 0.1,
        target_label: int = 1,
        mode: str = "dirty",
        triggers: list[str] | None = None,
        num_triggers: int | None = None,
        sentence: str | None = None,
        defense_size: float = 0,
        train_on: str = "poisoned",
        tokenizer: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(base, TextClassificationDataModule):
            raise SstkitError(f"data.base must be a TextClassificationDataModule, got {type(base).__name__}")
        if not 0.0 <= rate < 1.0:
            raise SstkitError(f"data.rate must lie in [0, 1), got {rate}")
        if mode not in MODES:
            raise SstkitError(f"data.mode must be one of {MODES}, got {mode!r}")
        if train_on not in TRAIN_ON:
            raise SstkitError(f"data.train_on must be one of {TRAIN_ON}, got {train_on!r}")
        if not 0 <= target_label < base.num_labels:
            raise SstkitError(f"data.target_label must be in [0, {base.num_labels}), got {target_label}")
        if defense_size < 0 or (train_on == "defense" and defense_size == 0):
            raise SstkitError(f"data.defense_size must be > 0 for train_on: defense and >= 0, got {defense_size}")
        self.base = base
        if tokenizer is not None:
            base.opts.tokenizer = tokenizer
        self.attack: Attack = attack if isinstance(attack, Attack) else make_attack(
            attack, triggers=triggers, num_triggers=num_triggers, sentence=sentence)
        self.rate, self.target_label, self.mode, self.seed = rate, target_label, mode, seed
        self.defense_size, self.train_on = defense_size, train_on
        self.poisoned_indices: list[int] = []
        self.defense_rows: list[int] = []
        self._prepared = False

    @property
    def num_labels(self) -> int:
        """Number of classes (the wrapped module's); the CLI links it to ``model.num_labels``."""
        return self.base.num_labels

    @property
    def dataset_name(self) -> str:
        return self.base.dataset_name

    def check_data(self, stage: str | None = None) -> None:
        """The wrapped module's files, all splits (poisoned training and triggered test sets use several)."""
        self.base.check_data(None)

    def describe(self) -> dict[str, Any]:
        """The poisoning settings and the exact poisoned rows, for reports."""
        return {"attack": self.attack.describe(), "rate": self.rate, "target_label": self.target_label,
                "mode": self.mode, "seed": self.seed, "poisoned_indices": list(self.poisoned_indices),
                "num_poisoned": len(self.poisoned_indices), "defense_rows": list(self.defense_rows)}

    # --- text-level construction -------------------------------------------------------------------------
    def _key(self, *extra: Any) -> str:
        opts = self.base.opts
        return fingerprint(self.base._split_path("train"), opts.tokenizer, opts.max_length, opts.limit_train_samples,
                           opts.seed, self.attack.describe(), self.rate, self.target_label, self.mode, self.seed,
                           self.defense_size, *extra)

    def _split_rows(self, size: int) -> tuple[list[int], list[int]]:
        """(training rows, defense rows) of the training file, after the wrapped module's training limit."""
        rows = self.base.limit_indices("train", size) or list(range(size))
        count = int(self.defense_size) if self.defense_size >= 1 else round(self.defense_size * len(rows))
        if count >= len(rows):
            raise SstkitError(f"data.defense_size {self.defense_size} leaves no training examples of {len(rows)}")
        rng = random.Random(self.seed + 7919)  # independent of the poisoned-row stream
        defense = sorted(rng.sample(rows, count)) if count else []
        held = set(defense)
        return [r for r in rows if r not in held], defense

    def _poison_train(self) -> tuple[list[str], list[int], list[int], list[int]]:
        texts, labels = self.base.read_split("train")
        rows, defense = self._split_rows(len(texts))
        texts, labels = [texts[r] for r in rows], [labels[r] for r in rows]
        chosen = choose_poisoned(labels, self.rate, self.target_label, self.mode, self.seed) if self.rate else []
        rng = random.Random(self.seed)
        rng.random()  # decouple the position stream from the row choice above
        for i, text in zip(chosen, self.attack.apply_all([texts[i] for i in chosen], rng), strict=True):
            texts[i], labels[i] = text, self.target_label
        return texts, labels, chosen, defense

    def _triggered(self, split: str) -> tuple[list[str], list[int]]:
        texts, labels = self.base.read_split(split)
        keep = self.base.limit_indices(split, len(texts)) or list(range(len(texts)))
        return triggered_texts(self.attack, [texts[r] for r in keep], [labels[r] for r in keep], self.target_label,
                               self.seed)

    def _build(self) -> None:
        base = self.base
        if self._prepared:
            return
        poisoned: dict[str, Any] = {}

        def make_train() -> tuple[list[str], list[int]]:
            texts, labels, chosen, defense = self._poison_train()
            poisoned.update(chosen=chosen, defense=defense)
            return texts, labels

        train = base.tokenize_cached(f"poisoned-{self._key()}", make_train)
        if not poisoned:  # loaded from the cache: recompute the (cheap, seeded) row choice for the record
            _, _, poisoned["chosen"], poisoned["defense"] = self._poison_train()
        self.poisoned_indices, self.defense_rows = poisoned["chosen"], poisoned["defense"]
        if self.train_on == "defense":
            def make_defense() -> tuple[list[str], list[int]]:
                texts, labels = base.read_split("train")
                return [texts[r] for r in self.defense_rows], [labels[r] for r in self.defense_rows]

            train = base.tokenize_cached(f"defense-{self._key()}", make_defense)
        base.datasets["train"] = train
        for split in ("val", "test"):
            if base.files[split]:
                key = fingerprint(base._split_path(split), self._key(split, base.opts.limit_eval_samples))
                base.datasets[f"{split}_triggered"] = base.tokenize_cached(
                    f"triggered-{split}-{key}", lambda split=split: self._triggered(split))
        self._prepared = True

    # --- Lightning hooks ---------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.base.prepare_data()
        self._build()

    def setup(self, stage: str | None = None) -> None:
        # The poisoned train set goes in first, so the wrapped module's setup keeps it instead of the clean one.
        self._build()
        self.base.setup(stage)

    def train_dataloader(self) -> DataLoader:
        return self.base.train_dataloader()

    def val_dataloader(self) -> DataLoader:
        return self.base.val_dataloader()

    def test_dataloader(self) -> DataLoader:
        return self.base.test_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.base.predict_dataloader()

    def triggered_dataloader(self, split: str) -> DataLoader | None:
        """Loader over the triggered non-target examples of ``val`` or ``test`` (None when that split is absent)."""
        if f"{split}_triggered" not in self.base.datasets:
            return None
        return self.base._eval_loader(f"{split}_triggered")

    def triggered_dataset(self, split: str) -> TokenizedTexts:
        """The triggered set of ``split`` (after :meth:`setup`)."""
        return self.base._dataset(f"{split}_triggered")

    def state_dict(self) -> dict[str, Any]:
        return {}
