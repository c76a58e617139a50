"""cocotb testbench of ``nibble_top`` (the Accelerator) against the golden model.

Structure after the verilog-axi / matrix_multiplier anchors: a ``TB`` with the clock,
reset, one ``StreamDriver`` per input stream and a ``StreamMonitor`` on the result; the
transaction-level model is :func:`rtl.gemm_protocol.expected` (golden), and the
scoreboard reports the first mismatch with its coordinates, operands and both values.
Parameters come from the environment (set by :mod:`verif.runner`).
"""

from __future__ import annotations

import os
import random

import cocotb
import cocotb.utils
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge

from golden.params import NibbleParams
from rtl.gemm_protocol import GemmBeats, GemmJob, decode, encode, expected

from .cocotb_streams import StreamDriver, StreamMonitor
from .coverage import coverage_bin
from .scoreboard import first_mismatch
from .stimulus import GEMM_ROLES, OUTPUT_VARIANTS, edge_jobs, random_job

PARAMS = NibbleParams(tile=int(os.environ.get("NIBBLE_TILE", "4")),
                      acc_bits=int(os.environ.get("NIBBLE_ACC_BITS", "32")),
                      lanes=int(os.environ["NIBBLE_LANES"]) if "NIBBLE_LANES" in os.environ
                      else None)
SEED = int(os.environ.get("NIBBLE_SEED", "1"))


class TB:
    """Clock, reset, drivers and monitor around one ``nibble_top``."""

    INPUTS = GemmBeats.INPUTS

    def __init__(self, dut, seed, p_stall=0.3):
        self.dut = dut
        self.p_stall = p_stall
        self.rng = random.Random(seed)
        self.drivers = {n: StreamDriver(dut, n, random.Random(self.rng.random()), p_stall)
                        for n in self.INPUTS}
        self.monitor = StreamMonitor(dut, "result", random.Random(self.rng.random()), p_stall)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    async def reset(self, cycles=2):
        self.dut.rst.value = 1
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def set_stalls(self, p_stall: float) -> None:
        """Probability of a valid gap / ready stall per beat on every stream."""
        self.p_stall = p_stall
        for driver in self.drivers.values():
            driver.p_gap = p_stall
        self.monitor.p_stall = p_stall

    async def run_job(self, job: GemmJob):
        """Drive one GEMM and return the decoded result."""
        import time
        start_ns, start_s = cocotb.utils.get_sim_time("ns"), time.perf_counter()
        beats = encode(job, PARAMS)
        words = beats.inputs()
        tasks = [cocotb.start_soon(self.drivers[n].send(words[n])) for n in self.INPUTS]
        result = await self.monitor.receive(beats.result_beats)
        for task in tasks:
            await task
        assert not self.dut.fault.value, "the accelerator's fault flag rose: an internal " \
                                         "queue was written while full or read while empty"
        STATS["cycles"] += int((cocotb.utils.get_sim_time("ns") - start_ns) // 10)
        STATS["seconds"] += time.perf_counter() - start_s
        return decode(job, PARAMS, result)


#: Work checked by this simulation, written to ``stats.json`` for ``nibble regress``.
STATS = {"gemms": 0, "macs": 0, "cycles": 0, "seconds": 0.0, "coverage": {}}

def _write_stats():
    import json
    with open("stats.json", "w") as f:
        json.dump({**STATS, "seed": SEED, "tile": PARAMS.tile}, f)


def scoreboard(job: GemmJob, got, index: int, stalled: bool = True) -> None:
    """Compare with golden; raise with the first mismatch's coordinates and operands."""
    report = first_mismatch(job, got, expected(job, PARAMS))
    if report:
        raise AssertionError(f"GEMM {index}: {report}")
    m, k, n = job.shape
    STATS["gemms"] += 1
    STATS["macs"] += m * k * n
    key = coverage_bin(job, PARAMS.tile, stalled)
    STATS["coverage"][key] = STATS["coverage"].get(key, 0) + 1
    _write_stats()


@cocotb.test()
async def random_gemms(dut):
    """Random back-to-back GEMMs in all three training roles and all output modes."""
    count = int(os.environ.get("NIBBLE_GEMMS", "12"))
    dut._log.info(f"seed {SEED}, T={PARAMS.tile}, acc_bits={PARAMS.acc_bits}, {count} GEMMs")
    tb = TB(dut, SEED)
    await tb.reset()
    rng = np.random.default_rng(SEED)
    bins = [(m, v, s, p) for m in range(len(GEMM_ROLES)) for v in range(len(OUTPUT_VARIANTS))
            for s in (False, True) for p in (False, True)]
    for i in range(count):
        # Coverage-driven: the first len(bins) GEMMs visit every bin, then random ones.
        if i < len(bins):
            role, variant, stalled, partial = bins[i]
            job = random_job(rng, PARAMS, (role, variant, partial))
        else:
            job, stalled = random_job(rng, PARAMS), bool(rng.random() < 0.7)
        tb.set_stalls(0.3 if stalled else 0.0)
        scoreboard(job, await tb.run_job(job), i, stalled)


@cocotb.test()
async def edge_shapes(dut):
    """1x1x1, and the longest reduction the exponent buffers allow (256 tiles of K)."""
    tb = TB(dut, SEED + 2)
    await tb.reset()
    jobs = edge_jobs(np.random.default_rng(SEED + 2), PARAMS.tile)
    tb.set_stalls(0.1)
    for i, job in enumerate(jobs):
        scoreboard(job, await tb.run_job(job), i, stalled=True)


@cocotb.test()
async def reset_mid_gemm(dut):
    """Reset while a GEMM is half done, then a clean GEMM must be exact."""
    tb = TB(dut, SEED + 1)
    await tb.reset()
    rng = np.random.default_rng(SEED + 1)
    for trial in range(3):
        first = random_job(rng, PARAMS)
        beats = encode(first, PARAMS)
        words = beats.inputs()
        tasks = [cocotb.start_soon(tb.drivers[n].send(words[n])) for n in tb.INPUTS]
        partial = cocotb.start_soon(tb.monitor.receive(beats.result_beats))
        for _ in range(int(rng.integers(5, 60))):
            await RisingEdge(dut.clk)
        for task in (*tasks, partial):
            task.cancel()
        for name in tb.INPUTS:
            tb.drivers[name].valid.value = 0
        await tb.reset()
        job = random_job(rng, PARAMS)
        scoreboard(job, await tb.run_job(job), trial)
