"""Tests of the gradient unit's golden rule (``golden.output.log4_quantize_fused``): both
TPR phases from one accumulation, PACT's alpha partials and the tile maxima, and the
job/result description that carries them (``wire.gemm_protocol``)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden import quantize, tiled_gemm
from golden.gemm import GemmResult
from golden.output import (alpha_gradient, alpha_partials, alpha_sum_bits, log4_quantize,
                           log4_quantize_fused, tile_max_magnitudes)
from golden.params import NibbleParams
from golden.scaling import gradscale_exponent
from wire.gemm_protocol import GemmJob, OutputSpec, expected

FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def random_result(rng, m, n, tile, acc_bits=32, spread=8):
    """A GemmResult with full-range accumulators and per-tile out_exps of any sign."""
    lim = 1 << (acc_bits - 1)
    scale = rng.integers(0, acc_bits - 1, size=(m, n))
    acc = rng.integers(-lim, lim, size=(m, n), dtype=np.int64) >> scale
    out_exps = rng.integers(-spread, spread + 1, size=(-(-m // tile), -(-n // tile)))
    return GemmResult(acc, out_exps, False, tile, acc_bits)


@st.composite
def cases(draw):
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    tile = draw(st.sampled_from([2, 4, 8, 16]))
    m, n = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    acc_bits = draw(st.sampled_from([32, 40, 53]))
    result = random_result(rng, m, n, tile, acc_bits, spread=draw(st.sampled_from([0, 8, 60])))
    mask = rng.random((m, n)) < draw(st.sampled_from([0.0, 0.5, 1.0]))
    clip_mask = rng.random((m, n)) < draw(st.sampled_from([0.0, 0.3, 1.0]))
    return result, mask, clip_mask, seed


def ref_alpha_partials(result, clip_mask):
    t = result.tile
    mt, nt = result.out_exps.shape
    out = [[0] * nt for _ in range(mt)]
    for (r, c), v in np.ndenumerate(result.acc):
        if clip_mask[r, c]:
            out[r // t][c // t] += int(v)
    return out


def ref_tile_max(result, mask):
    t = result.tile
    mt, nt = result.out_exps.shape
    out = [[0] * nt for _ in range(mt)]
    for (r, c), v in np.ndenumerate(result.acc):
        if mask[r, c]:
            out[r // t][c // t] = max(out[r // t][c // t], abs(int(v)))
    return out


# ---- both phases from one accumulation ----------------------------------------------------

@pytest.mark.parametrize("rounding", ["log", "linear", "stochastic"])
@FAST
@given(case=cases(), ext=st.one_of(st.none(), st.integers(-128, 127)))
def test_each_phase_is_the_single_phase_quantizer(rounding, case, ext):
    """Phase p of the fused unit is log4_quantize at phase p, codes and exponents, with
    one exponent table for both (E = floor(log2 amax) - 12 has no phase in it)."""
    result, mask, clip_mask, seed = case
    seed_arg = seed if rounding == "stochastic" else None
    fused = log4_quantize_fused(result, rounding=rounding, exps=ext, mask=mask,
                                clip_mask=clip_mask, seed=seed_arg)
    for p in (0, 1):
        single = log4_quantize(result, phase=p, rounding=rounding, exps=ext, mask=mask,
                               seed=seed_arg)
        got = fused.phase(p)
        assert got.phase == p and got.kind == "fp4"
        assert np.array_equal(got.codes, single.codes)
        assert np.array_equal(got.exps, single.exps)
    assert np.array_equal(fused.phase0.exps, fused.phase1.exps)


def test_tile_exponent_is_phase_independent():
    """The quantizer's own per-tile exponent is the same at either phase, and is the
    per-tensor GradScale rule applied to the tile."""
    x = np.random.default_rng(5).normal(size=(24, 24)) * 2.0 ** np.arange(-12, 12)
    q0, q1 = (quantize(x, "fp4", tile=8, phase=p) for p in (0, 1))
    assert np.array_equal(q0.exps, q1.exps)
    assert q0.exps[1, 2] == gradscale_exponent(x[8:16, 16:24])


# ---- the alpha partial and the tile maximum -------------------------------------------------

@FAST
@given(case=cases())
def test_alpha_partials_and_tile_max_match_integer_reference(case):
    result, mask, clip_mask, _ = case
    got = alpha_partials(result, clip_mask)
    assert [[int(v) for v in row] for row in got] == ref_alpha_partials(result, clip_mask)
    tmax = tile_max_magnitudes(result, mask)
    assert tmax.dtype == np.int64
    assert tmax.tolist() == ref_tile_max(result, mask)
    fused = log4_quantize_fused(result, mask=mask, clip_mask=clip_mask)
    assert np.array_equal(fused.alpha_sums, got) and np.array_equal(fused.tile_max, tmax)
    assert np.array_equal(fused.out_exps, result.out_exps)


@FAST
@given(case=cases())
def test_host_values_are_exact(case):
    """alpha_grad() is the exact sum of acc * 2**out_exp over the clipped elements,
    rounded once; amax() is max |masked value|, which GradScale records."""
    result, mask, clip_mask, _ = case
    fused = log4_quantize_fused(result, mask=mask, clip_mask=clip_mask)
    e = np.repeat(np.repeat(result.out_exps, result.tile, 0), result.tile, 1)
    exact = sum((Fraction(int(v)) * Fraction(2) ** int(e[r, c])
                 for (r, c), v in np.ndenumerate(result.acc) if clip_mask[r, c]), Fraction(0))
    assert fused.alpha_grad() == float(exact)
    assert fused.amax() == float(np.max(np.abs(result.value() * mask)))


def test_alpha_gradient_rounds_the_exact_sum_once():
    """Partials far apart in weight: the tiny one decides a tie of the big ones (a
    float sum would lose it), and a sum beyond float64's range of exponents is fine."""
    big = (1 << 53) + 1                                   # halfway between two floats
    assert alpha_gradient([[big, 1]], [[0, -100]]) == float((1 << 53) + 2)
    assert alpha_gradient([[big, -1]], [[0, -100]]) == float(1 << 53)
    assert alpha_gradient([[big, 0]], [[0, -100]]) == float(1 << 53)      # tie to even
    assert alpha_gradient([[3, 5]], [[-1074, 900]]) == 5 * 2.0 ** 900
    assert alpha_gradient([[0, 0]], [[5, 7]]) == 0.0


