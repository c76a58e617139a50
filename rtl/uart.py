"""UART receiver and transmitter, 8N1, for the FPGA host link (:mod:`rtl.host_bridge`).

Both count ``divisor`` = clk_hz // baud clock cycles per bit. The receiver
synchronises the pin with two flip-flops, finds the start bit's falling edge, and
samples every bit in its middle; a byte whose stop bit reads 0 is a framing error and
is dropped.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx"]


def _check_divisor(divisor) -> int:
    if not isinstance(divisor, int) or divisor < 4:
        raise ValueError(f"divisor (clock cycles per bit) must be an integer >= 4, got {divisor!r}")
    return divisor


class UARTRx(wiring.Component):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Attributes
    ----------
    rx : In(1)
        The serial line, idle high; asynchronous to the clock.
    data : Out(stream.Signature(8))
        Received bytes. A byte not taken before the next one is complete is replaced
        by it (overrun).
    framing_error : Out(1)
        One-cycle pulse: a byte ended with a 0 stop bit and was dropped.
    """

    rx: In(1, init=1)
    data: Out(stream.Signature(8))
    framing_error: Out(1)

    def __init__(self, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        div = self._divisor
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(div))
        bits = Signal(range(8))
        shreg = Signal(8)
        tick = timer == 0
        with m.If(~tick):
            m.d.sync += timer.eq(timer - 1)
        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                # mid start bit: still low, or it was a glitch
                with m.If(tick):
                    m.d.sync += [timer.eq(div - 1), bits.eq(0)]
                    with m.If(line):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], line)), bits.eq(bits + 1),
                                 timer.eq(div - 1)]
                    with m.If(bits == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(line):
                        m.d.sync += [self.data.payload.eq(shreg), self.data.valid.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                # a break or a misaligned byte: wait for the idle level before a start bit
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Attributes
    ----------
    data : In(stream.Signature(8))
        Bytes to send; one is taken into a holding register whenever it is empty
        (``ready`` is that register's empty flag), and goes out when the previous byte's
        stop bit has been sent. The byte's source thus ends at a register, not at the
        shift register's load multiplexer.
    tx : Out(1)
        The serial line, idle high.
    """

    data: In(stream.Signature(8))
    tx: Out(1, init=1)

    def __init__(self, divisor: int):
        self._divisor = _check_divisor(divisor)
        super().__init__()

    def elaborate(self, platform):
        div = self._divisor
        m = Module()
        timer = Signal(range(div))
        left = Signal(range(10))          # bits still to send after the current one
        shreg = Signal(9)                 # data bits then the stop bit
        hold, full = Signal(8, reset_less=True, name="hold"), Signal()
        m.d.comb += self.data.ready.eq(~full)
        with m.If(self.data.valid & ~full):
            m.d.sync += [hold.eq(self.data.payload), full.eq(1)]
        # ``idle`` is (left == 0) & (timer == 0) in a register, decided a cycle ahead.
        idle = Signal(init=1)
        go = full & idle
        with m.If(go):
            m.d.sync += [idle.eq(0), full.eq(0)]
        with m.Elif((left == 0) & (timer == 1)):
            m.d.sync += idle.eq(1)
        with m.If(go):
            m.d.sync += [self.tx.eq(0), shreg.eq(Cat(hold, 1)),
                         left.eq(9), timer.eq(div - 1)]
        with m.Elif(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.Elif(left != 0):
            m.d.sync += [self.tx.eq(shreg[0]), shreg.eq(shreg[1:]), left.eq(left - 1),
                         timer.eq(div - 1)]
        return m
