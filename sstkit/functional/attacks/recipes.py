"""The four recipes and :func:`attack`, the entry point on any Hugging Face or sstkit text classifier.

=============  =====================  ============================================  ===============================
recipe         transformation         constraints                                   search
=============  =====================  ============================================  ===============================
pwws           WordNet synonyms       repeat, stop words                            greedy, weighted saliency
bae (BAE-R)    MLM top-50 at [MASK]   repeat, stop words, POS (noun/verb swap),     greedy, deletion importance
                                      MiniLM cosine >= 0.936 in a 15-word window
bert-attack    MLM top-K (K=48),      repeat, stop words, <= 40 % words,            greedy, [UNK] importance
               sub-word beam          MiniLM cosine >= 0.2
fba            insert / substitute /  stop words, <= 40 % words                     Metropolis–Hastings (WMP)
               remove (WordNet, MLM)
obstinate      whole vocabulary by    repeat, stop words, embedding cosine < tau,   gradient-norm positions, first
               first-order ΔL         not a WordNet synonym; goal: prediction kept  oracle-valid candidate
obstinate-     WordNet antonyms,      repeat; goal: prediction kept                 text order, first oracle-valid
antonym        negation toggles                                                     candidate
=============  =====================  ============================================  ===============================

The obstinate recipes (:mod:`.obstinate`) keep the prediction and report, besides raw success, whether the validity
oracle (:mod:`.oracle`) accepted the example (``validated``).

Example:
    >>> report = attack(model, tokenizer, ["a gripping film"], [1], recipe="pwws")  # doctest: +SKIP
    >>> report.summary["attack_success_rate"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sstkit.functional.attacks.constraints import (
    Constraint,
    MaxWordsPerturbed,
    PartOfSpeech,
    RepeatModification,
    SentenceEncoder,
    SentenceSimilarity,
    StopwordModification,
)
from sstkit.functional.attacks.fba import FBAChain
from sstkit.functional.attacks.goal import Goal, UntargetedClassification
from sstkit.functional.attacks.lexicon import Lexicon, WordNetLexicon, stop_words
from sstkit.functional.attacks.metrics import AttackResult, summarize
from sstkit.functional.attacks.mlm import MaskedLMPredictor
from sstkit.functional.attacks.search import GreedyWIR, Problem
from sstkit.functional.attacks.text import AttackedText
from sstkit.functional.attacks.transformations import Transformation, WordSwapLexicon, WordSwapMaskedLM
from sstkit.functional.attacks.victim import Victim

RECIPES = ("pwws", "bae", "bert-attack", "fba")  # untargeted: the prediction must change
OBSTINATE = ("obstinate", "obstinate-antonym")  # the prediction must stay (GradObstinate, :mod:`.obstinate`)
ALL_RECIPES = RECIPES + OBSTINATE
NEEDS_MLM = {"bae", "bert-attack", "fba"}
NEEDS_ENCODER = {"bae", "bert-attack"}


@dataclass
class Recipe:
    """A configured attack: goal, transformation, constraints, search (``run(problem) -> Scored``)."""

    name: str
    goal: Goal
    transformation: Transformation
    constraints: list[Constraint]
    search: Any
    options: dict[str, Any] = field(default_factory=dict)
    oracle: Constraint | None = None  # obstinate recipes: evidence that the gold label changed


def build_recipe(name: str, *, lexicon: Lexicon | None = None, mlm: MaskedLMPredictor | None = None,
                 encode: Callable[[list[str]], Tensor] | None = None, stopwords: frozenset[str] | None = None,
                 k: int | None = None, similarity: float | None = None, max_percent: float | None = None,
                 fba_steps: int = 50, seed: int = 0, **obstinate: Any) -> Recipe:
    """One of :data:`ALL_RECIPES`, the untargeted ones with TextAttack's settings; ``k``, ``similarity``, ``max_percent`` override them.
    The obstinate recipes take ``scorer``, ``oracle``, ``tau``, ``max_swaps``, ``max_positions`` (see
    :func:`~sstkit.functional.attacks.obstinate.build_obstinate_recipe`).

    Raises:
        ValueError: unknown recipe, or a recipe without the MLM / encoder it needs.
    """
    if name not in ALL_RECIPES:
        raise ValueError(f"recipe must be one of {ALL_RECIPES}, got {name!r}")
    if name in OBSTINATE:
        from sstkit.functional.attacks.obstinate import build_obstinate_recipe

        return build_obstinate_recipe(name, lexicon=lexicon, stopwords=stopwords, k=k, **obstinate)
    if name in NEEDS_MLM and mlm is None:
        raise ValueError(f"recipe {name} needs a masked LM (mlm=...)")
    if name in NEEDS_ENCODER and encode is None:
        raise ValueError(f"recipe {name} needs a sentence encoder (encode=...)")
    stop = StopwordModification(stopwords if stopwords is not None else stop_words())
    goal = UntargetedClassification()
    if name == "pwws":
        lexicon = lexicon or WordNetLexicon()
        return Recipe(name, goal, WordSwapLexicon(lexicon), [RepeatModification(), stop],
                      GreedyWIR("weighted-saliency"))
    if name == "bae":
        lexicon = lexicon or WordNetLexicon()
        cons = [RepeatModification(), stop, PartOfSpeech(lexicon, allow_verb_noun_swap=True),
                SentenceSimilarity(encode, similarity if similarity is not None else 0.936338023, window=15,
                                   skip_short=True)]
        return Recipe(name, goal, WordSwapMaskedLM(mlm, "bae", k or 50), cons, GreedyWIR("delete"), {"k": k or 50})
    if name == "bert-attack":
        cons = [RepeatModification(), stop, MaxWordsPerturbed(max_percent if max_percent is not None else 0.4),
                SentenceSimilarity(encode, similarity if similarity is not None else 0.2)]
        return Recipe(name, goal, WordSwapMaskedLM(mlm, "bert-attack", k or 48), cons, GreedyWIR("unk"),
                      {"k": k or 48})
    lexicon = lexicon or WordNetLexicon()
    cons = [stop, MaxWordsPerturbed(max_percent if max_percent is not None else 0.4)]
    chain = FBAChain(lexicon, mlm, steps=fba_steps, k=k or 30, encode=encode, seed=seed)
    return Recipe(name, goal, WordSwapLexicon(lexicon), cons, chain, {"k": k or 30, "steps": fba_steps})


@dataclass
class AttackReport:
    """Per-example results, the summary metrics and the victim's query counters."""

    recipe: str
    results: list[AttackResult]
    summary: dict[str, Any]
    forwards: int
    wall_seconds: float


