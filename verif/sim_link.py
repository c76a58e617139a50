"""The simulated link of :class:`wire.host_driver.HostDriver` (``nibble.device.Device.sim``):
the host end of the UART to the Verilated ``host_bridge`` top, in cocotb.

cocotb coroutines drive ``rx`` bit by bit and sample ``tx`` in the middle of each bit.
The driver is synchronous code: it runs in a ``cocotb.task.bridge`` thread, and
:meth:`SimLink.write` and :meth:`SimLink.read` block it on ``cocotb.task.resume``-d
coroutines while simulated time passes.

Two hooks inject line faults: ``to_board(frame) -> bytes`` may change or cut each
written frame, and ``to_host(byte) -> int`` may change each byte the board sends.
"""

from __future__ import annotations

import math

import cocotb
from cocotb.clock import Clock
from cocotb.task import resume
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer
from cocotb.utils import get_sim_time

from rtl.host_bridge import SIM_BAUD, SIM_CLK_HZ, SIM_TIMEOUT_S

__all__ = ["SimLink"]


class SimLink:
    """UART line model around ``dut`` (ports ``clk``, ``rst``, ``rx``, ``tx``).

    Parameters
    ----------
    dut
        The cocotb handle of the ``host_bridge`` top.
    clk_hz, baud : int
        As the top was built with (:data:`rtl.host_bridge.SIM_CLK_HZ`, ``SIM_BAUD``).
    interbyte_timeout_s : float
        The top's inter-byte timeout (:data:`rtl.host_bridge.SIM_TIMEOUT_S`).
    """

    #: Simulated line: no adapter holds bytes back.
    latency_s = 0.0

    def __init__(self, dut, *, clk_hz: int = SIM_CLK_HZ, baud: int = SIM_BAUD,
                 interbyte_timeout_s: float = SIM_TIMEOUT_S):
        self.dut, self.clk_hz, self.baud = dut, clk_hz, baud
        self.interbyte_timeout_s = interbyte_timeout_s
        self.bit_ns = 1e9 / baud
        if self.bit_ns != int(self.bit_ns) or 1e9 / clk_hz != int(1e9 / clk_hz):
            raise ValueError("clock period and bit time must be whole nanoseconds")
        self.bit_ns = int(self.bit_ns)
        self.to_board = None
        self.to_host = None
        self.sent = self.received = 0          # bytes on the wire, each way
        self._inbox = bytearray()
        self._arrived = Event()

    # ------------------------------------------------------------------ set-up (async)
    @classmethod
    async def start(cls, dut, **kwargs) -> "SimLink":
        """Start the clock, reset the design, and listen on ``tx``."""
        link = cls(dut, **kwargs)
        cocotb.start_soon(Clock(dut.clk, int(1e9 / link.clk_hz), unit="ns").start())
        dut.rx.value = 1
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 4)
        cocotb.start_soon(link._listen())
        return link

    @classmethod
    def open(cls, dut, **kwargs) -> "SimLink":
        """:meth:`start`, from a ``cocotb.task.bridge`` thread."""
        return resume(cls.start)(dut, **kwargs)

    # ------------------------------------------------------------------ driver side (blocking)
    def write(self, data: bytes) -> None:
        resume(self._send)(bytes(data))

    def read(self, n: int, timeout_s: float) -> bytes:
        return resume(self._receive)(n, timeout_s)

    # ------------------------------------------------------------------ line (async)
    async def _send(self, data: bytes) -> None:
        if self.to_board is not None:
            data = self.to_board(data)
        rx = self.dut.rx
        for byte in data:
            for bit in (0, *((byte >> n) & 1 for n in range(8)), 1):
                rx.value = bit
                await Timer(self.bit_ns, unit="ns")
            self.sent += 1

    async def _listen(self) -> None:
        tx = self.dut.tx
        while True:
            await FallingEdge(tx)
            await Timer(self.bit_ns * 3 // 2, unit="ns")      # middle of data bit 0
            value = 0
            for n in range(8):
                value |= int(tx.value) << n
                await Timer(self.bit_ns, unit="ns")
            if not int(tx.value):
                raise AssertionError("host_bridge sent a 0 stop bit")
            if self.to_host is not None:
                value = self.to_host(value)
            self.received += 1
            self._inbox.append(value)
            self._arrived.set()

    async def _receive(self, n: int, timeout_s: float) -> bytes:
        deadline = round(get_sim_time("ps")) + math.ceil(timeout_s * 1e12)
        while len(self._inbox) < n:
            left = deadline - round(get_sim_time("ps"))
            if left <= 0:
                break
            self._arrived.clear()
            await First(self._arrived.wait(), Timer(left, unit="ps"))
        out = bytes(self._inbox[:n])
        del self._inbox[:n]
        return out
