"""Q-BERT: Hessian-vector products, Lanczos, group-wise quantiser, bit assignment, export, callback, command."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_BERT
from sstkit.callbacks import HessianQuantization
from torch import nn

from sstkit.errors import SstkitError
from sstkit.functional.bit_assignment import bits_from_budget, bits_from_map, bits_from_pattern, parse_pattern
from sstkit.functional.hessian import HessianOperator, block_sensitivities, discover_blocks, top_eigenvalue
from sstkit.functional.quant_export import export_quantized, load_quantized
from sstkit.functional.quantize import apply_quantization, model_size_mb, quant_modules
from sstkit.models import TextClassifier
from sstkit.nn.quant import QuantEmbedding, QuantLinear, quantize_groups, row_groups


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))


def _mlp_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _batches(n: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, generator=gen), torch.randint(0, 2, (8,), generator=gen)) for _ in range(n)]


def _dense_hessian(model: nn.Module, params: list[nn.Parameter], batches: list) -> torch.Tensor:
    shapes = [p.shape for p in params]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        chunks, offset = {}, 0
        names = {id(p): n for n, p in model.named_parameters()}
        for p, shape in zip(params, shapes):
            chunks[names[id(p)]] = flat[offset:offset + p.numel()].view(shape)
            offset += p.numel()
        losses = [F.cross_entropy(torch.func.functional_call(model, chunks, (x,)), y) for x, y in batches]
        return torch.stack(losses).mean()

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    return torch.autograd.functional.hessian(loss_of, flat)


def test_hvp_matches_autograd_hessian() -> None:
    model, batches = _mlp(), _batches()
    params = list(model[0].parameters())
    dense = _dense_hessian(model, params, batches)
    v = [torch.randn(p.shape) for p in params]
    for keep_graph in (True, False):
        hv = HessianOperator(model, _mlp_loss, batches, params, keep_graph)(v)
        expected = dense @ torch.cat([x.reshape(-1) for x in v])
        torch.testing.assert_close(torch.cat([x.reshape(-1) for x in hv]), expected, atol=1e-5, rtol=1e-4)


def test_lanczos_matches_top_eigenvalue() -> None:
    model, batches = _mlp(), _batches()
    params = list(model[0].parameters())
    eig = torch.linalg.eigvalsh(_dense_hessian(model, params, batches))
    top = eig[eig.abs().argmax()].item()
    operator = HessianOperator(model, _mlp_loss, batches, params)
    result = top_eigenvalue(operator, params, max_iter=500, tol=1e-7)
    assert result.value == pytest.approx(top, rel=1e-3)
    assert operator.count == 2 * result.iterations


def _opposite_sign_block(seed: int, scale: float = 1.0) -> tuple[nn.Module, list, list[nn.Parameter], torch.Tensor]:
    """A 56-parameter block (Linear(6, 8) before tanh) whose Hessian has extremes of opposite sign, |λ| within 20 %."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    gen = torch.Generator().manual_seed(seed)
    batches = [(2 * torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)) for _ in range(2)]
    params = list(model[0].parameters())
    eig = torch.linalg.eigvalsh(scale * _dense_hessian(model, params, batches).double())
    assert eig[0] < 0 < eig[-1] and min(-eig[0], eig[-1]) > 0.8 * max(-eig[0], eig[-1])  # the hard case
    return model, batches, params, eig


OPPOSITE_SIGN_SEEDS = [1, 2, 6, 7, 11]


@pytest.mark.parametrize("seed", OPPOSITE_SIGN_SEEDS)
def test_default_estimate_is_exact_with_opposite_sign_extremes(seed: int) -> None:
    # Power iteration with the defaults (20 iterations, tol 1e-2) missed such blocks by 25-190 %.
    model, batches, params, eig = _opposite_sign_block(seed)
    top = eig[eig.abs().argmax()].item()
    operator = HessianOperator(model, _mlp_loss, batches, params)
    result = top_eigenvalue(operator, params)
    assert result.converged and result.value == pytest.approx(top, rel=1e-3)
    # The returned vector is the matching eigenvector: ‖Hy − λy‖ small against |λ|.
    hy = operator(result.vector)
    residual = torch.sqrt(sum(((a - result.value * b) ** 2).sum() for a, b in zip(hy, result.vector)))
    assert residual < 0.05 * abs(top)


