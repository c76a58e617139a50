"""cocotb testbench of ``nibble_axi`` (:class:`rtl.nibble_axi.NibbleAxi`) with bus
models no one here wrote: cocotbext-axi's ``AxiStreamSource`` on each input port,
``AxiStreamSink`` on the result port (random pause generators on every one of them)
and ``AxiLiteMaster`` on the register file.

The TB plays a CPU with a DMA engine (:class:`verif.axi_link.AxiLink`, which the AXI
device :mod:`verif.axi_device` drives too): a GEMM's beats (:func:`wire.gemm_protocol.encode`)
become one AXI4-Stream frame per input port, laid out as the DMA reads them from memory
(each beat ``tdata`` bits wide, :func:`wire.axi.axis_tdata_bits`, little-endian bytes);
all of a run's frames are queued at once on the six sources, which then go at their own
pace, and the sink cuts the results into GEMMs at TLAST. Every GEMM is checked against
golden (:class:`verif.scoreboard.Scoreboard`, :func:`wire.gemm_protocol.expected`), and
the counters and status bits are read over AXI4-Lite. Nothing is built at import.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles

from golden.params import NibbleParams
from wire.axi import RESP, register
from wire.gemm_protocol import GemmJob, GemmOutput, decode

from .axi_link import CLOCK_NS, AxiLink
from .runner import Bench
from .stimulus import GEMM_ROLES, OUTPUT_VARIANTS, random_job, throughput_jobs


class TB(Bench):
    """One test's bench around ``nibble_axi`` (parameters and seeds: :class:`Bench`).

    Sizes come from the DUT: :meth:`start` reads ID, VERSION and PARAMS over AXI4-Lite
    (:meth:`verif.axi_link.AxiLink.start`) and checks PARAMS against the run's
    parameters.

    Attributes
    ----------
    axi : verif.axi_link.AxiLink
        The bus models (sources, sink, AXI4-Lite master) and register access.
    rng : numpy.random.Generator
        The test's stimulus, seeded with ``seed`` (the pause generators are too).
    """

    def __init__(self, dut, seed_offset: int = 0):
        import numpy as np

        super().__init__(dut, seed_offset)
        self.rng = np.random.default_rng(self.seed)
        self._pause_rng = random.Random(self.seed)
        self.axi = AxiLink(dut)
        self.scoreboard = self.make_scoreboard()

    def set_pauses(self, p_pause: float) -> None:
        """Random pauses on every stream (:meth:`verif.axi_link.AxiLink.set_pauses`)."""
        self.axi.set_pauses(p_pause, self._pause_rng)

    # ------------------------------------------------------------------ bring-up

    async def start(self) -> NibbleParams:
        """Reset, then read the build's sizes from the DUT; they must be the run's."""
        dut_params = await self.axi.start()
        assert dut_params == self.params, f"the DUT is {dut_params}, the run asked for {self.params}"
        self.scoreboard = self.make_scoreboard()
        return self.params

    # ------------------------------------------------------------------ GEMMs

    def random_job(self, target=None) -> GemmJob:
        return random_job(self.rng, self.params, target)

    async def receive(self, job: GemmJob, result_beats: int) -> GemmOutput:
        """The next GEMM's results: one frame, cut at TLAST, of exactly ``result_beats``
        beats (so TLAST sat on its last beat and nowhere before)."""
        words = await self.axi.receive()
        assert len(words) == result_beats, \
            f"TLAST after {len(words)} result beats, the GEMM has {result_beats}"
        return decode(job, self.params, words)

    async def run_jobs(self, jobs, stalled: bool, first_index: int = 0) -> None:
        """Queue every job at once, then check each GEMM's results in order."""
        counts = [self.axi.send_job(job).result_beats for job in jobs]
        for i, (job, count) in enumerate(zip(jobs, counts)):
            self.scoreboard.check(job, await self.receive(job, count), first_index + i, stalled)

    async def counters(self) -> list:
        """GEMMS, BUSY_CYCLES and STALL_CYCLES."""
        return [await self.axi.read(reg) for reg in ("GEMMS", "BUSY_CYCLES", "STALL_CYCLES")]

    async def check_status(self, gemms: int) -> dict:
        """Read STATUS and the counters once the accelerator is idle; check them."""
        status = await self.axi.fields("STATUS")
        counters = dict(zip(("GEMMS", "BUSY_CYCLES", "STALL_CYCLES"), await self.counters()))
        assert not status["busy"]
        assert not status["fault"], "the accelerator's fault flag rose"
        assert not status["refused"]
        assert counters["GEMMS"] == gemms, counters
        return counters


#: Where :func:`throughput` writes its figures, in the run's directory.
THROUGHPUT_FILE = "throughput.json"


