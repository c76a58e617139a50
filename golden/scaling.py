"""Scale choices of the 4-bit training method: SAWB weights, PACT activations, GradScale.

All functions are pure NumPy and vectorized; the host applies them around the GEMMs.
"""

from __future__ import annotations

import numpy as np

from .formats import check_matrix, _floor_log2, FP4_TOP_K
from .params import EXP_MAX, EXP_MIN

__all__ = ["SAWB_4BIT", "sawb_alpha", "sawb_clip", "pact", "pact_backward",
           "gradscale_exponent", "GradScale"]

#: SAWB coefficients (c1, c2) for 4-bit weights (Choi et al.; Sun et al. 2020).
SAWB_4BIT = (12.68, -12.80)


def sawb_alpha(w, coeffs=SAWB_4BIT) -> float:
    """SAWB clip level alpha = c1 * sqrt(E[w**2]) + c2 * E[|w|].

    Falls back to max |w| when that alpha is not positive (weights far from a bell
    shape, e.g. a single non-zero value). Returns 0.0 for an all-zero ``w``.
    """
    w = check_matrix(w, "w")
    c1, c2 = coeffs
    amax = float(np.max(np.abs(w)))
    if amax == 0:
        return 0.0
    # Scale by a power of two first so that w * w neither overflows nor underflows.
    e = int(np.frexp(amax)[1])
    u = np.ldexp(w, -e)
    alpha = c1 * np.sqrt(np.mean(u * u)) + c2 * np.mean(np.abs(u))
    return float(np.ldexp(alpha, e)) if alpha > 0 else amax


def sawb_clip(w, coeffs=SAWB_4BIT) -> np.ndarray:
    """Weights clipped to [-alpha, alpha] with the SAWB alpha; quantize the result as int4."""
    w = check_matrix(w, "w")
    alpha = sawb_alpha(w, coeffs)
    return np.clip(w, -alpha, alpha)


def _check_alpha(alpha) -> float:
    alpha = float(alpha)
    if not np.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"PACT alpha must be a positive finite number, got {alpha}")
    return alpha


def pact(x, alpha) -> np.ndarray:
    """PACT activation y = clip(x, 0, alpha)."""
    return np.clip(check_matrix(x), 0.0, _check_alpha(alpha))


def pact_backward(x, alpha, dy):
    """Straight-through PACT gradients.

    Returns
    -------
    dx : numpy.ndarray
        dy where 0 < x < alpha, else 0 (the ReLU'/clip mask).
    dalpha : float
        Sum of dy where x >= alpha.
    """
    x = check_matrix(x)
    dy = check_matrix(dy, "dy")
    if x.shape != dy.shape:
        raise ValueError(f"x and dy differ in shape: {x.shape} and {dy.shape}")
    alpha = _check_alpha(alpha)
    inside = (x > 0) & (x < alpha)
    return np.where(inside, dy, 0.0), float(np.sum(dy[x >= alpha]))


def gradscale_exponent(g) -> int:
    """Per-layer FP4 exponent that puts max |g| of the whole tensor on the top code.

    It is the per-tile rule of :func:`golden.formats.quantize` applied to the whole
    tensor: E = floor(log2 max |g|) - 12 for either phase, clipped to -128..127;
    -128 for all zeros.
    """
    g = check_matrix(g, "g")
    return _exponent_of_max(float(np.max(np.abs(g))))


def _check_amax(amax) -> float:
    amax = float(amax)
    if not (np.isfinite(amax) and amax >= 0):
        raise ValueError(f"a gradient maximum must be finite and >= 0, got {amax!r}")
    return amax


def _floor_log2_of(amax: float) -> int:
    return int(_floor_log2(np.array([amax]))[0])


def _exponent_of_max(amax: float) -> int:
    if amax == 0:
        return EXP_MIN
    return int(np.clip(_floor_log2_of(amax) - 2 * FP4_TOP_K, EXP_MIN, EXP_MAX))


class GradScale:
    """Per-layer power-of-two gradient scale (GradScale), one instance per layer.

    Rule: the exponent used at a step is computed from the *previous* step's gradient
    maximum plus ``headroom`` bits, because hardware must fix the scale before the gradient
    tensor is complete. The first step, having no history, uses its own maximum. A
    gradient that grows by more than 2**headroom in one step saturates on the top code;
    one that shrinks flushes its smallest elements. The exponent is per tensor, so every
    tile of the layer shares it (``quantize(..., exps=scale.exponent(g))``).

    Parameters
    ----------
    headroom : int
        Extra bits above the last maximum, >= 0.
    """

    def __init__(self, headroom: int = 1):
        if isinstance(headroom, bool) or not isinstance(headroom, int) or headroom < 0:
            raise ValueError(f"headroom must be a non-negative integer, got {headroom!r}")
        self.headroom = headroom
        self._last_p = None          # floor(log2 max|g|) of the previous step

    @property
    def has_history(self) -> bool:
        """True once a step with a non-zero gradient was recorded: the exponent then no
        longer needs this step's gradient (so it can be fixed before the GEMM runs)."""
        return self._last_p is not None

    def exponent(self, g=None, *, amax=None) -> int:
        """Exponent for quantizing this step's gradient (either phase). Only the first
        step (no history) looks at this step's gradient: ``g`` itself, or its maximum
        ``amax`` (max |g|, e.g. from the gradient unit's tile maxima); call
        :meth:`update` once the step is done."""
        if self._last_p is None:
            if amax is not None:
                return _exponent_of_max(_check_amax(amax))
            if g is None:
                raise ValueError("GradScale's first step needs the gradient or its maximum")
            return gradscale_exponent(g)
        return int(np.clip(self._last_p + self.headroom - 2 * FP4_TOP_K, EXP_MIN, EXP_MAX))

    def update(self, g=None, *, amax=None) -> None:
        """Record this step's gradient maximum for the next step's exponent: from ``g``
        or directly as ``amax`` = max |g|."""
        if amax is None:
            if g is None:
                raise ValueError("GradScale.update needs the gradient or its maximum")
            amax = float(np.max(np.abs(check_matrix(g, "g"))))
        amax = _check_amax(amax)
        # An all-zero step carries no scale information: start over from the next step.
        self._last_p = None if amax == 0 else _floor_log2_of(amax)
