"""Tests of FP4 ``rounding="stochastic"`` (``golden.formats``): the exact integer rule
against a scalar Fraction reference, and unbiasedness per code boundary.

The random integers come from ``golden.xorshift`` (tested in test_golden_xorshift.py);
the rounding rule is re-derived here from the contract text with exact Fractions.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from golden.formats import quantize
from golden.xorshift import element_words, phase_bits

R = 16
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def pow2(e: int) -> Fraction:
    return Fraction(1 << e) if e >= 0 else Fraction(1, 1 << -e)


def ref_stochastic_code(x: Fraction, e: int, phase: int, u: int, step: int = 2) -> int:
    """The contract's rule on exact values: grid G_k = 2**(step*k + phase + e), k 0..6."""
    v = abs(x)
    if v == 0:
        return 0
    grid = [pow2(step * k + phase + e) for k in range(7)]
    if v >= grid[6]:
        k = 6
    elif v < grid[0]:
        xi = math.floor(v * (1 << R) / grid[0])
        k = 0 if u < xi else -1
    else:
        k0 = max(k for k in range(6) if grid[k] <= v)
        xi = math.floor(v * (1 << R) / grid[k0])
        assert (1 << R) <= xi < (1 << (R + step))
        k = k0 + (((1 << step) - 1) * u < xi - (1 << R))
    if k < 0:
        return 0
    return (k + 1) | (0b1000 if x < 0 else 0)


def fp4_exp(amax: Fraction, step: int = 2) -> int:
    """Per-tile exponent: floor(log2 amax) - 12 (fp4) or - 5 (fp4r2), clipped."""
    e = amax.numerator.bit_length() - amax.denominator.bit_length()
    if pow2(e) > amax:
        e -= 1
    return max(-128, min(127, e - (12 if step == 2 else 5)))


