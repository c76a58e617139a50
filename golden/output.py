"""Output stages of a GEMM: what the accelerator returns besides raw accumulators.

They act on the exact accumulator values ``GemmResult.value()`` (exact in float64 since
acc_bits <= 53), with the GEMM's output tiles as quantization tiles. The gradient unit
(:func:`log4_quantize_fused`) also reduces the integer accumulators themselves, per
output tile, for PACT's alpha gradient and GradScale's maximum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .formats import QTensor, _fp_exps, _tile_exps_override, quantize, tile_view
from .gemm import GemmResult

__all__ = ["requantize", "log4_quantize", "log4_quantize_fused", "FusedLog4",
           "alpha_sum_bits", "alpha_partials", "alpha_gradient", "tile_max_magnitudes",
           "clip_alpha", "alpha_clip", "pact_masks"]


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


def alpha_sum_bits(tile: int, acc_bits: int) -> int:
    """Width of a tile's alpha partial (:func:`alpha_partials`), two's complement:
    acc_bits + 2 log2 T. The sum of T*T acc_bits-bit accumulators lies in
    -T*T * 2**(acc_bits-1) .. T*T * (2**(acc_bits-1) - 1), which is exactly that
    range, so the sum is exact and can neither overflow nor saturate."""
    return acc_bits + 2 * (int(tile).bit_length() - 1)


def alpha_partials(result: GemmResult, clip_mask) -> np.ndarray:
    """PACT's alpha-gradient partial of each output tile, shape (Mt, Nt).

    The sum, exact, of the tile's rescaled accumulators ``result.acc`` (integers, in
    units of the tile's 2**out_exp) over the elements whose ``clip_mask`` bit is 1 (the
    elements PACT clipped in the forward pass, :func:`pact_masks`). It reads the
    accumulators before any ReLU'/PACT' mask: the clipped elements are exactly the ones
    that mask zeroes. Width :func:`alpha_sum_bits`, so there is no rounding, saturation
    or flag. int64, or Python ints (object) in the one configuration where the width
    exceeds 64 bits (T = 64, acc_bits = 53).
    """
    acc = np.where(_check_mask(clip_mask, result.acc.shape), result.acc, 0)
    if alpha_sum_bits(result.tile, result.acc_bits) > 64:
        acc = acc.astype(object)
    return tile_view(acc, result.tile).sum(axis=(1, 3))


def tile_max_magnitudes(result: GemmResult, mask=None) -> np.ndarray:
    """Largest |accumulator| of each output tile after the mask, shape (Mt, Nt), int64.

    The magnitude of the integer ``result.acc`` (units of the tile's 2**out_exp) over
    the elements whose ``mask`` bit is 1 (all with no mask); masked elements and the
    padding of a partial tile count as 0. An acc_bits-bit unsigned number: the most
    negative accumulator -2**(acc_bits-1) has magnitude 2**(acc_bits-1), which fits, so
    there is no saturation. It is the maximum the log4 unit already finds for the
    per-tile exponent (p = bit_length - 1 + out_exp), returned whole for GradScale.
    """
    acc = np.abs(_masked_acc(result.acc, mask))
    return tile_view(acc, result.tile).max(axis=(1, 3))


@dataclass(frozen=True, eq=False)
class FusedLog4:
    """What the gradient unit returns for one dX = dY . W^T: both TPR phases and the
    per-tile reductions that replace the raw pass (:func:`log4_quantize_fused`).

    Attributes
    ----------
    phase0, phase1 : QTensor
        fp4 codes at TPR phase 0 and 1; one exponent table, shared.
    alpha_sums : numpy.ndarray
        (Mt, Nt): :func:`alpha_partials`, in units of ``2**out_exps``.
    tile_max : numpy.ndarray
        (Mt, Nt): :func:`tile_max_magnitudes`, in units of ``2**out_exps``.
    out_exps : numpy.ndarray
        (Mt, Nt): each output tile's out_exp (the accumulators' weight).
    """

    phase0: QTensor
    phase1: QTensor
    alpha_sums: np.ndarray
    tile_max: np.ndarray
    out_exps: np.ndarray

    def phase(self, p: int) -> QTensor:
        """The codes at TPR phase ``p``."""
        return (self.phase0, self.phase1)[p]

    def alpha_grad(self) -> float:
        """PACT's alpha gradient on the host (:func:`alpha_gradient` of the partials)."""
        return alpha_gradient(self.alpha_sums, self.out_exps)

    def amax(self) -> float:
        """max |masked dX| of the whole tensor: max over tiles of tile_max * 2**out_exp
        (exact in float64), what GradScale records."""
        return float(np.max(np.ldexp(self.tile_max.astype(np.float64),
                                     self.out_exps.astype(np.int32))))


