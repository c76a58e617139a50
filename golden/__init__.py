"""nibble's golden model: pure NumPy functions that define every bit the hardware produces."""

from .formats import KINDS, QTensor, quantize
from .gemm import GemmResult, tiled_gemm
from .params import NibbleParams

__all__ = ["KINDS", "QTensor", "quantize", "GemmResult", "tiled_gemm", "NibbleParams"]