def ref_quantize_stochastic(x, tile, phase, seed, exps=None, step=2):
    m, n = x.shape
    u = phase_bits(element_words(seed, x.shape, tile), phase)
    fx = [[Fraction(float(v)) for v in row] for row in x]
    codes = np.zeros((m, n), dtype=np.int64)
    for i in range(-(-m // tile)):
        for j in range(-(-n // tile)):
            rows = range(i * tile, min(m, (i + 1) * tile))
            cols = range(j * tile, min(n, (j + 1) * tile))
            if exps is None:
                amax = max(abs(fx[r][c]) for r in rows for c in cols)
                e = -128 if amax == 0 else fp4_exp(amax, step)
            else:
                e = exps
            for r in rows:
                for c in cols:
                    codes[r, c] = ref_stochastic_code(fx[r][c], e, phase, int(u[r, c]), step)
    return codes


@st.composite
def matrices(draw):
    t = draw(st.sampled_from((2, 4, 8)))
    m, n = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    base = draw(st.one_of(st.integers(-20, 20), st.integers(-150, -100), st.integers(100, 150)))
    mant = draw(hnp.arrays(np.int64, (m, n), elements=st.integers(-(1 << 24), 1 << 24)))
    offs = draw(hnp.arrays(np.int64, (m, n), elements=st.integers(-34, 0)))
    x = np.ldexp(mant.astype(np.float64), (base + offs - 24).astype(np.int32)) + 0.0
    return x, t


@pytest.mark.parametrize("phase", [0, 1])
@FAST
@given(data=matrices(), seed=st.integers(0, (1 << 32) - 1))
def test_stochastic_codes_match_scalar_reference(phase, data, seed):
    x, t = data
    q = quantize(x, "fp4", tile=t, phase=phase, rounding="stochastic", seed=seed)
    assert np.array_equal(q.codes.astype(np.int64), ref_quantize_stochastic(x, t, phase, seed))


@FAST
@given(data=matrices(), seed=st.integers(0, (1 << 32) - 1), e=st.integers(-128, 127),
       phase=st.sampled_from([0, 1]))
def test_stochastic_codes_with_external_exponent_match_reference(data, seed, e, phase):
    """An external exponent: elements above G_6 saturate, far below G_0 flush."""
    x, t = data
    q = quantize(x, "fp4", tile=t, phase=phase, rounding="stochastic", seed=seed, exps=e)
    assert np.array_equal(q.codes.astype(np.int64),
                          ref_quantize_stochastic(x, t, phase, seed, exps=e))


@FAST
@given(data=matrices(), seed=st.integers(0, (1 << 32) - 1))
def test_stochastic_radix2_study_kind_matches_reference(data, seed):
    x, t = data
    q = quantize(x, "fp4r2", tile=t, rounding="stochastic", seed=seed)
    assert np.array_equal(q.codes.astype(np.int64),
                          ref_quantize_stochastic(x, t, 0, seed, step=1))


@pytest.mark.parametrize("phase", [0, 1])
def test_comparisons_are_strict_at_their_boundaries(phase):
    """Values put exactly on each element's decision boundary: 3u == d (in range) and
    u == x (below G_0) round down, one unit of x more rounds up."""
    shape, tile, seed = (16, 16), 8, 4242
    u = phase_bits(element_words(seed, shape, tile), phase)
    rng = np.random.default_rng(phase)
    k0 = rng.integers(-1, 6, size=shape)                  # -1: below G_0
    g = 2.0 * np.maximum(k0, 0) + phase                   # log2 G_k0 with E = 0
    for extra, up in ((0, False), (1, True)):
        x = np.where(k0 < 0, u + extra, (1 << R) + 3 * u + extra)
        v = np.ldexp(x.astype(np.float64), (g - R).astype(np.int32))
        q = quantize(v, "fp4", tile=tile, phase=phase, rounding="stochastic", seed=seed, exps=0)
        want = np.where(k0 < 0, np.where(up, 1, 0), k0 + 1 + up)
        assert np.array_equal(q.codes.astype(np.int64), want), extra


# ---- unbiasedness ------------------------------------------------------------------------

N_SIDE, TILE = 256, 64                    # 65536 draws per value, 1024 generator steps


def _draw_mean(v: float, phase: int, seed: int, kind="fp4"):
    """Mean and the set of values of ``v`` quantized 65536 times (external exponent 0)."""
    x = np.full((N_SIDE, N_SIDE), v)
    q = quantize(x, kind, tile=TILE, phase=phase, rounding="stochastic", seed=seed, exps=0)
    values = q.dequantize()
    return values.mean(), np.unique(values)


# For every code boundary: the underflow interval [0, G_0) and [G_k, G_k+1) for k = 0..5,
# at fractions of the interval (including its ends' neighbourhoods).
FRACTIONS = (0.001, 0.1, 1 / 3, 0.5, 0.77, 0.999)


@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("k", [-1, 0, 1, 2, 3, 4, 5])
def test_stochastic_rounding_is_unbiased_per_code_boundary(phase, k):
    """Over 65536 draws the mean lies within 5 standard errors (plus the contract's
    bias bound of 2 G_k 2**-16) of the input, and only the two neighbours occur.

    k = -1 is the underflow interval (0, G_0): stochastic between 0 and G_0."""
    lo = 0.0 if k < 0 else 2.0 ** (2 * k + phase)
    hi = 2.0 ** (2 * (k + 1) + phase)
    for i, f in enumerate(FRACTIONS):
        v = lo + f * (hi - lo)
        mean, values = _draw_mean(v, phase, seed=1000 * (k + 2) + 10 * i + phase)
        p = (v - lo) / (hi - lo)
        stderr = (hi - lo) * math.sqrt(p * (1 - p) / N_SIDE ** 2)
        bound = 2 * max(lo, hi / 4) * 2.0 ** -R
        assert abs(mean - v) <= 5 * stderr + bound, (k, f, v, mean)
        assert set(values) <= {lo, hi}, (v, values)


def test_stochastic_rounding_is_unbiased_for_negative_values():
    for v in (-0.3, -2.5, -1000.0):
        mean, _ = _draw_mean(v, 0, seed=77)
        assert abs(mean - v) < 0.01 * abs(v)


def test_stochastic_radix2_is_unbiased():
    for v in (0.4, 1.3, 5.5, 40.0):
        x = np.full((N_SIDE, N_SIDE), v)
        q = quantize(x, "fp4r2", tile=TILE, rounding="stochastic", seed=5, exps=0)
        lo = 2.0 ** math.floor(math.log2(v)) if v >= 1 else 0.0
        hi = 2.0 * lo if lo else 1.0
        p = (v - lo) / (hi - lo)
        stderr = (hi - lo) * math.sqrt(p * (1 - p)) / N_SIDE
        assert abs(q.dequantize().mean() - v) <= 5 * stderr + hi * 2.0 ** -R


def test_saturation_and_the_phase0_top_binade():
    """Above G_6 every draw saturates (biased, like a clip). With per-tile exponents the
    tile maximum sits in the top binade [2**p, 2**(p+1)): phase 0 saturates it on 2**p
    every time, phase 1 (top code 2**(p+1)) rounds it without bias."""
    q = quantize(np.full((8, 8), 5000.0), "fp4", tile=8, rounding="stochastic", seed=3, exps=0)
    assert np.all(q.codes == 7)
    x = np.full((64, 64), 1.5)
    p0 = quantize(x, "fp4", tile=64, phase=0, rounding="stochastic", seed=4)
    p1 = quantize(x, "fp4", tile=64, phase=1, rounding="stochastic", seed=4)
    assert np.all(p0.exps == -12) and np.all(p1.exps == -12)
    assert np.all(p0.dequantize() == 1.0)
    assert abs(p1.dequantize().mean() - 1.5) < 5 * 1.5 * math.sqrt(0.25 * 0.75) / 64


def test_stochastic_rounding_draws_and_reproduces():
    x = np.random.default_rng(0).normal(size=(40, 40))
    a = quantize(x, "fp4", rounding="stochastic", seed=11)
    b = quantize(x, "fp4", rounding="stochastic", seed=11)
    c = quantize(x, "fp4", rounding="stochastic", seed=12)
    assert np.array_equal(a.codes, b.codes) and not np.array_equal(a.codes, c.codes)
    assert np.array_equal(a.exps, c.exps)
    # zeros stay zero and signs are kept
    assert np.all(quantize(np.zeros((4, 4)), "fp4", rounding="stochastic", seed=1).codes == 0)
    nz = a.codes & 7 != 0
    assert np.array_equal((a.codes[nz] & 8) != 0, x[nz] < 0)


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(rounding="dither"), "rounding must be one of log, linear, stochastic"),
    (dict(rounding="stochastic"), "needs a seed"),
    (dict(rounding="stochastic", seed=-1), "seed"),
    (dict(rounding="stochastic", seed=1 << 32), "seed"),
    (dict(rounding="stochastic", seed=2.0), "seed"),
    (dict(rounding="stochastic", seed=True), "seed"),
    (dict(rounding="log", seed=3), "applies to rounding='stochastic' only"),
])
def test_bad_rounding_arguments_are_one_line_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        quantize(np.ones((2, 2)), "fp4", **kwargs)
    assert "\n" not in str(info.value)


def test_int_kinds_take_no_stochastic_rounding():
    with pytest.raises(ValueError, match="fp kinds only"):
        quantize(np.ones((2, 2)), "int4", rounding="stochastic", seed=1)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=hnp.arrays(np.float64, (5, 6), elements=st.floats(-1e6, 1e6, width=64)),
       seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3),
       phase=st.sampled_from([0, 1]))
def test_stochastic_margins_decide_the_codes(data, seeds, phase):
    """An element rounds up exactly when its margin is positive: the codes of the
    margins' decisions are quantize's, seed by seed (words of many seeds at once)."""
    from golden.formats import fp4_values, stochastic_margins

    words = element_words(seeds, data.shape, 4)
    assert words.shape == (len(seeds), 5, 6)
    margins = stochastic_margins(data, 4, phase, phase_bits(words, phase))
    for i, seed in enumerate(seeds):
        assert (words[i] == element_words(seed, data.shape, 4)).all()
        q = quantize(data, "fp4", tile=4, phase=phase, rounding="stochastic", seed=seed)
        live = margins[i] != np.iinfo(np.int64).min
        e = q.codes & 7
        # a decided element is up (the larger of its two candidates) exactly when margin > 0
        mag = np.abs(fp4_values(q.codes))
        v = np.abs(data) * 2.0 ** -(np.repeat(np.repeat(q.exps, 4, 0), 4, 1)[:5, :6] + phase)
        assert ((mag > v) == (margins[i] > 0))[live & (e < 7)].all()
        assert not live[data == 0].any()