def test_alpha_grad_equals_the_float_sum_when_that_is_exact():
    """Training's former host formula sum(dX * clipped) gives the same float whenever
    its float64 additions are exact, as they are for a real backward GEMM."""
    rng = np.random.default_rng(3)
    dy = quantize(rng.normal(size=(32, 64)) * 1e-2, "fp4", tile=8)
    w = quantize(rng.normal(size=(64, 64)), "int4", tile=8)
    result = tiled_gemm(dy, w.T)
    clipped = rng.random(result.acc.shape) < 0.2
    fused = log4_quantize_fused(result, mask=~clipped, clip_mask=clipped)
    assert fused.alpha_grad() == float(np.sum(result.value() * clipped)) != 0.0
    assert alpha_gradient(alpha_partials(result, clipped), result.out_exps) == fused.alpha_grad()


@pytest.mark.parametrize("tile, acc_bits", [(8, 32), (16, 24), (64, 53), (2, 18)])
def test_full_scale_sums_fit_the_alpha_width(tile, acc_bits):
    """Every accumulator at the most negative value, every element clipped: the sum is
    -T*T * 2**(acc_bits-1), the least number of alpha_sum_bits bits, exactly (no
    saturation exists); the tile max is 2**(acc_bits-1), acc_bits bits unsigned."""
    lo = -(1 << (acc_bits - 1))
    acc = np.full((tile, tile), lo, dtype=np.int64)
    result = GemmResult(acc, np.zeros((1, 1), dtype=np.int64), True, tile, acc_bits)
    bits = alpha_sum_bits(tile, acc_bits)
    assert bits == acc_bits + 2 * (tile.bit_length() - 1)
    s = int(alpha_partials(result, np.ones_like(acc, bool))[0, 0])
    assert s == -(1 << (bits - 1)) == tile * tile * lo
    hi = np.full((tile, tile), -lo - 1, dtype=np.int64)
    top = GemmResult(hi, np.zeros((1, 1), dtype=np.int64), True, tile, acc_bits)
    assert int(alpha_partials(top, np.ones_like(acc, bool))[0, 0]) == (1 << (bits - 1)) - tile * tile
    assert int(tile_max_magnitudes(result)[0, 0]) == 1 << (acc_bits - 1)


