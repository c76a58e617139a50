"""cocotb testbench of ``nibble_axi`` (:class:`rtl.nibble_axi.NibbleAxi`) with bus
models no one here wrote: cocotbext-axi's ``AxiStreamSource`` on each input port,
``AxiStreamSink`` on the result port (random pause generators on every one of them)
and ``AxiLiteMaster`` on the register file.

The TB plays a CPU with a DMA engine: a GEMM's beats (:func:`wire.gemm_protocol.encode`)
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
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from golden.params import NibbleParams
from wire import streams
from wire.axi import ID_MAGIC, MAP_VERSION, RESP, axis_tdata_bits, register
from wire.gemm_protocol import GemmBeats, GemmJob, GemmOutput, decode, encode

from .runner import Bench
from .stimulus import GEMM_ROLES, OUTPUT_VARIANTS, random_job, throughput_jobs

CLOCK_NS = 10


def pauses(rng: random.Random, p_pause: float):
    """A cocotbext-axi pause generator: pause in a cycle with probability ``p_pause``."""
    while True:
        yield rng.random() < p_pause


def field(word: int, reg: str, name: str) -> int:
    """Field ``name`` of register ``reg`` in a word read from it (:mod:`wire.axi`)."""
    f = register(reg).field(name)
    return (word & f.mask) >> f.lsb


class TB(Bench):
    """One test's bench around ``nibble_axi`` (parameters and seeds: :class:`Bench`).

    Sizes come from the DUT: :meth:`start` reads ID, VERSION and PARAMS over AXI4-Lite
    and builds :attr:`params` from PARAMS (checked against the run's parameters and the
    ports' widths).

    Attributes
    ----------
    sources : {port name: AxiStreamSource}
    sink : AxiStreamSink
    axil : AxiLiteMaster
    rng : numpy.random.Generator
        The test's stimulus, seeded with ``seed`` (the pause generators are too).
    """

    INPUTS = GemmBeats.INPUTS

    def __init__(self, dut, seed_offset: int = 0):
        from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamSink,
                                   AxiStreamSource)
        import numpy as np

        super().__init__(dut, seed_offset)
        self.rng = np.random.default_rng(self.seed)
        self._pause_rng = random.Random(self.seed)
        cocotb.start_soon(Clock(dut.aclk, CLOCK_NS, unit="ns").start())
        dut.aresetn.value = 0
        clk, rst = dut.aclk, dut.aresetn
        self.sources = {n: AxiStreamSource(AxiStreamBus.from_prefix(dut, f"s_axis_{n}"), clk, rst,
                                           reset_active_level=False) for n in self.INPUTS}
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_result"), clk, rst,
                                  reset_active_level=False)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), clk, rst,
                                  reset_active_level=False)
        self.scoreboard = self.make_scoreboard()

    # ------------------------------------------------------------------ bus helpers

    async def read(self, reg: str) -> int:
        resp = await self.axil.read(register(reg).offset, 4)
        assert int(resp.resp) == RESP["OKAY"], f"{reg}: response {resp.resp}"
        return int.from_bytes(resp.data, "little")

    async def write(self, reg: str, **fields) -> None:
        r = register(reg)
        word = sum(value << r.field(name).lsb for name, value in fields.items())
        resp = await self.axil.write(r.offset, word.to_bytes(4, "little"))
        assert int(resp.resp) == RESP["OKAY"], f"{reg}: response {resp.resp}"

    def set_pauses(self, p_pause: float) -> None:
        """Random pauses on every stream (sources: tvalid gaps; sink: tready low)."""
        for port in (*self.sources.values(), self.sink):
            if p_pause:
                port.set_pause_generator(pauses(random.Random(self._pause_rng.random()), p_pause))
            else:
                port.clear_pause_generator()
                port.pause = False       # (clearing the generator keeps its last pause)

    # ------------------------------------------------------------------ bring-up

    async def start(self) -> NibbleParams:
        """Reset, then read the build's sizes from the DUT into :attr:`params`."""
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, 4)
        self.dut.aresetn.value = 1
        await RisingEdge(self.dut.aclk)
        assert await self.read("ID") == ID_MAGIC
        assert await self.read("VERSION") == MAP_VERSION
        word = await self.read("PARAMS")
        dut_params = NibbleParams(tile=field(word, "PARAMS", "tile"),
                                  acc_bits=field(word, "PARAMS", "acc_bits"),
                                  lanes=field(word, "PARAMS", "lanes"),
                                  out_lanes=field(word, "PARAMS", "out_lanes"),
                                  stochastic=bool(field(word, "PARAMS", "stochastic")))
        assert dut_params == self.params, f"the DUT is {dut_params}, the run asked for {self.params}"
        self.params = dut_params
        widths = axis_tdata_bits(self.params)
        for port, source in (*self.sources.items(), ("result", self.sink)):
            assert source.width == widths[port], f"{port}: tdata is {source.width} bits"
        self.scoreboard = self.make_scoreboard()
        return self.params

    # ------------------------------------------------------------------ GEMMs

    def random_job(self, target=None) -> GemmJob:
        return random_job(self.rng, self.params, target)

    def queue_job(self, job: GemmJob) -> int:
        """Queue ``job``'s beats on the sources (one frame per non-empty stream);
        returns its number of result beats."""
        from cocotbext.axi import AxiStreamFrame

        beats = encode(job, self.params)
        widths, bits = axis_tdata_bits(self.params), streams.port_beat_bits(self.params)
        for port, words in beats.inputs().items():
            if words:
                # (an exponent beat is a signed integer: its two's complement bits)
                size, mask = widths[port] // 8, (1 << bits[port]) - 1
                data = b"".join((w & mask).to_bytes(size, "little") for w in words)
                self.sources[port].send_nowait(AxiStreamFrame(data))
        return beats.result_beats

    async def receive(self, job: GemmJob, result_beats: int) -> GemmOutput:
        """The next GEMM's results: one frame, cut at TLAST, of exactly ``result_beats``
        beats (so TLAST sat on its last beat and nowhere before)."""
        frame = await self.sink.recv()
        size = axis_tdata_bits(self.params)["result"] // 8
        data = bytes(frame.tdata)
        assert len(data) == result_beats * size, \
            f"TLAST after {len(data) // size} result beats, the GEMM has {result_beats}"
        last = 1 << streams.result(self.params)["last"].offset
        words = [int.from_bytes(data[i:i + size], "little") for i in range(0, len(data), size)]
        words[-1] |= last
        return decode(job, self.params, words)

    async def run_jobs(self, jobs, stalled: bool, first_index: int = 0) -> None:
        """Queue every job at once, then check each GEMM's results in order."""
        counts = [self.queue_job(job) for job in jobs]
        for i, (job, count) in enumerate(zip(jobs, counts)):
            self.scoreboard.check(job, await self.receive(job, count), first_index + i, stalled)

    async def check_status(self, gemms: int) -> dict:
        """Read STATUS and the counters once the accelerator is idle; check them."""
        status = await self.read("STATUS")
        counters = {reg: await self.read(reg) for reg in ("GEMMS", "BUSY_CYCLES", "STALL_CYCLES")}
        assert not field(status, "STATUS", "busy")
        assert not field(status, "STATUS", "fault"), "the accelerator's fault flag rose"
        assert not field(status, "STATUS", "refused")
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
    await tb.write("CONTROL", clear_counters=1)
    assert [await tb.read(r) for r in ("GEMMS", "BUSY_CYCLES", "STALL_CYCLES")] == [0, 0, 0]


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
    await tb.write("SCRATCH", value=0xDEADBEEF)
    assert await tb.read("SCRATCH") == 0xDEADBEEF
    resp = await tb.axil.write(register("SCRATCH").offset + 1, b"\x11\x22")
    assert int(resp.resp) == RESP["OKAY"]
    assert await tb.read("SCRATCH") == 0xDE2211EF
    for op in (tb.axil.read(0xF0, 4), tb.axil.write(0xF0, b"\0\0\0\0")):
        assert int((await op).resp) == RESP["SLVERR"]
    await tb.write("PARAMS", tile=1)
    assert field(await tb.read("PARAMS"), "PARAMS", "tile") == tb.params.tile


@cocotb.test()
async def soft_reset_mid_gemm(dut):
    """CONTROL.soft_reset while a GEMM is half done (the DMA side stopped first, as a
    driver does), then clean GEMMs must be exact and the counters start from 0."""
    tb = TB(dut, seed_offset=2)
    await tb.start()
    tb.set_pauses(0.2)
    for trial in range(3):
        job = tb.random_job()
        tb.queue_job(job)
        await ClockCycles(dut.aclk, int(tb.rng.integers(5, 80)))
        for port in (*tb.sources.values(), tb.sink):          # stop the DMA channels
            port.assert_reset(True)
            port.clear()
        await tb.write("CONTROL", soft_reset=1)
        status = await tb.read("STATUS")
        assert not field(status, "STATUS", "busy"), "still busy after the soft reset"
        assert [await tb.read(r) for r in ("GEMMS", "BUSY_CYCLES", "STALL_CYCLES")][0] == 0
        for port in (*tb.sources.values(), tb.sink):
            port.assert_reset(False)
        await tb.run_jobs([tb.random_job()], stalled=True, first_index=trial)
        await tb.check_status(1)
