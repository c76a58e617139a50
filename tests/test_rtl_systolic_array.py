"""Tests of ``rtl.systolic_array`` in the Amaranth simulator.

Kept apart, as in a cocotb bench: a *schedule* (the driver's plan: per cycle ``valid``,
``last``, modes and codes, with random bubbles), a *model* (the exact integer tile
products from ``golden.formats.element_values``, and the cycle in which the docstring
says each row leaves), a *producer* testbench that plays the schedule, and a *consumer*
testbench that records every ``psum`` beat with its cycle. The scoreboard compares the
two lists: every row's value and its timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.hdl import Const, ResetInserter, Signal
from amaranth.sim import Simulator

from golden.formats import element_values
from golden.params import NibbleParams, psum_bits
from rtl.generate import convert
from rtl.pe import PE
from rtl.systolic_array import SystolicArray, array_latency

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

    ``cycles`` holds (valid, last, a_signed, b_fp4, a_col, b_row) per cycle;
    ``beats`` holds (cycle, row values) per expected ``psum`` beat.
    """

    cycles: list = field(default_factory=list)
    beats: list = field(default_factory=list)


def make_schedule(tiles, size, rng, *, p_bubble=0.0, flush=None) -> Schedule:
    """Plan the cycles for ``tiles`` back to back, with random bubbles (``valid`` low,
    ``last``, modes and codes random), then ``flush`` idle cycles (default: until the last
    row has left, plus T cycles that must stay silent)."""
    sched = Schedule()
    delay = array_latency(size) - (size - 1)

    def garbage():
        return (0, int(rng.integers(0, 2)), int(rng.integers(0, 2)), int(rng.integers(0, 2)),
                [int(v) for v in rng.integers(0, 16, size)],
                [int(v) for v in rng.integers(0, 16, size)])

    for tile in tiles:
        for k in range(size):
            while rng.random() < p_bubble:
                sched.cycles.append(garbage())
            sched.cycles.append((1, int(k == size - 1), *tile.mode,
                                 [int(v) for v in tile.a[:, k]], [int(v) for v in tile.b[k, :]]))
        last = len(sched.cycles) - 1
        for row, values in enumerate(tile.product()):
            sched.beats.append((last + delay + row, [int(v) for v in values]))
    end = sched.beats[-1][0] + 1 + size if flush is None else len(sched.cycles) + flush
    while len(sched.cycles) < end:
        sched.cycles.append(garbage())
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


def run_array(size, sched: Schedule, *, reset_at=None):
    """Play ``sched`` into a SystolicArray (its reset high in the cycles of ``reset_at``,
    a range) and return every ``psum`` beat: [(cycle, row), ...]."""
    dut = SystolicArray(NibbleParams(tile=size))
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    seen = []
    reset_at = reset_at or range(0)

    async def producer(ctx):
        for cycle, (valid, last, a_signed, b_fp4, a_col, b_row) in enumerate(sched.cycles):
            ctx.set(rst, cycle in reset_at)
            ctx.set(dut.valid, valid)
            ctx.set(dut.last, last)
            ctx.set(dut.a_signed, a_signed & 1)
            ctx.set(dut.a_fp4, a_signed == 2)
            ctx.set(dut.b_fp4, b_fp4)
            ctx.set(dut.a_col, a_col)
            ctx.set(dut.b_row, b_row)
            await ctx.tick()

    async def consumer(ctx):
        for cycle in range(len(sched.cycles)):
            _clk, _rst, valid, payload = await ctx.tick().sample(dut.psum.valid,
                                                                 dut.psum.payload)
            if valid:
                seen.append((cycle, [int(v) for v in payload]))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run()
    return seen


def check(seen, sched: Schedule, size):
    """Scoreboard: same rows, same order, each in its documented cycle."""
    width = psum_bits(size)
    for _, row in sched.beats:
        assert all(-(1 << (width - 1)) <= v < (1 << (width - 1)) for v in row)
    assert len(seen) == len(sched.beats), f"{len(seen)} beats, expected {len(sched.beats)}"
    for i, (got, want) in enumerate(zip(seen, sched.beats)):
        assert got[1] == want[1], \
            f"beat {i} (tile {i // size}, row {i % size}): {got[1]} != {want[1]}"
        assert got[0] == want[0], f"beat {i} in cycle {got[0]}, documented cycle {want[0]}"


@pytest.mark.parametrize("size", [4, 8])
@pytest.mark.parametrize("mode", list(MODES), ids=MODE_IDS)
def test_random_tiles_with_bubbles(mode, size):
    """Full-range random tiles and the extreme tiles of the mode, back to back, with
    random bubbles: every psum is exact and leaves in its documented cycle."""
    rng = np.random.default_rng(100 * size + 10 * mode[0] + mode[1])
    tiles = [random_tile(size, mode, rng) for _ in range(4)] + extreme_tiles(size, mode)
    tiles.insert(2, random_tile(size, mode, rng))
    sched = make_schedule(tiles, size, rng, p_bubble=0.25)
    check(run_array(size, sched), sched, size)


