"""4-bit element kinds, per-tile exponents, and the quantizer that defines them.

The numeric contract (every rule here is bit-exact and the hardware must match it):

Tiles
    The matrix is cut into T x T tiles from the top-left. Edge tiles may be partial;
    missing elements count as zeros. Each tile carries one exponent E in -128..127.
    An all-zero tile gets E = -128 (unless ``exps=`` overrides it).

Integer kinds (``int4``: -8..7, ``uint4``: 0..15)
    qmax = 7 or 15, qmin = -8 or 0; ``uint4`` treats negative inputs as 0 (ReLU).
    Per tile, amax = max |x| (``uint4``: max(x, 0)) and E is the smallest integer with
    amax <= qmax * 2**E, computed exactly with ``frexp``/``ldexp``.
    Element q = clip(round_half_to_even(x / 2**E), qmin, qmax); value = q * 2**E.

Radix-4 FP4 (``fp4``)
    Code c = [s | e2 e1 e0]. e = 0 is zero (the encoder only emits 0b0000; 0b1000 also
    decodes to 0). For e = 1..7 the value is (-1)**s * 2**(2(e-1) + phase + E). The
    phase (0 or 1) is two-phase rounding's: phase 0 is the even-power grid, 1 the odd.
    Per tile, p = floor(log2 amax) exactly and E = p - 12 for both phases. The tile
    maximum lands on the top code e = 7 (``log`` rounding): at phase 0 it rounds down to
    2**p, at phase 1 up to 2**(p+1), so the two phases lean in opposite directions.
    For a magnitude v > 0 let r = floor(log2 v) - phase - E and G_k = 2**(2k + phase + E):

    * ``rounding="log"``: k = ceil(r / 2), nearest in the log domain with ties up. It
      needs only the leading-one position of v.
    * ``rounding="linear"``: k0 = floor(r / 2); k = k0 + 1 if v >= 2.5 * G_k0 else k0
      (nearest by the arithmetic midpoint, ties up).
    * In both modes v < G_0 rounds to the nearer of 0 and G_0 (threshold G_0 / 2, ties
      up to G_0): that is r >= -1 gives k >= 0, r < -1 flushes to zero. k > 6
      saturates to 6; e = k + 1.
    * ``rounding="stochastic"`` (unbiased, after LUQ: Chmiel et al., ICLR 2023, adapted
      to radix 4): each element draws a uniform integer u of R = 16 bits
      (:mod:`golden.xorshift`: the generator, its seeding and the order of the draws;
      ``seed=`` is the command's seed). With k0 = floor(r / 2), so G_k0 <= v < 4 G_k0:

      - 0 <= k0 <= 5: x = floor(v * 2**R / G_k0), a 18-bit integer in 2**R..2**(R+2)-1,
        and d = x - 2**R; k = k0 + 1 if 3 * u < d, else k0. Up with probability
        (v - G_k0) / (3 G_k0) up to the 16-bit resolution, so E[q] = v.
      - k0 < 0 (v < G_0, underflow): x = floor(v * 2**R / G_0) in 0..2**R-1; the code
        is G_0 (k = 0) if u < x, else zero. Stochastic between 0 and G_0, not a flush
        at G_0 / 2, so the many small gradient elements below the grid keep their mean
        (LUQ's stochastic underflow) instead of all rounding to 0.
      - k0 >= 6: saturates to k = 6, as in the other modes (biased, like any clip).

      Because P(up) is a multiple of 2**-R, E[q] - v lies in (-G_k0, 2 G_k0) * 2**-R,
      below 2**-15 of v, against the factor-4 steps of the grid; below G_0 it lies in
      (-G_0 * 2**-R, 0] (an element below G_0 * 2**-R always flushes). Phase 1 with per-tile exponents is unbiased up to the tile maximum
      (top code 2**(p+1)); phase 0 saturates the tile's top binade [2**p, 2**(p+1)) on
      2**p, as its log rounding does, so it stays biased there (TPR's phase 1 leans the
      other way). x uses every bit of v below the leading one down to 2**-R of G_k0, so
      the comparison is exact integer arithmetic on the accumulator: a shift, a 3u = u +
      2u adder and an 18-bit comparator per lane.

Exponents outside -128..127 are clipped to that range; elements then saturate or flush
by the rules above, exactly as they do when ``exps=`` is given (per-layer GradScale).

Why E does not depend on the phase (a change from the first draft of the contract,
E = p - 12 - phase): with the phase subtracted, G_k = 2**(2k + p - 12) for both phases,
so the two TPR grids coincided and two-phase rounding did nothing. Worse, the largest
elements of every tile (the top binade [2**p, 2**(p+1))) were always rounded down, up
to 2x; on the digits MLP that bias made training diverge. With E = p - 12 the phase-1
grid is the odd-power grid relative to the tile maximum, as TPR intends. The hardware
cost is nil (one less subtraction).

``fp4r2`` is a study-only kind for the radix-2 ablation of the training study: the same
sign + 3-bit exponent code with grid step 2 instead of 4 (value (-1)**s * 2**(e-1+E),
E = p - 5 so that the tile maximum rounds to the nearest code without saturating, no
phase). Its ``log`` rounding compares against sqrt(2) in floating point; its
``stochastic`` rounding is the rule above with a step of 2 (up if u < d) and phase 0's
random half. The hardware does not implement it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .params import EXP_MAX, EXP_MIN, check_tile
from .xorshift import RAND_BITS, check_seed, element_words, phase_bits

__all__ = ["KINDS", "STUDY_KINDS", "ROUNDINGS", "QTensor", "quantize", "element_values",
           "fp4_values", "tile_view", "tile_amax", "check_matrix", "stochastic_margins"]

#: Kinds the hardware implements.
KINDS = ("int4", "uint4", "fp4")
#: Kinds the golden model accepts; ``fp4r2`` exists only for the training study's ablation.
STUDY_KINDS = KINDS + ("fp4r2",)
ROUNDINGS = ("log", "linear", "stochastic")

_QRANGE = {"int4": (-8, 7), "uint4": (0, 15)}
#: log2 of the grid step of the FP kinds.
_FP_STEP = {"fp4": 2, "fp4r2": 1}
FP4_TOP_K = 6          # largest k = e - 1
FP4_SIGN = 0b1000
FP4_EXP_MASK = 0b0111


def check_matrix(x, name="x") -> np.ndarray:
    """Return ``x`` as a float64 2-D array, or raise a one-line ``ValueError``."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a 2-D array of finite numbers ({exc})") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")
    return arr


