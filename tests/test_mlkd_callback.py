"""The MLKD callback: teacher from a checkpoint (frozen), random student, the MLKD loss replaces the LM loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sstkit.callbacks import MLKD

from sstkit.errors import SstkitError
from sstkit.functional.ood.mlkd import mlkd_loss
from sstkit.models import CausalLM


def lm(seed: int = 0, **overrides: int) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM("tiny", vocab_size=64, config_overrides={"dropout": 0.0, **overrides})


def save_teacher(tmp_path: Path) -> tuple[Path, CausalLM]:
    teacher = lm(seed=7)
    path = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": teacher.state_dict()}, path)
    return path, teacher


def batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(2, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def test_teacher_loaded_frozen_and_student_redrawn(tmp_path: Path) -> None:
    path, teacher = save_teacher(tmp_path)
    student = lm(seed=0)
    before = {k: v.clone() for k, v in student.lm.state_dict().items()}
    cb = MLKD(teacher=str(path), seed=3)
    cb.setup(None, student, "fit")
    assert cb.teacher is not None and not any(p.requires_grad for p in cb.teacher.parameters())
    torch.testing.assert_close(cb.teacher.state_dict(), teacher.lm.state_dict())
    key = "model.decoder.layers.0.fc1.weight"
    assert not torch.equal(student.lm.state_dict()[key], before[key])
    assert not torch.equal(student.lm.state_dict()[key], teacher.lm.state_dict()[key])
    # The teacher is not part of the trained model; the distiller (projection, β) is.
    names = [n for n, _ in student.named_parameters()]
    assert any(n.startswith("mlkd_distiller.") for n in names) and not any("teacher" in n for n in names)
    # setup again (validate/test) re-draws nothing.
    trained = {k: v.clone() for k, v in student.state_dict().items()}
    cb.setup(None, student, "validate")
    torch.testing.assert_close(student.state_dict(), trained)


def test_training_loss_is_the_mlkd_loss_and_it_decreases(tmp_path: Path) -> None:
    path, _ = save_teacher(tmp_path)
    student = lm(seed=0)
    cb = MLKD(teacher=str(path), temperature=2.0)
    cb.setup(None, student, "fit")
    student.train()
    b = batch()
    loss = student.training_step(b, 0)
    s = student.lm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
    t = cb.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
    expected = mlkd_loss(s.logits, t.logits, s.hidden_states, t.hidden_states, student.mlkd_distiller,
                         b["attention_mask"], 2.0)[0]
    cb._captured = None  # the extra forward above was captured by the hooks; drop it
    torch.testing.assert_close(loss, expected)  # lm_loss_weight = 0: the causal-LM loss is replaced
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = student.training_step(b, 0)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_keep_init_ablation_and_bad_arguments(tmp_path: Path) -> None:
    student = lm(seed=0)
    before = {k: v.clone() for k, v in student.lm.state_dict().items()}
    MLKD(student_init="keep").setup(None, student, "fit")
    torch.testing.assert_close(student.lm.state_dict(), before)
    with pytest.raises(SstkitError, match="no such checkpoint"):
        MLKD(teacher=str(tmp_path / "missing.ckpt"))
    with pytest.raises(SstkitError, match="student_init"):
        MLKD(student_init="pretrained")
    path = tmp_path / "wide.ckpt"
    torch.save({"state_dict": lm(hidden_size=32).state_dict()}, path)
    with pytest.raises(SstkitError, match="do not fit the model's config"):
        MLKD(teacher=str(path)).setup(None, lm(), "fit")
    with pytest.raises(SstkitError, match="student_layers"):
        MLKD(student_layers=[5]).setup(None, lm(), "fit")
