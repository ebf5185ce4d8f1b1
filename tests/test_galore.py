"""GaLore-AdamW (sstkit.optim.galore) against torch's AdamW and against GaLore's update written out by hand."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from sstkit.errors import SstkitError
from sstkit.optim.galore import GaLoreAdamW, galore_param_groups, projection

torch.set_num_threads(1)


def _grads(weight: torch.Tensor, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return torch.randn(weight.shape, generator=g)


def test_rank_at_least_the_short_side_is_adamw() -> None:
    """No projection when r >= min(m, n): five steps equal torch.optim.AdamW's to float precision."""
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(6, 4))
    b = torch.nn.Parameter(a.detach().clone())
    ours = GaLoreAdamW([{"params": [a], "rank": 4, "update_proj_gap": 1}], lr=1e-2)
    ref = torch.optim.AdamW([b], lr=1e-2, eps=1e-8, weight_decay=0.0)
    for step in range(5):
        a.grad, b.grad = _grads(a, step), _grads(b, step)
        ours.step()
        ref.step()
    torch.testing.assert_close(a, b)


def test_first_step_is_the_projected_adam_update() -> None:
    """Step 1 by hand: P = top-r right singular vectors of G, R = G Pᵀ, update = −lr·scale·(Adam(R)) P."""
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(8, 5))
    start = w.detach().clone()
    opt = GaLoreAdamW([{"params": [w], "rank": 2, "update_proj_gap": 10, "scale": 0.5}], lr=1e-2, betas=(0.9, 0.99))
    g = _grads(w, 0)
    w.grad = g
    opt.step()
    P = torch.linalg.svd(g, full_matrices=False)[2][:2]
    R = g @ P.T
    m, v = 0.1 * R, 0.01 * R * R
    step_size = 1e-2 * (1 - 0.99) ** 0.5 / (1 - 0.9)
    expected = start - step_size * 0.5 * (m / (v.sqrt() + 1e-8)) @ P
    torch.testing.assert_close(w.detach(), expected)
    assert int(torch.linalg.matrix_rank(w.detach() - start, rtol=1e-3)) == 2
    assert opt.state[w]["exp_avg"].shape == (8, 2)  # the moments live in the projected space


def test_wide_matrix_projects_on_the_left_and_renews_every_gap() -> None:
    w = torch.nn.Parameter(torch.randn(3, 7))
    opt = GaLoreAdamW([{"params": [w], "rank": 1, "update_proj_gap": 2}], lr=1e-3)
    seen = []
    for step in range(4):
        w.grad = _grads(w, step)
        opt.step()
        seen.append(opt.state[w]["projection"].clone())
    assert seen[0].shape == (3, 1)  # left: U_r of the 3 × 7 gradient
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])  # new P at steps 0 and 2


def test_projection_and_groups_helpers() -> None:
    p, side = projection(torch.randn(4, 9), 2)
    assert side == "left" and p.shape == (4, 2)
    lin = torch.nn.Linear(4, 4)
    groups = galore_param_groups([{"params": list(lin.parameters()), "weight_decay": 0.1}], {id(lin.weight)}, 2, 5)
    assert [len(g["params"]) for g in groups] == [1, 1]
    assert groups[1]["rank"] == 2 and groups[1]["update_proj_gap"] == 5 and groups[1]["weight_decay"] == 0.1


@pytest.mark.parametrize("group", [{"rank": 0}, {"rank": 2, "update_proj_gap": 0}, {"rank": 2.5}])
def test_bad_group_settings_are_refused(group: dict) -> None:
    with pytest.raises(SstkitError, match="galore"):
        GaLoreAdamW([{"params": [torch.nn.Parameter(torch.randn(4, 4))], **group}])


def test_one_dimensional_parameter_in_a_rank_group_is_refused() -> None:
    with pytest.raises(SstkitError, match="2-D"):
        GaLoreAdamW([{"params": [torch.nn.Parameter(torch.randn(4))], "rank": 2}])


def test_state_dict_round_trip_continues_identically() -> None:
    """A resumed optimizer (state_dict → load_state_dict) takes the same next steps as the original."""
    torch.manual_seed(2)
    a = torch.nn.Parameter(torch.randn(5, 3))
    b = torch.nn.Parameter(torch.randn(3, 5))
    opt = GaLoreAdamW([{"params": [a, b], "rank": 1, "update_proj_gap": 3}], lr=1e-2)
    for step in range(2):
        a.grad, b.grad = _grads(a, step), _grads(b, 10 + step)
        opt.step()
    a2, b2 = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    resumed = GaLoreAdamW([{"params": [a2, b2], "rank": 1, "update_proj_gap": 3}], lr=1e-2)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a checkpoint: no shared tensors
    for step in range(2, 5):
        a.grad, b.grad = _grads(a, step), _grads(b, 10 + step)
        a2.grad, b2.grad = _grads(a, step), _grads(b, 10 + step)
        opt.step()
        resumed.step()
    torch.testing.assert_close(a2, a)
    torch.testing.assert_close(b2, b)


class _LRLog(__import__("lightning").Callback):
    """Records every group's learning rate after each optimizer step."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:  # noqa: ANN001
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def test_callback_swaps_adamw_and_keeps_the_model_schedule(tmp_path) -> None:  # noqa: ANN001
    """Under Lightning: the optimizer becomes GaLoreAdamW with the projections in a rank group, every group follows
    the model's warm-up + cosine multiplier, and only the projected weights' moments are low-rank."""
    import lightning as L
    from sstkit.callbacks import GaLore

    from sstkit.models import CausalLM

    torch.manual_seed(0)
    model = CausalLM("tiny", vocab_size=64, lr=1e-2, warmup_steps=2, scheduler="cosine")
    data = [{"input_ids": torch.randint(0, 64, (2, 8))} for _ in range(6)]
    log = _LRLog()
    trainer = L.Trainer(max_steps=6, callbacks=[GaLore(rank=2, update_proj_gap=3), log], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", default_root_dir=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, torch.utils.data.DataLoader(data, batch_size=None))
    # The swapped-in scheduler is patched like one built with the optimizer (torch's step-order check is quiet).
    assert not [w for w in caught if "has been overridden after learning rate scheduler" in str(w.message)]
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, GaLoreAdamW)
    projected = [p for g in optimizer.param_groups if "rank" in g for p in g["params"]]
    names = {id(p): n for n, p in model.named_parameters()}
    assert projected and all(names[id(p)].endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight",
                                                     "out_proj.weight", "fc1.weight", "fc2.weight")) for p in projected)
    assert all(2 in optimizer.state[p]["exp_avg"].shape for p in projected)
    factor = model.lr_lambda(6)
    for step, lrs in enumerate(log.lrs):  # after step `step` the scheduler has moved to step + 1
        assert lrs == pytest.approx([1e-2 * factor(step + 1)] * len(lrs))
