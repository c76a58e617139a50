"""Nested loop indices in hardware: the one counter behind every walk over a GEMM's tiles.

A GEMM's tiles are visited as nested loops (output tile row i, column j, reduction tile
t, and inside a tile its steps or rows). The exponent prefetch, the feeder, the drain
and the result counter each walk such a nest; :class:`LoopCounter` is that walk, once.
"""

from amaranth.hdl import Mux, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["LoopCounter"]


class LoopCounter(wiring.Component):
    """Loop indices, innermost first, that advance one step at a time.

    Parameters
    ----------
    digits : dict of str to int
        Index names, innermost first, and their widths in bits, e.g.
        ``{"t": 8, "j": 8, "i": 8}`` for ``for i: for j: for t:``.

    Attributes
    ----------
    step : In(1)
        Advance the innermost index by one (carrying into the outer ones).
    restart : In(1)
        All indices and ``done`` to 0 (with priority over ``step``). Pulse it before the
        first walk: the ``_wrap`` outputs are registers that only a restart loads from
        ``_last`` (after reset they read 0).
    <name>_last : In(width), one per digit
        The last value of that index (tie to a constant where it is one). Sampled at
        ``restart`` and at each step: hold it steady from ``restart`` to the last step.
    <name> : Out(width), one per digit
        The index.
    <name>_wrap : Out(1), one per digit
        This index and every inner one are at their last value: the next step wraps it
        to 0 (``<outermost>_wrap`` marks the last step of the whole nest).
    done : Out(1)
        Sticky: a step wrapped the outermost index since the last restart.
    """

    def __init__(self, digits: dict):
        if not digits:
            raise ValueError("a LoopCounter needs at least one digit")
        self._digits = dict(digits)
        members = {"step": In(1), "restart": In(1), "done": Out(1)}
        for name, width in self._digits.items():
            members[f"{name}_last"] = In(width)
            members[name] = Out(width)
            members[f"{name}_wrap"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        # ``at_last`` of each digit is a register kept equal to ``value == last`` (set on
        # restart and on every change of the value), so a wrap is an AND of registers,
        # not a chain of comparators: the steps and the wraps are consumers' enables.
        carry = Signal(name="carry_in", init=1)  # every inner digit is at its last value
        m.d.comb += carry.eq(1)
        for name in self._digits:
            value, last = getattr(self, name), getattr(self, f"{name}_last")
            at_last = Signal(name=f"{name}_at_last")
            m.d.comb += getattr(self, f"{name}_wrap").eq(carry & at_last)
            with m.If(self.restart):
                m.d.sync += [value.eq(0), at_last.eq(last == 0)]
            with m.Elif(self.step & carry):
                m.d.sync += [value.eq(Mux(at_last, 0, value + 1)),
                             at_last.eq(Mux(at_last, last == 0, value + 1 == last))]
            carry = getattr(self, f"{name}_wrap")
        with m.If(self.restart):
            m.d.sync += self.done.eq(0)
        with m.Elif(self.step & carry):
            m.d.sync += self.done.eq(1)
        return m
