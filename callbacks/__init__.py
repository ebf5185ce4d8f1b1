"""Method callbacks, one module per method: the Lightning face of a functional core (installed as sstkit.callbacks)."""

from .attack_success import AttackSuccessRate
from .clean_unlearning import CleanUnlearning
from .hessian_quant import HessianQuantization
from .lora import LoRA
from .mlkd import MLKD
from .relora import ReLoRA
from .sst import SparseSpectralTraining

__all__ = ["AttackSuccessRate", "CleanUnlearning", "HessianQuantization", "LoRA", "MLKD", "ReLoRA", "SparseSpectralTraining"]
