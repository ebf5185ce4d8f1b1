"""sstkit: a PyTorch Lightning framework for Sparse Spectral Training and the methods around SST-2.

Importing the package registers its models, data modules and callbacks, so YAML configs may use short class
names (``class_path: TextClassifier``) as well as full ones (``sstkit.models.TextClassifier``).
"""

__version__ = "0.1.0"

from sstkit import callbacks, datamodules, models  # noqa: E402,F401  (registers classes for short names)
from sstkit.datamodules import *  # noqa: E402,F401,F403
from sstkit.models import *  # noqa: E402,F401,F403
