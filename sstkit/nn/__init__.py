"""Plain ``nn.Module`` layers (no Lightning): ``SpectralLinear`` …"""

from sstkit.nn.spectral import SpectralLinear

__all__ = ["SpectralLinear"]
