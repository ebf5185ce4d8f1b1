"""Adversarial substitution attacks on tiny models: constraints hold, successes flip, skips count, FBA's MH ratio,
batching, determinism, and the WordNet error. A bag-of-words victim with random token weights flips often, a
1-layer random BERT is the masked LM, and a dict lexicon stands in for WordNet (no apt, no network)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM

from sstkit.functional.attacks.constraints import SentenceSimilarity, StopwordModification
from sstkit.functional.attacks.fba import FBAChain, acceptance_probability
from sstkit.functional.attacks.lexicon import DictLexicon
from sstkit.functional.attacks.mlm import MaskedLMPredictor
from sstkit.functional.attacks.recipes import RECIPES, build_recipe, run_recipe
from sstkit.functional.attacks.search import Problem
from sstkit.functional.attacks.text import AttackedText
from sstkit.functional.attacks.victim import Victim
from sstkit.loaders import load_tokenizer

TEXTS = ["the movie is good and the acting is fine", "a dull , boring film with a weak plot",
         "it is a great and funny story", "the plot is bad but the cast is excellent",
         "an awful waste of a good cast", "a charming , warm and clever comedy"]
SYN = {"movie": ["film", "picture", "flick"], "film": ["movie", "picture"], "good": ["fine", "decent", "nice"],
       "fine": ["good", "okay"], "dull": ["boring", "tedious"], "boring": ["dull", "tiresome"],
       "weak": ["feeble", "poor"], "plot": ["story", "storyline"], "great": ["fine", "big", "large"],
       "funny": ["comic", "amusing"], "story": ["tale", "plot"], "bad": ["poor", "awful"], "cast": ["actors"],
       "excellent": ["fine", "superb"], "awful": ["terrible", "bad"], "waste": ["squander", "loss"],
       "charming": ["lovely", "sweet"], "warm": ["cordial", "friendly"], "clever": ["smart", "bright"],
       "comedy": ["farce"], "acting": ["playing", "performing"]}
POS = {w: {"a"} for w in ("good", "fine", "decent", "nice", "dull", "boring", "weak", "great", "funny", "bad")}
STOP = frozenset({"the", "a", "an", "is", "and", "it", "with", "of", "but"})


class BagOfWords(nn.Module):
    """Logits = sum of per-token weights (random, seeded): an attackable, exactly reproducible victim."""

    def __init__(self, vocab: int, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.weights = nn.Parameter(torch.randn(vocab, 2, generator=gen))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return (self.weights[input_ids] * attention_mask.unsqueeze(-1)).sum(1)


def hashed_encoder(texts: list[str]) -> torch.Tensor:
    """A deterministic sentence 'encoder': normalised hashed bag of words (similarity = word overlap)."""
    out = torch.zeros(len(texts), 64)
    for row, text in enumerate(texts):
        for word in text.split():
            out[row, sum(map(ord, word)) % 64] += 1.0
    return torch.nn.functional.normalize(out, dim=-1)


@pytest.fixture(scope="module")
def parts():
    tok = load_tokenizer("minilm")
    torch.manual_seed(0)
    mlm_model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=2, intermediate_size=64))
    return tok, BagOfWords(len(tok)), MaskedLMPredictor(mlm_model, tok, batch_size=8), DictLexicon(SYN, POS)


def labels_of(victim: Victim, texts: list[str]) -> list[int]:
    return victim.predict(texts)


def run(parts, recipe: str, batch_size: int = 16, seed: int = 0, labels: list[int] | None = None):
    tok, model, mlm, lex = parts
    victim = Victim(model, tok, batch_size=batch_size)
    built = build_recipe(recipe, lexicon=lex, mlm=mlm, encode=hashed_encoder, stopwords=STOP, k=8,
                         similarity=0.5 if recipe != "bae" else None, fba_steps=30, seed=seed)
    labels = labels if labels is not None else labels_of(victim, TEXTS)
    return run_recipe(built, victim, TEXTS, labels, encode=hashed_encoder), victim, built


def _levenshtein(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def _stopwords_kept(orig: list[str], new: list[str]) -> bool:
    """Every stop word of the original survives, in order (a subsequence: insertions may sit between)."""
    it = iter(new)
    return all(any(w == v for v in it) for w in orig if w in STOP)


@pytest.mark.parametrize("recipe", RECIPES)
def test_constraints_hold_and_successes_flip(parts, recipe):
    report, victim, built = run(parts, recipe)
    assert report.summary["examples"] == len(TEXTS)
    for res in report.results:
        orig, new = res.original.split(), res.perturbed.split()
        assert _stopwords_kept(orig, new), res
        if recipe in ("bert-attack", "fba"):
            assert _levenshtein(orig, new) / len(orig) <= 0.4 + 1e-9, res
        if recipe in ("pwws", "bae", "bert-attack"):  # substitution only: positions align
            assert len(orig) == len(new)
            assert all(o == n for o, n in zip(orig, new) if o in STOP)
        if recipe == "bert-attack" and res.status == "success":
            sim = SentenceSimilarity(hashed_encoder, 0.5)
            assert sim.check([AttackedText.from_text(res.perturbed)], AttackedText.from_text(res.original)) == [True]
        if res.status == "success":
            victim.clear_cache()
            assert victim.predict([res.perturbed])[0] != res.label  # a fresh query, not the cache
            assert res.perturbed != res.original
        else:
            assert res.status in ("failed", "skipped")
    if recipe == "pwws":  # the bag-of-words victim is easy: PWWS must actually win somewhere
        assert report.summary["successes"] > 0


def test_skipped_inputs_are_counted(parts):
    tok, model, *_ = parts
    truth = labels_of(Victim(model, tok), TEXTS)
    wrong = [1 - y if i < 2 else y for i, y in enumerate(truth)]
    report, _, _ = run(parts, "pwws", labels=wrong)
    s = report.summary
    assert s["skipped"] == 2 and s["successes"] + s["failures"] == len(TEXTS) - 2
    assert s["original_accuracy"] == pytest.approx((len(TEXTS) - 2) / len(TEXTS))
    assert s["accuracy_under_attack"] == pytest.approx(s["failures"] / len(TEXTS))
    assert s["attack_success_rate"] == pytest.approx(s["successes"] / (s["successes"] + s["failures"]))
    assert all(r.status == "skipped" for r in report.results[:2])


def test_fba_acceptance_ratio_on_a_two_state_chain(parts):
    """Substitution only on a one-word text: q(fine|good) = 1/2 (two synonyms), q(good|fine) = 1 (one)."""
    tok, model, *_ = parts
    lex = DictLexicon({"good": ["fine", "nice"], "fine": ["good"]})
    chain = FBAChain(lex, None, probs=(0.0, 1.0, 0.0))
    chain.importance = {0: 1.0}
    problem = Problem(Victim(model, tok), build_recipe("pwws", lexicon=lex).goal, lambda t, i: [], [],
                      AttackedText.from_text("good"), 1)
    x = problem.original
    x_new = x.replace(0, "fine")
    fwd, back = chain.log_q(problem, x, "substitute", 0, "fine"), chain.log_q(problem, x_new, "substitute", 0, "good")
    assert fwd == pytest.approx(math.log(0.5)) and back == pytest.approx(0.0)
    for pi_good, pi_fine in [(0.6, 0.4), (0.2, 0.8), (0.9, 0.1)]:
        closed = min(1.0, (pi_fine * 1.0) / (pi_good * 0.5))
        got = acceptance_probability(math.log(pi_fine), math.log(pi_good), back, fwd)
        assert got == pytest.approx(closed)
        closed_back = min(1.0, (pi_good * 0.5) / (pi_fine * 1.0))
        assert acceptance_probability(math.log(pi_good), math.log(pi_fine), fwd, back) == pytest.approx(closed_back)
    # the sampler's own proposal reports the same densities
    import random

    proposals = [chain.propose(problem, x, random.Random(s)) for s in range(20)]
    for new, f, b in proposals:
        assert f == pytest.approx(math.log(0.5))
        assert b == pytest.approx(0.0 if new.words[0] == "fine" else -math.inf)


@pytest.mark.parametrize("recipe", ["pwws", "bae", "fba"])
def test_batching_gives_the_same_result_as_one_at_a_time(parts, recipe):
    batched, vb, _ = run(parts, recipe, batch_size=16)
    single, vs, _ = run(parts, recipe, batch_size=1)
    assert [r.perturbed for r in batched.results] == [r.perturbed for r in single.results]
    assert [r.queries for r in batched.results] == [r.queries for r in single.results]
    assert vs.forwards == vs.queries and vb.forwards < vb.queries  # one forward per candidate vs per batch


def test_deterministic_under_a_seed(parts):
    a, _, _ = run(parts, "fba", seed=3)
    b, _, _ = run(parts, "fba", seed=3)
    assert [r.perturbed for r in a.results] == [r.perturbed for r in b.results]
    assert [r.queries for r in a.results] == [r.queries for r in b.results]


def test_stopword_constraint_rejects_a_removed_stopword():
    orig = AttackedText.from_text("the film is good")
    check = StopwordModification(STOP).check
    assert check([orig.delete(0), orig.replace(3, "fine"), orig.insert(1, "new")], orig) == [False, True, True]


def test_bert_attack_candidates_are_bounded(parts):
    _, _, mlm, _ = parts
    words = ("an", "unbelievably", "overwrought", "film")
    for i in range(len(words)):
        assert len(mlm.subword_candidates(words, i, k=5)) <= 5


def test_missing_wordnet_names_both_ways(monkeypatch, tmp_path):
    import nltk

    from sstkit.errors import SstkitError
    from sstkit.functional.attacks import lexicon

    lexicon.load_wordnet.cache_clear()
    monkeypatch.setattr(lexicon, "DEBIAN_WORDNET", tmp_path / "none")
    monkeypatch.setattr(nltk.data, "find", lambda *a, **k: (_ for _ in ()).throw(LookupError("no")))
    with pytest.raises(SstkitError, match="nltk.downloader wordnet.*wordnet-base"):
        lexicon.load_wordnet()
    lexicon.load_wordnet.cache_clear()


def test_attack_runs_on_an_sstkit_text_classifier(parts):
    from sstkit.functional.attacks import attack
    from sstkit.models.text_classifier import TextClassifier

    tok, *_ , lex = parts
    torch.manual_seed(0)
    model = TextClassifier("minilm", num_labels=2, pretrained=False,
                           config_overrides={"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                                             "intermediate_size": 64})
    report = attack(model, tok, TEXTS[:3], [0, 1, 0], recipe="pwws", lexicon=lex, encoder=None)
    assert report.summary["examples"] == 3 and report.forwards > 0


def test_attack_command_writes_report_examples_and_augmented_tsv(data_dir, tmp_path, write_config, monkeypatch):
    import json

    from conftest import TINY_BERT, tiny_config
    from sstkit.datamodules.text_files import read_labelled_file

    from sstkit.commands.attack import attack_main
    from sstkit.commands.classifier_io import save_classifier
    from sstkit.functional.attacks import recipes
    from sstkit.models.text_classifier import TextClassifier

    torch.manual_seed(0)
    model = TextClassifier("minilm", num_labels=2, pretrained=False, config_overrides=TINY_BERT)
    folder = save_classifier(model, tmp_path / "victim")
    config = write_config(tiny_config(data_dir))
    full = json.loads(json.dumps(SYN))
    monkeypatch.setattr(recipes, "WordNetLexicon", lambda: DictLexicon(full))  # no WordNet in tests
    out = tmp_path / "report"
    rc = attack_main(["--model", str(folder), "--data-config", str(config), "--recipe", "pwws", "--limit", "8",
                      "--out", str(out), "--encoder", "none", "--write-tsv", str(tmp_path / "adv")])
    assert rc == 0
    report = json.loads((out / "summary.json").read_text())
    assert report["metrics"]["examples"] == 8 and report["config"]["recipe"] == "pwws"
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and (out / "examples.csv").is_file()
    texts, labels = read_labelled_file(tmp_path / "adv" / "sst2" / "train.tsv", ["sentence", "label"], 0, 1, None, 2)
    wins = [r for r in rows if r["status"] == "success"]
    assert len(texts) == 96 + len(wins) and texts[96:] == [r["perturbed"] for r in wins]
    assert (tmp_path / "adv" / "sst2" / "test.tsv").is_file()


def test_attack_command_bad_input_is_one_line(tmp_path):
    from support import run_sstkit

    proc = run_sstkit("attack", "--model", str(tmp_path / "none.ckpt"), "--data-config", str(tmp_path / "no.yaml"),
                      "--out", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--data-config" in proc.stderr and "no such file" in proc.stderr


class AnyWordLexicon(DictLexicon):
    """Every word's synonyms are the same list (a stand-in thesaurus that always offers candidates)."""

    def __init__(self, words: list[str]) -> None:
        super().__init__({})
        self.words = words

    def synonyms(self, word: str) -> list[str]:
        return [w for w in self.words if w != word.lower()]


