"""Method callbacks, one module per method: the Lightning face of a functional core (installed as sstkit.callbacks)."""

from .attack_success import AttackSuccessRate
from .attribute_head import AttributeDiscriminator
from .clean_unlearning import CleanUnlearning
from .freelb import FreeLB
from .galore import GaLore
from .hessian_quant import HessianQuantization
from .hyper_adapters import HyperAdapters
from .lora import LoRA
from .mlkd import MLKD
from .relora import ReLoRA
from .rtd_pretraining import ReplacedTokenDetection
from .self_calibration import SelfCalibration
from .smart import SMART
from .sst import SparseSpectralTraining
from .transductive import TransductiveFineTuning

__all__ = ["AttackSuccessRate", "AttributeDiscriminator", "CleanUnlearning", "HessianQuantization", "HyperAdapters", "LoRA", "MLKD", "ReLoRA",
           "SparseSpectralTraining", "FreeLB", "GaLore", "SMART", "SelfCalibration", "TransductiveFineTuning",
           "ReplacedTokenDetection"]
