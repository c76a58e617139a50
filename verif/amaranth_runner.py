"""Run GEMM jobs through the Accelerator in Amaranth's own simulator.

Used by the fast unit tests and by the utilization benchmark; the cocotb/Verilator
regressions drive the generated Verilog with the same beats (:mod:`wire.gemm_protocol`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from amaranth.sim import Simulator

from golden.params import NibbleParams
from rtl.accelerator import Accelerator
from wire.gemm_protocol import GemmBeats, decode, encode

from .amaranth_streams import check_stream_rules, idle, put_bits, stream_get

__all__ = ["RunStats", "run_jobs"]

@dataclass
class RunStats:
    """Cycle counts of a run: per job, from its command being taken to its last result."""

    job_cycles: list
    total_cycles: int


def run_jobs(params: NibbleParams, jobs, *, seed=0, p_stall=0.3, stats=None):
    """Run ``jobs`` back to back through one Accelerator with random stalls on every
    stream (``p_stall`` = 0: operands always available, results always taken).

    Returns the decoded outputs (:class:`wire.gemm_protocol.GemmOutput`) in job order;
    fills ``stats`` (a :class:`RunStats`) if given.
    """
    dut = Accelerator(params)
    rng = random.Random(seed)
    beats = [encode(job, params) for job in jobs]
    results = []
    cycle = [0]
    starts, ends = [], []

    def producer(name):
        async def run(ctx):
            for b in beats:
                for word in b.inputs()[name]:
                    await idle(ctx, rng, p_stall)
                    await put_bits(ctx, getattr(dut, name), word)
        return run

    async def consumer(ctx):
        for job, b in zip(jobs, beats):
            words = []
            for _ in range(b.result_beats):
                await idle(ctx, rng, p_stall)
                beat = await stream_get(ctx, dut.result)
                words.append(beat.as_value().value)
            ends.append(cycle[0])
            results.append(decode(job, params, words))

    async def clock_counter(ctx):
        async for _, _, taken in ctx.tick().sample(dut.cmd.valid & dut.cmd.ready):
            cycle[0] += 1
            if taken:
                starts.append(cycle[0])

    async def rules(ctx):
        await check_stream_rules(ctx, dut.result, "result")

    async def no_fault(ctx):
        async for _, _, fault in ctx.tick().sample(dut.fault):
            assert not fault, f"Accelerator.fault rose by cycle {cycle[0]}: an internal " \
                              "queue was written while full or read while empty"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for name in GemmBeats.INPUTS:
        sim.add_testbench(producer(name))
    sim.add_testbench(consumer)
    sim.add_testbench(clock_counter, background=True)
    sim.add_testbench(rules, background=True)
    sim.add_testbench(no_fault, background=True)
    sim.run()
    if stats is not None:
        stats.job_cycles = [e - s + 1 for s, e in zip(starts, ends)]
        stats.total_cycles = cycle[0]
    return results
