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
    amax = float(np.max(np.abs(g)))
    if amax == 0:
        return EXP_MIN
    p = int(_floor_log2(np.array([amax]))[0])
    return int(np.clip(p - 2 * FP4_TOP_K, EXP_MIN, EXP_MAX))


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

    def exponent(self, g) -> int:
        """Exponent for quantizing this step's gradient ``g`` (either phase). ``g`` is
        used only on the first step; call :meth:`update` once the step is done."""
        if self._last_p is None:
            return gradscale_exponent(g)
        return int(np.clip(self._last_p + self.headroom - 2 * FP4_TOP_K, EXP_MIN, EXP_MAX))

    def update(self, g) -> None:
        """Record this step's gradient maximum for the next step's exponent."""
        g = check_matrix(g, "g")
        amax = float(np.max(np.abs(g)))
        # An all-zero step carries no scale information: start over from the next step.
        self._last_p = None if amax == 0 else int(_floor_log2(np.array([amax]))[0])
