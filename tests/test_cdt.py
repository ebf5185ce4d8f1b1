"""CD-T: completeness at every node for every rule, β = total for S = all, an exact linear toy, backdoor triggers."""

from __future__ import annotations

import pytest
import torch
from test_backdoor import backdoored  # noqa: F401  (the tiny poisoned model fixture)
from torch import nn
from transformers import BertConfig, BertModel, OPTConfig, OPTForCausalLM

from sstkit.functional.cdt import decompose, linear, sign_fix
from sstkit.functional.cdt.rules import merge_heads

RULES = [("total", "all"), ("beta", "all"), ("total", "layer"), ("total", "none"), ("beta", "none")]


def tiny_bert(**overrides: object) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                        intermediate_size=48, max_position_embeddings=32, **overrides)
    return BertModel(config, add_pooling_layer=False).eval()


def tiny_opt(before: bool = True) -> OPTForCausalLM:
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=60, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, ffn_dim=48,
                       word_embed_proj_dim=24, max_position_embeddings=32, do_layer_norm_before=before)
    return OPTForCausalLM(config).eval()


def _record(modules: dict[str, nn.Module]) -> tuple[dict[str, torch.Tensor], list]:
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(_module, _args, out):
            seen[name] = (out[0] if isinstance(out, tuple) else out).detach()
        return fn

    return seen, [m.register_forward_hook(hook(n)) for n, m in modules.items()]


