"""Log4Quantizer against golden.formats.quantize, code for code, in Amaranth's simulator.

Stimulus is full-range and stalled: random accumulators over every bit length, out_exp
over -300..300 (so E clips at -128 and 127) plus the layout's extremes, tiles that sit
exactly on every rounding threshold, all-zero, single-element and most-negative tiles,
random valid gaps on the input and random ready backpressure on the output.
"""

import random

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.formats import quantize
from golden.params import NibbleParams
from rtl.layouts import OUT_EXP_BITS
from rtl.log4_quantizer import Log4Quantizer
from verif.amaranth_streams import check_stream_rules, idle, stream_get, stream_put

OUT_EXP_MIN, OUT_EXP_MAX = -2 ** (OUT_EXP_BITS - 1), 2 ** (OUT_EXP_BITS - 1) - 1


# ---------------------------------------------------------------------------- models

def golden_tile(acc, out_exp, phase, rounding, ext):
    """(codes, E) of one tile from the golden model; exact for |acc| < 2**53."""
    value = np.ldexp(np.asarray(acc, dtype=np.float64), out_exp)
    q = quantize(value, "fp4", tile=len(acc), phase=phase, rounding=rounding, exps=ext)
    return q.codes.astype(int).tolist(), int(q.exps[0, 0])


def integer_tile(acc, out_exp, phase, rounding, ext):
    """The same in integers only (the formulation the RTL implements), for any width."""
    amax = max(abs(x) for row in acc for x in row)
    if ext is not None:
        e_tile = ext
    elif amax == 0:
        e_tile = -128
    else:
        e_tile = min(max(amax.bit_length() - 1 + out_exp - 12, -128), 127)
    codes = []
    for row in acc:
        out = []
        for x in row:
            v = abs(x)
            r = v.bit_length() - 1 + out_exp - phase - e_tile
            if v == 0 or r < -1:
                out.append(0)
                continue
            if rounding == "log":
                k = -(-r // 2)
            else:  # v >= 2.5 * G_k0 with G_k0 = 2**(n-1 + out_exp - (r mod 2))
                k = r // 2 + (r % 2 == 1 and 4 * v >= 5 << (v.bit_length() - 1))
            out.append((min(max(k, 0), 6) + 1) | (8 if x < 0 else 0))
        codes.append(out)
    return codes, e_tile


def expected_tile(acc, out_exp, phase, rounding, ext, acc_bits):
    # acc_bits <= 53 (NibbleParams' cap), so golden's float64 value is exact.
    return golden_tile(acc, out_exp, phase, rounding, ext)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 1), st.sampled_from(["log", "linear"]),
       st.one_of(st.none(), st.integers(-128, 127)),
       st.integers(OUT_EXP_MIN, OUT_EXP_MAX),
       st.lists(st.one_of(st.integers(-2 ** 52, 2 ** 52 - 1),
                          st.integers(0, 52).map(lambda n: 2 ** n),
                          st.integers(2, 52).map(lambda n: 5 << (n - 2)),
                          st.integers(-70, 70)),
                min_size=16, max_size=16))
def test_integer_formulation_matches_golden(phase, rounding, ext, out_exp, flat):
    """The hardware formulation (bit lengths and one mantissa bit pair) is golden's rule."""
    acc = [flat[i:i + 4] for i in range(0, 16, 4)]
    assert (integer_tile(acc, out_exp, phase, rounding, ext)
            == golden_tile(acc, out_exp, phase, rounding, ext))


# ---------------------------------------------------------------------------- stimulus

def _rand_mag(rng, bits):
    """|acc| with a bit length uniform over 1..bits-1 (so every binade is exercised)."""
    n = rng.randint(1, bits - 1)
    return rng.randint(2 ** (n - 1), 2 ** n - 1)


def random_tile(rng, tile, bits):
    lo, hi = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    style = rng.randrange(3)
    if style == 0:    # full range, uniform
        flat = [rng.randint(lo, hi) for _ in range(tile * tile)]
    elif style == 1:  # bit lengths spread below a random tile maximum: all codes, flushes
        top = rng.randint(1, bits - 1)
        flat = []
        for _ in range(tile * tile):
            n = rng.randint(max(0, top - 18), top)
            mag = rng.randint(2 ** (n - 1), 2 ** n - 1) if n else 0
            flat.append(rng.choice((-1, 1)) * mag)
    else:             # any bit length, some zeros
        flat = [rng.choice((-1, 1, 0)) * _rand_mag(rng, bits) for _ in range(tile * tile)]
    return flat


