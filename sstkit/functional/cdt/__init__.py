"""CD-T: contextual decomposition for transformers (local explanations and circuit discovery).

Example:
    >>> from sstkit.functional.cdt import decompose
    >>> dec = decompose(model, batch, relevant=[[1], [2]])  # doctest: +SKIP
"""

from sstkit.functional.cdt.decompose import Decomposition, decompose, relevant_mask
from sstkit.functional.cdt.rules import activation, attention_heads, layer_norm, linear, linear_parts, sign_fix
from sstkit.functional.cdt.walk import Propagation

__all__ = ["Decomposition", "Propagation", "activation", "attention_heads", "decompose", "layer_norm", "linear",
           "linear_parts", "relevant_mask", "sign_fix"]
