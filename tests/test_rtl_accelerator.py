"""The Accelerator against golden, in Amaranth's simulator: random GEMMs in the three
training modes and every output mode, with random stalls on every stream."""

import numpy as np
import pytest

from golden.formats import quantize
from golden.params import NibbleParams
from rtl.gemm_protocol import GemmJob, OutputSpec, expected
from verif.amaranth_runner import run_jobs


def assert_matches(job, params, got):
    want = expected(job, params)
    if job.out.mode == "raw":
        np.testing.assert_array_equal(got.raw.acc, want.raw.acc)
        np.testing.assert_array_equal(got.raw.out_exps, want.raw.out_exps)
    else:
        np.testing.assert_array_equal(got.codes.codes, want.codes.codes)
        np.testing.assert_array_equal(got.codes.exps, want.codes.exps)
    assert got.saturated == want.saturated


def random_operand(rng, shape, kind, tile, phase=0):
    """Full-range values over many binades, some all-zero rows."""
    x = rng.normal(size=shape) * np.exp2(rng.integers(-20, 20, size=shape))
    x[rng.random(shape) < 0.1] = 0.0
    return quantize(x, kind, tile=tile, phase=phase)


def training_jobs(rng, tile):
    """The three training GEMMs of one layer, shapes not multiples of T, each output mode."""
    batch, fan_in, fan_out = 2 * tile + 1, tile + 3, 2 * tile - 1
    x = random_operand(rng, (batch, fan_in), "uint4", tile)
    w = random_operand(rng, (fan_in, fan_out), "int4", tile)
    dy0 = random_operand(rng, (batch, fan_out), "fp4", tile, phase=0)
    dy1 = random_operand(rng, (batch, fan_out), "fp4", tile, phase=1)
    mask = rng.random((batch, fan_out)) < 0.7
    return [
        GemmJob(x, w, out=OutputSpec("int", kind="uint4", clip=(rng.integers(1, 255), -3), mask=mask)),
        GemmJob(x, w, out=OutputSpec("raw")),
        GemmJob(dy0, w, b_trans=True, out=OutputSpec("fp4", phase=0)),
        GemmJob(dy0, w.T, out=OutputSpec("fp4", phase=0, mask=rng.random((batch, fan_in)) < 0.5)),
        GemmJob(dy0, w, b_trans=True, out=OutputSpec("fp4", phase=1, rounding="linear")),
        GemmJob(x, dy1, a_trans=True, out=OutputSpec("raw")),
        GemmJob(x, w, out=OutputSpec("int", kind="int4")),
        GemmJob(x, dy1, a_trans=True, out=OutputSpec("fp4", ext_exp=-20)),
    ]


@pytest.mark.parametrize("tile", [4, 8])
def test_training_gemms_match_golden(tile):
    params = NibbleParams(tile=tile, acc_bits=32)
    rng = np.random.default_rng(tile)
    jobs = training_jobs(rng, tile)
    for job, got in zip(jobs, run_jobs(params, jobs, seed=tile)):
        assert_matches(job, params, got)


def test_one_by_one_and_extreme_exponents():
    params = NibbleParams(tile=4, acc_bits=32)
    rng = np.random.default_rng(7)
    a = random_operand(rng, (1, 1), "uint4", 4)
    b = random_operand(rng, (1, 1), "int4", 4)
    big_a = random_operand(rng, (5, 9), "int4", 4)
    big_a = type(big_a)(big_a.codes, rng.choice([-128, 127, 0], size=big_a.exps.shape), "int4", 4)
    big_b = random_operand(rng, (9, 6), "fp4", 4, phase=1)
    big_b = type(big_b)(big_b.codes, rng.choice([-128, 127, -60], size=big_b.exps.shape), "fp4", 4, 1)
    jobs = [GemmJob(a, b), GemmJob(big_a, big_b), GemmJob(big_a, big_b, out=OutputSpec("fp4"))]
    for job, got in zip(jobs, run_jobs(params, jobs, seed=1)):
        assert_matches(job, params, got)
