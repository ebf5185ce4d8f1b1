"""Delta pruning: DARE / DAREx-q / magnitude / WANDA, the q choices, and `sstkit delta prune` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_BERT

from sstkit.commands.classifier_io import load_classifier, make_batches, read_texts
from sstkit.commands.delta import delta_main
from sstkit.commands.delta_session import DeltaSession
from sstkit.errors import SstkitError
from sstkit.functional.darex import analytic_q_rows, analytic_qs, phi, q_grid, search_q
from sstkit.functional.delta import (
    apply_delta,
    dare,
    darex,
    extract_delta,
    is_embedding,
    is_norm,
    magnitude_prune,
    wanda_prune,
)
from sstkit.loaders import load_encoder, load_tokenizer
from sstkit.models.text_classifier import TextClassifier


def test_dare_is_unbiased_in_expectation() -> None:
    delta = {"w": torch.randn(16, 16)}
    gen = torch.Generator().manual_seed(0)
    n, p = 3000, 0.8
    mean = sum(dare(delta, p, gen)["w"] for _ in range(n)) / n
    sigma = delta["w"].abs() * (p / (1 - p)) ** 0.5 / n**0.5  # std of the mean per entry
    assert ((mean - delta["w"]).abs() <= 5 * sigma + 1e-6).all()


def test_p_zero_is_identity_and_darex_q_equals_dare() -> None:
    delta = {"a": torch.randn(8, 4), "b": torch.randn(4)}
    for out in (dare(delta, 0.0), magnitude_prune(delta, 0.0), darex(delta, 0.0, 1.0),
                wanda_prune(delta, 0.0, {"a": torch.rand(4)})):
        for key in delta:
            torch.testing.assert_close(out[key], delta[key])
    one = dare(delta, 0.9, torch.Generator().manual_seed(3))
    two = darex(delta, 0.9, 0.1, torch.Generator().manual_seed(3))
    for key in delta:
        torch.testing.assert_close(one[key], two[key])
    larger_q = darex(delta, 0.9, 0.5, torch.Generator().manual_seed(3))
    assert larger_q["a"].abs().sum() < one["a"].abs().sum()  # same mask, smaller rescale


def test_importance_pruning_keeps_the_right_entries() -> None:
    d = torch.tensor([[0.1, -3.0, 0.5, 2.0], [1.0, 0.2, -0.3, 0.05]])
    kept = magnitude_prune({"w": d}, 0.5)["w"]
    assert (kept != 0).sum() == 4 and kept[0, 1] == -3.0 and kept[1, 0] == 1.0
    norms = torch.tensor([10.0, 0.01, 1.0, 1.0])
    wanda = wanda_prune({"w": d}, 0.5, {"w": norms})["w"]
    assert ((wanda != 0).sum(1) == 2).all()  # per output row
    assert wanda[0, 1] == 0 and wanda[0, 0] == 0.1  # |δ|·‖x‖ ranks column 0 above column 1


def test_extract_delta_skips_head_and_options() -> None:
    pre = {"embeddings.word_embeddings.weight": torch.zeros(3, 2), "layer.0.dense.weight": torch.zeros(2, 2),
           "layer.0.LayerNorm.weight": torch.ones(2)}
    ft = {k: v + 1 for k, v in pre.items()} | {"head.1.weight": torch.ones(2, 2)}
    assert set(extract_delta(ft, pre)) == set(pre)
    only = extract_delta(ft, pre, include_embeddings=False, include_norms=False)
    assert set(only) == {"layer.0.dense.weight"}
    assert is_embedding("embeddings.word_embeddings.weight") and is_norm("encoder.layer.0.output.LayerNorm.bias")
    merged = apply_delta(pre, extract_delta(ft, pre))
    torch.testing.assert_close(merged["layer.0.dense.weight"], ft["layer.0.dense.weight"])
    with pytest.raises(SstkitError, match="shape"):
        extract_delta({"layer.0.dense.weight": torch.zeros(3, 2)}, pre)
    with pytest.raises(SstkitError, match="drop rate"):
        dare({"w": torch.ones(2)}, 1.0)


def test_analytic_q_in_range_and_deterministic() -> None:
    gen = torch.Generator().manual_seed(0)
    dw, db, x = torch.randn(6, 5, generator=gen) * 1e-2, torch.randn(6, generator=gen) * 1e-2, torch.randn(5, generator=gen)
    for p in (0.5, 0.9, 0.99):
        rows = analytic_q_rows(dw, x, p, eta=300.0, delta_bias=db)
        assert rows.shape == (6,) and (rows >= 1 - p - 1e-6).all() and (rows <= 0.998 + 1e-6).all()
        torch.testing.assert_close(rows, analytic_q_rows(dw, x, p, eta=300.0, delta_bias=db))
    assert phi(0.5) == 0.5 and abs(phi(0.5 + 1e-4) - 0.5) < 1e-3
    assert q_grid(0.99)[0].item() == pytest.approx(0.01) and q_grid(0.99)[-1].item() == pytest.approx(0.998)


def test_analytic_stop_share_ends_the_scan_once_most_rows_passed_their_minimum() -> None:
    # Three rows with positive Σc have interior minima (0.182, 0.364, 0.273); the negative row's objective keeps
    # falling to the top of the grid. With stop_share 0.75 the scan ends right after the third minimum.
    x = torch.ones(4)
    dw = torch.tensor([[1e-3] * 4, [2e-3] * 4, [1.5e-3] * 4, [-5e-3] * 4])
    full = analytic_q_rows(dw, x, 0.9, eta=100.0)
    stopped = analytic_q_rows(dw, x, 0.9, eta=100.0, stop_share=0.75)
    torch.testing.assert_close(full, torch.tensor([0.182, 0.364, 0.273, 0.998]))
    torch.testing.assert_close(stopped, torch.tensor([0.182, 0.364, 0.273, 0.365]))
    with pytest.raises(SstkitError, match="stop_share"):
        analytic_q_rows(dw, x, 0.9, eta=100.0, stop_share=1.5)


def test_search_q_coarse_then_fine_with_stop_rule() -> None:
    calls: list[float] = []

    def score(q: float) -> float:
        calls.append(q)
        return -abs(q - 0.237)

    result = search_q(score, p=0.9)
    assert result.q == pytest.approx(0.24)
    assert max(calls) <= 0.5 + 1e-9  # coarse scan stopped 3 points after the best (0.2)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny 'pretrained' encoder folder and a 'fine-tuned' classifier checkpoint with large deltas."""
    root = tmp_path_factory.mktemp("delta")
    torch.manual_seed(0)
    encoder = load_encoder("minilm", pretrained=False, config_overrides=TINY_BERT)
    encoder.save_pretrained(str(root / "pre"))
    load_tokenizer("minilm").save_pretrained(str(root / "pre"))
    model = TextClassifier(backbone=str(root / "pre"), num_labels=2)
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, root / "ft.ckpt")
    return {"pre": root / "pre", "ft": root / "ft.ckpt", "root": root}


