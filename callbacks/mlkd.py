"""MLKD: distil a fine-tuned causal LM (teacher, frozen) into a randomly re-initialised student on ID text.

The Lightning face of :mod:`sstkit.functional.ood.mlkd`. In ``setup("fit")`` the callback keeps a frozen copy
of the teacher (a ``CausalLM`` checkpoint of the same config, or the model as built when ``teacher`` is None,
e.g. from ``model.pretrained``), re-draws the student's weights (``student_init: random``, the paper; ``keep``
is the "student from pretrained weights" ablation), adds the trainable :class:`HiddenDistiller` to the model as
``mlkd_distiller`` (so the optimizer, checkpoints and resume see it) and replaces the causal-LM loss by
:math:`L_{pred} + \\lambda L_{hidden}` (``lm_loss_weight`` keeps a share of it). The student's logits and
hidden states come from the family's own forward pass through hooks, so the student runs once per step.

The student only sees what the data module feeds to training: give it the ID texts only (see
``configs/opt/sst2_ood/mlkd.yaml``). Score ID vs OOD texts afterwards with ``sstkit ood score``.

Example (YAML)::

    trainer:
      callbacks:
        - class_path: sstkit.callbacks.MLKD
          init_args: {teacher: runs/sst2_teacher/seed0/checkpoints/last.ckpt, temperature: 1.0, top_k: 2}
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from sstkit.errors import SstkitError
from sstkit.functional.ood.mlkd import HiddenDistiller, default_student_layers, mlkd_loss, reinitialize_
from sstkit.stacking import method_setup, methods_on

METHOD = "mlkd"


def load_lm_state(path: str | Path) -> dict[str, Tensor]:
    """The ``lm.*`` weights of a ``CausalLM`` Lightning checkpoint, prefix removed."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError) as err:
        raise SstkitError(f"cannot read checkpoint {path}: {err}") from err
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    lm = {k[3:]: v for k, v in (state or {}).items() if k.startswith("lm.")}
    if not lm:
        raise SstkitError(f"{path}: not a Lightning checkpoint of a sstkit CausalLM (no 'lm.*' weights)")
    return lm


