"""Tiled GEMM with per-tile radix rescaling: the accumulator contract.

Operand kinds
    C = A . B takes A (the left operand) of kind int4, uint4 or fp4 and B (the right one)
    of kind int4 or fp4, not both fp4: the pairs of :data:`KIND_PAIRS`. Any other pair
    is a ``ValueError``. The reason is the processing element (``rtl/pe.py``): it
    multiplies a as int4 or uint4 by b as int4, or shifts by b as FP4, and for an fp4 A
    swaps the roles with an int4 B. B's magnitude code holds |b| <= 8 (int4) or an FP4
    exponent, so a uint4 B (up to 15) has no encoding, and two fp4 operands would need a
    shifter on both sides. The first contract accepted every pair here while the
    hardware computed a uint4 B as int4 (codes 8..15 as -8..-1): a silent wrong answer.
    The training GEMMs need only these pairs: B is always W (int4) or dY (fp4). The
    study-only kind ``fp4r2`` pairs as fp4.

For output tile (i, j) and reduction tile t:

* P_t = sum_k a[m, k] * b[k, n] over the tile, exact, on integer element values
  (int kinds: q; fp4: +-4**(e-1); the phase goes into the shift, not the element).
* s_t = Ea[i, t] + Eb[t, j] + phase_a + phase_b.
* out_exp[i, j] = max_t s_t + bit_length(n_t * T * Amax * Bmax) - (acc_bits - 1), where n_t
  is the number of reduction tiles and Amax, Bmax the largest integer element magnitudes
  of the kinds (int4 8, uint4 15, fp4 4096). Accumulation therefore cannot overflow
  except by rounding.
* Terms are added in ascending t: term = P_t * 2**(s_t - out_exp); a right shift rounds
  half to even. After each addition the accumulator saturates to acc_bits two's
  complement, and any saturation sets ``saturated``.

When no term needs a right shift, ``value()`` is the exact product of the dequantized
operands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .formats import QTensor, _expand
from .params import ELEMENT_MAX, NibbleParams

__all__ = ["GemmResult", "tiled_gemm", "shift_round_half_even", "out_exponents", "KIND_PAIRS",
           "check_kind_pair"]

#: (A kind, B kind) pairs a GEMM may multiply: the ones the PE implements (see above).
KIND_PAIRS = (("int4", "int4"), ("uint4", "int4"), ("int4", "fp4"), ("uint4", "fp4"),
              ("fp4", "int4"))

# Right shifts past this are all equivalent: every partial sum is far below 2**61.
_MAX_RIGHT_SHIFT = 62


def shift_round_half_even(x, shift) -> np.ndarray:
    """x * 2**shift for integer arrays; a right shift (shift < 0) rounds half to even.

    Parameters
    ----------
    x : array_like of int
        Values, |x| < 2**61.
    shift : array_like of int
        Left shift if positive, right shift if negative; broadcast against ``x``.
        A left shift must keep the result inside int64 (the caller bounds it).
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), x.shape)
    left = np.left_shift(x, np.maximum(shift, 0))
    rs = np.clip(-shift, 1, _MAX_RIGHT_SHIFT)
    q = np.right_shift(x, rs)                                   # floor
    rem = x - np.left_shift(q, rs)
    half = np.left_shift(np.int64(1), rs - 1)
    up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    right = q + up
    return np.where(shift >= 0, left, right)


@dataclass(frozen=True, eq=False)
class GemmResult:
    """Accumulator contents of a tiled GEMM.

    Attributes
    ----------
    acc : numpy.ndarray
        int64 (M, N): the acc_bits-wide two's-complement accumulators.
    out_exps : numpy.ndarray
        int (ceil(M/T), ceil(N/T)): the power-of-two weight of each output tile's accumulators.
    saturated : bool
        True if any accumulation saturated.
    tile : int
        T.
    acc_bits : int
        Accumulator width.
    """

    acc: np.ndarray
    out_exps: np.ndarray
    saturated: bool
    tile: int
    acc_bits: int

    def value(self) -> np.ndarray:
        """acc * 2**out_exp of each element's output tile, float64 (M, N)."""
        e = _expand(self.out_exps.astype(np.int64), self.tile, self.acc.shape)
        return np.ldexp(self.acc.astype(np.float64), e.astype(np.int32))


def check_kind_pair(a_kind: str, b_kind: str) -> None:
    """Raise a one-line ``ValueError`` unless A of ``a_kind`` times B of ``b_kind`` is one
    of :data:`KIND_PAIRS` (the study kind ``fp4r2`` counts as fp4)."""
    pair = tuple("fp4" if k == "fp4r2" else k for k in (a_kind, b_kind))
    if pair not in KIND_PAIRS:
        legal = ", ".join(f"{a} x {b}" for a, b in KIND_PAIRS)
        raise ValueError(f"a GEMM cannot multiply {a_kind} (A) by {b_kind} (B); "
                         f"the legal A x B kinds are {legal}")


def out_exponents(a: QTensor, b: QTensor, acc_bits: int) -> np.ndarray:
    """out_exp per output tile, shape (Mt, Nt), by the rule in the module docstring."""
    s = a.exps.astype(np.int64)[:, :, None] + b.exps.astype(np.int64)[None, :, :]
    s = s + a.phase + b.phase                                   # (Mt, Kt, Nt)
    n_t = a.exps.shape[1]
    bound = n_t * a.tile * ELEMENT_MAX[a.kind] * ELEMENT_MAX[b.kind]
    return s.max(axis=1) + bound.bit_length() - (acc_bits - 1)


def tiled_gemm(a: QTensor, b: QTensor, *, acc_bits: int = 32) -> GemmResult:
    """Multiply quantized matrices as the accelerator does.

    Parameters
    ----------
    a : QTensor
        Left operand, (M, K).
    b : QTensor
        Right operand, (K, N), same tile T as ``a``; (a.kind, b.kind) one of
        :data:`KIND_PAIRS`.
    acc_bits : int
        Accumulator width; see :class:`golden.params.NibbleParams`.

    Returns
    -------
    GemmResult
    """
    if not isinstance(a, QTensor) or not isinstance(b, QTensor):
        raise ValueError("tiled_gemm takes two QTensors")
    if a.tile != b.tile:
        raise ValueError(f"operands have different tiles: {a.tile} and {b.tile}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a is {a.shape}, b is {b.shape}")
    check_kind_pair(a.kind, b.kind)
    params = NibbleParams(tile=a.tile, acc_bits=acc_bits)
    t = params.tile
    (m, k), n = a.shape, b.shape[1]

    out_exps = out_exponents(a, b, acc_bits)
    ai, bi = a.ints().astype(np.float64), b.ints().astype(np.float64)
    ea = a.exps.astype(np.int64) + a.phase
    eb = b.exps.astype(np.int64) + b.phase
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc = np.zeros((m, n), dtype=np.int64)
    saturated = False
    for kt in range(a.exps.shape[1]):
        cols = slice(kt * t, min((kt + 1) * t, k))
        # float64 is exact here: |P_t| <= 64 * 15 * 4096 < 2**22.
        psum = (ai[:, cols] @ bi[cols, :]).astype(np.int64)
        shift = ea[:, kt][:, None] + eb[kt, :][None, :] - out_exps
        term = shift_round_half_even(psum, _expand(shift, t, (m, n)))
        acc = acc + term
        clipped = np.clip(acc, lo, hi)
        saturated |= bool(np.any(clipped != acc))
        acc = clipped
    return GemmResult(acc, out_exps, saturated, t, acc_bits)
