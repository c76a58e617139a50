"""Tests of ``rtl.pe``: the MAC of the systolic array, in the Amaranth simulator.

Every expected value is an integer computed from the golden model's element values
(``golden.formats.element_values``): the product is the exact a * b of the two
elements, the partial sum the exact sum of the products since the previous tile's last.
The PE is driven through the edge encoders (``encode_a``/``encode_b``) exactly as the
array drives it, from raw 4-bit codes.
"""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from amaranth.hdl import Mux

from golden.formats import element_values
from golden.params import NibbleParams, psum_bits
from rtl.pe import PE, encode_a, encode_b, encode_swapped

#: (a_signed, b_fp4) -> (golden kind of a, golden kind of b); a_signed = 2 stands for the
#: swapped mode (a_fp4: an FP4 a times an int4 b, as in dX = dY . W^T).
MODES = {(0, 0): ("uint4", "int4"), (1, 0): ("int4", "int4"),
         (0, 1): ("uint4", "fp4"), (1, 1): ("int4", "fp4"), (2, 0): ("fp4", "int4")}
MODE_IDS = [f"{ka}x{kb}" for ka, kb in MODES.values()]


def element(code: int, kind: str) -> int:
    """Integer element value of a raw 4-bit code (int4 codes are two's complement)."""
    if kind == "int4":
        code = code - 16 if code >= 8 else code
    return int(element_values(np.array([code]), kind)[0])


class PEHarness(Elaboratable):
    """A PE fed from raw codes through the array's edge encoders."""

    def __init__(self, params: NibbleParams):
        self.pe = PE(params)
        self.valid = Signal()
        self.clear = Signal()
        self.a_code = Signal(4)
        self.b_code = Signal(4)
        self.a_signed = Signal()
        self.b_fp4 = Signal()
        self.a_fp4 = Signal()
        self.last = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        swapped_a, swapped_b = encode_swapped(self.a_code, self.b_code)
        m.d.comb += [
            pe.valid_in.eq(self.valid),
            pe.clear.eq(self.clear),
            pe.a_in.eq(Mux(self.a_fp4, swapped_a, encode_a(self.a_code, self.a_signed))),
            pe.b_in.eq(Mux(self.a_fp4, swapped_b, encode_b(self.b_code, self.b_fp4))),
            pe.last_in.eq(self.last),
        ]
        return m


class PEModel:
    """Cycle-level reference of the PE's documented pipeline: operand registers, the
    registered product, the accumulator and the psum register."""

    def __init__(self):
        self.regs = (0, 0, False, False)    # (a value, b value, valid, last) registered
        self.decoded = (0, False, False)    # (a * b, valid, last), decoded
        self.product = (0, False, False)    # (a * b, valid, last), multiplied
        self.acc = 0
        self.psum = 0

    def step(self, a: int, b: int, valid: bool, last: bool, clear: bool = False):
        product, p_valid, p_last = self.product
        total = self.acc + product
        if p_last:
            self.psum = total
        if p_last or clear:
            self.acc = 0
        elif p_valid:
            self.acc = total
        self.product = self.decoded
        self.decoded = (self.regs[0] * self.regs[1], self.regs[2], self.regs[3])
        self.regs = (a, b, valid, last)


def run_pe(steps, *, tile=8, check_pass_through=False, clear_at=()):
    """Drive ``steps`` = [(valid, a_code, b_code, a_signed, b_fp4, last), ...] (``clear``
    high in the cycles ``clear_at``) and compare ``psum`` with :class:`PEModel` after
    every clock edge."""
    params = NibbleParams(tile=tile)
    dut = PEHarness(params)
    model = PEModel()
    width = psum_bits(tile)
    seen = []

    async def testbench(ctx):
        for i, (valid, a_code, b_code, a_signed, b_fp4, last) in enumerate(steps):
            ka, kb = MODES[(a_signed, b_fp4)]
            ctx.set(dut.valid, valid)
            ctx.set(dut.clear, i in clear_at)
            ctx.set(dut.a_code, a_code)
            ctx.set(dut.b_code, b_code)
            ctx.set(dut.a_signed, a_signed & 1)
            ctx.set(dut.a_fp4, a_signed == 2)
            ctx.set(dut.b_fp4, b_fp4)
            ctx.set(dut.last, last)
            if check_pass_through:
                a_in, b_in = ctx.get(dut.pe.a_in), ctx.get(dut.pe.b_in)
            await ctx.tick()
            model.step(element(a_code, ka), element(b_code, kb), bool(valid), bool(last),
                       i in clear_at)
            if check_pass_through:
                assert ctx.get(dut.pe.a_out) == a_in
                assert ctx.get(dut.pe.b_out) == b_in
                assert ctx.get(dut.pe.valid_out) == valid
                assert ctx.get(dut.pe.last_out) == last
            got = ctx.get(dut.pe.psum)
            assert got == model.psum, (
                f"step {len(seen)}: psum {got}, expected {model.psum} "
                f"(last operands a={a_code:#x} b={b_code:#x}, mode {ka} x {kb})")
            assert -(1 << (width - 1)) <= model.psum < (1 << (width - 1))
            seen.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return seen