def threshold_mags(bits):
    """Magnitudes on and next to every rounding threshold: binade edges (log rounding,
    flush at G_0 / 2) and the 1.25 * 2**L linear midpoints."""
    mags = set()
    for n in range(bits):
        for m in (1 << n, (1 << n) - 1, (2 << n) - 1, 3 << n >> 1,
                  5 << n >> 2, (5 << n >> 2) - 1, (5 << n >> 2) + 1):
            if 0 < m < 2 ** (bits - 1):
                mags.add(m)
    return sorted(mags)


def edge_tiles(rng, tile, bits, ext):
    """(flat acc, out_exp) pairs for the corner cases."""
    n = tile * tile
    most_neg, top = -2 ** (bits - 1), 2 ** (bits - 1) - 1
    tiles = [([0] * n, rng.randint(-300, 300)), ([0] * n, OUT_EXP_MIN)]
    for v, oexp in ((1, 0), (-1, OUT_EXP_MIN), (1, OUT_EXP_MAX), (most_neg, 0),
                    (top, rng.randint(-300, 300)), (rng.randint(most_neg, top), 0)):
        flat = [0] * n
        flat[rng.randrange(n)] = v
        tiles.append((flat, oexp))
    for oexp in (0, OUT_EXP_MIN, OUT_EXP_MAX, rng.randint(-300, 300)):
        tiles.append(([most_neg] * n, oexp))
        flat = random_tile(rng, tile, bits)
        flat[rng.randrange(n)] = most_neg
        tiles.append((flat, oexp))
    # Threshold tiles. Auto E: an anchor element fixes E, so the thresholds span r from
    # below the flush point to the top code. External E: pick out_exp so they span it too.
    mags = [rng.choice((-1, 1)) * m for m in threshold_mags(bits)]
    per = n - 1 if ext is None else n
    for i in range(0, len(mags), per):
        flat = mags[i:i + per] + [0] * (per - len(mags[i:i + per]))
        if ext is None:
            flat.append(top)
            oexp = 0
        else:
            oexp = min(max(ext - (bits - 2) + 13, OUT_EXP_MIN), OUT_EXP_MAX)
        rng.shuffle(flat)
        tiles.append((flat, oexp))
    return tiles


def build_segments(rng, tile, bits, phase, rounding, n_random):
    """Segments of back-to-back tiles, each under one external-exponent setting:
    auto E, saturating (E = -128), flushing (E = 127) and a middle E."""
    segments = []
    for ext in (None, -128, 127, rng.randint(-40, 40)):
        tiles = edge_tiles(rng, tile, bits, ext)
        tiles += [(random_tile(rng, tile, bits), rng.randint(-300, 300))
                  for _ in range(n_random)]
        rng.shuffle(tiles)
        jobs = []
        for flat, oexp in tiles:
            acc = [flat[r * tile:(r + 1) * tile] for r in range(tile)]
            jobs.append((acc, oexp, expected_tile(acc, oexp, phase, rounding, ext, bits)))
        segments.append((ext, jobs))
    return segments


# ---------------------------------------------------------------------------- simulations

@pytest.mark.parametrize("rounding", ["log", "linear"])
@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("tile,acc_bits,lanes", [(4, 32, None), (8, 32, None), (4, 53, None),
                                                 (2, 18, 1), (4, 32, 1), (8, 32, 2)])
