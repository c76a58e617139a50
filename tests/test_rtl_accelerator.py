"""The Accelerator against golden, in Amaranth's simulator: random GEMMs in the three
training modes and every output mode (stochastic rounding included), with random stalls
on every stream."""

from types import SimpleNamespace

import numpy as np
import pytest
from amaranth.hdl import Fragment

from golden.params import NibbleParams
from rtl import accelerator
from rtl.accelerator import Accelerator
from rtl.tile_rescaler import TileRescaler
from wire.gemm_protocol import GemmJob, OutputSpec, expected
from verif.amaranth_runner import run_jobs
from verif.scoreboard import first_mismatch
from verif.stimulus import (backward_job, forward_job, random_operand, weight_grad_job,
                            with_tile_exps)


def assert_matches(job, params, got):
    problem = first_mismatch(job, got, expected(job, params))
    assert problem is None, problem


def training_jobs(rng, tile):
    """The three training GEMMs of one layer, shapes not multiples of T, each output mode
    (and dX = dY . W^T once with W stored transposed, so B is read as stored)."""
    batch, fan_in, fan_out = 2 * tile + 1, tile + 3, 2 * tile - 1
    x = random_operand(rng, (batch, fan_in), "uint4", tile)
    w = random_operand(rng, (fan_in, fan_out), "int4", tile)
    dy0 = random_operand(rng, (batch, fan_out), "fp4", tile, phase=0)
    dy1 = random_operand(rng, (batch, fan_out), "fp4", tile, phase=1)
    mask = rng.random((batch, fan_out)) < 0.7
    in_range = rng.random((batch, fan_in)) < 0.6
    clipped = ~in_range & (rng.random((batch, fan_in)) < 0.5)
    return [
        forward_job(x, w, OutputSpec("int", kind="uint4", clip=(rng.integers(1, 255), -3), mask=mask)),
        forward_job(x, w, OutputSpec("raw")),
        backward_job(dy0, w, OutputSpec("fp4", phase=0)),
        GemmJob(dy0, w.T, out=OutputSpec("fp4", phase=0, mask=rng.random((batch, fan_in)) < 0.5)),
        backward_job(dy0, w, OutputSpec("fp4", phase=1, rounding="linear")),
        weight_grad_job(x, dy1, OutputSpec("raw")),
        forward_job(x, w, OutputSpec("int", kind="int4")),
        weight_grad_job(x, dy1, OutputSpec("fp4", ext_exp=-20)),
        # stochastic rounding, back to back: each GEMM reseeds the generators
        backward_job(dy0, w, OutputSpec("fp4", phase=1, rounding="stochastic",
                                        mask=rng.random((batch, fan_in)) < 0.5,
                                        seed=int(rng.integers(0, 1 << 32)))),
        backward_job(dy0, w, OutputSpec("fp4", rounding="stochastic", seed=0xFFFFFFFF,
                                        ext_exp=-3)),
        # the gradient unit: PACT's masks (clipped elements are masked ones), then
        # independent masks with stochastic rounding, then a clip mask alone
        backward_job(dy0, w, OutputSpec("fp4", dual=True, mask=in_range, clip_mask=clipped)),
        backward_job(dy0, w, OutputSpec("fp4", dual=True, rounding="stochastic",
                                        seed=int(rng.integers(0, 1 << 32)), ext_exp=-2,
                                        mask=rng.random((batch, fan_in)) < 0.5,
                                        clip_mask=rng.random((batch, fan_in)) < 0.5)),
        backward_job(dy0, w, OutputSpec("fp4", dual=True, rounding="linear",
                                        clip_mask=np.ones((batch, fan_in), bool))),
    ]


@pytest.mark.parametrize("tile,lanes,out_lanes,acc_bits,pipelined", [
    (4, None, None, 32, True), (8, None, None, 32, True), (2, 1, None, 18, True),
    (4, 1, None, 32, True), (8, 2, None, 20, True), (4, None, 1, 32, True),
    (8, None, 2, 20, True), (8, 4, 2, 32, True), (2, 1, None, 18, False),
    (4, 1, None, 19, False), (4, None, None, 32, False)])
