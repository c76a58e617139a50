"""The host side of ``nibble_axi``'s buses in cocotb, with bus models no one here wrote:
cocotbext-axi's ``AxiStreamSource`` on each input port, ``AxiStreamSink`` on the result
port and ``AxiLiteMaster`` on the register file.

:class:`AxiLink` plays a CPU with a DMA engine: a run of beats for one input stream
(:func:`wire.gemm_protocol.encode`'s lists) becomes one AXI4-Stream frame on that port,
laid out as the DMA reads it from memory: each beat ``tdata`` bits wide
(:func:`wire.axi.axis_tdata_bits`), little-endian bytes, two's complement for the
signed exponents, which is exactly :func:`wire.host_link.pack_beats` (the UART link
carries beats the same way). The sink cuts the results into GEMMs at TLAST. Registers
are read and written by name (:mod:`wire.axi`).

Two users: the cocotbext-axi bench (:mod:`verif.tb_axi`, in coroutines) and the AXI
device (:mod:`verif.axi_device`, from a ``cocotb.task.bridge`` thread).
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from golden.params import NibbleParams
from wire import streams
from wire.axi import ID_MAGIC, MAP_VERSION, RESP, axis_tdata_bits, decode_params, register
from wire.gemm_protocol import GemmBeats, GemmJob, encode
from wire.host_driver import DeviceError
from wire.host_link import pack_beats, unpack_beats

__all__ = ["AxiLink", "CLOCK_NS", "pauses"]

#: ``aclk`` period of the simulation.
CLOCK_NS = 10


def pauses(rng: random.Random, p_pause: float):
    """A cocotbext-axi pause generator: pause in a cycle with probability ``p_pause``."""
    while True:
        yield rng.random() < p_pause


class AxiLink:
    """The bus models around ``dut`` (a ``nibble_axi``); starts its clock and holds
    ``aresetn`` low until :meth:`start`. Build it inside the cocotb scheduler (a
    coroutine), not in a bridge thread.

    Attributes
    ----------
    dut
        The cocotb handle of the ``nibble_axi`` top.
    sources : {port name: AxiStreamSource}
        One per input stream (:data:`wire.gemm_protocol.GemmBeats.INPUTS`).
    sink : AxiStreamSink
    axil : AxiLiteMaster
    params : NibbleParams or None
        The build's parameters, read from PARAMS by :meth:`start`.
    """

    INPUTS = GemmBeats.INPUTS

    def __init__(self, dut):
        from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamSink,
                                   AxiStreamSource)

        self.dut = dut
        self.params = None
        cocotb.start_soon(Clock(dut.aclk, CLOCK_NS, unit="ns").start())
        dut.aresetn.value = 0
        clk, rst = dut.aclk, dut.aresetn
        self.sources = {n: AxiStreamSource(AxiStreamBus.from_prefix(dut, f"s_axis_{n}"), clk, rst,
                                           reset_active_level=False) for n in self.INPUTS}
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_result"), clk, rst,
                                  reset_active_level=False)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), clk, rst,
                                  reset_active_level=False)

    # ------------------------------------------------------------------ registers

    async def read(self, reg: str) -> int:
        """The word register ``reg`` holds; :class:`DeviceError` unless it answers OKAY."""
        resp = await self.axil.read(register(reg).offset, 4)
        if int(resp.resp) != RESP["OKAY"]:
            raise DeviceError(f"reading {reg}: AXI response {resp.resp}")
        return int.from_bytes(resp.data, "little")

    async def write(self, reg: str, **fields) -> None:
        """Write ``fields`` (by name) into ``reg``, 0 in its other fields."""
        r = register(reg)
        resp = await self.axil.write(r.offset, r.pack(**fields).to_bytes(4, "little"))
        if int(resp.resp) != RESP["OKAY"]:
            raise DeviceError(f"writing {reg}: AXI response {resp.resp}")

    async def fields(self, reg: str) -> dict:
        """Register ``reg``'s fields, by name (:meth:`wire.axi.Register.unpack`)."""
        return register(reg).unpack(await self.read(reg))

    # ------------------------------------------------------------------ bring-up and reset

    async def start(self) -> NibbleParams:
        """Reset (``aresetn``), check ID and VERSION, read the build's parameters from
        PARAMS into :attr:`params` (returned) and check the ports' widths against them.
        :class:`DeviceError` if the DUT is no ``nibble_axi`` of this register map."""
        self.dut.aresetn.value = 0
        await ClockCycles(self.dut.aclk, 4)
        self.dut.aresetn.value = 1
        await RisingEdge(self.dut.aclk)
        magic = await self.read("ID")
        if magic != ID_MAGIC:
            raise DeviceError(f"ID reads {magic:#010x}, not a nibble_axi ({ID_MAGIC:#010x})")
        version = await self.read("VERSION")
        if version != MAP_VERSION:
            raise DeviceError(f"register map version {version}, this driver's {MAP_VERSION}")
        self.params = decode_params(await self.read("PARAMS"))
        widths = axis_tdata_bits(self.params)
        for port, bus in (*self.sources.items(), ("result", self.sink)):
            if bus.width != widths[port]:
                raise DeviceError(f"{port}: tdata is {bus.width} bits, PARAMS says {widths[port]}")
        return self.params

    async def soft_reset(self) -> None:
        """CONTROL.soft_reset, the way a driver does it: stop the DMA channels (beats
        still queued are dropped), reset, then let the channels go again. The reset has
        acted when the write's response comes (``docs/axi.md``)."""
        buses = (*self.sources.values(), self.sink)
        for bus in buses:
            bus.assert_reset(True)
            bus.clear()
        await self.write("CONTROL", soft_reset=1)
        for bus in buses:
            bus.assert_reset(False)

    def set_pauses(self, p_pause: float, rng: random.Random) -> None:
        """Random pauses on every stream (sources: tvalid gaps; sink: tready low), each
        stream's generator seeded from ``rng``."""
        for bus in (*self.sources.values(), self.sink):
            if p_pause:
                bus.set_pause_generator(pauses(random.Random(rng.random()), p_pause))
            else:
                bus.clear_pause_generator()
                bus.pause = False       # (clearing the generator keeps its last pause)

    # ------------------------------------------------------------------ beats

    def send(self, port: str, words) -> None:
        """Queue ``words``, beats of input stream ``port``, as one frame on its source
        (which sends it at its own pace)."""
        bits = streams.port_beat_bits(self.params)[port]
        self.sources[port].send_nowait(pack_beats(words, bits))

    def send_job(self, job: GemmJob) -> GemmBeats:
        """Queue ``job``'s beats (one frame per non-empty stream); returns them."""
        beats = encode(job, self.params)
        for port, words in beats.inputs().items():
            if words:
                self.send(port, words)
        return beats

    def result_words(self, frame) -> list:
        """A received result frame as result beats (:func:`wire.streams.result`), with
        ``last`` set on the final one, where TLAST was."""
        last = streams.result(self.params)["last"].offset
        words = unpack_beats(bytes(frame.tdata), last)
        words[-1] |= 1 << last
        return words

    async def receive(self) -> list:
        """The next GEMM's result beats: one frame, cut at TLAST (:meth:`result_words`)."""
        return self.result_words(await self.sink.recv())
