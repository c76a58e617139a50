"""Output stages of a GEMM: what the accelerator returns besides raw accumulators.

Both act on the exact accumulator values ``GemmResult.value()`` (exact in float64 since
acc_bits <= 53), with the GEMM's output tiles as quantization tiles.
"""

from __future__ import annotations

import numpy as np

from .formats import QTensor, quantize
from .gemm import GemmResult

__all__ = ["requantize", "log4_quantize", "clip_alpha", "alpha_clip", "pact_masks"]


def clip_alpha(mant: int, exp: int) -> float:
    """The PACT threshold the hardware takes: alpha = mant * 2**exp (mant 0..255, exp -128..127)."""
    if not (0 <= mant <= 255 and -128 <= exp <= 127):
        raise ValueError(f"clip threshold needs mant in 0..255 and exp in -128..127, got {mant}, {exp}")
    return float(np.ldexp(float(mant), exp))


def alpha_clip(alpha: float) -> tuple[int, int]:
    """The hardware form (mant, exp) nearest a PACT threshold ``alpha`` > 0: an 8-bit
    mantissa (128..255, ties to even) times a power of two; see :func:`clip_alpha`."""
    alpha = float(alpha)
    if not (np.isfinite(alpha) and alpha > 0):
        raise ValueError(f"PACT alpha must be a positive finite number, got {alpha!r}")
    exp = int(np.floor(np.log2(alpha))) - 7
    mant = int(np.rint(np.ldexp(alpha, -exp)))
    if mant == 256:
        mant, exp = 128, exp + 1
    if not -128 <= exp <= 127:
        raise ValueError(f"PACT alpha {alpha!r} is outside the hardware's range")
    return mant, exp


def pact_masks(q: QTensor, clip) -> tuple[np.ndarray, np.ndarray]:
    """PACT's straight-through masks, read from the uint4 output of a clipped forward GEMM.

    The host sees only the codes, so the masks are defined on them: an element is
    *clipped* if its value lies within half a step (2**E / 2) of alpha or above, which
    covers every element the clip reached; it is *in range* if it is positive and not
    clipped. Backward: dX = dY * in_range, d alpha = sum(dY * clipped).

    Returns
    -------
    in_range, clipped : ndarray of bool, the shape of ``q``.
    """
    if q.kind != "uint4":
        raise ValueError(f"PACT masks need a uint4 tensor, got {q.kind}")
    alpha = clip_alpha(*clip)
    values = q.dequantize()
    half_step = np.ldexp(0.5, q.element_exps())
    clipped = values >= alpha - half_step
    return (values > 0) & ~clipped, clipped


def requantize(result: GemmResult, kind: str, *, clip=None, mask=None) -> QTensor:
    """Requantize accumulators to int4 or uint4 (the requantizer).

    Parameters
    ----------
    result : GemmResult
    kind : {"int4", "uint4"}
    clip : (int, int), optional
        uint4 only: PACT threshold as (mant, exp), see :func:`clip_alpha`.
    mask : array_like of bool, optional
        Shape of the result; elements where it is 0 become 0 first (ReLU' backward).

    Order: mask, then ReLU (uint4), then the clip, then ``quantize``.
    """
    if kind not in ("int4", "uint4"):
        raise ValueError(f"int output kind must be int4 or uint4, got {kind!r}")
    y = _masked(result.value(), mask)
    if clip is not None:
        if kind != "uint4":
            raise ValueError("a PACT clip applies to uint4 output only")
        y = np.minimum(np.maximum(y, 0.0), clip_alpha(*clip))
    return quantize(y, kind, tile=result.tile)


def log4_quantize(result: GemmResult, *, phase=0, rounding="log", exps=None,
                  mask=None, seed=None) -> QTensor:
    """Quantize accumulators to radix-4 FP4 (the log4 quantizer); ``exps`` is an
    external per-layer exponent (GradScale) or None for per-tile exponents; ``mask``
    (ReLU'/PACT' of the backward pass) zeroes elements first; ``seed`` is the
    generator seed of ``rounding="stochastic"`` (:mod:`golden.xorshift`)."""
    return quantize(_masked(result.value(), mask), "fp4", tile=result.tile, phase=phase,
                    rounding=rounding, exps=exps, seed=seed)


def _masked(y: np.ndarray, mask) -> np.ndarray:
    """y with the elements where ``mask`` is 0 set to 0 (y itself for no mask)."""
    if mask is None:
        return y
    mask = np.asarray(mask)
    if mask.shape != y.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the result's {y.shape}")
    return np.where(mask.astype(bool), y, 0.0)
