"""Layer selection and module replacement shared by every method that wraps ``nn.Linear`` (SST, LoRA, ReLoRA).

Patterns are matched against the dotted module names of ``model.named_modules()`` (``encoder.layer.0.attention
.self.query``). A plain pattern is an :mod:`fnmatch` glob that must match the *whole* name (``"*attention*"``,
``"*.query"``); a pattern starting with ``re:`` is a Python regular expression applied with :func:`re.search`,
so it matches anywhere unless anchored (``"re:.*(query|key|value|dense)$"``). ``exclude`` uses the same syntax
and wins over ``patterns``.

Surgery is idempotent-friendly: wrapped layers such as :class:`sstkit.nn.SpectralLinear` are *not* subclasses of
``nn.Linear``, so running a selection again after surgery skips what was already replaced.

Example:
    >>> import torch.nn as nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> [name for name, _ in select_linears(model, ["*"], exclude=["2"])]
    ['0']
    >>> old = replace_module(model, "0", nn.Identity())
    >>> type(model[0]).__name__
    'Identity'
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

from torch import nn

REGEX_PREFIX = "re:"

# Attention and MLP projections of BERT-type (query/key/value, attention.output.dense, intermediate.dense,
# output.dense) and OPT-type (q/k/v/out_proj, fc1, fc2) models; never poolers, classifier or LM heads.
TRANSFORMER_PROJECTIONS = (
    r"re:(^|\.)(query|key|value|q_proj|k_proj|v_proj|out_proj|fc1|fc2)$",
    r"re:(^|\.)(attention\.output|intermediate|output)\.dense$",
)


def method_patterns(model: nn.Module, patterns: str | Iterable[str] | None) -> list[str]:
    """The layers a method wraps: ``patterns`` if given, else the model family's own ``method_patterns``
    (a class attribute, e.g. the inner linears of Lorentz layers), else :data:`TRANSFORMER_PROJECTIONS`.

    Example:
        >>> method_patterns(model, None)  # doctest: +SKIP
        ['re:(^|\\.)(query|key|value|q_proj|k_proj|v_proj|out_proj|fc1|fc2)$', ...]
    """
    if patterns is None:
        patterns = getattr(model, "method_patterns", TRANSFORMER_PROJECTIONS)
    return _as_list(patterns)


def _as_list(patterns: str | Iterable[str]) -> list[str]:
    # A YAML scalar where a list was meant is a common slip; one pattern is still a valid request.
    return [patterns] if isinstance(patterns, str) else list(patterns)


def name_matches(name: str, patterns: str | Iterable[str], exclude: str | Iterable[str] = ()) -> bool:
    """Whether a module name matches any of ``patterns`` and none of ``exclude``.

    Example:
        >>> name_matches("bert.encoder.layer.0.attention.self.query", ["re:(query|key)$"])
        True
    """

    def hit(pattern: str) -> bool:
        if pattern.startswith(REGEX_PREFIX):
            return re.search(pattern[len(REGEX_PREFIX) :], name) is not None
        return fnmatch.fnmatchcase(name, pattern)

    return any(hit(p) for p in _as_list(patterns)) and not any(hit(p) for p in _as_list(exclude))


def select_modules(
    model: nn.Module,
    patterns: str | Iterable[str],
    exclude: str | Iterable[str] = (),
    module_type: type[nn.Module] | tuple[type[nn.Module], ...] = nn.Module,
) -> list[tuple[str, nn.Module]]:
    """All named submodules (never the root) of ``module_type`` whose names match ``patterns``.

    Example:
        >>> from sstkit.nn import SpectralLinear
        >>> already = select_modules(model, ["*"], module_type=SpectralLinear)  # doctest: +SKIP
    """
    return [
        (name, module)
        for name, module in model.named_modules()
        if name and isinstance(module, module_type) and name_matches(name, patterns, exclude)
    ]


def _unsafe_linears(model: nn.Module) -> dict[str, str]:
    """Linears that cannot be swapped for a module of another type, with the reason why."""
    reasons: dict[str, str] = {}
    for parent_name, parent in model.named_modules():
        # MultiheadAttention reads out_proj.weight directly in its functional forward, bypassing the module.
        if isinstance(parent, nn.MultiheadAttention):
            for child_name, child in parent.named_children():
                if isinstance(child, nn.Linear):
                    full = f"{parent_name}.{child_name}" if parent_name else child_name
                    reasons[full] = "its nn.MultiheadAttention parent reads .weight directly"
    counts = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    for name, module in model.named_modules():
        # Replacing a tied weight (e.g. an LM head shared with the embedding) would silently untie it.
        if isinstance(module, nn.Linear) and counts[id(module.weight)] > 1:
            reasons.setdefault(name, "its weight is tied to another module")
    return reasons


def warn_no_match(
    matches: Sequence[object],
    model: nn.Module,
    patterns: str | Iterable[str],
    exclude: str | Iterable[str] = (),
    method: str = "sstkit",
) -> bool:
    """Warn, naming the patterns and a few existing ``nn.Linear`` names, when ``matches`` is empty.

    Returns whether it warned. A plug-in that silently does nothing is the worst failure, hence the warning.

    Example:
        >>> warn_no_match([], nn.Sequential(nn.Linear(2, 2)), ["*query*"], method="sst")  # doctest: +SKIP
    """
    if matches:
        return False
    names = [name for name, m in model.named_modules() if name and isinstance(m, nn.Linear)]
    shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "") if names else "(none)"
    warnings.warn(
        f"{method}: patterns {_as_list(patterns)} (exclude {_as_list(exclude)}) matched no nn.Linear module in "
        f"{type(model).__name__}; its nn.Linear modules include: {shown}. Plain patterns are fnmatch globs on "
        f"the whole dotted name, 're:' patterns are regexes searched in it.",
        UserWarning,
        stacklevel=2,
    )
    return True


def select_linears(
    model: nn.Module,
    patterns: str | Iterable[str],
    exclude: str | Iterable[str] = (),
    warn_if_empty: bool = True,
    method: str = "sstkit",
) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules (subclasses included) whose names match, in ``named_modules`` order.

    Linears inside ``nn.MultiheadAttention`` and linears with tied weights are skipped with a warning, since
    replacing them would break or silently change the model. Modules already wrapped are no longer
    ``nn.Linear`` and are skipped, so a second call after surgery returns only what is left.

    Args:
        model: the module to search.
        patterns: fnmatch globs on whole names, or ``re:``-prefixed regexes (searched).
        exclude: patterns, same syntax, that remove names from the selection.
        warn_if_empty: warn (see :func:`warn_no_match`) when nothing matched.
        method: name used in warnings.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [n for n, _ in select_linears(model, ["re:^[02]$"])]
        ['0', '2']
    """
    patterns = _as_list(patterns)
    if not patterns:
        raise ValueError(f"{method}: `patterns` is empty; use ['*'] to select every nn.Linear")
    matched = select_modules(model, patterns, exclude, nn.Linear)
    unsafe = _unsafe_linears(model)
    skipped = [f"{name} ({unsafe[name]})" for name, _ in matched if name in unsafe]
    if skipped:
        warnings.warn(f"{method}: skipping {', '.join(skipped)}", UserWarning, stacklevel=2)
    selected = [(name, module) for name, module in matched if name not in unsafe]
    if warn_if_empty and not skipped:
        warn_no_match(selected, model, patterns, exclude, method)
    return selected  # type: ignore[return-value]


def replace_module(model: nn.Module, name: str, new_module: nn.Module) -> nn.Module:
    """Put ``new_module`` at dotted ``name`` inside ``model`` and return the module it replaced.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8))
        >>> replace_module(model, "0", nn.Identity())
        Linear(in_features=4, out_features=8, bias=True)
    """
    if not name:
        raise ValueError("cannot replace the root module; wrap it instead")
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    # Module.__setattr__ registers the child in _modules, which also works for ModuleList/Sequential keys "0".
    setattr(parent, child, new_module)
    return old
