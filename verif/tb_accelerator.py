"""cocotb testbench of ``nibble_top`` (the Accelerator) against the golden model.

Structure after the verilog-axi / matrix_multiplier anchors: a ``TB`` per test that owns
everything the test uses — its parameters (:func:`verif.runner.params_from_env`,
checked against the DUT's port widths), the clock, reset, one ``StreamDriver`` per
input stream and a ``StreamMonitor`` on the result, its seeded stimulus
(:mod:`verif.stimulus`) and a :class:`verif.scoreboard.Scoreboard` that compares with
:func:`wire.gemm_protocol.expected` (golden), reports the first mismatch with its
coordinates, operands and both values, and adds the test's statistics to
``stats.json``. Nothing is built at import.
"""

from __future__ import annotations

import random
import time

import cocotb
import cocotb.utils
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from wire.gemm_protocol import GemmBeats, GemmJob, GemmOutput, decode, encode
from rtl.layouts import operand_row_layout, result_layout

from .cocotb_streams import StreamDriver, StreamMonitor, check_port_widths
from .runner import Bench
from .stimulus import GEMM_ROLES, OUTPUT_VARIANTS, edge_jobs, random_job

CLOCK_NS = 10


class TB(Bench):
    """One test's bench around ``nibble_top`` (parameters and seeds: :class:`Bench`).

    Attributes
    ----------
    rng : numpy.random.Generator
        The test's stimulus, seeded with ``seed`` (the streams' stalls are too).
    scoreboard : Scoreboard
        Checks every GEMM and counts what it checked into ``stats.json``.
    """

    INPUTS = GemmBeats.INPUTS

    def __init__(self, dut, seed_offset: int = 0, p_stall: float = 0.3):
        super().__init__(dut, seed_offset)
        check_port_widths(dut, self.params, {"a_codes__payload": operand_row_layout,
                                             "result__payload": result_layout})
        self.rng = np.random.default_rng(self.seed)
        stalls = random.Random(self.seed)
        self.drivers = {n: StreamDriver(dut, n, random.Random(stalls.random()), p_stall)
                        for n in self.INPUTS}
        self.monitor = StreamMonitor(dut, "result", random.Random(stalls.random()), p_stall)
        self.scoreboard = self.make_scoreboard()
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())

    async def reset(self, cycles=2):
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def set_stalls(self, p_stall: float) -> None:
        """Probability of a valid gap / ready stall per beat on every stream."""
        for driver in self.drivers.values():
            driver.p_gap = p_stall
        self.monitor.p_stall = p_stall

    def random_job(self, target=None) -> GemmJob:
        """The next random GEMM of this test's stimulus (:func:`verif.stimulus.random_job`)."""
        return random_job(self.rng, self.params, target)

    def start_job(self, job: GemmJob):
        """Start driving ``job``'s input beats and taking its result beats; returns the
        driver tasks and the monitor task (whose result is the result beats)."""
        beats = encode(job, self.params)
        words = beats.inputs()
        tasks = [cocotb.start_soon(self.drivers[n].send(words[n])) for n in self.INPUTS]
        return tasks, cocotb.start_soon(self.monitor.receive(beats.result_beats))

    async def run_job(self, job: GemmJob) -> GemmOutput:
        """Drive one GEMM and return the decoded result."""
        start_ns, start_s = cocotb.utils.get_sim_time("ns"), time.perf_counter()
        tasks, receive = self.start_job(job)
        result = await receive
        for task in tasks:
            await task
        assert not self.dut.fault.value, "the accelerator's fault flag rose: an internal " \
                                         "queue was written while full or read while empty"
        self.scoreboard.add_time((cocotb.utils.get_sim_time("ns") - start_ns) // CLOCK_NS,
                                 time.perf_counter() - start_s)
        return decode(job, self.params, result)

    async def check_job(self, job: GemmJob, index: int, stalled: bool = True) -> None:
        """Run ``job`` and check it against golden."""
        self.scoreboard.check(job, await self.run_job(job), index, stalled)


@cocotb.test()
async def random_gemms(dut):
    """Random back-to-back GEMMs in all three training roles and all output modes."""
    tb = TB(dut)
    count = tb.gemms(default=12)
    await tb.reset()
    bins = [(m, v, s, p) for m in range(len(GEMM_ROLES)) for v in range(len(OUTPUT_VARIANTS))
            for s in (False, True) for p in (False, True)]
    for i in range(count):
        # Coverage-driven: the first len(bins) GEMMs visit every bin, then random ones.
        if i < len(bins):
            role, variant, stalled, partial = bins[i]
            job = tb.random_job((role, variant, partial))
        else:
            job, stalled = tb.random_job(), bool(tb.rng.random() < 0.7)
        tb.set_stalls(0.3 if stalled else 0.0)
        await tb.check_job(job, i, stalled)


@cocotb.test()
async def edge_shapes(dut):
    """1x1x1, and the longest reduction the exponent buffers allow (256 tiles of K)."""
    tb = TB(dut, seed_offset=2)
    await tb.reset()
    tb.set_stalls(0.1)
    for i, job in enumerate(edge_jobs(tb.rng, tb.params.tile)):
        await tb.check_job(job, i, stalled=True)


@cocotb.test()
async def reset_mid_gemm(dut):
    """Reset while a GEMM is half done, then a clean GEMM must be exact."""
    tb = TB(dut, seed_offset=1)
    await tb.reset()
    for trial in range(3):
        tasks, partial = tb.start_job(tb.random_job())
        for _ in range(int(tb.rng.integers(5, 60))):
            await RisingEdge(dut.clk)
        for task in (*tasks, partial):
            task.cancel()
        for name in tb.INPUTS:
            tb.drivers[name].valid.value = 0
        await tb.reset()
        await tb.check_job(tb.random_job(), trial)