@pytest.mark.parametrize("mode", list(MODES), ids=MODE_IDS)
def test_product_exhaustive(mode):
    """Every one of the 16 x 16 code pairs, each as a one-step tile (last on every step),
    so psum is exactly the product, against the golden element values."""
    a_signed, b_fp4 = mode
    pairs = [(a, b) for a in range(16) for b in range(16)]
    steps = [(1, a, b, a_signed, b_fp4, 1) for a, b in pairs]
    steps += [(1, 0, 0, a_signed, b_fp4, 1)] * 4          # flush the last product
    seen = run_pe(steps, check_pass_through=True)
    ka, kb = MODES[mode]
    expected = [element(a, ka) * element(b, kb) for a, b in pairs]
    # psum of the operands presented in cycle c is visible after cycle c + PE.LATENCY.
    assert seen[PE.LATENCY:PE.LATENCY + len(pairs)] == expected
    assert set(expected) >= {0}


@pytest.mark.parametrize("tile", [4, 8, 16])
@pytest.mark.parametrize("mode", list(MODES), ids=MODE_IDS)
def test_accumulation_random_with_bubbles(mode, tile):
    """Random full-range tile reductions of T products back to back, with random
    bubbles (valid low, garbage operands): the accumulator holds through a bubble, psum
    is the exact sum of each reduction and holds between captures."""
    rng = np.random.default_rng(1000 * tile + 10 * mode[0] + mode[1])
    a_signed, b_fp4 = mode
    steps = []
    for _ in range(12):
        for k in range(tile):
            while rng.random() < 0.25:                      # bubble: operands are garbage
                steps.append((0, *rng.integers(0, 16, 2), a_signed, b_fp4, 0))
            steps.append((1, *rng.integers(0, 16, 2), a_signed, b_fp4, int(k == tile - 1)))
    steps += [(1, 0, 0, a_signed, b_fp4, 0)] * 4
    run_pe([tuple(int(v) for v in s) for s in steps], tile=tile)


# Codes of the largest products: uint4 15, int4 -8 (0b1000), int4 7; fp4 +-4**6 (e = 7).
EXTREMES = [
    ((0, 1), 15, 0b0111),   # 15 * 4096, the psum_bits bound
    ((0, 1), 15, 0b1111),   # 15 * -4096
    ((1, 1), 0b1000, 0b1111),   # -8 * -4096
    ((1, 1), 0b1000, 0b0111),   # -8 * 4096
    ((1, 0), 0b1000, 0b1000),   # -8 * -8
    ((2, 0), 0b1111, 0b1000),   # -4096 * -8 (swapped: fp4 a, int4 b)
    ((2, 0), 0b0111, 0b1000),   # 4096 * -8
    ((0, 0), 15, 0b1000),   # 15 * -8
    ((0, 0), 15, 0b0111),   # 15 * 7
]


@pytest.mark.parametrize("tile", [2, 4, 8, 16, 64])
@pytest.mark.parametrize("case", EXTREMES,
                         ids=[f"{a:x}x{b:x}m{m[0]}{m[1]}" for m, a, b in EXTREMES])
def test_accumulation_extremes(case, tile):
    """T equal products of the largest magnitude: the partial sum reaches the
    psum_bits(T) bound exactly and must not wrap."""
    (a_signed, b_fp4), a, b = case
    steps = [(1, a, b, a_signed, b_fp4, int(k == tile - 1)) for k in range(tile)]
    steps += [(1, 0, 0, a_signed, b_fp4, 0)] * 4
    seen = run_pe(steps, tile=tile)
    ka, kb = MODES[(a_signed, b_fp4)]
    assert seen[-1] == tile * element(a, ka) * element(b, kb)


def test_mode_changes_between_steps():
    """The mode is carried by the encoded operand, so a reduction may mix modes step
    by step (the array relies on this when consecutive tiles use different modes)."""
    rng = np.random.default_rng(7)
    steps = []
    for i in range(200):
        a_signed, b_fp4 = list(MODES)[int(rng.integers(0, len(MODES)))]
        steps.append((1, int(rng.integers(0, 16)), int(rng.integers(0, 16)), a_signed, b_fp4,
                      int(i % 5 == 4)))
    steps += [(1, 0, 0, 0, 0, 0)] * 4
    run_pe(steps)


def test_clear_empties_the_accumulator():
    """``clear`` (the array's registered reset) drops a half-done reduction: the next
    tile's sum starts from zero."""
    rng = np.random.default_rng(3)
    half = [(1, int(rng.integers(1, 16)), int(rng.integers(1, 8)), 0, 0, 0) for _ in range(3)]
    tile = [(1, int(rng.integers(0, 16)), int(rng.integers(0, 8)), 0, 0, int(k == 3))
            for k in range(4)]
    steps = half + [(0, 0, 0, 0, 0, 0)] * 3 + tile + [(0, 0, 0, 0, 0, 0)] * 4
    seen = run_pe(steps, tile=4, clear_at=(6,))
    want = sum(element(a, "uint4") * element(b, "int4") for _, a, b, *_ in tile)
    assert seen[-1] == want


def test_magnitude_exhaustive():
    """rtl.pe.magnitude over every 6-bit signed value (including -32, whose magnitude
    needs the full width unsigned) with ``zero`` 0 and 1: |x|, or 0 where zeroed."""
    from amaranth.hdl import signed

    from rtl.pe import magnitude

    m = Module()
    x, zero = Signal(signed(6)), Signal()
    out = Signal(6)
    m.d.comb += out.eq(magnitude(m, x, zero))

    async def bench(ctx):
        for z in (0, 1):
            for v in range(-32, 32):
                ctx.set(x, v)
                ctx.set(zero, z)
                assert ctx.get(out) == (0 if z else abs(v)), (v, z)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