@pytest.mark.parametrize("size", [2, 4, 8, 16])
def test_mixed_modes_back_to_back(size):
    """Consecutive tiles in different modes need no flush: the mode travels with the
    operands."""
    rng = np.random.default_rng(size)
    n_tiles = 3 if size == 16 else 8
    modes = list(MODES)
    tiles = [random_tile(size, modes[i % 4], rng) for i in range(n_tiles)]
    rng.shuffle(tiles)
    sched = make_schedule(tiles, size, rng, p_bubble=0.1)
    check(run_array(size, sched), sched, size)


@pytest.mark.parametrize("size", [2, 4, 8, 16])
def test_full_utilization(size):
    """valid always high: one k-step per cycle, tiles back to back, and the output is a
    gap-free stream of T rows per tile (100% array utilization), the first row
    ``latency`` cycles after the first k-step."""
    rng = np.random.default_rng(5)
    n_tiles = 6
    tiles = [random_tile(size, (1, 1 - i % 2), rng) for i in range(n_tiles)]
    sched = make_schedule(tiles, size, rng)
    seen = run_array(size, sched)
    check(seen, sched, size)
    latency = array_latency(size)
    assert [c for c, _ in seen] == list(range(latency, latency + n_tiles * size))


def test_flush_time():
    """The last row of a tile leaves latency + T - 1 cycles after its first k-step; with
    bubbles only the position of the last k-step counts."""
    size = 4
    rng = np.random.default_rng(9)
    latency = array_latency(size)
    sched = make_schedule([random_tile(size, (0, 1), rng)], size, rng, flush=latency)
    seen = run_array(size, sched)
    check(seen, sched, size)
    assert seen[-1][0] == latency + size - 1
    bubbly = make_schedule([random_tile(size, (0, 1), rng)], size, rng, p_bubble=0.5)
    last_step = max(c for c, cyc in enumerate(bubbly.cycles) if cyc[0])
    seen = run_array(size, bubbly)
    check(seen, bubbly, size)
    assert seen[-1][0] == last_step + latency


def test_bubbles_between_all_steps():
    """A tile with bubbles between all its k-steps and garbage on every ignored input:
    the PEs hold their accumulators through the bubbles."""
    size = 4
    rng = np.random.default_rng(11)
    tiles = [random_tile(size, mode, rng) for mode in MODES]
    sched = make_schedule(tiles, size, rng, p_bubble=0.6)
    check(run_array(size, sched), sched, size)


@pytest.mark.parametrize("size", [4, 8])
def test_reset_mid_tile(size):
    """Reset while a tile is half accumulated and rows are draining: the rows in flight
    vanish (no psum beat is produced for them) and the tiles after the reset are exact,
    in their documented cycles."""
    rng = np.random.default_rng(30 + size)
    before = make_schedule([random_tile(size, (1, 1), rng) for _ in range(2)], size, rng)
    cut = size + size // 2                      # the second tile is half issued
    after = make_schedule([random_tile(size, mode, rng) for mode in MODES], size, rng,
                          p_bubble=0.2)
    sched = Schedule(before.cycles[:cut] + after.cycles,
                     [(c + cut, row) for c, row in after.beats])
    seen = run_array(size, sched, reset_at=range(cut - 2, cut))
    check([(c, row) for c, row in seen if c >= cut - 2], sched, size)
    assert all(c >= cut for c, _ in seen), "a row of the tiles cut short came out"


@pytest.mark.parametrize("size", [2, 4])
def test_reset_while_rows_drain(size):
    """A one-cycle reset in every cycle of a tile's drain: the rows up to its cycle came
    out exact, no beat comes out after it (not even one whose valid bit sat in a register
    without reset), and the next tiles are exact in their documented cycles."""
    rng = np.random.default_rng(40 + size)
    latency = array_latency(size)
    for at in range(latency - 2, latency + size + 1):
        before = make_schedule([random_tile(size, (1, 1), rng)], size, rng, flush=at + 1)
        cut = at + 1
        after = make_schedule([random_tile(size, mode, rng) for mode in list(MODES)[:2]],
                              size, rng)
        sched = Schedule(before.cycles[:cut] + after.cycles,
                         [(c, row) for c, row in before.beats if c <= at]
                         + [(c + cut, row) for c, row in after.beats])
        seen = run_array(size, sched, reset_at=range(at, at + 1))
        check(seen, sched, size)


def test_psum_has_no_ready():
    """The output is valid-only: its ready is a constant in the signature."""
    dut = SystolicArray(NibbleParams(tile=4))
    assert dut.psum.signature.always_ready
    assert isinstance(dut.psum.ready, Const) and dut.psum.ready.value == 1


@pytest.mark.parametrize("top", ["pe", "array"])
def test_convert_to_verilog(top):
    """Both convert to Verilog (reproducibly, no source locations)."""
    params = NibbleParams(tile=4)
    dut = PE(params) if top == "pe" else SystolicArray(params)
    text = convert(dut, f"nibble_{top}")
    assert f"module nibble_{top}" in text
    assert text == convert(PE(params) if top == "pe" else SystolicArray(params), f"nibble_{top}")