@pytest.mark.parametrize("scale", [1e-6, 1e-9])
def test_tolerance_is_relative_for_tiny_eigenvalues(scale: float) -> None:
    # The same blocks with the loss scaled by 1e-6 / 1e-9: the same steps and the same relative accuracy.
    for seed in OPPOSITE_SIGN_SEEDS[:3]:
        model, batches, params, eig = _opposite_sign_block(seed, scale)
        top = eig[eig.abs().argmax()].item()
        big = top_eigenvalue(HessianOperator(model, _mlp_loss, batches, params), params)
        tiny = top_eigenvalue(HessianOperator(model, lambda m, b: scale * _mlp_loss(m, b), batches, params), params)
        assert tiny.converged and tiny.iterations == big.iterations
        assert tiny.value == pytest.approx(top, rel=1e-3)


def test_block_sensitivities_on_opposite_sign_blocks() -> None:
    # Ω through the public entry point with its defaults: |λ| of the dominant eigenvalue of each subset's Hessian.
    model, batches, params, _ = _opposite_sign_block(OPPOSITE_SIGN_SEEDS[0])
    exact = []
    for subset in ([batches[0]], [batches[1]]):
        eig = torch.linalg.eigvalsh(_dense_hessian(model, params, subset).double())
        exact.append(eig[eig.abs().argmax()].item())
    result = block_sensitivities(model, _mlp_loss, batches, blocks=["0"], num_subsets=2)
    assert result.eigenvalues["0"] == pytest.approx(exact, rel=1e-3)
    mean = sum(exact) / 2
    assert result.omega["0"] == pytest.approx(abs(mean) + abs(exact[0] - mean), rel=1e-3)


class _Quadratic(nn.Module):
    """loss = Σ_k ½ w_kᵀ A_k w_k: the Hessian of block k is A_k."""

    def __init__(self, diagonals: list[list[float]]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.ParameterDict({"w": nn.Parameter(torch.randn(len(d)))}) for d in diagonals)
        self.diagonals = [torch.tensor(d) for d in diagonals]

    def loss(self, batch: object = None) -> torch.Tensor:
        return sum(0.5 * (a * layer["w"] ** 2).sum() for a, layer in zip(self.diagonals, self.layers))


def test_eigenvalue_of_known_quadratic() -> None:
    model = _Quadratic([[5.0, 2.0, -1.0, 0.5], [-3.0, 1.0]])
    assert list(discover_blocks(model)) == ["layers.0", "layers.1"]
    result = block_sensitivities(model, lambda m, b: m.loss(b), [None] * 3, num_subsets=3, max_iter=200, tol=1e-6)
    assert result.omega["layers.0"] == pytest.approx(5.0, rel=1e-3)
    assert result.omega["layers.1"] == pytest.approx(3.0, rel=1e-3)  # |λ| of the largest-magnitude eigenvalue
    assert all(len(v) == 3 for v in result.eigenvalues.values())
    assert result.hvps == sum(sum(it) for it in result.iterations.values())


def test_block_prefixes_and_errors() -> None:
    model = _Quadratic([[1.0], [2.0]])
    assert list(discover_blocks(model, ["layers.1"])) == ["layers.1"]
    with pytest.raises(SstkitError, match="nope"):
        discover_blocks(model, ["nope"])
    with pytest.raises(SstkitError, match="subsets"):
        block_sensitivities(model, lambda m, b: m.loss(b), [None], num_subsets=2)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_quantise_dequantise_error_within_half_step(bits: int) -> None:
    torch.manual_seed(bits)
    weight = torch.randn(48, 20) * torch.linspace(0.1, 3, 48)[:, None]
    index = row_groups(48, 6, heads=3)
    q = quantize_groups(weight, bits, index)
    assert q.codes.dtype == torch.uint8 and int(q.codes.max()) <= 2**bits - 1
    error = (q.dequantize() - weight).abs()
    for g in range(int(index.max()) + 1):
        rows = index == g
        lo, hi = weight[rows].min(), weight[rows].max()
        assert q.zero[g] == lo and q.scale[g] == pytest.approx(float((hi - lo) / (2**bits - 1)))
        assert error[rows].max() <= q.scale[g] / 2 + 1e-6


def test_groups_split_heads_first() -> None:
    index = row_groups(12, 4, heads=2)
    assert index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert row_groups(12, 4, heads=4).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert row_groups(5, 128).tolist() == [0, 1, 2, 3, 4]  # never more groups than rows
    assert row_groups(4, 1).tolist() == [0, 0, 0, 0]