def _check_kind(kind, allowed=STUDY_KINDS) -> str:
    if kind not in allowed:
        raise ValueError(f"kind must be one of {', '.join(allowed)}, got {kind!r}")
    return kind


def _check_phase(phase, kind) -> int:
    if isinstance(phase, bool) or phase not in (0, 1):
        raise ValueError(f"phase must be 0 or 1, got {phase!r}")
    if phase and kind != "fp4":
        raise ValueError(f"phase 1 applies only to fp4, not {kind}")
    return int(phase)


def tile_view(x: np.ndarray, tile: int) -> np.ndarray:
    """Zero-pad ``x`` (M, K) to whole tiles and view it as (Mt, T, Kt, T)."""
    m, k = x.shape
    mt, kt = -(-m // tile), -(-k // tile)
    padded = np.zeros((mt * tile, kt * tile), dtype=x.dtype)
    padded[:m, :k] = x
    return padded.reshape(mt, tile, kt, tile)


def tile_amax(x: np.ndarray, tile: int) -> np.ndarray:
    """Largest element of each tile of ``x`` (already made non-negative), shape (Mt, Kt)."""
    return tile_view(x, tile).max(axis=(1, 3))


def _expand(per_tile: np.ndarray, tile: int, shape) -> np.ndarray:
    """Broadcast a per-tile table (Mt, Kt) back to element shape (M, K)."""
    full = np.repeat(np.repeat(per_tile, tile, axis=0), tile, axis=1)
    return full[: shape[0], : shape[1]]


def _floor_log2(v: np.ndarray) -> np.ndarray:
    """floor(log2 v) for v > 0, exact (from the binary exponent)."""
    return np.frexp(v)[1].astype(np.int64) - 1


def _int_exps(amax: np.ndarray, qmax: int) -> np.ndarray:
    """Smallest E with amax <= qmax * 2**E, exactly; -128 where amax == 0."""
    safe = np.where(amax > 0, amax, 1.0)
    e0 = np.frexp(safe)[1].astype(np.int64) - int(qmax).bit_length()
    # qmax * 2**e0 lies in [2**(x-1), 2**x) for amax = m * 2**x, so E is e0 or e0 + 1.
    fits = np.ldexp(float(qmax), e0) >= safe
    exps = np.where(fits, e0, e0 + 1)
    return np.where(amax > 0, np.clip(exps, EXP_MIN, EXP_MAX), EXP_MIN)


def _fp_exps(amax: np.ndarray, step: int) -> np.ndarray:
    """E = floor(log2 amax) - 12 for fp4 (either phase), - 5 for the fp4r2 study kind;
    -128 where amax == 0."""
    safe = np.where(amax > 0, amax, 1.0)
    # fp4r2: the top code 2**(p+1) is then the nearest code to the tile maximum in the
    # log domain, and nothing saturates (p - 6 would round the top binade down).
    exps = _floor_log2(safe) - (2 * FP4_TOP_K if step == 2 else FP4_TOP_K - 1)
    return np.where(amax > 0, np.clip(exps, EXP_MIN, EXP_MAX), EXP_MIN)


def _stochastic_margin(safe, r, k0, base, step, rand):
    """Each element's margin of stochastic rounding (module docstring): d - (2**step - 1)
    u in range, x - u below G_0; it rounds up exactly when the margin is positive.
    ``rand`` (each element's RAND_BITS-bit uniform integer) may carry leading axes."""
    below = r < 0                                          # v < G_0: between 0 and G_0
    low = np.where(below, 0, np.clip(k0, 0, FP4_TOP_K))   # the lower grid point's k
    # x = floor(v * 2**R / G_low): v / G_low < 2**step, so x < 2**(R + step), exact in
    # float64 (a power-of-two scale of v, then floor); saturating elements are not used.
    with np.errstate(over="ignore"):
        x = np.floor(np.ldexp(safe, (RAND_BITS - (step * low + base)).astype(np.int32)))
    x = np.where(k0 >= FP4_TOP_K, 0.0, x).astype(np.int64)
    return np.where(below, x - rand, x - (1 << RAND_BITS) - ((1 << step) - 1) * rand)


def _stochastic_k(safe, r, k0, base, step, rand):
    """k of stochastic rounding (module docstring): up from k0 with probability
    (v - G_k0) / ((2**step - 1) G_k0), or from 0 to G_0 below G_0; ``rand`` holds each
    element's RAND_BITS-bit uniform integer."""
    up = _stochastic_margin(safe, r, k0, base, step, rand) > 0
    k = np.where(r < 0, np.where(up, 0, -1), k0 + up)
    return np.where(k0 >= FP4_TOP_K, FP4_TOP_K, k)


def stochastic_margins(x, tile: int, phase: int, rand, exps=None) -> np.ndarray:
    """The margin of each element's stochastic FP4 rounding decision (as
    :func:`quantize` with ``kind="fp4", rounding="stochastic"`` takes it, with the random
    integers ``rand`` instead of a seed's): d - 3u for an element in range, x - u below
    G_0 (module docstring); the element rounds up exactly when its margin is positive.
    A margin of 0 or 1 is a decision on its threshold: one unit more or less of d, x or
    3u turns it. ``rand`` has x's shape, or leading axes more (one set of words per
    leading index). Zero and saturating elements, which draw no decision, get None's
    stand-in: the int64 minimum."""
    x = check_matrix(x)
    tile = check_tile(tile)
    phase = _check_phase(phase, "fp4")
    tile_exps = (_fp_exps(tile_amax(np.abs(x), tile), 2) if exps is None
                 else _tile_exps_override(exps, x.shape, tile))
    base = phase + _expand(tile_exps, tile, x.shape)
    v = np.abs(x)
    safe = np.where(v > 0, v, 1.0)
    r = _floor_log2(safe) - base
    k0 = np.floor_divide(r, 2)
    margin = _stochastic_margin(safe, r, k0, base, 2, np.asarray(rand, dtype=np.int64))
    return np.where((v > 0) & (k0 < FP4_TOP_K), margin, np.iinfo(np.int64).min)


def _fp_encode(x: np.ndarray, e_full: np.ndarray, step: int, phase: int, rounding: str,
               rand=None):
    """FP codes (uint8) of elements ``x`` given each element's tile exponent (and, for
    stochastic rounding, each element's random integer ``rand``)."""
    v = np.abs(x)
    nonzero = v > 0
    safe = np.where(nonzero, v, 1.0)
    base = phase + e_full                                  # log2 of G_0
    r = _floor_log2(safe) - base
    k0 = np.floor_divide(r, step)                          # floor(r / step)
    if rounding == "stochastic":
        k = _stochastic_k(safe, r, k0, base, step, rand)
    elif rounding == "log" and step == 2:
        k = -np.floor_divide(-r, 2)                        # ceil(r / 2)
    elif rounding == "log":                                # radix-2 study kind
        k = k0 + (safe >= np.sqrt(2.0) * np.ldexp(1.0, step * k0 + base))
    else:
        with np.errstate(over="ignore"):       # only for huge r, where k saturates anyway
            midpoint = np.ldexp((1.0 + 2.0 ** step) / 2.0, step * k0 + base)
        k = k0 + (safe >= midpoint)
    if rounding != "stochastic":
        k = np.where(r >= -1, np.maximum(k, 0), -1)       # below G_0 / 2 flushes
    k = np.minimum(k, FP4_TOP_K)
    e = np.where(nonzero & (k >= 0), k + 1, 0)
    sign = np.where((x < 0) & (e > 0), FP4_SIGN, 0)
    return (sign | e).astype(np.uint8)


def fp4_values(codes: np.ndarray, step: int = 2) -> np.ndarray:
    """Integer element values of FP codes: +-(2**step)**(e-1), 0 for e == 0 (int64)."""
    codes = np.asarray(codes).astype(np.int64)
    e = codes & FP4_EXP_MASK
    mag = np.where(e > 0, np.left_shift(1, step * np.maximum(e - 1, 0)), 0)
    return np.where(codes & FP4_SIGN, -mag, mag).astype(np.int64)


def element_values(codes: np.ndarray, kind: str) -> np.ndarray:
    """Integer element values (int64) that the PEs multiply: q for int kinds,
    +-4**(e-1) for fp4. The phase and the tile exponent are not included."""
    _check_kind(kind)
    if kind in _FP_STEP:
        return fp4_values(codes, _FP_STEP[kind])
    return np.asarray(codes).astype(np.int64)


@dataclass(frozen=True, eq=False)
class QTensor:
    """A quantized matrix: 4-bit codes plus one power-of-two exponent per T x T tile.

    Attributes
    ----------
    codes : numpy.ndarray
        Shape (M, K). int kinds: element value q (int8). fp4: raw code 0..15 (uint8),
        bit 3 the sign, bits 2..0 the exponent field e.
    exps : numpy.ndarray
        Shape (ceil(M/T), ceil(K/T)), int16, each in -128..127.
    kind : str
        ``"int4"``, ``"uint4"`` or ``"fp4"`` (``"fp4r2"`` in the study only).
    tile : int
        T.
    phase : int
        TPR phase of an fp4 tensor (0 even grid, 1 odd grid); 0 for int kinds.
    """

    codes: np.ndarray
    exps: np.ndarray
    kind: str
    tile: int
    phase: int = 0

    def __post_init__(self):
        _check_kind(self.kind)
        object.__setattr__(self, "tile", check_tile(self.tile))
        _check_phase(self.phase, self.kind)
        codes = np.asarray(self.codes)
        if codes.ndim != 2 or codes.size == 0:
            raise ValueError(f"codes must be a non-empty 2-D array, got shape {codes.shape}")
        want = tuple(-(-n // self.tile) for n in codes.shape)
        exps = np.asarray(self.exps)
        if exps.shape != want:
            raise ValueError(f"exps must have shape {want} for codes {codes.shape} and tile "
                             f"{self.tile}, got {exps.shape}")
        if exps.size and (exps.min() < EXP_MIN or exps.max() > EXP_MAX):
            raise ValueError(f"exps must lie in {EXP_MIN}..{EXP_MAX}")
        if self.kind in _QRANGE:
            lo, hi = _QRANGE[self.kind]
            dtype = np.int8
        else:
            lo, hi = 0, 15
            dtype = np.uint8
        if codes.min() < lo or codes.max() > hi:
            raise ValueError(f"{self.kind} codes must lie in {lo}..{hi}")
        object.__setattr__(self, "codes", codes.astype(dtype))
        object.__setattr__(self, "exps", exps.astype(np.int16))

    @property
    def shape(self):
        return self.codes.shape

    @property
    def T(self) -> "QTensor":
        """The transpose. Square tiles map onto their transposes, so the exponent table
        is transposed too and no element is re-quantized."""
        return QTensor(self.codes.T, self.exps.T, self.kind, self.tile, self.phase)

    def ints(self) -> np.ndarray:
        """Integer element values the PEs multiply (int64, shape (M, K))."""
        return element_values(self.codes, self.kind)

    def element_exps(self) -> np.ndarray:
        """log2 of the weight of an integer element: tile exponent plus phase, shape (M, K)."""
        return _expand(self.exps.astype(np.int64), self.tile, self.shape) + self.phase

    def dequantize(self) -> np.ndarray:
        """The represented values as float64, same shape as the input was."""
        return np.ldexp(self.ints().astype(np.float64), self.element_exps().astype(np.int32))


def _tile_exps_override(exps, shape, tile) -> np.ndarray:
    want = tuple(-(-n // tile) for n in shape)
    arr = np.asarray(exps)
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise ValueError(f"exps must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.ndim == 0:
        arr = np.full(want, int(arr))
    if arr.shape != want:
        raise ValueError(f"exps must be a scalar or have shape {want}, got {arr.shape}")
    if arr.min() < EXP_MIN or arr.max() > EXP_MAX:
        raise ValueError(f"exps must lie in {EXP_MIN}..{EXP_MAX}")
    return arr


def quantize(x, kind, *, tile=8, phase=0, rounding="log", exps=None, seed=None) -> QTensor:
    """Quantize a matrix to 4-bit codes with one power-of-two exponent per tile.

    Parameters
    ----------
    x : array_like
        2-D finite float array, shape (M, K).
    kind : {"int4", "uint4", "fp4"}
        Element kind (``"fp4r2"`` for the training study's radix-2 ablation only).
    tile : int
        Tile edge T, a power of two from 2 to 64.
    phase : {0, 1}
        TPR phase of an fp4 result; must be 0 for int kinds.
    rounding : {"log", "linear", "stochastic"}
        FP4 rounding mode; int kinds always round half to even (and take no
        ``"stochastic"``).
    exps : int or array_like, optional
        Tile exponents to use instead of the per-tile choice (a scalar for per-layer
        GradScale, or the full (Mt, Kt) table). Elements then saturate or flush.
    seed : int, optional
        ``rounding="stochastic"`` only, and required there: the generator seed
        (0..2**32-1, :mod:`golden.xorshift`). The random words follow the tile order
        of the module docstring, as the log4 unit draws them.

    Returns
    -------
    QTensor

    Raises
    ------
    ValueError
        On NaN/Inf, a non-2-D or empty ``x``, or any bad argument.
    """
    x = check_matrix(x)
    _check_kind(kind)
    tile = check_tile(tile)
    phase = _check_phase(phase, kind)
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if rounding == "stochastic":
        if kind in _QRANGE:
            raise ValueError(f"stochastic rounding applies to fp kinds only, not {kind}")
        if seed is None:
            raise ValueError("stochastic rounding needs a seed (0..2**32-1)")
        seed = check_seed(seed)
    elif seed is not None:
        raise ValueError(f"a seed applies to rounding='stochastic' only, not {rounding!r}")

    if kind == "uint4":
        x = np.maximum(x, 0.0)
    if exps is None:
        amax = tile_amax(np.abs(x), tile)
        if kind in _QRANGE:
            tile_exps = _int_exps(amax, _QRANGE[kind][1])
        else:
            tile_exps = _fp_exps(amax, _FP_STEP[kind])
    else:
        tile_exps = _tile_exps_override(exps, x.shape, tile)
    e_full = _expand(tile_exps, tile, x.shape)

    if kind in _QRANGE:
        lo, hi = _QRANGE[kind]
        with np.errstate(over="ignore"):       # an overflow to inf saturates like any other
            scaled = np.ldexp(x, (-e_full).astype(np.int32))
        codes = np.clip(np.rint(scaled), lo, hi)
    else:
        rand = None
        if rounding == "stochastic":
            rand = phase_bits(element_words(seed, x.shape, tile), phase)
        codes = _fp_encode(x, e_full, _FP_STEP[kind], phase, rounding, rand)
    return QTensor(codes, tile_exps, kind, tile, phase)