def _batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[2, 11, 17, 23, 5, 42, 3], [2, 9, 31, 3, 0, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


SETS = [[1], [2, 3], [1, 4, 5], []]


@pytest.mark.parametrize(("attention", "fix"), RULES)
def test_completeness_bert(attention: str, fix: bool) -> None:
    model, batch = tiny_bert(), _batch()
    nodes = {"embeddings": model.embeddings}
    for i, layer in enumerate(model.encoder.layer):
        nodes |= {f"layer{i}.heads": layer.attention.self, f"layer{i}.attention": layer.attention.output,
                  f"layer{i}.intermediate": layer.intermediate, f"layer{i}": layer}
    seen, handles = _record(nodes)
    with torch.no_grad():
        true = model(**batch).last_hidden_state
    for h in handles:
        h.remove()
    dec = decompose(model, batch, relevant=SETS, attention=attention, sign_fix=fix, trace=True)
    assert dec.beta.shape == (2, len(SETS), 7, 24)
    torch.testing.assert_close(dec.total, true[:, None].expand_as(dec.total), atol=1e-4, rtol=0)
    for name, value in seen.items():
        b, g = dec.trace[name]
        total = merge_heads(b + g) if name.endswith("heads") else b + g
        expected = value.reshape(2, 1, 7, -1).expand(-1, len(SETS), -1, -1).reshape(total.shape)
        torch.testing.assert_close(total, expected, atol=1e-4, rtol=0, msg=f"node {name}")


@pytest.mark.parametrize("before", [True, False])
@pytest.mark.parametrize(("attention", "fix"), RULES)
def test_completeness_opt(attention: str, fix: bool, before: bool) -> None:
    model, batch = tiny_opt(before), _batch()
    nodes = {}
    for i, layer in enumerate(model.model.decoder.layers):
        nodes |= {f"layer{i}.intermediate": layer.activation_fn, f"layer{i}": layer}
    seen, handles = _record(nodes)
    with torch.no_grad():
        true = model(**batch).logits
    for h in handles:
        h.remove()
    dec = decompose(model, batch, relevant=SETS, attention=attention, sign_fix=fix, trace=True)
    torch.testing.assert_close(dec.total, true[:, None].expand_as(dec.total), atol=1e-4, rtol=0)
    for name, value in seen.items():
        b, g = dec.trace[name]
        expected = value.reshape(2, 1, 7, -1).expand(-1, len(SETS), -1, -1).reshape(b.shape)
        torch.testing.assert_close(b + g, expected, atol=1e-4, rtol=0, msg=f"node {name}")


@pytest.mark.parametrize("attention", ["total", "beta"])
@pytest.mark.parametrize("make", [tiny_bert, tiny_opt])
def test_beta_is_total_when_all_tokens_relevant(attention: str, make) -> None:
    model = make()
    ids = torch.tensor([[2, 11, 17, 23, 5, 42, 3]])
    dec = decompose(model, ids, relevant=None, attention=attention)
    torch.testing.assert_close(dec.beta, dec.total, atol=1e-5, rtol=0)
    assert dec.gamma.abs().max() < 1e-5


def test_linear_toy_model_is_exact() -> None:
    """Bias-free linear layers: β is exactly W₂W₁ x_S, and the bias split follows the stated formula."""
    torch.manual_seed(0)
    l1, l2 = nn.Linear(5, 7, bias=False), nn.Linear(7, 3, bias=False)
    x, s = torch.randn(4, 5), torch.tensor([1.0, 0, 1, 0, 0])
    b, g = linear(*linear(x * s, x * (1 - s), l1), l2)
    torch.testing.assert_close(b, (x * s) @ l1.weight.T @ l2.weight.T, atol=1e-6, rtol=0)
    torch.testing.assert_close(g, (x * (1 - s)) @ l1.weight.T @ l2.weight.T, atol=1e-6, rtol=0)
    biased = nn.Linear(5, 2)
    b, g = linear(x * s, x * (1 - s), biased)
    wb, wg = (x * s) @ biased.weight.T, (x * (1 - s)) @ biased.weight.T
    torch.testing.assert_close(b, wb + biased.bias * wb.abs() / (wb.abs() + wg.abs() + 1e-8))
    torch.testing.assert_close(b + g, biased(x))


def test_sign_fix_gives_total_to_the_larger() -> None:
    b, g = sign_fix(torch.tensor([2.0, -1.0, 1.0]), torch.tensor([-1.0, 3.0, 1.0]))
    assert b.tolist() == [1.0, 0.0, 1.0] and g.tolist() == [0.0, 2.0, 1.0]


def test_linear_bert_decomposition_is_additive() -> None:
    """Zero biases, identity activation, uniform attention, no sign fix: given the total's scales the network is
    linear in β, so disjoint sets add up exactly and a set plus its complement is the total."""
    model = tiny_bert(hidden_act="linear")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".query." in name or ".key." in name:
                p.zero_()
    ids = torch.tensor([[2, 11, 17, 23, 5, 42, 3]])
    dec = decompose(model, ids, relevant=[[1, 2], [3, 4, 5], [1, 2, 3, 4, 5], [0, 6]], sign_fix=False)
    beta = dec.beta[0]
    torch.testing.assert_close(beta[0] + beta[1], beta[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(beta[2] + beta[3], dec.total[0, 0], atol=1e-5, rtol=0)


def test_rejects_unknown_models_and_rules() -> None:
    with pytest.raises(TypeError, match="BERT-type"):
        decompose(nn.Linear(2, 2), torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match="attention rule"):
        decompose(tiny_bert(), torch.tensor([[1, 2]]), attention="softmax")
    with pytest.raises(ValueError, match="outside"):
        decompose(tiny_bert(), torch.tensor([[1, 2]]), relevant=[[5]])


def test_textclassifier_logits_complete() -> None:
    from conftest import TINY_BERT

    from sstkit.models.text_classifier import TextClassifier

    torch.manual_seed(0)
    batch = _batch()
    for pooling in ("mean", "cls"):
        model = TextClassifier("minilm", 3, pooling=pooling, pretrained=False, config_overrides=TINY_BERT).eval()
        dec = decompose(model, batch, relevant=SETS)
        with torch.no_grad():
            true = model(batch["input_ids"], batch["attention_mask"])
        assert dec.beta.shape == (2, len(SETS), 3)
        torch.testing.assert_close(dec.total, true[:, None].expand_as(dec.total), atol=1e-4, rtol=0)


def test_backdoor_trigger_gets_top_local_score(backdoored: dict) -> None:  # noqa: F811
    """On the planted BadNets backdoor ('cf' → label 1), CD-T ranks the trigger first among the words."""
    import random

    from test_backdoor import _synthetic

    from sstkit.functional.cdt.explain import explain_text, top_words

    texts, labels = _synthetic(40, 7)
    rng = random.Random(0)
    hits = total = 0
    for text, label in zip(texts, labels):
        if label == 1:
            continue
        words = text.split()
        words.insert(rng.randint(0, len(words)), "cf")
        explanation = explain_text(backdoored["model"], backdoored["tokenizer"], " ".join(words), label=1)
        total += 1
        hits += top_words(explanation) == ["cf"]
        assert len(explanation.phrases) == 2 * len(words) - 3
    assert total >= 10 and hits / total >= 0.9, f"trigger ranked first in {hits}/{total}"


def test_explain_command(backdoored: dict, data_dir, tmp_path, capsys) -> None:  # noqa: F811
    import json

    from sstkit.commands.classifier_io import save_classifier
    from sstkit.commands.explain import explain_main
    from sstkit.errors import SstkitError

    folder = save_classifier(backdoored["model"], tmp_path / "model")
    page = tmp_path / "page.html"
    assert explain_main(["--model", str(folder), "--text", "the film was cf bad", "--label", "1",
                         "--html", str(page)]) == 0
    assert "cf" in capsys.readouterr().out and "<span" in page.read_text()
    out = tmp_path / "batch.json"
    assert explain_main(["--model", str(folder), "--dataset", "sst2", "--data-dir", str(data_dir), "--limit", "3",
                         "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["explanations"]) == 3 and report["seconds_per_sentence"] > 0
    row = report["explanations"][0]
    assert len(row["word_scores"]) == len(row["words"]) and row["gold"] in (0, 1)
    with pytest.raises(SstkitError, match="--label"):
        explain_main(["--model", str(folder), "--text", "x", "--label", "5"])


# --- circuit discovery ---------------------------------------------------------------------------------------
def test_head_sources_keep_completeness_and_vanish_at_the_mean() -> None:
    from sstkit.functional.cdt.circuit import cdt_head_scores, head_activations, head_means
    from sstkit.functional.cdt.patching import patched_heads

    model = tiny_opt()
    ids = _batch()["input_ids"][:, :5] + 4
    recorded: dict = {}
    with patched_heads(model, {}, recorded), torch.no_grad():
        model(input_ids=ids)
    acts = head_activations(model, ids)
    for (layer, head), value in recorded.items():  # the decomposition's head nodes are the model's head outputs
        torch.testing.assert_close(acts[layer][:, head], value, atol=1e-5, rtol=0)

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 7] - logits[:, -1].mean(-1)

    scores = cdt_head_scores(model, ids, metric, head_means(model, ids), sources_per_pass=4)
    assert scores.output.shape == (6,) and scores.to_head.shape == (6, 6) and scores.output.max() > 0
    assert scores.to_head[3:].abs().max() == 0 and scores.to_head[:3, 3:].max() > 0  # only earlier -> later
    # one example: its activation is the mean, so no source carries anything
    single = cdt_head_scores(model, ids[:1], metric, head_means(model, ids[:1]))
    assert single.output.abs().max() < 1e-5 and single.to_head.abs().max() < 1e-5


def test_patching_with_clean_values_changes_nothing() -> None:
    from sstkit.functional.cdt.circuit import all_nodes, head_means
    from sstkit.functional.cdt.patching import activation_patching, faithfulness, path_patching, run_metric

    model = tiny_opt()
    ids = _batch()["input_ids"][:, :5] + 4

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 7] - logits[:, -1].mean(-1)

    clean: dict = {}
    base = run_metric(model, ids, metric, record=clean)
    torch.testing.assert_close(run_metric(model, ids, metric, clean), base)
    means = head_means(model, ids)
    assert activation_patching(model, ids, metric, means).shape == (6,)
    paths = path_patching(model, ids, metric, means)
    assert paths.to_head[3:].abs().max() == 0
    assert faithfulness(model, ids, metric, means, all_nodes(model)) == pytest.approx(1.0)
    assert faithfulness(model, ids, metric, means, []) == pytest.approx(0.0, abs=1e-6)


def test_backward_circuit_follows_head_to_head_scores() -> None:
    from sstkit.functional.cdt.circuit import HeadScores, backward_circuit, circuit_ranking

    nodes = [(0, 0), (0, 1), (1, 0), (1, 1)]
    to_head = torch.zeros(4, 4)
    to_head[1, 2] = 1.0  # (0, 1) feeds (1, 0), which drives the output
    scores = HeadScores(nodes, torch.tensor([0.0, 0.0, 2.0, 0.1]), to_head)
    assert backward_circuit(scores, k=1) == [(1, 0), (0, 1)]
    rank = circuit_ranking(scores, k=1)
    assert rank.argsort(descending=True).tolist()[:2] == [2, 1]


def test_sources_from_cached_prefix_match_full_propagation() -> None:
    from sstkit.functional.cdt.circuit import clean_states

    model = tiny_opt()
    ids = _batch()["input_ids"][:, :5] + 4
    heads, entering = clean_states(model, ids)

    def hook(layer: int, beta: torch.Tensor, gamma: torch.Tensor) -> tuple:
        if layer == 1:
            beta, gamma = beta.clone(), gamma.clone()
            beta[:, 2], gamma[:, 2] = gamma[:, 2] + beta[:, 2], 0 * gamma[:, 2]
        return beta, gamma

    empty = torch.zeros(1, 5, dtype=torch.bool)
    full = decompose(model, ids, relevant=empty, head_hook=hook)
    cached = decompose(model, ids, relevant=empty, head_hook=hook, start=(1, entering[1]))
    torch.testing.assert_close(cached.beta, full.beta, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached.total, full.total, atol=1e-5, rtol=0)
    assert full.beta.abs().max() > 0
    with pytest.raises(ValueError, match="empty"):
        decompose(model, ids, relevant=[[1]], start=(1, entering[1]))


# --- position-resolved nodes ---------------------------------------------------------------------------------
def _read_position(q: int):
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, q, 7] - logits[:, q].mean(-1)
    return metric


def test_position_sources_keep_completeness_at_every_position() -> None:
    from sstkit.functional.cdt.circuit import clean_states, head_means, source_pass

    model = tiny_opt()
    ids = _batch()["input_ids"][:, :5] + 4
    heads, entering = clean_states(model, ids)
    means = head_means(model, ids)
    sources = [(0, 0, 1), (0, 2, 3), (0, 1, 4), (0, 1)]  # heads at positions, and one whole head, in one batch
    result = source_pass(model, ids, sources, means, entering[0])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    for s, node in enumerate(sources):
        torch.testing.assert_close(result.output.total[:, s], logits, atol=1e-4, rtol=0)
        for layer, (beta, gamma) in result.heads.items():  # β + γ is the clean context of every head and position
            torch.testing.assert_close(beta[:, s] + gamma[:, s], heads[layer], atol=1e-5, rtol=0)
        planted = torch.zeros_like(heads[0])
        where = (slice(None), *node[1:])
        planted[where] = heads[0][where] - means[0][node[1:]]
        torch.testing.assert_close(result.heads[0][0][:, s], planted)  # β only at the source (and its position)
        if len(node) == 3:  # causal: nothing reaches earlier positions of later layers
            assert result.heads[1][0][:, s, :, :node[2]].abs().max() == 0
            assert result.heads[1][0][:, s, :, node[2]:].abs().max() > 0
    with pytest.raises(ValueError, match="one layer"):
        source_pass(model, ids, [(0, 0, 1), (1, 0, 1)], means, entering[0])


@pytest.mark.parametrize("attention", ["total", "beta"])
def test_position_nodes_respect_causality(attention: str) -> None:
    from sstkit.functional.cdt.circuit import all_nodes, cdt_head_scores, head_means
    from sstkit.functional.cdt.patching import activation_patching, path_patching

    model = tiny_opt()
    ids = _batch()["input_ids"][:, :5] + 4
    nodes = all_nodes(model, positions=5)
    assert len(nodes) == 2 * 3 * 5 and nodes[7] == (0, 1, 2)
    metric, means = _read_position(2), head_means(model, ids)
    scores = cdt_head_scores(model, ids, metric, means, nodes=nodes, sources_per_pass=4, attention=attention)
    later = torch.tensor([n[2] > 2 for n in nodes])
    assert scores.output[later].abs().max() == 0 and scores.output[~later].max() > 0
    backwards = torch.tensor([[t[0] > s[0] and t[2] < s[2] for t in nodes] for s in nodes])
    forwards = torch.tensor([[t[0] > s[0] and t[2] >= s[2] for t in nodes] for s in nodes])
    assert scores.to_head[backwards].abs().max() == 0 and scores.to_head[forwards].min() >= 0
    assert (scores.to_head[forwards] > 0).float().mean() > 0.5
    if attention == "total":  # the baselines at the same granularity
        effects = activation_patching(model, ids, metric, means, nodes)
        assert effects[later].abs().max() < 1e-5 and effects[~later].max() > 1e-3
        paths = path_patching(model, ids, metric, means, nodes, skip_causal=False)
        assert paths.to_head[backwards].abs().max() < 1e-7 and paths.to_head[forwards].max() > 1e-5
        assert paths.output[later].abs().max() < 1e-5


def test_planted_position_is_recovered() -> None:
    """Examples differ only in the token at position 2, and only head 1 of layer 0 writes anything: of all layer-0
    nodes, only (0, 1, 2) can change the metric read at position 2; every method must single it out."""
    from sstkit.functional.cdt.circuit import all_nodes, backward_circuit, cdt_head_scores, head_means
    from sstkit.functional.cdt.patching import activation_patching, faithfulness, path_patching

    model = tiny_opt()
    values = model.model.decoder.layers[0].self_attn.v_proj
    with torch.no_grad():
        for head in (0, 2):
            values.weight[head * 8:(head + 1) * 8] = 0
            values.bias[head * 8:(head + 1) * 8] = 0
    ids = torch.tensor([[2, 11, token, 23, 5] for token in (7, 19, 33, 41, 52)])
    nodes = all_nodes(model, positions=5)
    first = [i for i, n in enumerate(nodes) if n[0] == 0]
    metric, means = _read_position(2), head_means(model, ids)
    cdt = cdt_head_scores(model, ids, metric, means, nodes=nodes)
    paths = path_patching(model, ids, metric, means, nodes)
    effects = activation_patching(model, ids, metric, means, nodes)
    for score in (cdt.output, paths.output, effects):
        ranked = sorted(first, key=lambda i: -float(score[i]))
        assert nodes[ranked[0]] == (0, 1, 2) and score[ranked[1]] < 1e-4 * score[ranked[0]]
    assert (0, 1, 2) in backward_circuit(cdt, k=1) and (0, 1, 2) in backward_circuit(paths, k=1)
    circuit = [(0, 1, 2)] + [n for n in nodes if n[0] == 1]
    assert faithfulness(model, ids, metric, means, circuit, nodes) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("gaps", [False, True])
def test_induction_data_repeats_at_its_distance(gaps: bool) -> None:
    from sstkit.functional.cdt.induction import bind_metric, induction_data

    data = induction_data(64, length=25, vocab=40, seed=3, min_half=4, gaps=gaps)
    for i in range(64):
        m, s, d = int(data.half[i]), int(data.start[i]), int(data.distance[i])
        assert s + m == 25 and m <= d <= 24 - m and data.ids[i, 0] == 0
        assert torch.equal(data.ids[i, s:], data.ids[i, s - d:s - d + m])
    assert (data.distance > data.half).any() == gaps  # gaps put noise between the copies
    perfect = torch.nn.functional.one_hot(data.ids.roll(-1, 1), 40).float() * 10  # logits that know the next token
    assert bind_metric(data)(perfect).min() > 9


def test_minimal_circuit_is_the_smallest_that_keeps_the_metric() -> None:
    from sstkit.functional.cdt.circuit import head_means
    from sstkit.functional.cdt.patching import faithfulness, minimal_circuit

    model = tiny_opt()
    ids = _batch()["input_ids"][:, :5] + 4
    metric, means = _read_position(4), head_means(model, ids)
    circuit, share = minimal_circuit(model, ids, metric, means, keep=0.8)
    assert share >= 0.8 and share == pytest.approx(faithfulness(model, ids, metric, means, circuit), abs=1e-6)
    for node in circuit:  # no node can be dropped (every smaller subset was searched before)
        assert faithfulness(model, ids, metric, means, [n for n in circuit if n != node]) < 0.8
    assert minimal_circuit(model, ids, metric, means, keep=-1e9)[0] == []
    with pytest.raises(ValueError, match="max_nodes"):
        minimal_circuit(model, ids, metric, means, max_nodes=4)