def test_eight_bit_fake_quant_keeps_outputs_close_and_ste_passes_gradients() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    x = torch.randn(5, 32)
    reference = linear(x)
    layer = QuantLinear(linear, bits=8, num_groups=4, act_bits=8)
    out = layer(x)
    assert (out - reference).abs().max() < 0.02 * reference.abs().max()
    assert not torch.equal(out, reference)
    out.sum().backward()
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    # straight through: d(sum y)/dW = 1ᵀ·x̂ as if the quantiser were the identity
    torch.testing.assert_close(linear.weight.grad, torch.ones(16, 5) @ _act_fq(x), atol=1e-5, rtol=1e-5)
    emb = QuantEmbedding(nn.Embedding(10, 4), bits=2, num_groups=2)
    emb(torch.tensor([1, 2])).sum().backward()
    assert emb.weight.grad[1].abs().sum() > 0 and emb.weight.grad[5].abs().sum() == 0


def _act_fq(x: torch.Tensor) -> torch.Tensor:
    from sstkit.nn.quant import fake_quantize_activation

    return fake_quantize_activation(x, 8)


def test_bit_assignment() -> None:
    omega = {f"b{i}": float(v) for i, v in enumerate([3, 9, 1, 7, 5, 2])}
    assert parse_pattern("3/2") == [2, 3] and parse_pattern(8) == [8]
    bits = bits_from_pattern(omega, "2/3")
    assert {k for k, v in bits.items() if v == 3} == {"b1", "b3", "b4"}
    reverse = bits_from_pattern(omega, "2/3", order="reverse")
    assert {k for k, v in reverse.items() if v == 3} == {"b0", "b2", "b5"}
    random_bits = bits_from_pattern(omega, "2/3", order="random", seed=1)
    assert sorted(random_bits.values()) == [2, 2, 2, 3, 3, 3]
    sizes = {k: 1000 * (i + 1) for i, k in enumerate(omega)}
    for budget in (0.006, 0.008, 0.012):
        assigned = bits_from_budget(omega, sizes, [2, 3, 4, 8], budget_mb=budget)
        used = sum(sizes[k] * b for k, b in assigned.items()) / (8 * 2**20)
        assert used <= budget and set(assigned.values()) <= {2, 3, 4, 8}
    assert bits_from_budget(omega, sizes, [2, 3], budget_mb=1.0) == dict.fromkeys(omega, 3)
    assert bits_from_map(list(omega), {0: 4, **{k: 2 for k in list(omega)[1:]}})["b0"] == 4


@pytest.mark.parametrize("call", [
    lambda: parse_pattern("2/x"),
    lambda: parse_pattern("0"),
    lambda: bits_from_budget({"a": 1.0}, {"a": 10**7}, [2], budget_mb=0.001),
    lambda: bits_from_map(["a", "b"], {"a": 2}),
    lambda: HessianQuantization(bits="2/17"),
    lambda: HessianQuantization(order="sideways"),
    lambda: HessianQuantization(num_groups=0),
    lambda: HessianQuantization(budget_mb=1.0),
    lambda: HessianQuantization(activation_bits=0),
])
def test_bad_arguments_raise_sstkit_error(call) -> None:
    with pytest.raises(SstkitError):
        call()


@functools.cache
def _base_classifier() -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier("minilm", pretrained=False, config_overrides={**TINY_BERT, "num_hidden_layers": 2})


def _tiny_classifier() -> TextClassifier:
    return copy.deepcopy(_base_classifier())  # building a model is slow on a busy CPU; copies are identical


def _inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(0, 1000, (3, 7), generator=gen), "attention_mask": torch.ones(3, 7)}


@pytest.mark.parametrize("act_bits", [None, 8])
def test_export_then_load_reproduces_fake_quant_outputs(tmp_path: Path, act_bits: int | None) -> None:
    model = _tiny_classifier().eval()
    blocks = list(discover_blocks(model))
    apply_quantization(model, {blocks[0]: 2, blocks[1]: 3}, num_groups=8, act_bits=act_bits)
    expected = model(**_inputs())
    meta = export_quantized(model, tmp_path, extra={"bits": "2/3"})
    assert meta["size_mb"] < meta["fp32_mb"] / 3 and meta["size_mb_no_emb"] < meta["size_mb"]
    assert meta["modules"]["encoder.encoder.layer.0.attention.self.query"]["heads"] == 2
    plain = load_quantized(tmp_path, _tiny_classifier().eval())
    assert not quant_modules(plain) or act_bits is not None
    torch.testing.assert_close(plain(**_inputs()), expected, atol=0, rtol=0)
    with pytest.raises(SstkitError):
        load_quantized(tmp_path / "missing", _tiny_classifier())


