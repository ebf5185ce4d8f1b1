"""The hyperbolic GNN family: manifold invariants with SST, step-0 equality, NC/LP training, resume, read-only data."""

from __future__ import annotations

import copy
from pathlib import Path

import geoopt
import lightning as L
import pytest
import torch
from conftest import family_config, shared_data
from sstkit.callbacks import LoRA, SparseSpectralTraining
from sstkit.datamodules import PlanetoidDataModule, SyntheticGraphDataModule
from support import run_cli, run_sstkit, summary

from sstkit.errors import DataError
from sstkit.functional.sst import apply_sst
from sstkit.models import HyperbolicGNN
from sstkit.nn.lorentz import LorentzAggregation, LorentzLinear, lorentz_inner
from sstkit.nn.spectral import SpectralLinear

PATTERNS = [r"re:(^|\.)linear$"]


def tiny_data(task: str = "node", dtype: torch.dtype = torch.float32) -> SyntheticGraphDataModule:
    data = SyntheticGraphDataModule(kind="tree", num_nodes=60, branching=3, features="random", feature_dim=8,
                                    task=task, val_ratio=0.2, test_ratio=0.2)  # fmt: skip
    data.setup()
    for split in data.splits.values():
        split.x = split.x.to(dtype)
    return data


def tiny_model(data: SyntheticGraphDataModule, geometry: str = "lorentz", curvature: float = 1.0) -> HyperbolicGNN:
    torch.manual_seed(0)
    return HyperbolicGNN(model=geometry, task=data.task, num_features=data.num_features, num_labels=data.num_labels,
                         hidden_dim=8, num_layers=2, curvature=curvature, dropout=0.1, lr=0.05)  # fmt: skip


def trainer(steps: int, callbacks: list[L.Callback] = (), precision: str = "32-true") -> L.Trainer:
    return L.Trainer(accelerator="cpu", max_steps=steps, precision=precision, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     callbacks=list(callbacks))  # fmt: skip


def assert_on_hyperboloid(model: HyperbolicGNN, data: SyntheticGraphDataModule, curvature: float) -> None:
    """Every LorentzLinear and LorentzAggregation output, and the embedded input, satisfy ⟨x, x⟩_L = −1/c."""
    batch, outputs = data.splits["train"], []
    layers = [m for m in model.modules() if isinstance(m, LorentzLinear | LorentzAggregation)]
    hooks = [m.register_forward_hook(lambda mod, args, out: outputs.append(out)) for m in layers]
    model.eval()
    try:
        with torch.no_grad():
            outputs.append(model.embed_input(batch.x))
            model(batch.x, batch.edge_index)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(outputs) == 1 + 2 * len(model.encoder)
    for out in outputs:
        torch.testing.assert_close(lorentz_inner(out, out), torch.full_like(out[:, :1], -1.0 / curvature),
                                   atol=1e-4, rtol=0)  # fmt: skip
        assert (out[:, 0] > 0).all()


@pytest.mark.parametrize("curvature", [1.0, 0.5])
def test_layers_stay_on_hyperboloid_under_sst(curvature: float) -> None:
    # float64: the invariant is the geometry's; in float32, ⟨x, x⟩_L of a point with x_0 ≈ 100 (a centroid of
    # far-apart neighbours) cannot be represented to 1e-4 at all, whatever the layer computes.
    data = tiny_data(dtype=torch.float64)
    model = tiny_model(data, curvature=curvature).double()
    assert_on_hyperboloid(model, data, curvature)
    sst = SparseSpectralTraining(rank=2, steps_per_iteration=2, warmup_steps=1, patterns=PATTERNS)
    trainer(5, [sst], precision="64-true").fit(model, data)
    wrapped = [name for name, m in model.named_modules() if isinstance(m, SpectralLinear)]
    assert wrapped == ["encoder.0.lorentz_linear.linear", "encoder.1.lorentz_linear.linear"]
    assert sst.resample_count >= 2
    assert_on_hyperboloid(model, data, curvature)
    centroids = model.decoder.centroids  # Riemannian Adam kept the class centroids on the manifold too
    assert isinstance(centroids, geoopt.ManifoldParameter)
    torch.testing.assert_close(lorentz_inner(centroids, centroids), torch.full_like(centroids[:, :1], -1 / curvature),
                               atol=1e-4, rtol=0)  # fmt: skip