def test_training_gemms_match_golden(tile, lanes, out_lanes, acc_bits, pipelined):
    """lanes < T: the narrow output path (psum rows, masks and results split into T / L
    beats inside the accelerator) gives the same bits, also with the narrowest
    accumulators (T = 2, acc_bits 18; T = 4, acc_bits 19 is the iCEBreaker profile);
    out_lanes < lanes: the output stages narrower still, behind the narrower; not
    ``pipelined`` (the iCE40 profile): without the queues' rings, the register slices
    and the log4 unit's delay lines."""
    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes, out_lanes=out_lanes,
                          pipelined=pipelined)
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
    big_a = with_tile_exps(big_a, rng.choice([-128, 127, 0], size=big_a.exps.shape))
    big_b = random_operand(rng, (9, 6), "fp4", 4, phase=1)
    big_b = with_tile_exps(big_b, rng.choice([-128, 127, -60], size=big_b.exps.shape))
    jobs = [GemmJob(a, b), GemmJob(big_a, big_b), GemmJob(big_a, big_b, out=OutputSpec("fp4"))]
    for job, got in zip(jobs, run_jobs(params, jobs, seed=1)):
        assert_matches(job, params, got)


def test_reset_mid_gemm_then_clean_gemm():
    """Reset asserted while a GEMM is half done (operands, exponents and results in
    flight) leaves no trace: the next GEMM is exact."""
    import random

    from amaranth.hdl import ResetInserter, Signal
    from amaranth.sim import Simulator

    from rtl.accelerator import Accelerator
    from wire.gemm_protocol import GemmBeats, decode, encode

    params = NibbleParams(tile=4, acc_bits=32)
    rng = np.random.default_rng(11)
    first = GemmJob(random_operand(rng, (12, 12), "uint4", 4),
                    random_operand(rng, (12, 12), "fp4", 4, phase=1), out=OutputSpec("fp4"))
    second = backward_job(random_operand(rng, (9, 7), "fp4", 4),
                          random_operand(rng, (5, 7), "int4", 4))
    beats = [encode(first, params), encode(second, params)]
    dut = Accelerator(params)
    rst, abort = Signal(), Signal()
    top = ResetInserter({"sync": rst})(dut)
    stall = random.Random(3)
    phase = {"b": False}
    got = []

    async def offer(ctx, stream, word):
        """put_bits that gives up when ``abort`` rises; True if the beat was taken."""
        ctx.set(stream.valid, 1)
        ctx.set(stream.payload.as_value() if hasattr(stream.payload, "as_value")
                else stream.payload, word)
        _, aborted = await ctx.tick().sample(stream.ready, abort).until(
            stream.ready | abort)
        ctx.set(stream.valid, 0)
        return not aborted

    def producer(name):
        async def run(ctx):
            stream = getattr(dut, name)
            for word in beats[0].inputs()[name]:
                if not await offer(ctx, stream, word):
                    break
            while not phase["b"]:
                await ctx.tick()
            for word in beats[1].inputs()[name]:
                await offer(ctx, stream, word)
        return run

    async def resetter(ctx):
        await ctx.tick().repeat(60)                   # mid-GEMM: results have started
        ctx.set(abort, 1)
        ctx.set(rst, 1)
        await ctx.tick().repeat(2)
        ctx.set(rst, 0)
        ctx.set(abort, 0)
        phase["b"] = True

    async def consumer(ctx):
        ctx.set(dut.result.ready, 1)
        while not phase["b"]:
            await ctx.tick()
        ctx.set(dut.result.ready, 0)
        for _ in range(beats[1].result_beats):
            if stall.random() < 0.3:
                await ctx.tick()
            ctx.set(dut.result.ready, 1)
            beat, = await ctx.tick().sample(dut.result.payload).until(dut.result.valid)
            ctx.set(dut.result.ready, 0)
            got.append(beat.as_value().value)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    for name in GemmBeats.INPUTS:
        sim.add_testbench(producer(name))
    sim.add_testbench(resetter)
    sim.add_testbench(consumer)
    sim.run()
    assert_matches(second, params, decode(second, params, got))


@pytest.mark.parametrize("family,pipelined,lanes,ring", [
    (None, True, None, "ram"), ("ecp5", True, None, "ram"), ("iCE40", True, None, "registers"),
    ("iCE40", True, 1, "registers"), ("iCE40", False, None, "registers"),
    ("iCE40", False, 1, "ram")])
def test_rescaler_ring_follows_the_platform(monkeypatch, family, pipelined, lanes, ring):
    """The rescaler keeps its accumulators in LUT RAM, except on an iCE40 (no LUT RAM),
    where they are flip-flop rows; without ``pipelined`` (the iCE40 profile) and a ring
    of at least 16 beats (T = 4, one lane) in a memory there too (block RAM)."""
    made = []

    class Recording(TileRescaler):
        def __init__(self, params, ring="ram"):
            made.append(ring)
            super().__init__(params, ring=ring)

    monkeypatch.setattr(accelerator, "TileRescaler", Recording)
    platform = None if family is None else SimpleNamespace(family=family)
    Fragment.get(Accelerator(NibbleParams(tile=4, lanes=lanes, pipelined=pipelined)), platform)
    assert made == [ring]