def test_model_size_counts_bits_and_groups() -> None:
    model = nn.Sequential(nn.Embedding(16, 8), nn.Linear(8, 4))
    apply_quantization(model, {}, num_groups=2, other_bits=4, embedding_bits=8, exclude=["nothing"])
    size = model_size_mb(model)
    mb = 8 * 2**20
    assert size["size_mb_no_emb"] == pytest.approx((4 * 32 + 64 * 2 + 32 * 4) / mb)
    assert size["size_mb"] == pytest.approx(size["size_mb_no_emb"] + (8 * 128 + 64 * 2) / mb)


def _text_batches(n: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [{"input_ids": torch.randint(0, 1000, (4, 6), generator=gen), "attention_mask": torch.ones(4, 6),
             "labels": torch.randint(0, 2, (4,), generator=gen)} for _ in range(n)]


def test_callback_swaps_idempotently_and_assigns_by_omega(tmp_path: Path) -> None:
    model = _tiny_classifier()
    callback = HessianQuantization(bits="2/3", num_groups=4, hessian_batches=1, num_subsets=2, max_iter=3,
                                   omega_file=str(tmp_path / "omega.json"))
    callback.attach(model)
    first = quant_modules(model)
    assert not callback.resolved and all(m.bits is None for m in first.values())  # fp32 until Ω is known
    assert isinstance(model.head[1], nn.Linear)  # the classifier head stays full precision
    callback.resolve(callback.compute_omega(model, _text_batches(2)))
    callback.attach(model)
    assert quant_modules(model).keys() == first.keys()
    assert all(a is b for a, b in zip(quant_modules(model).values(), first.values()))
    bits, omega = callback.state["bits"], callback.state["omega"]
    assert sorted(bits.values()) == [2, 3] and bits[max(omega, key=omega.get)] == 3
    assert json.loads((tmp_path / "omega.json").read_text())["omega"] == omega
    assert model.encoder.encoder.layer[0].attention.self.query.heads == 2
    # resume: a fresh callback and model get the same bits from the state dict
    other, clone = HessianQuantization(bits="2/3", num_groups=4), _tiny_classifier()
    other.attach(clone)
    other.load_state_dict(callback.state_dict())
    assert {n: m.bits for n, m in quant_modules(clone).items()} == {n: m.bits for n, m in quant_modules(model).items()}
    loaded = HessianQuantization(bits="2/3", order="reverse", omega=str(tmp_path / "omega.json"))
    loaded.attach(_tiny_classifier())
    assert loaded.state["bits"] == {b: 5 - v for b, v in bits.items()}


def test_quantize_command(write_config, data_dir: Path, tmp_path: Path) -> None:
    import lightning as L
    from conftest import tiny_config
    from sstkit.datamodules import SST2DataModule

    from sstkit.commands.quantize import quantize_main

    config = write_config(tiny_config(data_dir))
    model = _tiny_classifier()
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=SST2DataModule(data_dir=str(data_dir), batch_size=8, max_length=16))
    ckpt = tmp_path / "base.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "q"
    assert quantize_main(["--checkpoint", str(ckpt), "--data-config", str(config), "--bits", "2/3", "--groups", "4",
                          "--set", "data.init_args.max_length=16", "--hessian-batches", "1",
                          "--num-subsets", "2", "--max-iter", "2", "--qat-steps", "1", "--out", str(out)]) == 0
    record = json.loads((out / "summary.json").read_text())
    assert record["metrics"]["hvps"] > 0 and 0 <= record["metrics"]["test/acc"] <= 1
    assert (out / "quant_meta.json").is_file() and (out / "omega.json").is_file()
    with pytest.raises(SstkitError, match="no such file"):
        quantize_main(["--checkpoint", str(tmp_path / "nope.ckpt"), "--data-config", str(config), "--out", str(out)])
    with pytest.raises(SstkitError, match="bits"):
        quantize_main(["--checkpoint", str(ckpt), "--data-config", str(config), "--bits", "2/99", "--out", str(out)])