@pytest.mark.parametrize("geometry", ["lorentz", "poincare", "euclidean"])
def test_sst_step0_equals_dense(geometry: str) -> None:
    data = tiny_data("link")
    model = tiny_model(data, geometry).eval()
    batch = data.splits["val"]
    with torch.no_grad():
        dense = model(batch.x, batch.edge_index)
        layers = apply_sst(model, 2, PATTERNS, seed=0)
        spectral = model(batch.x, batch.edge_index)
    assert len(layers) == 2
    torch.testing.assert_close(spectral, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("geometry", "task"), [("lorentz", "node"), ("lorentz", "link"), ("poincare", "node"),
                                                ("euclidean", "link")])  # fmt: skip
def test_node_and_link_tasks_train(geometry: str, task: str) -> None:
    data = tiny_data(task)
    model = tiny_model(data, geometry)
    fit = trainer(6)
    fit.fit(model, data)
    assert torch.isfinite(fit.callback_metrics["train/loss"])
    metrics = fit.validate(model, data, verbose=False)[0]
    keys = ("val/acc", "val/f1") if task == "node" else ("val/roc_auc", "val/ap")
    assert all(0.0 <= metrics[k] <= 1.0 for k in keys), metrics


def test_lora_wraps_only_the_inner_linears() -> None:
    data = tiny_data()
    model = tiny_model(data)
    trainer(2, [LoRA(rank=2, alpha=4, patterns=PATTERNS)]).fit(model, data)
    wrapped = sorted(n for n, m in model.named_modules() if hasattr(m, "lora_A"))
    assert wrapped == ["encoder.0.lorentz_linear.linear", "encoder.1.lorentz_linear.linear"]
    assert model.decoder.centroids.requires_grad  # manifold points are never adapters' business


def test_cli_links_features_and_resumes_exactly(write_config, data_dir: Path, tmp_path: Path) -> None:
    config = family_config("graph", data_dir, max_steps=6)
    config["trainer"]["callbacks"] = [{"class_path": "sstkit.callbacks.SparseSpectralTraining",
                                       "init_args": {"rank": 2, "steps_per_iteration": 2, "warmup_steps": 1,
                                                     "iterations_per_round": 2, "patterns": PATTERNS}}]  # fmt: skip
    path = write_config(config)
    whole = run_cli("fit", "--config", str(path), "--run_root", str(tmp_path), "--name", "whole")
    assert whole.model.hparams.num_features == 8 and whole.model.hparams.num_labels == 3
    ckpt = tmp_path / "step3.ckpt"
    stop = f'{{"class_path": "support.StopAtStep", "init_args": {{"step": 3, "ckpt_path": "{ckpt}"}}}}'
    run_cli("fit", "--config", str(path), "--run_root", str(tmp_path), "--name", "parts", f"--trainer.callbacks+={stop}")
    resumed = run_cli("fit", "--config", str(path), "--run_root", str(tmp_path), "--name", "parts", "--ckpt_path", str(ckpt))
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    # The full U / Vh are compared through W = U diag(s) Vh: where SST's clamp has driven singular values to 0, the
    # re-SVD's vectors for them are arbitrary (any basis of the null space), so 1e-7 float noise can rotate them.
    factors = tuple(k for k in a if k.endswith((".U", ".Vh")))
    for key in a:
        if key not in factors:
            torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0, msg=key)
    spectral = {n: m for n, m in resumed.model.named_modules() if isinstance(m, SpectralLinear)}
    assert len(spectral) == 2
    for name, module in whole.model.named_modules():
        if name in spectral:
            torch.testing.assert_close(module.weight, spectral[name].weight, atol=1e-5, rtol=0, msg=name)


