"""stochastic_exponent against golden's stochastic FP4 rounding, in Amaranth's simulator.

Each element goes in as the integers the log4 unit will supply (zero flag, r, the 17
bits below the leading one, and the element's random integer u), one per cycle; its
exponent field must come out LATENCY cycles later equal to that of golden's code
(``golden.output.log4_quantize(..., rounding="stochastic", seed=...)``, whose u for each
element is ``golden.xorshift``'s word for it, which the test hands to the hardware).
The stimulus covers every binade, zeros, saturation and flushing (external exponents
-128 and 127), both phases, and elements built to sit exactly on the decision
thresholds of their own u (3u = d, 3u + 1 = d, and x = u, x = u + 1 below G_0).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.output import log4_quantize
from golden.xorshift import element_words, phase_bits
from rtl.generate import convert, lint
from rtl.stochastic_round import FRAC_BITS, LATENCY, stochastic_exponent
from verif.scoreboard import tile_result
from wire.streams import OUT_EXP_BITS

OUT_EXP_MIN, OUT_EXP_MAX = -2 ** (OUT_EXP_BITS - 1), 2 ** (OUT_EXP_BITS - 1) - 1
TILE = 8
#: Largest |acc| bit length (ACC_BITS_MAX = 53 signed).
MAX_BITS = 52


# ---------------------------------------------------------------------------- models

def golden_tile(acc, out_exp, phase, ext, seed):
    """Golden's codes (row-major), tile exponent and per-element u of one tile."""
    q = log4_quantize(tile_result(acc, out_exp), phase=phase, rounding="stochastic",
                      exps=ext, seed=seed)
    tile = len(acc)
    u = phase_bits(element_words(seed, (tile, tile), tile), phase)
    return ([int(c) for c in q.codes.flat], int(q.exps[0, 0]), [int(x) for x in u.flat])


def unit_inputs(acc: int, out_exp: int, phase: int, e_tile: int):
    """(zero, r, frac) of an element as the log4 unit will supply them (the module
    docstring of :mod:`rtl.stochastic_round`)."""
    a = abs(acc)
    n = a.bit_length()
    if n == 0:
        return 1, 0, 0
    frac = ((a << FRAC_BITS) >> (n - 1)) - (1 << FRAC_BITS)
    return 0, n - 1 + out_exp - phase - e_tile, frac


def run_elements(elements):
    """Stream ``elements`` [(zero, r, frac, u)] through the helper, one per cycle; return
    the exponent field of each, sampled LATENCY cycles after it went in."""
    m = Module()
    zero, r = Signal(), Signal(signed(16))
    frac, u = Signal(FRAC_BITS), Signal(16)
    e = stochastic_exponent(m, zero, r, frac, u, "sr")
    got = []

    async def bench(ctx):
        for t, item in enumerate(elements + [(0, 0, 0, 0)] * LATENCY):
            for sig, value in zip((zero, r, frac, u), item):
                ctx.set(sig, value)
            if t >= LATENCY:
                got.append(ctx.get(e))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got


def check_tiles(tiles):
    """``tiles`` [(acc T x T, out_exp, phase, ext, seed)]: every element's exponent field
    against golden's code. Returns golden's exponent fields (for coverage checks)."""
    elements, want = [], []
    for acc, out_exp, phase, ext, seed in tiles:
        codes, e_tile, us = golden_tile(acc, out_exp, phase, ext, seed)
        flat = [v for row in acc for v in row]
        for v, code, u in zip(flat, codes, us):
            elements.append((*unit_inputs(v, out_exp, phase, e_tile), u))
            want.append(code & 0b111)
    got = run_elements(elements)
    for k, (item, w, g) in enumerate(zip(elements, want, got)):
        assert g == w, f"element {k}: (zero, r, frac, u) = {item}"
    return want


# ---------------------------------------------------------------------------- stimulus

def random_tile(rng, tile):
    """Magnitudes over every bit length (zeros included), random signs."""
    flat = []
    for _ in range(tile * tile):
        n = rng.choice([0, rng.randint(1, MAX_BITS), rng.randint(1, 24)])
        mag = rng.randint(2 ** (n - 1), 2 ** n - 1) if n else 0
        flat.append(rng.choice((-1, 1)) * mag)
    return [flat[i:i + tile] for i in range(0, tile * tile, tile)]


#: Threshold tiles: external E = 0 and this out_exp, so r = n - 40 + ... lands every
#: r from -22 to 11 on a bit length 18..52.
THRESHOLD_OUT_EXP = -39


def threshold_element(rng, u: int, phase: int, below=None, step=None) -> int:
    """An accumulator whose decision with random integer ``u`` sits on a threshold:
    3u = d or 3u + 1 = d in the grid, x = u or x = u + 1 below G_0 (u < x rounds up),
    so one step of u either way flips it. ``below`` (G_0 or the grid) and ``step`` (0:
    stays down, 1: goes up) are random unless given."""
    below = rng.random() < 0.5 if below is None else below
    step = rng.randint(0, 1) if step is None else step
    if not below:                                # between two grid points
        d = 3 * u + step
        if d < 1 << 16:                          # even r: d = frac >> 1
            r, frac = 2 * rng.randint(0, 5), 2 * d + rng.randint(0, 1)
        else:                                    # odd r: d = 2**16 + frac
            r, frac = 2 * rng.randint(0, 5) + 1, d - (1 << 16)
    else:                                        # below G_0: x = (2**17 + frac) >> (1 - r)
        x = u + step if u + step < 1 << 16 else u
        if x == 0:                               # r < -16: x = 0 for every fraction
            r, frac = -17 - rng.randint(0, 5), rng.randrange(1 << FRAC_BITS)
        else:
            r = x.bit_length() - 17
            frac = (x << (1 - r)) + rng.randrange(1 << (1 - r)) - (1 << FRAC_BITS)
    n = r + 1 - THRESHOLD_OUT_EXP + phase      # r = n - 1 + out_exp - phase - E, E = 0
    assert 18 <= n <= MAX_BITS and 0 <= frac < 1 << FRAC_BITS
    mag = ((1 << FRAC_BITS) + frac << (n - 18)) + rng.randrange(1 << (n - 18))
    return rng.choice((-1, 1)) * mag


