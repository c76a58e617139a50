"""Tests of ``rtl.systolic_array`` in the Amaranth simulator.

Kept apart, as in a cocotb bench: a *schedule* (the driver's plan: per cycle ``en``,
``valid``, ``first``, modes and codes, with random stalls and bubbles), a *model* (the
exact integer tile products from ``golden.formats.element_values``, and the step at
which the docstring says each row leaves), a *producer* testbench that plays the
schedule, and a *consumer* testbench that records every ``psum`` beat with its step.
The scoreboard compares the two lists: every row's value and its timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from golden.formats import element_values
from golden.params import NibbleParams, psum_bits
from rtl.pe import PE
from rtl.systolic_array import SystolicArray

#: (a_signed, b_fp4) -> (golden kind of a, golden kind of b); a_signed = 2 stands for the
#: swapped mode (a_fp4: an FP4 a times an int4 b, as in dX = dY . W^T).
MODES = {(0, 0): ("uint4", "int4"), (1, 0): ("int4", "int4"),
         (0, 1): ("uint4", "fp4"), (1, 1): ("int4", "fp4"), (2, 0): ("fp4", "int4")}
MODE_IDS = [f"{ka}x{kb}" for ka, kb in MODES.values()]
#: The code of the largest-magnitude element of each kind (int4 -8, uint4 15, fp4 4**6).
MAX_CODE = {"int4": 0b1000, "uint4": 15, "fp4": 0b0111}


def element_ints(codes: np.ndarray, kind: str) -> np.ndarray:
    """Integer element values of raw 4-bit codes (int4 codes are two's complement)."""
    codes = np.asarray(codes, dtype=np.int64)
    if kind == "int4":
        codes = np.where(codes >= 8, codes - 16, codes)
    return element_values(codes, kind)


@dataclass
class Tile:
    """One tile reduction: A tile (T x T codes, a[m, k]), B tile (b[k, n]) and mode."""

    a: np.ndarray
    b: np.ndarray
    mode: tuple

    def product(self) -> np.ndarray:
        ka, kb = MODES[self.mode]
        return element_ints(self.a, ka) @ element_ints(self.b, kb)


@dataclass
class Schedule:
    """What the producer drives, cycle by cycle, and what the consumer must see.

    ``cycles`` holds (en request, valid, first, a_signed, b_fp4, a_col, b_row) per cycle;
    ``beats`` holds (step, row values) per expected ``psum`` beat.
    """

    cycles: list = field(default_factory=list)
    beats: list = field(default_factory=list)


def make_schedule(tiles, size, rng, *, p_stall=0.0, p_bubble=0.0, extra_steps=None) -> Schedule:
    """Plan the cycles for ``tiles`` back to back, with random stalls (``en`` low, every
    other input random) and bubbles (``valid`` low, codes/modes/first random), then the
    documented flush of 2T steps and ``extra_steps`` idle steps that must stay silent.
    """
    sched = Schedule()
    step = 0

    def garbage():
        return (int(rng.integers(0, 2)), int(rng.integers(0, 2)),
                [int(v) for v in rng.integers(0, 16, size)],
                [int(v) for v in rng.integers(0, 16, size)])

    def idle_cycles():
        nonlocal step
        while True:
            if rng.random() < p_stall:
                a_s, b_f, a_col, b_row = garbage()
                sched.cycles.append((0, int(rng.integers(0, 2)), int(rng.integers(0, 2)),
                                     a_s, b_f, a_col, b_row))
            elif rng.random() < p_bubble:
                a_s, b_f, a_col, b_row = garbage()
                sched.cycles.append((1, 0, int(rng.integers(0, 2)), a_s, b_f, a_col, b_row))
                step += 1
            else:
                return

    for tile in tiles:
        for k in range(size):
            idle_cycles()
            sched.cycles.append((1, 1, int(k == 0), *tile.mode,
                                 [int(v) for v in tile.a[:, k]], [int(v) for v in tile.b[k, :]]))
            step += 1
        last_step = step - 1
        for row, values in enumerate(tile.product()):
            sched.beats.append((last_step + size + 1 + row, [int(v) for v in values]))
    for _ in range(2 * size + (size if extra_steps is None else extra_steps)):
        idle_cycles()
        sched.cycles.append((1, 0, 0, 0, 0, [0] * size, [0] * size))
        step += 1
    return sched


def random_tile(size, mode, rng) -> Tile:
    return Tile(rng.integers(0, 16, (size, size)), rng.integers(0, 16, (size, size)), mode)


def extreme_tiles(size, mode) -> list:
    """Tiles whose every product has the kinds' largest magnitude, once with each sign
    of b: the partial sums reach +-T * Amax * Bmax, the psum_bits(T) bound for uint4 x fp4."""
    ka, kb = MODES[mode]
    a = np.full((size, size), MAX_CODE[ka])
    tiles = []
    for sign in (0, 0b1000):
        b_code = MAX_CODE[kb] | sign if kb == "fp4" else (MAX_CODE[kb] if sign else 7)
        tiles.append(Tile(a, np.full((size, size), b_code), mode))
    return tiles


class ArrayHarness(Elaboratable):
    """The array plus the controller's one backpressure rule:
    ``en = en_req & (~psum.valid | psum.ready)``."""

    def __init__(self, size):
        self.array = SystolicArray(NibbleParams(tile=size))
        self.en_req = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = array = self.array
        m.d.comb += array.en.eq(self.en_req & (~array.psum.valid | array.psum.ready))
        return m


def run_array(size, sched: Schedule, *, p_not_ready=0.0, seed=0):
    """Play ``sched`` into a SystolicArray and return the beats taken: [(step, row), ...],
    where step is the step whose read-out produced the beat. With ``p_not_ready`` the
    consumer drops ``psum.ready`` at random and the producer repeats a step that the
    backpressure rule held back."""
    harness = ArrayHarness(size)
    dut = harness.array
    rng = np.random.default_rng(seed)
    seen = []
    state = {"producer_done": False}
    max_cycles = 4 * len(sched.cycles) + 100

    async def producer(ctx):
        for en, valid, first, a_signed, b_fp4, a_col, b_row in sched.cycles:
            ctx.set(dut.valid, valid)
            ctx.set(dut.first, first)
            ctx.set(dut.a_signed, a_signed & 1)
            ctx.set(dut.a_fp4, a_signed == 2)
            ctx.set(dut.b_fp4, b_fp4)
            ctx.set(dut.a_col, a_col)
            ctx.set(dut.b_row, b_row)
            ctx.set(harness.en_req, en)
            while True:
                _clk, _rst, taken = await ctx.tick().sample(dut.en)
                if taken or not en:
                    break
        ctx.set(harness.en_req, 0)
        state["producer_done"] = True

    async def consumer(ctx):
        steps_done = 0
        pending = None                      # (step, row) on psum, not yet taken
        ctx.set(dut.psum.ready, 1)
        for _ in range(max_cycles):
            ready = int(rng.random() >= p_not_ready)
            ctx.set(dut.psum.ready, ready)
            _clk, _rst, en, valid, took, payload = await ctx.tick().sample(
                dut.en, dut.psum.valid, dut.psum.ready, dut.psum.payload)
            if pending is not None:
                assert valid and [int(v) for v in payload] == pending[1], \
                    "a beat changed or vanished before it was taken"
                if took:
                    seen.append(pending)
                    pending = None
            steps_done += en
            if ctx.get(dut.psum.valid) and (en or pending is None):
                # A beat read out by the step that just ended.
                assert en, "psum.valid rose after a cycle with en low"
                assert pending is None, "a step overwrote a beat that was not taken"
                pending = (steps_done - 1, [int(v) for v in ctx.get(dut.psum.payload)])
            if state["producer_done"] and pending is None:
                break
        assert state["producer_done"], "the producer did not finish"

    sim = Simulator(harness)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return seen


def check(seen, sched: Schedule, size):
    """Scoreboard: same rows, same order, each at its documented step."""
    width = psum_bits(size)
    for _, row in sched.beats:
        assert all(-(1 << (width - 1)) <= v < (1 << (width - 1)) for v in row)
    assert len(seen) == len(sched.beats), f"{len(seen)} beats, expected {len(sched.beats)}"
    for i, (got, want) in enumerate(zip(seen, sched.beats)):
        assert got[1] == want[1], \
            f"beat {i} (tile {i // size}, row {i % size}): {got[1]} != {want[1]}"
        assert got[0] == want[0], f"beat {i} at step {got[0]}, documented step {want[0]}"


@pytest.mark.parametrize("size", [4, 8])
@pytest.mark.parametrize("mode", list(MODES), ids=MODE_IDS)
def test_random_tiles_with_stalls_and_bubbles(mode, size):
    """Full-range random tiles and the extreme tiles of the mode, back to back, with
    random en stalls and bubbles: every psum is exact and leaves at its documented step."""
    rng = np.random.default_rng(100 * size + 10 * mode[0] + mode[1])
    tiles = [random_tile(size, mode, rng) for _ in range(4)] + extreme_tiles(size, mode)
    tiles.insert(2, random_tile(size, mode, rng))
    sched = make_schedule(tiles, size, rng, p_stall=0.2, p_bubble=0.15)
    check(run_array(size, sched), sched, size)


@pytest.mark.parametrize("size", [4, 8, 16])
def test_mixed_modes_back_to_back(size):
    """Consecutive tiles in different modes need no flush: the mode travels with the
    operands."""
    rng = np.random.default_rng(size)
    n_tiles = 3 if size == 16 else 8
    modes = list(MODES)
    tiles = [random_tile(size, modes[i % 4], rng) for i in range(n_tiles)]
    rng.shuffle(tiles)
    sched = make_schedule(tiles, size, rng, p_stall=0.1, p_bubble=0.1)
    check(run_array(size, sched), sched, size)


@pytest.mark.parametrize("size", [4, 8])
def test_full_utilization(size):
    """en and valid always high: one k-step per cycle, tiles back to back, and the
    output is a gap-free stream of T rows per tile (100% array utilization)."""
    rng = np.random.default_rng(5)
    n_tiles = 6
    tiles = [random_tile(size, (1, 1 - i % 2), rng) for i in range(n_tiles)]
    sched = make_schedule(tiles, size, rng)
    seen = run_array(size, sched)
    check(seen, sched, size)
    steps = [s for s, _ in seen]
    assert steps == list(range(2 * size, 2 * size + n_tiles * size))
    assert len(sched.cycles) == n_tiles * size + 3 * size


def test_flush_is_two_tiles_of_steps():
    """The last row of the last tile leaves in the 2T-th step after the tile's last
    step, not earlier, and with stalls only en cycles count."""
    size = 4
    rng = np.random.default_rng(9)
    tiles = [random_tile(size, (0, 1), rng)]
    sched = make_schedule(tiles, size, rng, p_stall=0.3, extra_steps=0)
    seen = run_array(size, sched)
    check(seen, sched, size)
    assert seen[-1][0] == (size - 1) + 2 * size


@pytest.mark.parametrize("size", [4, 8])
def test_output_backpressure(size):
    """psum.ready dropped at random: with en gated by the documented rule no beat is
    lost, duplicated or changed while it waits, and the step arithmetic still holds."""
    rng = np.random.default_rng(20 + size)
    modes = list(MODES)
    tiles = [random_tile(size, modes[i % 4], rng) for i in range(5)]
    sched = make_schedule(tiles, size, rng, p_stall=0.1, p_bubble=0.1)
    check(run_array(size, sched, p_not_ready=0.4, seed=size), sched, size)


def test_bubble_step_pushes_zeros_and_keeps_count():
    """A tile with bubbles between all its k-steps and garbage on every ignored input."""
    size = 4
    rng = np.random.default_rng(11)
    tiles = [random_tile(size, mode, rng) for mode in MODES]
    sched = make_schedule(tiles, size, rng, p_bubble=0.6)
    check(run_array(size, sched), sched, size)


@pytest.mark.parametrize("top", ["pe", "array"])
def test_convert_to_verilog(top):
    """Both convert to Verilog (reproducibly, no source locations)."""
    params = NibbleParams(tile=4)
    dut = PE(params) if top == "pe" else SystolicArray(params)
    text = verilog.convert(dut, name=f"nibble_{top}", emit_src=False)
    assert f"module nibble_{top}" in text
    assert text == verilog.convert(PE(params) if top == "pe" else SystolicArray(params),
                                   name=f"nibble_{top}", emit_src=False)