@pytest.mark.ddp
@pytest.mark.parametrize("task", ["node", "link"])
def test_ddp_ranks_share_the_targets_and_metrics_equal_one_process(task: str, write_config, data_dir: Path,
                                                                   tmp_path: Path) -> None:
    config = family_config("graph", data_dir, max_steps=4)
    config["model"]["init_args"]["task"] = config["data"]["init_args"]["task"] = task
    config["trainer"]["callbacks"] = [{"class_path": "sstkit.callbacks.SparseSpectralTraining",
                                       "init_args": {"rank": 2, "steps_per_iteration": 2, "patterns": PATTERNS}}]
    path = write_config(config)
    result = run_sstkit("fit", "--config", str(path), "--run_root", str(tmp_path), "--name", "ddp",
                        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = summary(tmp_path, "ddp")
    assert record["world_size"] == 2 and record["global_step"] == 4
    # Each rank scores its own half of the validation targets; synced, they equal one process on the same weights.
    single = run_cli("validate", "--config", str(path), "--run_root", str(tmp_path), "--name", "single",
                     "--ckpt_path", str(tmp_path / "ddp" / "seed0" / "checkpoints" / "last.ckpt"))
    keys = ("val/acc", "val/f1", "val/loss") if task == "node" else ("val/roc_auc", "val/ap", "val/loss")
    for key in keys:  # float32 means of two halves vs one mean: equal to rounding
        assert record["metrics"][key] == pytest.approx(float(single.trainer.callback_metrics[key]), rel=1e-5), key


def test_link_split_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b = tiny_data("link").splits, tiny_data("link").splits
    assert torch.equal(torch.get_rng_state(), state)
    for split in ("train", "val", "test"):
        assert torch.equal(a[split].edge_label_index, b[split].edge_label_index)
    assert a["val"].edge_label.sum() * 2 == a["val"].edge_label.numel()  # as many held-out negatives as positives


def test_planetoid_reads_a_read_only_folder_and_writes_the_cache(tmp_path: Path, monkeypatch) -> None:
    src = shared_data() / "planetoid" / "Cora" / "raw"
    if not src.is_dir():
        pytest.skip("no planetoid/Cora in the data folder")
    root = tmp_path / "data"
    (root / "planetoid" / "Cora").mkdir(parents=True)
    (root / "planetoid" / "Cora" / "raw").symlink_to(src)
    root.chmod(0o555)
    monkeypatch.setenv("SSTKIT_CACHE", str(tmp_path / "cache"))
    try:
        data = PlanetoidDataModule("cora", data_dir=str(root), task="node")
        assert (data.num_features, data.num_labels) == (1433, 7)
        assert data.describe() == {"train": 140, "val": 500, "test": 1000}
    finally:
        root.chmod(0o755)
    assert list((tmp_path / "cache").rglob("data.pt")), "processed files belong in the cache"
    assert sorted(p.name for p in (root / "planetoid" / "Cora").iterdir()) == ["raw"]
    with pytest.raises(DataError, match="ind.citeseer.x"):
        _ = PlanetoidDataModule("CiteSeer", data_dir=str(tmp_path / "empty")).num_features


def test_bad_arguments_name_the_value() -> None:
    with pytest.raises(Exception, match="model.model must be one of"):
        HyperbolicGNN(model="klein")
    with pytest.raises(Exception, match="data.kind"):
        SyntheticGraphDataModule(kind="grid")


def test_deepcopy_keeps_manifold_parameters() -> None:
    # EMA / SWA / the backdoor tools deep-copy models: the copy must be a working, independent model whose
    # centroids are still ManifoldParameters on the copy's own (shared) manifold.
    data = tiny_data()
    model = tiny_model(data).eval()
    clone = copy.deepcopy(model)
    centroids = clone.decoder.centroids
    assert isinstance(centroids, geoopt.ManifoldParameter) and centroids.manifold is clone.manifold
    assert clone.manifold is not model.manifold and clone.encoder[0].lorentz_linear.manifold is clone.manifold
    assert centroids.data_ptr() != model.decoder.centroids.data_ptr()
    batch = data.splits["train"]
    with torch.no_grad():
        torch.testing.assert_close(clone(batch.x, batch.edge_index), model(batch.x, batch.edge_index))
    before = model.decoder.centroids.detach().clone()
    clone.train()
    trainer(1).fit(clone, data)  # one Riemannian Adam step on the copy moves its centroids only
    assert not torch.equal(clone.decoder.centroids.detach(), before)
    torch.testing.assert_close(model.decoder.centroids.detach(), before, atol=0, rtol=0)
    torch.testing.assert_close(lorentz_inner(clone.decoder.centroids, clone.decoder.centroids),
                               torch.full_like(before[:, :1], -1.0), atol=1e-4, rtol=0)  # fmt: skip