class MLKD(L.Callback):
    """Multi-level knowledge distillation into a random student (Wu et al., ACL 2023).

    Args:
        teacher: a ``CausalLM`` checkpoint (``.ckpt``) of the same config, fine-tuned on the ID texts; None: the
            model as built (``model.pretrained`` or a ``size`` preset) is copied as the teacher.
        temperature: τ of the prediction-layer KL.
        hidden_weight: weight λ of :math:`L_{hidden}`; 0 is the "no intermediate loss" ablation.
        top_k: K, teacher layers each student layer learns from.
        student_layers: student ``hidden_states`` indices to distil (0 = embeddings); default the middle half.
        teacher_layers: teacher ``hidden_states`` indices to match; default every block (1..L).
        shared_projection: one teacher projection for all teacher layers (official code) or one per layer.
        train_beta: learn the β weights of the K matches.
        student_init: ``random`` (re-draw the student's weights, the method) or ``keep`` (the ablation).
        lm_loss_weight: share of the ordinary causal-LM loss kept next to the distillation (official code: 0).
        seed: seed of the student's re-initialisation (independent of the global RNG).
    """

    def __init__(self, teacher: str | None = None, temperature: float = 1.0, hidden_weight: float = 1.0,
                 top_k: int = 2, student_layers: list[int] | None = None, teacher_layers: list[int] | None = None,
                 shared_projection: bool = True, train_beta: bool = True, student_init: str = "random",
                 lm_loss_weight: float = 0.0, seed: int = 0) -> None:
        if teacher is not None and not Path(teacher).is_file():
            raise SstkitError(f"MLKD.teacher: no such checkpoint file {teacher!r}")
        if temperature <= 0:
            raise SstkitError(f"MLKD.temperature must be > 0, got {temperature}")
        if hidden_weight < 0 or lm_loss_weight < 0:
            raise SstkitError(f"MLKD.hidden_weight and lm_loss_weight must be >= 0, got {hidden_weight}, "
                              f"{lm_loss_weight}")
        if student_init not in ("random", "keep"):
            raise SstkitError(f"MLKD.student_init must be 'random' or 'keep', got {student_init!r}")
        if top_k < 1:
            raise SstkitError(f"MLKD.top_k must be >= 1, got {top_k}")
        self.teacher_path, self.temperature, self.hidden_weight = teacher, temperature, hidden_weight
        self.top_k, self.student_layers, self.teacher_layers = top_k, student_layers, teacher_layers
        self.shared_projection, self.train_beta = shared_projection, train_beta
        self.student_init, self.lm_loss_weight, self.seed = student_init, lm_loss_weight, seed
        self.teacher: nn.Module | None = None
        self._captured: Any = None
        self._hooked: set[int] = set()

    # --- setup -------------------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        first = METHOD not in methods_on(pl_module)
        with method_setup(pl_module, METHOD):  # refuses methods MLKD cannot be stacked on (sstkit.stacking)
            lm = getattr(pl_module, "lm", None)
            if lm is None or not hasattr(lm, "config") or not hasattr(pl_module, "add_extra_loss"):
                raise SstkitError(f"MLKD distils causal LMs (sstkit.models.CausalLM), got {type(pl_module).__name__}")
            if stage == "fit" and self.teacher is None:
                self.teacher = self._build_teacher(lm)
                if first and self.student_init == "random":
                    # A resumed run re-draws too; the checkpoint restored after setup then wins.
                    reinitialize_(lm, self.seed)
            if not hasattr(pl_module, "mlkd_distiller"):
                # Present in every stage, so checkpoints with its weights load strictly for validate/test too.
                pl_module.mlkd_distiller = self._build_distiller(lm.config)
        self._install_hooks(lm)
        pl_module.set_task_loss_weight(self.lm_loss_weight)
        pl_module.add_extra_loss(METHOD, self._loss)

    def _build_teacher(self, lm: nn.Module) -> nn.Module:
        teacher = copy.deepcopy(lm)
        if self.teacher_path is not None:
            try:
                teacher.load_state_dict(load_lm_state(self.teacher_path))
            except RuntimeError as err:
                raise SstkitError(f"MLKD.teacher {self.teacher_path}: its weights do not fit the model's config "
                                  f"(the student has the teacher's architecture): {str(err).splitlines()[0]}") from err
        for param in teacher.parameters():
            param.requires_grad_(False)
        return teacher.eval()

    def _build_distiller(self, config: Any) -> HiddenDistiller:
        layers = int(config.num_hidden_layers)
        student = self.student_layers or default_student_layers(layers)
        teacher = self.teacher_layers or list(range(1, layers + 1))
        for name, chosen in (("student_layers", student), ("teacher_layers", teacher)):
            if min(chosen) < 0 or max(chosen) > layers:
                raise SstkitError(f"MLKD.{name}={chosen}: indices must be in 0..{layers} (0 = embeddings)")
        width = int(config.hidden_size)
        return HiddenDistiller(width, width, student, teacher, self.top_k, self.shared_projection, self.train_beta)

    # --- one student forward: capture its logits and hidden states --------------------------------------------
    def _install_hooks(self, lm: nn.Module) -> None:
        if id(lm) in self._hooked:
            return
        self._hooked.add(id(lm))

        def ask_hidden(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
            if module.training and torch.is_grad_enabled():
                return args, {**kwargs, "output_hidden_states": True}
            return None

        def keep(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if module.training and torch.is_grad_enabled():
                self._captured = output

        lm.register_forward_pre_hook(ask_hidden, with_kwargs=True)
        lm.register_forward_hook(keep, with_kwargs=True)

    def _loss(self, module: Any, batch: dict[str, Tensor], out: Any) -> Tensor:
        student, self._captured = self._captured, None
        if student is None or getattr(student, "hidden_states", None) is None:
            raise SstkitError("MLKD: the student's forward pass was not captured (is the model a CausalLM?)")
        if self.teacher is None:
            raise SstkitError("MLKD: no teacher (setup did not run for fit)")
        input_ids, mask = batch["input_ids"], batch.get("attention_mask")
        if next(self.teacher.parameters()).device != input_ids.device:
            self.teacher.to(input_ids.device)
        with torch.no_grad():
            teacher = self.teacher(input_ids=input_ids, attention_mask=mask, output_hidden_states=True,
                                   use_cache=False)
        total, pred, hidden = mlkd_loss(student.logits, teacher.logits, student.hidden_states, teacher.hidden_states,
                                        module.mlkd_distiller, mask, self.temperature, self.hidden_weight)
        size = int(input_ids.shape[0])
        module.log(f"method/{METHOD}/pred", pred.detach(), batch_size=size)
        module.log(f"method/{METHOD}/hidden", hidden.detach(), batch_size=size)
        return total

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed}
