"""GradObstinate on tiny models: the first-order score is exact on a model linear in its embeddings, every reported
success keeps the victim's prediction on a fresh query and satisfies the oracle, the search is deterministic, the
oracle parts judge what they say, transfer counts, and the command runs end to end. A mean-pooled embedding with a
linear head is the victim, a second seed of it the oracle's classifier, dicts stand in for WordNet and VADER."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sstkit.functional.attacks.gradient import EmbeddingGradient, GradientWordSwap, loss_of
from sstkit.functional.attacks.lexicon import DictLexicon
from sstkit.functional.attacks.obstinate import NegationToggle, transfer
from sstkit.functional.attacks.oracle import (
    AntonymOrNegation,
    ClassifierDisagreement,
    SentimentLexiconFlip,
    ValidityOracle,
)
from sstkit.functional.attacks.recipes import build_recipe, run_recipe
from sstkit.functional.attacks.text import AttackedText
from sstkit.functional.attacks.victim import Victim
from sstkit.loaders import load_tokenizer

TEXTS = ["the movie is good and the acting is fine", "a dull , boring film with a weak plot",
         "it is a great and funny story", "the plot is bad but the cast is excellent",
         "an awful waste of a good cast", "a charming , warm and clever comedy"]
SYN = {"good": ["fine", "decent"], "fine": ["good"], "great": ["fine", "big"], "bad": ["poor", "awful"]}
ANT = {"good": ["bad", "evil"], "bad": ["good"], "dull": ["lively", "interesting"], "boring": ["interesting"],
       "weak": ["strong"], "great": ["small"], "funny": ["humorless"], "excellent": ["poor"], "awful": ["nice"],
       "charming": ["repulsive"], "warm": ["cold", "cool"], "clever": ["stupid"], "fine": ["coarse"]}
VALENCE = {"good": 1.9, "bad": -2.5, "evil": -3.4, "dull": -1.7, "lively": 1.5, "interesting": 1.7, "boring": -1.3,
           "weak": -1.9, "strong": 2.3, "great": 3.1, "funny": 1.9, "excellent": 2.7, "poor": -2.1, "awful": -2.0,
           "nice": 1.8, "charming": 2.8, "warm": 0.9, "cold": -0.6, "clever": 2.0, "stupid": -2.4}
STOP = frozenset({"the", "a", "an", "is", "and", "it", "with", "of", "but"})


class MeanEmbedding(nn.Module):
    """Logits = linear head of the mask-weighted mean token embedding: linear in every input embedding."""

    def __init__(self, vocab: int, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, 2)
        with torch.no_grad():
            self.embed.weight.copy_(torch.randn(vocab, dim, generator=gen))
            self.head.weight.copy_(torch.randn(2, dim, generator=gen))
            self.head.bias.zero_()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * mask).sum(1) / mask.sum(1))


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("minilm")


def make_oracle(tok, parts=("antonym", "lexicon", "classifier")) -> ValidityOracle:
    table = {"antonym": AntonymOrNegation(DictLexicon(SYN, antonyms=ANT)), "lexicon": SentimentLexiconFlip(VALENCE),
             "classifier": ClassifierDisagreement(Victim(MeanEmbedding(len(tok), seed=7), tok))}
    return ValidityOracle([table[p] for p in parts])


def run(tok, recipe: str, oracle: ValidityOracle | None = None, k: int = 8):
    model = MeanEmbedding(len(tok))
    victim = Victim(model, tok, batch_size=16)
    built = build_recipe(recipe, lexicon=DictLexicon(SYN, antonyms=ANT), stopwords=STOP, k=k, tau=0.5,
                         scorer=EmbeddingGradient(model, tok), oracle=oracle or make_oracle(tok), max_swaps=2)
    labels = victim.predict(TEXTS)
    return run_recipe(built, victim, TEXTS, labels), model


@pytest.mark.parametrize("objective", ["margin", "ce"])
def test_first_order_score_is_the_exact_loss_change_on_a_linear_model(tok, objective):
    model = MeanEmbedding(len(tok))
    scorer = EmbeddingGradient(model, tok, objective=objective)
    text = AttackedText.from_text("a dull film with a weak plot")
    grads = scorer.gradients(text)
    enc = tok(list(text.words), is_split_into_words=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    with torch.no_grad():
        base = model(ids, mask)[0]
        # the margin is linear in the logits, which are linear in e_i: the first-order change is exact for every
        # token; cross-entropy is not, so there it is the tangent: exact for an infinitesimal step along e_w' - e_w
        pos = enc.word_ids(0).index(5)
        tokens = torch.randperm(len(tok), generator=torch.Generator().manual_seed(0))[:200]
        delta = scorer.delta(grads, 5)[tokens]
        exact = []
        for t in tokens.tolist():
            if objective == "margin":
                swapped = ids.clone()
                swapped[0, pos] = t
                exact.append(loss_of(model(swapped, mask)[0], grads.prediction, "margin")
                             - loss_of(base, grads.prediction, "margin"))
            else:
                eps = 1e-3
                emb = model.embed(ids).clone()
                emb[0, pos] += eps * (model.embed.weight[t] - model.embed.weight[ids[0, pos]])
                m = mask.unsqueeze(-1).float()
                logits = model.head((emb * m).sum(1) / m.sum(1))[0]
                exact.append((loss_of(logits, grads.prediction, "ce") - loss_of(base, grads.prediction, "ce")) / eps)
    assert torch.allclose(delta, torch.stack(exact).double().float(), atol=2e-3, rtol=1e-3)


def test_candidates_are_the_smallest_dissimilar_tokens(tok):
    model = MeanEmbedding(len(tok))
    scorer = EmbeddingGradient(model, tok)
    swap = GradientWordSwap(scorer, k=5, tau=0.3)
    text = AttackedText.from_text("a dull film")
    ranked = swap.ranked(text, 1)
    assert len(ranked) == 5 and [d for _, d in ranked] == sorted(d for _, d in ranked)
    dull = tok.convert_tokens_to_ids("dull")
    for word, _ in ranked:
        assert word.isalpha() and float(scorer.cosine(dull)[tok.convert_tokens_to_ids(word)]) < 0.3
    # no allowed token with cosine < tau has a smaller score than the last kept one
    delta = scorer.delta(scorer.gradients(text), 1)
    ok = scorer.allowed & (scorer.cosine(dull) < 0.3)
    ok[dull] = False
    assert float(delta[ok].min()) == pytest.approx(ranked[0][1])


@pytest.mark.parametrize("recipe", ["obstinate", "obstinate-antonym"])
def test_every_success_keeps_the_prediction_and_every_validated_one_satisfies_the_oracle(tok, recipe):
    report, model = run(tok, recipe)
    fresh = Victim(model, tok)  # no cache: a real re-query
    second = Victim(MeanEmbedding(len(tok), seed=7), tok)
    wins = [r for r in report.results if r.status == "success"]
    assert wins, "the tiny victim should yield obstinate examples"
    for r in wins:
        assert r.perturbed != r.original and r.substitutions >= 1
        assert fresh.predict([r.perturbed])[0] == r.original_pred == r.perturbed_pred
        assert r.validated is not None
        if r.validated:
            parts = r.oracle.split(",")
            assert parts and set(parts) <= {"antonym", "lexicon", "classifier"}
            if "classifier" in parts:
                assert second.predict([r.perturbed])[0] != second.predict([r.original])[0]
            if "antonym" in parts:
                old, new = r.original.split(), r.perturbed.split()
                flips = (sum(w == "not" for w in new) - sum(w == "not" for w in old)) % 2 == 1
                assert flips or any(b in ANT.get(a, []) for a, b in zip(old, new))
    summary = report.summary
    assert summary["validated_successes"] == sum(bool(r.validated) for r in wins)
    assert summary["validated_success_rate"] <= summary["attack_success_rate"]
    if recipe == "obstinate-antonym":
        assert summary["validated_successes"] > 0


def test_gradient_recipe_never_substitutes_a_synonym_or_a_stop_word(tok):
    report, _ = run(tok, "obstinate", k=20)
    for r in (r for r in report.results if r.status == "success"):
        for a, b in zip(r.original.split(), r.perturbed.split()):
            if a != b:
                assert a not in STOP and b not in SYN.get(a, [])


@pytest.mark.parametrize("recipe", ["obstinate", "obstinate-antonym"])
def test_the_search_is_deterministic(tok, recipe):
    a, _ = run(tok, recipe)
    b, _ = run(tok, recipe)
    assert [r.perturbed for r in a.results] == [r.perturbed for r in b.results]
    assert [r.validated for r in a.results] == [r.validated for r in b.results]


def test_oracle_parts():
    orig = AttackedText.from_text("the film is good")
    antonym = AntonymOrNegation(DictLexicon({}, antonyms={"good": ["bad"]}))
    assert antonym.check([orig.replace(3, "bad"), orig.replace(3, "fine"), orig.insert(3, "not")], orig) == \
        [True, False, True]
    lexicon = SentimentLexiconFlip(VALENCE, label=1)
    # positive -> negative word flips; a positive substitute does not; nor does a neutral one
    assert lexicon.check([orig.replace(3, "bad"), orig.replace(3, "great"), orig.replace(3, "red")], orig) == \
        [True, False, False]
    # for a negative gold label, a flip towards negative is no evidence that the label changed
    assert not SentimentLexiconFlip(VALENCE, label=0).check([orig.replace(3, "bad")], orig)[0]
    oracle = ValidityOracle([antonym, lexicon], mode="all")
    assert oracle.check([orig.replace(3, "bad"), orig.insert(3, "not")], orig) == [True, False]
    assert oracle.verdicts([orig.insert(3, "not")], orig) == [["antonym"]]
    assert [c.text for c in NegationToggle()(orig, [2])] == ["the film is not good"]


def test_transfer_counts_only_victims_that_agreed_on_the_original(tok):
    report, model = run(tok, "obstinate-antonym")
    same = transfer(report.results, Victim(model, tok))
    wins = [r for r in report.results if r.status == "success"]
    assert same["transfer_n"] == len(wins) and same["transfer_rate"] == 1.0  # the victim itself: all transfer
    other = transfer(report.results, Victim(MeanEmbedding(len(tok), seed=3), tok))
    assert other["transfer_n"] <= len(wins)
    assert other["transfer_rate"] is None or 0.0 <= other["transfer_rate"] <= 1.0


def test_attack_command_obstinate_with_oracle_and_transfer(data_dir, tmp_path, write_config, monkeypatch):
    from conftest import TINY_BERT, tiny_config

    from sstkit.commands.attack import attack_main
    from sstkit.commands.classifier_io import save_classifier
    from sstkit.functional.attacks import lexicon as lexicon_module
    from sstkit.models.text_classifier import TextClassifier

    torch.manual_seed(0)
    victim = save_classifier(TextClassifier("minilm", num_labels=2, pretrained=False, config_overrides=TINY_BERT),
                             tmp_path / "victim")
    torch.manual_seed(1)
    other = save_classifier(TextClassifier("minilm", num_labels=2, pretrained=False, config_overrides=TINY_BERT),
                            tmp_path / "other")
    monkeypatch.setattr(lexicon_module, "WordNetLexicon", lambda: DictLexicon(SYN, antonyms=ANT))
    valence = tmp_path / "valence.tsv"
    valence.write_text("".join(f"{w}\t{v}\n" for w, v in VALENCE.items()))
    config = write_config(tiny_config(data_dir))
    for recipe in ("obstinate", "obstinate-antonym"):
        out = tmp_path / recipe
        rc = attack_main(["--model", str(victim), "--data-config", str(config), "--recipe", recipe, "--limit", "6",
                          "--out", str(out), "--encoder", "none", "--oracle", "antonym,lexicon,classifier",
                          "--oracle-model", str(other), "--sentiment-lexicon", str(valence), "--k", "5",
                          "--transfer", str(other)])
        assert rc == 0
        metrics = json.loads((out / "summary.json").read_text())["metrics"]
        assert metrics["examples"] == 6 and metrics["validated_success_rate"] is not None
        assert set(metrics["transfer"][str(other)]) >= {"transfer_rate", "transfer_validated_rate"}


def test_attack_command_bad_oracle_is_named_before_anything_loads(tmp_path):
    from sstkit.commands.attack import attack_main
    from sstkit.errors import SstkitError

    # the victim path does not exist: the oracle is checked first, so its message is the one the user sees
    with pytest.raises(SstkitError, match=r"--oracle antonym,vibes: unknown part 'vibes'"):
        attack_main(["--model", str(tmp_path / "none.ckpt"), "--data-config", str(tmp_path / "no.yaml"),
                     "--recipe", "obstinate", "--oracle", "antonym,vibes", "--out", str(tmp_path / "o")])
    with pytest.raises(SstkitError, match="--oracle-model"):
        attack_main(["--model", "x", "--data-config", "y", "--recipe", "obstinate-antonym", "--oracle", "classifier",
                     "--out", str(tmp_path / "o")])


def test_attack_entry_point_builds_the_gradient_scorer_itself(tok):
    from sstkit.functional.attacks import attack

    report = attack(MeanEmbedding(len(tok)), tok, TEXTS[:3], [0, 1, 0], recipe="obstinate", encoder=None,
                    lexicon=DictLexicon(SYN, antonyms=ANT), oracle=make_oracle(tok, ("antonym", "lexicon")), k=4)
    assert report.summary["examples"] == 3 and report.summary["validated_success_rate"] is not None


def test_a_lora_checkpoint_with_dense_weights_loads_as_a_victim(tmp_path):
    from conftest import TINY_BERT

    from sstkit.commands.classifier_io import load_classifier
    from sstkit.errors import SstkitError
    from sstkit.models.text_classifier import TextClassifier

    torch.manual_seed(0)
    model = TextClassifier("minilm", num_labels=2, pretrained=False, config_overrides=TINY_BERT)
    dense = model.state_dict()
    lora_state = {**dense, "encoder.layer.0.query.lora_A.default.weight": torch.zeros(2, 2)}
    ckpt = {"state_dict": lora_state, "hyper_parameters": dict(model.hparams), "dense_state_dict": dense}
    torch.save(ckpt, tmp_path / "lora.ckpt")
    loaded = load_classifier(tmp_path / "lora.ckpt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in dense.items())
    del ckpt["dense_state_dict"]  # without merged weights it still says how to get them
    torch.save(ckpt, tmp_path / "bare.ckpt")
    with pytest.raises(SstkitError, match="a LoRA checkpoint"):
        load_classifier(tmp_path / "bare.ckpt")