def test_session_head_untouched_and_analytic_qs(tiny_models: dict[str, Path], data_dir: Path) -> None:
    model = load_classifier(tiny_models["ft"])
    session = DeltaSession(model, load_encoder(str(tiny_models["pre"])))
    assert not any(k.startswith("head") for k in session.delta)
    pruned_model = session.load(session.prune("dare", 0.99, seed=1))
    torch.testing.assert_close(pruned_model.head[1].weight, model.head[1].weight)
    texts, _ = read_texts(data_dir / "sst2" / "dev.tsv", limit=16)
    batches = make_batches(texts, None, str(tiny_models["pre"]), max_length=32, batch_size=8)
    stats = session.input_stats(batches)
    qs = analytic_qs(session.delta, stats, 0.9, eta=100.0)
    assert set(qs) == set(session.delta) and all(0.1 - 1e-6 <= q <= 0.998 + 1e-6 for q in qs.values())
    session._stats = None
    assert analytic_qs(session.delta, session.input_stats(batches), 0.9, eta=100.0) == qs


@pytest.mark.parametrize("extra", [["--method", "darex-q", "--q", "auto", "--q-mode", "global"],
                                   ["--method", "darex-q", "--q-mode", "analytic", "--eta", "100"],
                                   ["--method", "darex-q", "--q-mode", "unsupervised"],
                                   ["--method", "wanda"], ["--method", "dare"]])
def test_delta_prune_command(extra: list[str], tiny_models: dict[str, Path], data_dir: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    args = ["prune", "--finetuned", str(tiny_models["ft"]), "--pretrained", str(tiny_models["pre"]), "--p", "0.9",
            "--val-file", str(data_dir / "sst2" / "dev.tsv"), "--val-samples", "16", "--max-length", "32",
            "--mask-seeds", "1", "--fine-span", "0.2", "--patience", "1", "--out", str(out), *extra]
    assert delta_main(args) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "prune.json").read_text())
    if "darex-q" in extra:
        assert "chosen q:" in printed and 0.1 - 1e-6 <= record["q_mean"] <= 1.0
    reloaded = load_classifier(out)
    original = load_classifier(tiny_models["ft"])
    torch.testing.assert_close(reloaded.head[1].weight, original.head[1].weight)
    assert not torch.equal(reloaded.encoder.embeddings.word_embeddings.weight,
                           original.encoder.embeddings.word_embeddings.weight)


def test_delta_prune_bad_input(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    base = ["prune", "--finetuned", str(tiny_models["ft"]), "--pretrained", str(tiny_models["pre"]),
            "--out", str(tmp_path / "o")]
    with pytest.raises(SstkitError, match="--p"):
        delta_main([*base, "--method", "dare", "--p", "1.5"])
    with pytest.raises(SstkitError, match=r"--q 0.01"):
        delta_main([*base, "--method", "darex-q", "--p", "0.9", "--q", "0.01"])
    with pytest.raises(SstkitError, match="no such checkpoint"):
        delta_main(["prune", "--finetuned", str(tmp_path / "x.ckpt"), "--method", "dare", "--p", "0.5",
                    "--out", str(tmp_path / "o")])