def coverage_targets(count: int, params: NibbleParams) -> list:
    """(role, variant, partial) for ``count`` GEMMs: every role x output variant
    (:data:`verif.stimulus.OUTPUT_VARIANTS`; the stochastic ones only on a build with
    stochastic rounding) first, then random ones."""
    bins = [(r, v, (r + v) % 2 == 1) for r in range(len(GEMM_ROLES))
            for v, (_, rounding, _) in enumerate(OUTPUT_VARIANTS)
            if params.stochastic or rounding != "stochastic"]
    return bins[:count] + [None] * max(0, count - len(bins))


@cocotb.test()
async def random_gemms(dut):
    """Every training role x output mode once (then random GEMMs), all queued at once,
    with random pauses on every stream; then the counters. Then a few GEMMs without
    pauses, whose cycles BUSY_CYCLES counts and STALL_CYCLES does not grow by."""
    tb = TB(dut)
    await tb.start()
    count = tb.gemms(default=len(GEMM_ROLES) * len(OUTPUT_VARIANTS))
    tb.set_pauses(0.3)
    start = cocotb.utils.get_sim_time("ns")
    await tb.run_jobs([tb.random_job(t) for t in coverage_targets(count, tb.params)], stalled=True)
    elapsed = (cocotb.utils.get_sim_time("ns") - start) // CLOCK_NS
    counters = await tb.check_status(count)
    assert 0 < counters["BUSY_CYCLES"] <= elapsed and counters["STALL_CYCLES"] > 0, counters
    tb.set_pauses(0.0)
    await tb.run_jobs([tb.random_job() for _ in range(3)], stalled=False, first_index=count)
    after = await tb.check_status(count + 3)
    assert after["STALL_CYCLES"] == counters["STALL_CYCLES"], "a stall with tready always high"
    assert after["BUSY_CYCLES"] > counters["BUSY_CYCLES"]
    await tb.axi.write("CONTROL", clear_counters=1)
    assert await tb.counters() == [0, 0, 0]


@cocotb.test()
async def throughput(dut):
    """:func:`throughput_jobs` queued at once with no pause on any stream: the clock
    cycles from the first beat offered to the last result beat taken, and BUSY_CYCLES,
    into :data:`THROUGHPUT_FILE` (``tests/test_cocotb_axi.py`` compares them with the
    bare Accelerator's)."""
    import json

    tb = TB(dut, seed_offset=3)
    await tb.start()
    jobs = throughput_jobs(tb.params)
    start = cocotb.utils.get_sim_time("ns")
    await tb.run_jobs(jobs, stalled=False)
    cycles = (cocotb.utils.get_sim_time("ns") - start) // CLOCK_NS
    counters = await tb.check_status(len(jobs))
    with open(THROUGHPUT_FILE, "w") as f:
        json.dump({"gemms": len(jobs), "cycles": int(cycles), "tile": tb.params.tile,
                   "busy_cycles": counters["BUSY_CYCLES"],
                   "stall_cycles": counters["STALL_CYCLES"]}, f)


@cocotb.test()
async def registers(dut):
    """SCRATCH keeps what was written (byte strobes too); an address with no register
    answers SLVERR; a write to a read-only register changes nothing."""
    tb = TB(dut, seed_offset=1)
    await tb.start()
    axi = tb.axi
    await axi.write("SCRATCH", value=0xDEADBEEF)
    assert await axi.read("SCRATCH") == 0xDEADBEEF
    resp = await axi.axil.write(register("SCRATCH").offset + 1, b"\x11\x22")
    assert int(resp.resp) == RESP["OKAY"]
    assert await axi.read("SCRATCH") == 0xDE2211EF
    for op in (axi.axil.read(0xF0, 4), axi.axil.write(0xF0, b"\0\0\0\0")):
        assert int((await op).resp) == RESP["SLVERR"]
    await axi.write("PARAMS", tile=1)
    assert (await axi.fields("PARAMS"))["tile"] == tb.params.tile


@cocotb.test()
async def soft_reset_mid_gemm(dut):
    """CONTROL.soft_reset while a GEMM is half done (the DMA side stopped first, as a
    driver does), then clean GEMMs must be exact and the counters start from 0."""
    tb = TB(dut, seed_offset=2)
    await tb.start()
    tb.set_pauses(0.2)
    for trial in range(3):
        tb.axi.send_job(tb.random_job())
        await ClockCycles(dut.aclk, int(tb.rng.integers(5, 80)))
        await tb.axi.soft_reset()
        assert not (await tb.axi.fields("STATUS"))["busy"], "still busy after the soft reset"
        assert (await tb.counters())[0] == 0
        await tb.run_jobs([tb.random_job()], stalled=True, first_index=trial)
        await tb.check_status(1)
