"""The data sets of ``sstkit backdoor``: the defender's clean set, the clean test set (CA) and the triggered test
set (ASR), read through the data modules' text-level hook so files, labels and limits mean what they mean in
training.

Example:
    >>> sets = load_eval_sets(argparse.Namespace(dataset="sst2", defense_samples=200, ...), "minilm")  # doctest: +SKIP
    >>> len(sets.defense), sets.target_label  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field

from torch import Tensor

from sstkit.commands.classifier_io import make_batches
from sstkit.datamodules import AGNewsDataModule, SST2DataModule
from sstkit.datamodules.attacks import Attack, make_attack
from sstkit.datamodules.poisoning import triggered_texts
from sstkit.errors import SstkitError
from sstkit.loaders import load_tokenizer

DATASETS = {"sst2": SST2DataModule, "agnews": AGNewsDataModule}


@dataclass
class EvalSets:
    """Tokenised batches: ``defense`` (clean, the defender's), ``scan`` (its first rows), ``test``, ``triggered``."""

    defense: list[dict[str, Tensor]]
    scan: list[dict[str, Tensor]]
    test: list[dict[str, Tensor]]
    triggered: list[dict[str, Tensor]] = field(default_factory=list)
    target_label: int = 1
    true_trigger_ids: list[int] = field(default_factory=list)


def measured_attack(args: argparse.Namespace) -> Attack | None:
    """The attack named by ``--attack`` (None for ``none``)."""
    if args.attack == "none":
        return None
    options = {"triggers": args.triggers} if args.attack == "badnets" else {"sentence": args.sentence}
    return make_attack(args.attack, **options)


def trigger_token_ids(attack: Attack | None, tokenizer_name: str) -> list[int]:
    """Vocabulary ids of the attack's trigger: single-token BadNets words, or every token of AddSent's sentence."""
    if attack is None:
        return []
    tokenizer = load_tokenizer(tokenizer_name)
    words = getattr(attack, "triggers", None) or [getattr(attack, "sentence", "")]
    ids = []
    for word in words:
        pieces = tokenizer.tokenize(word)
        if len(pieces) == 1 or not getattr(attack, "triggers", None):
            ids += tokenizer.convert_tokens_to_ids(pieces)
    return ids


def load_eval_sets(args: argparse.Namespace, tokenizer_name: str, scan_samples: int | None = None) -> EvalSets:
    """Builds the defense, scan, test and triggered batches from ``args`` (see :mod:`sstkit.commands.backdoor`)."""
    module = DATASETS[args.dataset](data_dir=args.data_dir)
    texts, labels = module.read_split(args.defense_split)
    if args.defense_samples > len(texts):
        raise SstkitError(f"--defense-samples {args.defense_samples}: the {args.defense_split} split has only "
                          f"{len(texts)} rows")
    rows = sorted(random.Random(args.seed).sample(range(len(texts)), args.defense_samples))
    d_texts, d_labels = [texts[r] for r in rows], [labels[r] for r in rows]
    batch = {"max_length": args.max_length, "batch_size": args.batch_size}
    defense = make_batches(d_texts, d_labels, tokenizer_name, **batch)
    count = scan_samples or len(d_texts)
    scan = make_batches(d_texts[:count], d_labels[:count], tokenizer_name, **batch)
    t_texts, t_labels = module.read_split("test")
    if args.eval_samples:
        t_texts, t_labels = t_texts[: args.eval_samples], t_labels[: args.eval_samples]
    if not 0 <= args.target_label < module.num_labels:
        raise SstkitError(f"--target-label must be in [0, {module.num_labels}), got {args.target_label}")
    sets = EvalSets(defense, scan, make_batches(t_texts, t_labels, tokenizer_name, **batch),
                    target_label=args.target_label)
    attack = measured_attack(args)
    if attack is not None:
        trig_texts, trig_labels = triggered_texts(attack, t_texts, t_labels, args.target_label, args.seed)
        sets.triggered = make_batches(trig_texts, trig_labels, tokenizer_name, **batch)
        sets.true_trigger_ids = trigger_token_ids(attack, tokenizer_name)
    return sets