def test_all_zero_tiles_and_masks_that_take_all_or_nothing():
    rng = np.random.default_rng(9)
    result = random_result(rng, 16, 16, 8)
    acc = result.acc.copy()
    acc[:8, :8] = 0                                        # an all-zero tile
    result = GemmResult(acc, result.out_exps, False, 8, 32)
    every, none = np.ones((16, 16), bool), np.zeros((16, 16), bool)
    f = log4_quantize_fused(result, mask=every, clip_mask=every)
    assert f.alpha_sums[0, 0] == 0 and f.tile_max[0, 0] == 0
    assert f.phase0.exps[0, 0] == f.phase1.exps[0, 0] == -128
    assert np.all(f.phase0.codes[:8, :8] == 0) and np.all(f.phase1.codes[:8, :8] == 0)
    assert f.alpha_sums[1, 1] == acc[8:, 8:].sum()
    g = log4_quantize_fused(result, mask=none, clip_mask=none)
    assert np.all(g.alpha_sums == 0) and np.all(g.tile_max == 0)
    assert np.all(g.phase0.codes == 0) and np.all(g.phase1.codes == 0)
    assert g.alpha_grad() == 0.0 and g.amax() == 0.0
    # no clip mask sums nothing; no mask takes every element
    h = log4_quantize_fused(result)
    assert np.all(h.alpha_sums == 0)
    assert np.array_equal(h.tile_max, tile_max_magnitudes(result, every))


def test_alpha_partial_reads_accumulators_before_the_mask():
    """The clipped elements are the ones the ReLU'/PACT' mask zeroes; their sum must
    still count them."""
    acc = np.arange(1, 17, dtype=np.int64).reshape(4, 4)
    result = GemmResult(acc, np.zeros((1, 1), dtype=np.int64), False, 4, 32)
    clipped = acc > 12
    f = log4_quantize_fused(result, mask=~clipped, clip_mask=clipped)
    assert f.alpha_sums[0, 0] == 13 + 14 + 15 + 16
    assert f.tile_max[0, 0] == 12


# ---- the job and its golden result -----------------------------------------------------------

def _backward(rng, m=20, k=24, n=16, tile=8):
    dy = quantize(rng.normal(size=(m, k)) * 1e-3, "fp4", tile=tile)
    w = quantize(rng.normal(size=(n, k)), "int4", tile=tile)
    return dy, w


def test_dual_job_gives_the_fused_output():
    rng = np.random.default_rng(1)
    dy, w = _backward(rng)
    mask = rng.random((20, 16)) > 0.3
    clipped = ~mask & (rng.random((20, 16)) > 0.5)
    params = NibbleParams()
    out = OutputSpec("fp4", dual=True, mask=mask, clip_mask=clipped, rounding="stochastic",
                     seed=77)
    got = expected(GemmJob(dy, w, b_trans=True, out=out), params)
    assert got.codes is None and got.raw is None
    want = log4_quantize_fused(tiled_gemm(dy, w.T), mask=mask, clip_mask=clipped,
                               rounding="stochastic", seed=77)
    for p in (0, 1):
        assert np.array_equal(got.fused.phase(p).codes, want.phase(p).codes)
    assert np.array_equal(got.fused.alpha_sums, want.alpha_sums)
    assert np.array_equal(got.fused.tile_max, want.tile_max)
    single = expected(GemmJob(dy, w, b_trans=True, out=OutputSpec(
        "fp4", phase=1, mask=mask, rounding="stochastic", seed=77)), params)
    assert np.array_equal(single.codes.codes, want.phase1.codes)


@pytest.mark.parametrize("kwargs, match", [
    (dict(mode="raw", dual=True), "dual output is fp4 mode's"),
    (dict(mode="fp4", dual=True, phase=1), "dual output is fp4 mode's"),
    (dict(mode="fp4", dual=1), "dual must be True or False"),
    (dict(mode="fp4", clip_mask=np.ones((2, 2))), "applies to dual fp4 output only"),
    (dict(mode="fp4", rounding="stochastic"), "needs a seed"),
    (dict(mode="fp4", rounding="stochastic", seed=-5), "seed"),
    (dict(mode="fp4", rounding="stochastic", seed="5"), "seed"),
    (dict(mode="fp4", seed=5), "applies to rounding='stochastic' only"),
    (dict(mode="fp4", rounding="round"), "rounding must be one of"),
])
def test_output_spec_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        OutputSpec(**kwargs)
    assert "\n" not in str(info.value)


def test_clip_mask_shape_is_checked():
    rng = np.random.default_rng(4)
    dy, w = _backward(rng)
    job = GemmJob(dy, w, b_trans=True, out=OutputSpec("fp4", dual=True,
                                                      clip_mask=np.ones((3, 3), bool)))
    with pytest.raises(ValueError, match="clip_mask shape"):
        expected(job, NibbleParams())