def seeds_with(value: int, phase: int, count: int) -> list:
    """The first ``count`` seeds from 0 whose first T x T tile has an element with
    random integer ``value`` at ``phase`` (golden's generator decides)."""
    seeds, seed = [], 0
    while len(seeds) < count:
        if (phase_bits(element_words(seed, (TILE, TILE), TILE), phase) == value).any():
            seeds.append(seed)
        seed += 1
    return seeds


def threshold_tile(rng, seed, phase, extreme=None):
    """A tile of threshold elements for ``seed``; ``extreme`` = (u, below, step) forces
    that case on every element whose random integer is u."""
    us = phase_bits(element_words(seed, (TILE, TILE), TILE), phase)
    acc = []
    for i in range(TILE):
        row = []
        for j in range(TILE):
            u = int(us[i, j])
            if extreme is not None and u == extreme[0]:
                row.append(threshold_element(rng, u, phase, *extreme[1:]))
            else:
                row.append(threshold_element(rng, u, phase))
        acc.append(row)
    return (acc, THRESHOLD_OUT_EXP, phase, 0, seed)


# ---------------------------------------------------------------------------- tests

@pytest.mark.parametrize("phase", [0, 1])
def test_random_tiles_match_golden(phase):
    """Random tiles under per-tile exponents and external ones (-128: most saturate,
    127: most flush, and a middle one), out_exp over the layout's range."""
    rng = random.Random(f"stochastic-random-{phase}")
    tiles = []
    for ext in (None, -128, 127, 0, rng.randint(-60, 60)):
        for _ in range(12):
            out_exp = rng.choice([rng.randint(-300, 300), rng.randint(-60, 10),
                                  OUT_EXP_MIN, OUT_EXP_MAX])
            tiles.append((random_tile(rng, TILE), out_exp, phase, ext, rng.getrandbits(32)))
    want = check_tiles(tiles)
    assert set(want) == set(range(8))                    # every exponent field occurs


@pytest.mark.parametrize("phase", [0, 1])
def test_thresholds_match_golden(phase):
    """Elements on the decision thresholds of their own random integer, so that an
    off-by-one in 3u, d, x or the comparisons flips a code; every exponent field
    occurs."""
    rng = random.Random(f"stochastic-threshold-{phase}")
    tiles = [threshold_tile(rng, rng.getrandbits(32), phase) for _ in range(40)]
    want = check_tiles(tiles)
    assert set(want) == set(range(8))


@pytest.mark.parametrize("phase", [0, 1])
def test_extreme_random_integers_match_golden(phase):
    """u = 0 and u = 2**16 - 1 (seeds found through golden's generator) on each
    threshold: u = 0 rounds up from d = 1 but not d = 0, and lifts to G_0 from x = 1,
    i.e. r = -16, the last binade below G_0 that can (v in [G_0 2**-16, G_0 2**-15));
    u = 2**16 - 1 rounds up only from d = 3u + 1 = 3 * 2**16 - 2, and never below G_0."""
    rng = random.Random(f"stochastic-extreme-{phase}")
    tiles = []
    for value in (0, (1 << 16) - 1):
        for seed in seeds_with(value, phase, 2):
            for below in (False, True):
                for step in (0, 1):
                    tiles.append(threshold_tile(rng, seed, phase, (value, below, step)))
    check_tiles(tiles)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 1), st.one_of(st.none(), st.integers(-128, 127)),
       st.integers(OUT_EXP_MIN, OUT_EXP_MAX), st.integers(0, 2 ** 32 - 1),
       st.lists(st.one_of(st.integers(-2 ** MAX_BITS + 1, 2 ** MAX_BITS - 1),
                          st.integers(0, MAX_BITS - 1).map(lambda n: 2 ** n),
                          st.integers(-70, 70)),
                min_size=16, max_size=16))
def test_any_tile_matches_golden(phase, ext, out_exp, seed, flat):
    """Any 4 x 4 tile, exponent setting, out_exp and seed."""
    acc = [flat[i:i + 4] for i in range(0, 16, 4)]
    check_tiles([(acc, out_exp, phase, ext, seed)])


class _Lane(wiring.Component):
    """One lane as the log4 unit will build it: registered inputs, the helper."""

    def __init__(self):
        super().__init__({"zero": In(1), "r": In(signed(12)), "frac": In(FRAC_BITS),
                          "u": In(16), "e": Out(3)})

    def elaborate(self, platform):
        m = Module()
        ports = [self.zero, self.r, self.frac, self.u]
        ins = [Signal.like(port, name=f"in{k}") for k, port in enumerate(ports)]
        m.d.sync += [reg.eq(port) for reg, port in zip(ins, ports)]
        m.d.comb += self.e.eq(stochastic_exponent(m, *ins, "lane"))
        return m


def test_converts_to_verilog_and_lints(tmp_path):
    path = tmp_path / "stochastic_lane.v"
    path.write_text(convert(_Lane(), "stochastic_lane"))
    result = lint(path, "stochastic_lane")
    assert result.returncode == 0, result.stderr
