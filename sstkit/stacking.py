"""Which methods may be stacked on one model: one table of refused pairs and the one check every method runs.

A method callback wraps its ``setup`` work in :func:`method_setup`; an optimizer wrapper calls
:func:`check_optimizer_params` on the parameters it was given. The check compares the new method with every
method already set up on the model (recorded on the model) or already owning one of the parameters (recorded
on the parameters its surgery created, which is all an optimizer gets to see), and refuses a pair listed in
:data:`REFUSED` with the reason written there. Pairs not listed compose; ``docs/methods/README.md`` has the
table and ``tests/test_stacking.py`` a test of each pair's meaning.

Example (a callback)::

    def setup(self, trainer, pl_module, stage):
        with method_setup(pl_module, "sst"):  # refuses here if e.g. LoRA is already on the model
            self.layers = apply_sst(pl_module, ...)  # parameters created in the block are marked "sst"

Example (an optimizer wrapper)::

    check_optimizer_params("adamr", [p for g in self.param_groups if g["delta_decay"] > 0 for p in g["params"]])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

from sstkit.errors import SstkitError

# The name every method uses here (as in its log keys) -> the class a user writes in a config.
METHODS: dict[str, str] = {
    "sst": "SparseSpectralTraining", "lora": "LoRA", "relora": "ReLoRA", "adamr": "AdamR",
    "qbert": "HessianQuantization", "cul": "CleanUnlearning", "asr": "AttackSuccessRate",
    "freelb": "FreeLB", "smart": "SMART", "selfcal": "SelfCalibration", "transductive": "TransductiveFineTuning",
    "rtd": "ReplacedTokenDetection",
    "mlkd": "MLKD",
    "hyper_adapters": "HyperAdapters",
    "galore": "GaLore",
    "attribute_head": "AttributeDiscriminator",
}

_SURGERY = ("both replace the same nn.Linear layers ({what}), so one would wrap the other's wrapper or match "
            "nothing; use one of them per model")
_QAT = ("Q-BERT's group-wise quantisers and Hessian bit assignment act on plain nn.Linear weights, which {other} "
        "replaces by its own layers: the trained weight ({what}) would not be the matrix the quantiser sees")
_CUL_LOSS = ("CleanUnlearning exposes a backdoor by gradient ascent on the plain clean loss (Expose Before You "
             "Defend); {other} changes that loss ({what}), so the ascent would no longer be that exposure")
_RTD_LOSS = ("ReplacedTokenDetection replaces the training loss by the pretraining objective L_MLM + λ·L_RTD + "
             "μ·L_SimCSE on unlabelled text, so {other}'s change to the classification loss would be dropped; "
             "pretrain first, then fine-tune from export_dir with {other}")
_RTD_SURGERY = ("{other} wraps nn.Linear layers by name across the whole model, which after ReplacedTokenDetection's "
                "setup includes its generator and detection head (and before it leaves them plain), so the meaning "
                "would depend on the callbacks' order; pretrain with RTD, then fine-tune from export_dir with {other}")
_CUL = ("CleanUnlearning exposes a backdoor by full-parameter gradient ascent from init_from's plain weights "
        "(Expose Before You Defend); {other} {what}, which is not that exposure and cannot load init_from")

# Unordered pairs that must not be stacked, with why. Every other pair of METHODS composes (see the module doc).
REFUSED: dict[frozenset[str], str] = {
    frozenset({"sst", "lora"}): _SURGERY.format(what="SST trains W = U diag(s) Vh, LoRA adds (alpha/r)·B A to a "
                                                "frozen W"),
    frozenset({"sst", "relora"}): _SURGERY.format(what="SST trains W = U diag(s) Vh, ReLoRA adds and periodically "
                                                  "merges (alpha/r)·B A"),
    frozenset({"lora", "relora"}): "ReLoRA is LoRA with periodic merges and restarts on the same layers; an "
                                   "adapter on an adapter has no meaning, use one of them",
    frozenset({"sst", "adamr"}): "AdamR pulls each parameter toward its value at its first step (θ − θ_pre), "
                                 "but SST re-samples which singular vectors its active blocks hold every "
                                 "steps_per_iteration steps and re-decomposes W every round, so that delta mixes "
                                 "different vectors and means nothing; give the SST parameters' group "
                                 "delta_decay 0 or use torch.optim.Adam",
    frozenset({"relora", "adamr"}): "AdamR anchors each parameter at its first-step value, but ReLoRA merges "
                                    "(alpha/r)·B A into the frozen weight (where the decay cannot reach it) and "
                                    "re-draws A at every restart, so the anchor is no longer the pretrained "
                                    "model; give the adapters' group delta_decay 0 or use torch.optim.Adam",
    frozenset({"qbert", "sst"}): _QAT.format(other="SST", what="U diag(s) Vh of a SpectralLinear"),
    frozenset({"qbert", "lora"}): _QAT.format(other="LoRA", what="W0 + (alpha/r)·B A, quantised as three matrices"),
    frozenset({"qbert", "relora"}): _QAT.format(other="ReLoRA", what="W0 + (alpha/r)·B A, quantised as three "
                                                "matrices"),
    frozenset({"cul", "sst"}): _CUL.format(other="SST", what="would move only r sampled singular directions"),
    frozenset({"cul", "lora"}): _CUL.format(other="LoRA", what="would move only the low-rank adapters"),
    frozenset({"cul", "relora"}): _CUL.format(other="ReLoRA", what="would move only the low-rank adapters"),
    frozenset({"cul", "qbert"}): "CleanUnlearning exposes init_from's model as it was trained, but under QAT the "
                                 "forward pass is the quantised model, a different one; and at the low widths "
                                 "Q-BERT assigns, ascent steps of about lr = 1e-5 per weight are far below one "
                                 "quantisation step, so the quantised predictions would barely move",
    frozenset({"cul", "freelb"}): _CUL_LOSS.format(other="FreeLB", what="K passes on adversarially perturbed "
                                                   "embeddings"),
    frozenset({"cul", "smart"}): _CUL_LOSS.format(other="SMART", what="adds a smoothness term, which ascent would "
                                                  "maximise"),
    frozenset({"cul", "selfcal"}): _CUL_LOSS.format(other="SelfCalibration", what="soft targets from an EMA "
                                                    "teacher"),
    frozenset({"cul", "transductive"}): _CUL_LOSS.format(other="TransductiveFineTuning", what="adds the loss of "
                                                         "pseudo-labelled evaluation inputs"),
    frozenset({"freelb", "smart"}): "FreeLB and SMART both perturb the word embeddings through the same hook: "
                                    "inside each FreeLB pass SMART's noise would replace FreeLB's δ rather than "
                                    "add to it, so neither would be the published method; use one of them",
    **{frozenset({"rtd", m}): _RTD_LOSS.format(other=METHODS[m]) for m in ("freelb", "smart", "selfcal",
                                                                          "transductive", "cul")},
    **{frozenset({"rtd", m}): _RTD_SURGERY.format(other=METHODS[m]) for m in ("sst", "lora", "relora", "qbert")},
}
_MLKD = ("MLKD re-draws the student's weights at random and trains all of them to imitate a frozen teacher; "
         "{what}")
REFUSED.update({
    frozenset({"mlkd", "sst"}): _MLKD.format(what="SST would re-decompose a random W whose spectrum carries nothing"),
    frozenset({"mlkd", "lora"}): _MLKD.format(what="LoRA would freeze that random W and train only adapters"),
    frozenset({"mlkd", "relora"}): _MLKD.format(what="ReLoRA would freeze that random W and train only adapters"),
    frozenset({"mlkd", "qbert"}): _MLKD.format(what="quantising the student changes the perplexity that is the "
                                               "OOD score; quantise the trained student afterwards"),
    frozenset({"mlkd", "cul"}): _MLKD.format(what="CleanUnlearning's gradient ascent exposes a classifier's "
                                             "backdoor, a different objective on a different family"),
    frozenset({"mlkd", "adamr"}): _MLKD.format(what="AdamR would anchor the student at its random init"),
    frozenset({"mlkd", "asr"}): _MLKD.format(what="AttackSuccessRate measures a classifier's labels, which a "
                                             "causal-LM student has not"),
    # Vega's tricks perturb or re-target a classifier's inputs and labels; MLKD distils a causal LM.
    **{frozenset({"mlkd", t}): _MLKD.format(what=f"{METHODS[t]} is a classifier fine-tuning trick, and the "
                                            "student is a causal LM with no labels to calibrate or perturb for")
       for t in ("freelb", "smart", "selfcal", "transductive", "rtd")},
})

_HYPER = ("HyperAdapters freezes the whole backbone and trains only generated adapters (and heads); {other} {what}, "
          "so one of the two would silently not train what it promises; use one of them per model")
REFUSED.update({
    frozenset({"hyper_adapters", "sst"}): _HYPER.format(other="SST", what="trains the backbone's W = U diag(s) Vh"),
    frozenset({"hyper_adapters", "lora"}): _HYPER.format(other="LoRA", what="is another adapter on the same frozen "
                                                         "backbone, and whichever sets up second freezes or leaves "
                                                         "the other's parameters, so the result depends on order"),
    frozenset({"hyper_adapters", "relora"}): _HYPER.format(other="ReLoRA", what="merges low-rank updates into the "
                                                           "backbone's weights, which HyperAdapters keeps frozen"),
    frozenset({"hyper_adapters", "qbert"}): _HYPER.format(other="Q-BERT", what="trains the backbone's quantised "
                                                          "latent weights (QAT)"),
    frozenset({"hyper_adapters", "cul"}): _CUL.format(other="HyperAdapters", what="would move only generated "
                                                      "adapters"),
    frozenset({"hyper_adapters", "rtd"}): _RTD_SURGERY.format(other="HyperAdapters"),
    frozenset({"hyper_adapters", "mlkd"}): _MLKD.format(what="HyperAdapters would freeze that random W and train "
                                                        "only adapters"),
})

_GALORE = ("GaLore projects the gradients of the plain nn.Linear weights and steps them with its own AdamW; "
           "{what}")
REFUSED.update({
    frozenset({"galore", "sst"}): _GALORE.format(what="SST has replaced those layers by U diag(s) Vh, so there is "
                                                 "no dense weight gradient to project (two low-rank routes, one "
                                                 "model: use one)"),
    frozenset({"galore", "lora"}): _GALORE.format(what="LoRA freezes those weights and trains adapters, so "
                                                  "nothing is left for GaLore to project; use one of them"),
    frozenset({"galore", "relora"}): _GALORE.format(what="ReLoRA freezes those weights and trains merged "
                                                    "adapters, so nothing is left for GaLore to project"),
    frozenset({"galore", "adamr"}): _GALORE.format(what="AdamR is an optimizer too, and one model has one "
                                                   "optimizer; GaLore refuses any optimizer but the model's AdamW"),
    frozenset({"galore", "qbert"}): _GALORE.format(what="Q-BERT's quantisation-aware fine-tuning corrects every "
                                                   "quantised weight over a short run, and a rank-r projected "
                                                   "update would confine that correction to r gradient "
                                                   "directions per projection period, where GaLore's state "
                                                   "saving buys nothing"),
    frozenset({"galore", "cul"}): _CUL.format(other="GaLore", what="would move only r gradient directions per "
                                              "layer"),
    frozenset({"galore", "rtd"}): _GALORE.format(what="it selects layers by name across the whole model, which "
                                                 "after ReplacedTokenDetection's setup includes its generator and "
                                                 "detection head (and before it does not), so the meaning would "
                                                 "depend on the callbacks' order; pretrain with RTD, then train "
                                                 "from export_dir with GaLore"),
    frozenset({"galore", "hyper_adapters"}): _HYPER.format(other="GaLore", what="projects the gradients of the "
                                                           "backbone's nn.Linear weights, which HyperAdapters "
                                                           "freezes, so it would project nothing"),
})

_ATTR = ("AttributeDiscriminator trains a sentiment head on a causal LM's mean hidden states next to its "
         "next-token loss (sstkit.models.CausalLM, the generator PPC steers); {what}")
REFUSED.update({
    # Classifier-family methods: they act on a classifier's encoder, labels or inputs, which a causal LM has not.
    **{frozenset({"attribute_head", m}): _ATTR.format(what=f"{METHODS[m]} {why}") for m, why in (
        ("asr", "measures a classifier's predicted labels on triggered inputs"),
        ("cul", "unlearns a backdoor from a text classifier"),
        ("freelb", "perturbs a classifier's input embeddings against its labels"),
        ("smart", "smooths a classifier's predictions"),
        ("selfcal", "calibrates a classifier's predicted labels"),
        ("transductive", "pseudo-labels a classifier's evaluation inputs"),
        ("rtd", "pretrains a BERT encoder with replaced-token detection"),
        ("hyper_adapters", "generates adapters for a multitask classifier's frozen encoder"),
        ("qbert", "quantises a fine-tuned classifier's encoder; quantise the trained LM afterwards"),
    )},
    frozenset({"attribute_head", "mlkd"}): _MLKD.format(what="the student's perplexity on ID text is the OOD "
                                                        "score, and a sentiment head's loss would shape the "
                                                        "student with labels the teacher never saw"),
})

_MODEL_ATTR = "_sstkit_methods"  # on the model: the methods set up on it, in order
_PARAM_ATTR = "_sstkit_method"  # on a parameter: the method whose surgery created it


def _label(method: str) -> str:
    return METHODS.get(method, method)


def _refuse(method: str, other: str, where: str) -> SstkitError:
    reason = REFUSED[frozenset({method, other})]
    return SstkitError(f"{_label(method)} cannot be stacked on {_label(other)} ({where}): {reason}")


def methods_on(model: nn.Module) -> tuple[str, ...]:
    """The methods set up on ``model`` so far, in order.

    Example:
        >>> methods_on(nn.Linear(2, 2))
        ()
    """
    return tuple(getattr(model, _MODEL_ATTR, ()))


def parameter_method(param: Tensor) -> str | None:
    """The method whose surgery created ``param`` (None for a parameter of the model as built)."""
    return getattr(param, _PARAM_ATTR, None)


def check_pair(method: str, other: str, where: str = "same model") -> None:
    """Raises :class:`SstkitError` naming both methods and the reason when ``method`` may not join ``other``.

    Example:
        >>> check_pair("lora", "adamr")  # composes: nothing happens
    """
    if method != other and frozenset({method, other}) in REFUSED:
        raise _refuse(method, other, where)


@contextmanager
def method_setup(model: nn.Module, method: str) -> Iterator[None]:
    """Checks ``method`` against the methods already on ``model``, then records it (a ``with`` block around setup).

    Parameters that the block creates (surgery) are marked as the method's, so an optimizer wrapper can refuse
    them later. Re-entering for a method already recorded (``setup`` runs again for validate/test and on resume)
    checks nothing new.
    """
    if method not in METHODS:
        raise SstkitError(f"stacking: unknown method {method!r}; add it to sstkit.stacking.METHODS")
    present = methods_on(model)
    if method not in present:
        for other in present:
            check_pair(method, other)
    # Holding the old parameters keeps their ids from being reused by the new ones while the block runs.
    before = list(model.parameters())
    known = {id(p) for p in before}
    yield
    for param in model.parameters():
        if id(param) not in known and parameter_method(param) is None:
            setattr(param, _PARAM_ATTR, method)
    if method not in present:
        setattr(model, _MODEL_ATTR, [*present, method])
    del before


def check_optimizer_params(method: str, params: Iterable[Tensor]) -> None:
    """Refuses an optimizer wrapper ``method`` on parameters created by a method it may not be stacked on.

    Example:
        >>> check_optimizer_params("adamr", nn.Linear(2, 2).parameters())  # plain parameters: fine
    """
    counts: dict[str, int] = {}
    for param in params:
        owner = parameter_method(param)
        if owner is not None and owner != method and frozenset({method, owner}) in REFUSED:
            counts[owner] = counts.get(owner, 0) + 1
    for owner, count in counts.items():
        raise _refuse(method, owner, f"{count} of the optimizer's parameters belong to {_label(owner)}")
