"""Adversarial word-substitution attacks in TextAttack's shape: goal, transformation, constraints, search, recipe.

Modules: :mod:`.text` (the attacked text), :mod:`.victim` (batched, cached queries), :mod:`.goal`,
:mod:`.lexicon` (WordNet, stop words), :mod:`.mlm` (masked-LM fills), :mod:`.transformations`,
:mod:`.constraints`, :mod:`.search` (greedy by word importance), :mod:`.fba` (Metropolis–Hastings), :mod:`.metrics`,
:mod:`.recipes` (pwws, bae, bert-attack, fba, obstinate, obstinate-antonym and :func:`attack`); GradObstinate's
:mod:`.gradient` (first-order vocabulary scores), :mod:`.oracle` (validity oracle) and :mod:`.obstinate` (search,
recipes, transfer). No Lightning import.

Example:
    >>> from sstkit.functional.attacks import attack  # doctest: +SKIP
    >>> report = attack(model, tokenizer, texts, labels, recipe="pwws")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "attack": "recipes", "build_recipe": "recipes", "run_recipe": "recipes", "load_mlm": "recipes",
    "RECIPES": "recipes", "AttackReport": "recipes", "AttackResult": "metrics", "summarize": "metrics",
    "Victim": "victim", "AttackedText": "text", "UntargetedClassification": "goal",
    "PredictionPreserved": "goal", "EmbeddingGradient": "gradient", "ValidityOracle": "oracle",
}


def __getattr__(name: str) -> Any:  # lazy: importing the package costs nothing until a name is used
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