def run_recipe(recipe: Recipe, victim: Victim, texts: Sequence[str], labels: Sequence[int], *,
               query_budget: int | None = None, encode: Callable[[list[str]], Tensor] | None = None,
               perplexity: MaskedLMPredictor | None = None, progress: Callable[[int], None] | None = None
               ) -> AttackReport:
    """Attacks every ``(text, label)``; inputs the victim already misclassifies are skipped."""
    start_all, forwards0 = time.perf_counter(), victim.forwards
    results = []
    for n, (text, label) in enumerate(zip(texts, labels)):
        original = AttackedText.from_text(text)
        start, queries0 = time.perf_counter(), victim.queries
        victim.start_example(None)
        pred = victim.predict([original.text])[0]
        if pred != label:
            results.append(AttackResult(original.text, original.text, label, pred, pred, "skipped",
                                        queries=victim.queries - queries0))
        else:
            victim.start_example(None if query_budget is None else query_budget - 1)
            problem = Problem(victim, recipe.goal, recipe.transformation, recipe.constraints, original, label)
            final = recipe.search.run(problem)
            victim.start_example(None)
            probs = victim.probs([final.text.text])  # re-query (cache): the goal really is reached
            new_pred = int(probs.argmax(-1)[0])
            reached = bool(recipe.goal.succeeded(probs, label)[0]) and final.text.num_changed() > 0
            status = "success" if final.success and reached else "failed"
            res = AttackResult(original.text, final.text.text, label, pred, new_pred, status,
                               queries=victim.queries - queries0, changed_share=final.text.changed_share())
            if status == "success":
                res.substitutions = final.text.num_changed()
            if recipe.oracle is not None:
                res.validated = False
            if status == "success" and recipe.oracle is not None:
                oracle = recipe.oracle.for_label(label) if hasattr(recipe.oracle, "for_label") else recipe.oracle
                res.validated = bool(oracle.check([final.text], original)[0])
                if hasattr(oracle, "verdicts"):
                    res.oracle = ",".join(oracle.verdicts([final.text], original)[0])
            if status == "success" and encode is not None:
                emb = encode([original.text, final.text.text])
                res.similarity = float((emb[0] * emb[1]).sum())
            if status == "success" and perplexity is not None:
                res.original_perplexity, res.perplexity = perplexity.pseudo_perplexity([original.text,
                                                                                       final.text.text])
            res.seconds = time.perf_counter() - start
            results.append(res)
        if progress is not None:
            progress(n + 1)
    return AttackReport(recipe.name, results, summarize(results), victim.forwards - forwards0,
                        time.perf_counter() - start_all)