def test_matches_golden(tile, acc_bits, lanes, phase, rounding):
    """Every corner tile against golden, with stalls; lanes < T sends L elements of a
    tile per beat (the narrow output path)."""
    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes)
    L = params.lanes
    rng = random.Random(f"log4-{tile}-{acc_bits}-{lanes}-{phase}-{rounding}")
    segments = build_segments(rng, tile, acc_bits, phase, rounding,
                              n_random=12 if tile == 4 else 6)
    dut = Log4Quantizer(params)
    received = [0]  # tiles the consumer has checked, so the producer knows when it drained

    async def producer(ctx):
        ctx.set(dut.phase, phase)
        ctx.set(dut.linear, rounding == "linear")
        sent = 0
        for ext, jobs in segments:
            # Configuration may change only while no tile is in flight.
            while received[0] < sent:
                await ctx.tick()
            ctx.set(dut.ext_exp_en, ext is not None)
            ctx.set(dut.ext_exp, 0 if ext is None else ext)
            for acc, oexp, _ in jobs:
                flat = [v for row in acc for v in row]
                for k in range(0, len(flat), L):
                    await idle(ctx, rng, 0.3, 4)
                    await stream_put(ctx, dut.acc_in, {"acc": flat[k:k + L], "out_exp": oexp})
            sent += len(jobs)

    async def consumer(ctx):
        for _, jobs in segments:
            for acc, oexp, (want_codes, want_exp) in jobs:
                want = [c for row in want_codes for c in row]
                flat = [v for row in acc for v in row]
                for k in range(0, len(flat), L):
                    await idle(ctx, rng, 0.3, 4)
                    beat = await stream_get(ctx, dut.codes_out)
                    got = [int(c) for c in beat.codes]
                    assert (got, int(beat.exp)) == (want[k:k + L], want_exp), \
                        f"tile out_exp={oexp} elements {k}..: acc {flat[k:k + L]}"
                received[0] += 1

    async def stream_rules(ctx):
        await check_stream_rules(ctx, dut.codes_out, "codes_out")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(stream_rules, background=True)
    sim.run()
    assert received[0] == sum(len(jobs) for _, jobs in segments)


def _handshakes(dut, log):
    """Background testbench recording, per cycle, (in valid&ready, out valid, out ready)."""
    async def monitor(ctx):
        async for _, _, iv, ir, ov, orr in ctx.tick().sample(
                dut.acc_in.valid, dut.acc_in.ready, dut.codes_out.valid, dut.codes_out.ready):
            log.append((iv and ir, ov, orr))
    return monitor


@pytest.mark.parametrize("tile,lanes", [(4, None), (8, None), (2, 1), (4, 1), (8, 2)])
def test_one_beat_per_cycle(tile, lanes):
    """Without stalls, tiles stream through at one beat (a row when L = T) per cycle with
    no bubble between tiles; a tile's first code beat is valid 5 cycles after its last
    beat is accepted, at any lane count."""
    params = NibbleParams(tile=tile, lanes=lanes)
    L, per_tile = params.lanes, params.beats_per_tile
    dut = Log4Quantizer(params)
    n_tiles = 4
    rng = random.Random(tile)
    tiles = [random_tile(rng, tile, params.acc_bits) for _ in range(n_tiles)]
    log = []

    async def producer(ctx):
        for flat in tiles:
            for k in range(0, tile * tile, L):
                await stream_put(ctx, dut.acc_in, {"acc": flat[k:k + L], "out_exp": 0})

    async def consumer(ctx):
        for _ in range(n_tiles * per_tile):
            await stream_get(ctx, dut.codes_out)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(_handshakes(dut, log), background=True)
    sim.run()
    accepted = [c for c, (fire, _, _) in enumerate(log) if fire]
    taken = [c for c, (_, ov, orr) in enumerate(log) if ov and orr]
    assert accepted == list(range(n_tiles * per_tile))
    assert taken == list(range(per_tile + 4, per_tile + 4 + n_tiles * per_tile))


def test_valid_does_not_wait_for_ready():
    """With ready held low, the first row still turns valid, and the unit takes exactly
    two tiles (both buffers), one beat (its input register) and the two beats that the
    reader has moved on (read and output registers: their slots may be refilled) before it
    pushes back on its input."""
    tile = 4
    dut = Log4Quantizer(NibbleParams(tile=tile))
    log = []
    stall = 3 * tile + 8

    async def producer(ctx):
        for _ in range(3 * tile):
            await stream_put(ctx, dut.acc_in, {"acc": [1, -2, 3, 0], "out_exp": 0})

    async def consumer(ctx):
        await ctx.tick().repeat(stall)
        for _ in range(3 * tile):
            await stream_get(ctx, dut.codes_out)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(_handshakes(dut, log), background=True)
    sim.run()
    accepted = [c for c, (fire, _, _) in enumerate(log) if fire]
    assert accepted[:2 * tile + 3] == list(range(2 * tile + 3))
    assert accepted[2 * tile + 3] >= stall
    assert [ov for _, ov, _ in log[:stall]] == [0] * (tile + 4) + [1] * (stall - tile - 4)


def test_converts_to_verilog():
    text = verilog.convert(Log4Quantizer(NibbleParams(tile=8)), name="log4_quantizer",
                           emit_src=False)
    assert "module log4_quantizer" in text