def log4_quantize_fused(result: GemmResult, *, rounding="log", exps=None, mask=None,
                        clip_mask=None, seed=None) -> FusedLog4:
    """The gradient unit: from one accumulation, FP4 codes at both TPR phases, each
    tile's alpha partial and its largest magnitude.

    Phase 0 and phase 1 share the tile exponent: with per-tile exponents it is
    E = floor(log2 amax) - 12 of the masked tile (:func:`golden.formats.quantize`),
    which does not depend on the phase; with ``exps`` it is the given one. Each phase's
    codes are bit for bit those of :func:`log4_quantize` at that phase with the same
    arguments, stochastic rounding included (one random word per element, phase 0 its
    high half, phase 1 its low half: :mod:`golden.xorshift`).

    Parameters
    ----------
    result : GemmResult
    rounding, exps, mask, seed
        As for :func:`log4_quantize`.
    clip_mask : array_like of bool, optional
        Elements whose accumulators go into the alpha partial (:func:`alpha_partials`);
        None sums nothing (all partials 0).
    """
    tile = result.tile
    y = _masked(result.value(), mask)
    if exps is None:
        shared = _fp_exps(tile_view(np.abs(y), tile).max(axis=(1, 3)), 2)
    else:
        shared = _tile_exps_override(exps, y.shape, tile)
    codes = [quantize(y, "fp4", tile=tile, phase=p, rounding=rounding, exps=shared, seed=seed)
             for p in (0, 1)]
    if clip_mask is None:
        clip_mask = np.zeros(result.acc.shape, dtype=bool)
    return FusedLog4(codes[0], codes[1], alpha_partials(result, clip_mask),
                     tile_max_magnitudes(result, mask), np.asarray(result.out_exps))


def alpha_gradient(alpha_sums, out_exps) -> float:
    """PACT's alpha gradient from per-tile partials: the sum over tiles of
    alpha_sums * 2**out_exp, exact in integers, rounded once to float64 (to nearest,
    ties to even). The host computes it the same way from the gradient unit's partials
    and from a raw pass (:func:`alpha_partials`), so both give the same float."""
    nz = [(int(s), int(e)) for s, e in zip(np.ravel(alpha_sums), np.ravel(out_exps)) if s]
    if not nz:
        return 0.0
    low = min(e for _, e in nz)
    return _ldexp_exact(sum(s << (e - low) for s, e in nz), low)


def _ldexp_exact(n: int, e: int) -> float:
    """n * 2**e rounded once to float64 (n a Python int of any size)."""
    if n == 0:
        return 0.0
    # keep 64 significant bits plus a sticky bit, so float() rounds as the exact value does
    extra = max(abs(n).bit_length() - 64, 0)
    if extra:
        sticky = int(abs(n) & ((1 << extra) - 1) != 0)
        n = ((abs(n) >> extra) | sticky) * (1 if n > 0 else -1)
    return math.ldexp(float(n), e + extra)


def _check_mask(mask, shape) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} differs from the result's {shape}")
    return mask.astype(bool)


def _masked(y: np.ndarray, mask) -> np.ndarray:
    """y with the elements where ``mask`` is 0 set to 0 (y itself for no mask)."""
    if mask is None:
        return y
    return np.where(_check_mask(mask, y.shape), y, 0.0)


def _masked_acc(acc: np.ndarray, mask) -> np.ndarray:
    """Integer accumulators with the elements where ``mask`` is 0 set to 0."""
    if mask is None:
        return acc
    return np.where(_check_mask(mask, acc.shape), acc, 0)