def attack(model: nn.Module, tokenizer: Any, texts: Sequence[str], labels: Sequence[int], recipe: str = "bae", *,
           mlm: MaskedLMPredictor | str | None = None, encoder: Callable[[list[str]], Tensor] | str | None = "minilm",
           lexicon: Lexicon | None = None, batch_size: int = 32, max_length: int = 128,
           query_budget: int | None = None, perplexity: bool = False, **options: Any) -> AttackReport:
    """Attacks a text classifier (Hugging Face ``…ForSequenceClassification`` or sstkit ``TextClassifier``).

    Args:
        model, tokenizer: the victim and its tokenizer.
        texts, labels: the examples (whitespace-separated words, gold labels).
        recipe: one of :data:`ALL_RECIPES`.
        mlm: a :class:`MaskedLMPredictor`, or a Hugging Face MLM name / path / sstkit ``MaskedLM`` checkpoint
            (needed by bae, bert-attack, fba).
        encoder: sentence encoder for similarity (``minilm``: the packaged MiniLM; None: no similarity).
        lexicon: synonym source (default WordNet).
        batch_size: victim texts per forward (1: one at a time).
        query_budget: victim queries per example (None: unlimited).
        perplexity: report pseudo-perplexity of original and adversarial text under ``mlm``.
        options: passed to :func:`build_recipe` (``k``, ``similarity``, ``max_percent``, ``fba_steps``, ``seed``;
            obstinate: ``oracle``, ``tau``, ``max_swaps``, ``max_positions``, ``scorer``).

    Example:
        >>> report = attack(model, tokenizer, texts, labels, recipe="bae", mlm="runs/minilm-mlm/seed0/hf")  # doctest: +SKIP
    """
    if isinstance(mlm, str):
        mlm = load_mlm(mlm, batch_size=batch_size, max_length=max_length)
    if isinstance(encoder, str):
        encoder = SentenceEncoder.load(encoder)
    if recipe == "obstinate" and "scorer" not in options:
        from sstkit.functional.attacks.gradient import EmbeddingGradient

        options["scorer"] = EmbeddingGradient(model, tokenizer, max_length=max_length)
    built = build_recipe(recipe, lexicon=lexicon, mlm=mlm, encode=encoder, **options)
    victim = Victim(model, tokenizer, batch_size=batch_size, max_length=max_length)
    return run_recipe(built, victim, texts, labels, query_budget=query_budget, encode=encoder,
                      perplexity=mlm if perplexity else None)


def load_mlm(name: str, batch_size: int = 32, max_length: int = 128) -> MaskedLMPredictor:
    """A :class:`MaskedLMPredictor` from an sstkit ``MaskedLM`` checkpoint (.ckpt) or a Hugging Face name / path."""
    from sstkit.errors import SstkitError
    from sstkit.loaders import build_masked_lm, load_tokenizer

    if name.endswith(".ckpt"):
        # An sstkit MaskedLM checkpoint: its ``mlm.*`` weights rebuilt on the backbone's config, without Lightning.
        ckpt = torch.load(name, map_location="cpu", weights_only=False)
        hp = dict(ckpt.get("hyper_parameters") or {})
        if "backbone" not in hp or "state_dict" not in ckpt:
            raise SstkitError(f"{name}: not a checkpoint of an sstkit MaskedLM (no backbone / state_dict)")
        model = build_masked_lm(hp["backbone"], False, hp.get("config_overrides"))
        model.load_state_dict({k[len("mlm."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("mlm.")})
        return MaskedLMPredictor(model.eval(), load_tokenizer(hp["backbone"]), batch_size, max_length)
    try:
        from transformers import AutoModelForMaskedLM

        model = AutoModelForMaskedLM.from_pretrained(name)
    except OSError as err:
        raise SstkitError(f"--mlm {name}: not a masked-LM checkpoint (.ckpt of sstkit's MaskedLM), folder or "
                          f"Hugging Face model name ({str(err).splitlines()[0]})") from err
    return MaskedLMPredictor(model, load_tokenizer(name), batch_size, max_length)