def test_attack_augment_retrain_files_chain(data_dir, tmp_path, write_config, monkeypatch):
    """The loop as configs: attack a limited training split, write the TSV, layer the committed
    adversarial_retrain.yaml on the victim's config, and the retrain's data module reads exactly the victim's
    training rows followed by the adversarial successes."""
    import json

    import yaml
    from conftest import REPO, TINY_BERT, tiny_config

    from sstkit.commands.attack import attack_main, load_datamodule
    from sstkit.commands.classifier_io import save_classifier
    from sstkit.functional.attacks import recipes
    from sstkit.models.text_classifier import TextClassifier

    torch.manual_seed(0)
    folder = save_classifier(TextClassifier("minilm", num_labels=2, pretrained=False, config_overrides=TINY_BERT),
                             tmp_path / "victim")
    victim_cfg = tiny_config(data_dir)
    victim_cfg["data"]["init_args"]["limit_train_samples"] = 40
    config = write_config(victim_cfg)
    # Every word may become any of these: a random 1-layer victim then loses some examples (no WordNet in tests).
    anything = "good bad dull great awful fine weak superb boring clever film plot cast tale story comic".split()
    monkeypatch.setattr(recipes, "WordNetLexicon", lambda: AnyWordLexicon(anything))
    adv, out = tmp_path / "adv", tmp_path / "report"
    assert attack_main(["--model", str(folder), "--data-config", str(config), "--split", "train", "--limit", "12",
                        "--out", str(out), "--encoder", "none", "--write-tsv", str(adv)]) == 0
    rows = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    wins = [r for r in rows if r["status"] == "success"]
    assert wins, "the tiny victim should lose some examples to PWWS"
    victim_dm = load_datamodule(str(config), None)
    subset_texts, subset_labels = victim_dm.read_split("train")
    keep = victim_dm.limit_indices("train", len(subset_texts))
    subset = [(subset_texts[i], subset_labels[i]) for i in keep]
    assert [r["original"] for r in rows] == [t for t, _ in subset[:12]]  # --split train: the rows it trained on

    overlay = yaml.safe_load((REPO / "configs/bert/sst2/adversarial_retrain.yaml").read_text())
    retrain_cfg = json.loads(json.dumps(victim_cfg))
    retrain_cfg["data"]["init_args"].update(overlay["data"]["init_args"], data_dir=str(adv))
    dm = load_datamodule(str(write_config(retrain_cfg, "retrain.yaml")), None)
    dm.setup("fit")
    texts, labels = dm.read_split("train")
    assert len(dm.datasets["train"]) == len(texts) == 40 + len(wins)
    assert list(zip(texts, labels)) == subset + [(r["perturbed"], r["label"]) for r in wins]
