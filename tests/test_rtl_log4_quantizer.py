"""Log4Quantizer against golden's fp4 output stage (golden.output.log4_quantize) and, in
dual mode, against the gradient unit (golden.output.log4_quantize_fused): code for code,
alpha partial and tile maximum bit for bit, in Amaranth's simulator.

Stimulus is full-range and stalled: random accumulators over every bit length, out_exp
over -300..300 (so E clips at -128 and 127) plus the layout's extremes, tiles that sit
exactly on every rounding threshold, all-zero, single-element and most-negative tiles,
random valid gaps on the input and random ready backpressure on the output; in dual
mode masks and clip masks that keep or clip everything, nothing or random elements.
"""

import random
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.gemm import GemmResult
from golden.output import alpha_sum_bits, log4_quantize, log4_quantize_fused
from golden.params import NibbleParams
from wire.streams import CODE_BITS, OUT_EXP_BITS
from rtl.generate import convert
from rtl.log4_quantizer import Log4Quantizer
from verif.amaranth_credits import run_credited
from verif.scoreboard import tile_result

OUT_EXP_MIN, OUT_EXP_MAX = -2 ** (OUT_EXP_BITS - 1), 2 ** (OUT_EXP_BITS - 1) - 1


# ---------------------------------------------------------------------------- models

def golden_tile(acc, out_exp, phase, rounding, ext):
    """(codes, E) of one tile from golden's fp4 output stage
    (:func:`golden.output.log4_quantize`); exact for |acc| < 2**53."""
    q = log4_quantize(tile_result(acc, out_exp), phase=phase, rounding=rounding, exps=ext)
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

def _codes(word, lanes, half=0):
    """The ``lanes`` 4-bit codes of half ``half`` (0 low, 1 next) of a beat's data."""
    base = half * CODE_BITS * lanes
    return [word >> (base + CODE_BITS * i) & 0xF for i in range(lanes)]


def run_log4_quantizer(params, tiles, *, phase=0, rounding="log", ext=None, seed=0,
                       busy=0.6, out_busy=None, out_hold=0, trace=None, dual=False,
                       masks=None, mask_en=None, seed_word=None):
    """Send ``tiles`` [(flat acc, out_exp)] through a Log4Quantizer between a credited
    producer and consumer; with ``masks`` [(flat mask, flat clip mask)] per tile on the
    mask inputs, with mask_en unless ``mask_en`` says otherwise; with ``seed_word``,
    stochastic rounding, the generators loaded with it before the first beat. Returns its beats: [(codes, E)], or in dual mode [(data, exp)] (R code beats
    and 2 T / L summary beats per tile)."""
    dut = Log4Quantizer(params)
    L = params.lanes
    beats = [{"acc": flat[k:k + L], "out_exp": oexp}
             for flat, oexp in tiles for k in range(0, len(flat), L)]
    sideband = None
    if masks is not None:
        sideband = [(dut.mask_in, _mask_words(masks, 0, L)), (dut.clip_mask_in, _mask_words(masks, 1, L))]
    if seed_word is not None:       # ``load`` high through the setup cycles, low from the first beat
        sideband = (sideband or []) + [(dut.load, [0] * len(beats))]

    def setup(ctx):
        ctx.set(dut.phase, phase)
        ctx.set(dut.dual, dual)
        ctx.set(dut.mask_en, masks is not None if mask_en is None else mask_en)
        ctx.set(dut.linear, rounding == "linear")
        ctx.set(dut.ext_exp_en, ext is not None)
        ctx.set(dut.ext_exp, 0 if ext is None else ext)
        ctx.set(dut.stochastic, seed_word is not None)
        ctx.set(dut.seed, seed_word or 0)
        ctx.set(dut.load, seed_word is not None)

    if dual:
        convert = lambda p: (int(p.data), int(p.exp))        # noqa: E731
        out_count = len(beats) + len(tiles) * 2 * (params.tile // L)
    else:
        convert = lambda p: (_codes(int(p.data), L), int(p.exp))  # noqa: E731
        out_count = len(beats)
    return run_credited(dut, beats, setup=setup, sideband=sideband, seed=seed, busy=busy,
                        out_busy=out_busy, out_hold=out_hold, trace=trace, convert=convert,
                        out_count=out_count), dut


def _mask_words(masks, which, lanes):
    """Per beat, the L mask bits (``which`` 0: ReLU' mask, 1: clip mask) as an integer."""
    return [sum(int(b) << i for i, b in enumerate(pair[which][k:k + lanes]))
            for pair in masks for k in range(0, len(pair[which]), lanes)]


#: Cycles from a tile's last beat in to its first code beat out, as the class docstring
#: states them: 5 (write registers) + 1 (OR) + 5 (finalize) + 1 (bank full) + 6 (read).
LATENCY = 18


@pytest.mark.parametrize("rounding", ["log", "linear"])
@pytest.mark.parametrize("phase", [0, 1])
@pytest.mark.parametrize("tile,acc_bits,lanes", [(4, 32, None), (8, 32, None), (4, 53, None),
                                                 (2, 18, 1), (4, 32, 1), (8, 32, 2)])
def test_matches_golden(tile, acc_bits, lanes, phase, rounding, stochastic_hw=True):
    """Every corner tile against golden, with gaps on the input and backpressure on the
    output; lanes < T sends L elements of a tile per beat (the narrow output path). The
    configuration changes between segments, with no tile in flight. Built without
    stochastic rounding (``NibbleParams.stochastic`` False), the other roundings are
    the same."""
    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes, stochastic=stochastic_hw)
    L = params.lanes
    rng = random.Random(f"log4-{tile}-{acc_bits}-{lanes}-{phase}-{rounding}")
    segments = build_segments(rng, tile, acc_bits, phase, rounding,
                              n_random=12 if tile == 4 else 6)
    for n, (ext, jobs) in enumerate(segments):
        tiles = [([v for row in acc for v in row], oexp) for acc, oexp, _ in jobs]
        got, _ = run_log4_quantizer(params, tiles, phase=phase, rounding=rounding, ext=ext,
                                    seed=n)
        beats = iter(got)
        for (flat, oexp), (_, _, (want_codes, want_exp)) in zip(tiles, jobs):
            want = [c for row in want_codes for c in row]
            for k in range(0, len(flat), L):
                assert next(beats) == (want[k:k + L], want_exp), \
                    f"tile out_exp={oexp} elements {k}..: acc {flat[k:k + L]}"


@pytest.mark.parametrize("tile,lanes", [(4, None), (8, None), (2, 1), (4, 1), (8, 2)])
def test_one_beat_per_cycle(tile, lanes):
    """Without gaps or backpressure, tiles stream through at one beat (a row when L = T)
    per cycle with no bubble between tiles; a tile's first code beat comes LATENCY cycles
    after its last beat went in, at any lane count."""
    params = NibbleParams(tile=tile, lanes=lanes)
    per_tile = params.beats_per_tile
    rng = random.Random(tile)
    tiles = [(random_tile(rng, tile, params.acc_bits), 0) for _ in range(4)]
    trace = {}
    run_log4_quantizer(params, tiles, busy=1.0, out_busy=1.0, trace=trace)
    ins, outs = trace["in"], trace["out"]
    assert ins == list(range(ins[0], ins[0] + len(tiles) * per_tile))
    assert outs == list(range(outs[0], outs[0] + len(tiles) * per_tile))
    assert outs[0] - ins[per_tile - 1] == LATENCY


def test_credits_bound_what_it_takes():
    """With no output credit for a long while, the unit emits nothing, and a producer
    that respects its credits can send exactly ``capacity`` beats; once credits come,
    every beat comes out exact."""
    params = NibbleParams(tile=4)
    rng = random.Random(3)
    tiles = [(random_tile(rng, 4, params.acc_bits), 0) for _ in range(12)]
    trace = {}
    hold = 200
    got, dut = run_log4_quantizer(params, tiles, busy=1.0, out_busy=1.0, out_hold=hold,
                                  trace=trace)
    assert sum(c < hold for c in trace["in"]) == dut.capacity < len(tiles) * 4
    assert min(trace["out"]) >= hold
    want = [expected_tile([flat[r * 4:(r + 1) * 4] for r in range(4)], 0, 0, "log", None, 32)
            for flat, _ in tiles]
    assert got == [(row, e) for codes, e in want for row in codes]


# ---------------------------------------------------------------------------- dual mode

def random_masks(rng, n):
    """(mask, clip mask) of one tile, flat: every element kept and none clipped, none
    kept and every one clipped, PACT's (clipped elements are exactly some of the masked
    ones), or both random and independent."""
    style = rng.randrange(4)
    if style == 0:
        return [1] * n, [0] * n
    if style == 1:
        return [0] * n, [1] * n
    mask = [int(rng.random() < 0.6) for _ in range(n)]
    if style == 2:
        return mask, [int(not k and rng.random() < 0.5) for k in mask]
    return mask, [int(rng.random() < 0.5) for _ in range(n)]


def as_gemm(params, tiles, masks):
    """The tiles [(flat acc, out_exp)] as the output tiles (0, 0..K-1) of one GEMM, in the
    order the unit sees them (and golden's generators step): a GemmResult of T x KT
    accumulators, and the masks [(flat mask, flat clip mask)] (None: none) as T x KT
    arrays."""
    T = params.tile
    def wide(flats):
        return np.concatenate([np.asarray(f, dtype=np.int64).reshape(T, T) for f in flats], axis=1)
    result = GemmResult(wide([f for f, _ in tiles]), np.array([[o for _, o in tiles]]), False,
                        T, params.acc_bits)
    if masks is None:
        return result, None, None
    return result, wide([m for m, _ in masks]).astype(bool), wide([c for _, c in masks]).astype(bool)


def check_dual(params, tiles, got, rounding, ext, masks, seed=None):
    """The dual-mode beats ``got`` [(data, exp)] against golden's gradient unit
    (:func:`golden.output.log4_quantize_fused` over the tiles as one GEMM), tile by
    tile: R code beats of both phases (nothing above them), then the alpha and maximum
    slices."""
    L, T, acc_bits = params.lanes, params.tile, params.acc_bits
    R, G, width = params.beats_per_tile, T // L, L * acc_bits
    per = R + 2 * G
    assert len(got) == len(tiles) * per
    result, mask, clip = as_gemm(params, tiles, masks)
    want = log4_quantize_fused(result, rounding=rounding, exps=ext, mask=mask, clip_mask=clip,
                               seed=seed)
    for t, (flat, oexp) in enumerate(tiles):
        beats = got[t * per:(t + 1) * per]
        what = f"tile {t} out_exp {oexp} ext {ext} {rounding}"
        for p in (0, 1):
            codes = [c for data, _ in beats[:R] for c in _codes(data, L, p)]
            want_codes = want.phase(p).codes[:, t * T:(t + 1) * T].astype(int).ravel().tolist()
            assert codes == want_codes, f"{what} phase {p}"
        assert all(data >> (2 * CODE_BITS * L) == 0 for data, _ in beats[:R]), what
        assert {e for _, e in beats[:R]} == {int(want.phase0.exps[0, t])}, what
        assert {e for _, e in beats[R:]} == {oexp}, what
        alpha = sum(data << (g * width) for g, (data, _) in enumerate(beats[R:R + G]))
        tile_max = sum(data << (g * width) for g, (data, _) in enumerate(beats[R + G:]))
        bits = alpha_sum_bits(T, acc_bits)
        assert alpha >> bits == 0 and tile_max >> acc_bits == 0, what
        alpha -= (alpha >> (bits - 1)) << bits
        assert (alpha, tile_max) == (int(want.alpha_sums[0, t]), int(want.tile_max[0, t])), what


@pytest.mark.parametrize("rounding", ["log", "linear"])
@pytest.mark.parametrize("tile,acc_bits,lanes", [(4, 32, None), (8, 32, None), (4, 53, None),
                                                 (2, 18, 1), (4, 32, 1), (8, 24, 2)])
def test_dual_matches_golden(tile, acc_bits, lanes, rounding, stochastic_hw=True,
                            pipelined=True):
    """Dual mode against the gradient unit of golden: both phases from one exponent, the
    alpha partial over the clip mask (before the ReLU' mask), the masked tile maximum;
    every corner tile (all zero, most negative everywhere: the widest alpha partials,
    saturating and flushing exponents, rounding thresholds) under masks that keep or
    clip everything, nothing or some, with gaps and backpressure; also built without
    stochastic rounding."""
    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes, stochastic=stochastic_hw,
                          pipelined=pipelined)
    rng = random.Random(f"dual-{tile}-{acc_bits}-{lanes}-{rounding}")
    segments = build_segments(rng, tile, acc_bits, 0, rounding, n_random=6)
    for n, (ext, jobs) in enumerate(segments):
        tiles = [([v for row in acc for v in row], oexp) for acc, oexp, _ in jobs]
        masks = [random_masks(rng, tile * tile) for _ in tiles]
        # the widest alpha partials, both signs: every element clipped and kept
        n_el, top = tile * tile, 2 ** (acc_bits - 1)
        for v in (-top, top - 1):
            tiles.append(([v] * n_el, rng.randint(-300, 300)))
            masks.append(([1] * n_el, [1] * n_el))
        got, _ = run_log4_quantizer(params, tiles, rounding=rounding, ext=ext, seed=n,
                                    dual=True, masks=masks, phase=1)
        check_dual(params, tiles, got, rounding, ext, masks)


def test_dual_without_mask_en_sums_nothing_and_masks_nothing():
    """Without mask_en the mask bits mean nothing: every alpha partial is 0 and the
    maximum is over every element (golden with no mask and no clip mask)."""
    params = NibbleParams(tile=4)
    rng = random.Random(21)
    tiles = [(random_tile(rng, 4, params.acc_bits), rng.randint(-300, 300)) for _ in range(6)]
    tiles.append(([-2 ** 31] * 16, 0))
    masks = [random_masks(rng, 16) for _ in tiles]
    got, dut = run_log4_quantizer(params, tiles, dual=True, masks=masks, mask_en=False)
    check_dual(params, tiles, got, "log", None, None)


@pytest.mark.parametrize("tile,lanes,pipelined", [(4, None, True), (2, 1, True), (8, 2, True),
                                                 (4, 1, False), (8, 2, False)])
def test_dual_streams_without_bubbles(tile, lanes, pipelined):
    """With every credit available the output is one beat per cycle: each tile's R code
    beats and 2 T / L summary beats back to back, tile after tile (without
    ``pipelined``, with each tile's totals held in a register while the next tile's
    beats come in right behind it)."""
    params = NibbleParams(tile=tile, lanes=lanes, pipelined=pipelined)
    rng = random.Random(tile)
    tiles = [(random_tile(rng, tile, params.acc_bits), 0) for _ in range(5)]
    trace = {}
    got, _ = run_log4_quantizer(params, tiles, busy=1.0, out_busy=1.0, trace=trace, dual=True)
    outs = trace["out"]
    assert outs == list(range(outs[0], outs[0] + len(outs)))
    check_dual(params, tiles, got, "log", None, None)


# ---------------------------------------------------------------------- stochastic rounding

SEEDS = (0, 0xFFFFFFFF, 0x61C88647, 0x12345678)   # 0x61C88647: column 0's sum is 0


@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("tile,acc_bits,lanes", [(4, 32, None), (8, 24, None), (4, 53, None),
                                                 (2, 18, 1), (4, 32, 1), (8, 32, 2)])
def test_stochastic_matches_golden(tile, acc_bits, lanes, dual):
    """Stochastic rounding against golden with the same seed, code for code: the
    generators seeded by the unit's ``load``, stepped once per element in output order
    (phase 0 the words' high half, phase 1 the low half; a single phase-1 pass the low
    half), over every corner tile (thresholds, flushes below G_0, saturation, zeros)
    with masks, gaps and backpressure. Seeds include 0, all ones and the seed whose
    column-0 sum is 0 (that column starts at all ones)."""
    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes)
    L = params.lanes
    rng = random.Random(f"sr-{tile}-{acc_bits}-{lanes}-{dual}")
    phases = (0,) if dual else (0, 1)
    for phase in phases:
        segments = build_segments(rng, tile, acc_bits, phase, "log", n_random=6)
        for n, (ext, jobs) in enumerate(segments):
            seed_word = SEEDS[n % len(SEEDS)]
            tiles = [([v for row in acc for v in row], oexp) for acc, oexp, _ in jobs]
            masks = [random_masks(rng, tile * tile) for _ in tiles]
            got, _ = run_log4_quantizer(params, tiles, phase=phase, ext=ext, seed=n,
                                        dual=dual, masks=masks, seed_word=seed_word)
            if dual:
                check_dual(params, tiles, got, "stochastic", ext, masks, seed=seed_word)
                continue
            result, mask, _ = as_gemm(params, tiles, masks)
            want = log4_quantize(result, phase=phase, rounding="stochastic", exps=ext,
                                 mask=mask, seed=seed_word)
            T = tile
            for t in range(len(tiles)):
                codes = [c for beat in got[t * params.beats_per_tile:(t + 1) * params.beats_per_tile]
                         for c in beat[0]]
                assert codes == want.codes[:, t * T:(t + 1) * T].astype(int).ravel().tolist(), \
                    f"phase {phase} ext {ext} seed {seed_word:#x} tile {t}"
                assert {e for _, e in got[t * params.beats_per_tile:(t + 1) * params.beats_per_tile]} \
                    == {int(want.exps[0, t])}
            assert len(got) == len(tiles) * params.beats_per_tile


def test_converts_to_verilog():
    text = convert(Log4Quantizer(NibbleParams(tile=8)), "log4_quantizer")
    assert "module log4_quantizer" in text


@pytest.mark.parametrize("rounding", ["log", "linear"])
@pytest.mark.parametrize("tile,acc_bits,lanes", [(4, 32, None), (8, 24, 2)])
def test_without_stochastic_hw_matches_golden(tile, acc_bits, lanes, rounding):
    """Built without stochastic rounding (``NibbleParams.stochastic`` False): single
    phase (both phases) and dual mode are what they are with it."""
    for phase in (0, 1):
        test_matches_golden(tile, acc_bits, lanes, phase, rounding, stochastic_hw=False)
    test_dual_matches_golden(tile, acc_bits, lanes, rounding, stochastic_hw=False)


@pytest.mark.parametrize("tile,acc_bits,lanes", [(4, 19, 1), (8, 24, 2), (2, 18, 1)])
def test_unpipelined_dual_matches_golden(tile, acc_bits, lanes):
    """Not ``pipelined`` (the iCE40 profile): the tile totals held in one register each
    where a tile is at least as many beats long as their delay line was (T = 4 with
    one lane, T = 8 with two), the delay line kept where it is not (T = 2, one lane);
    dual mode against golden, without stochastic rounding as on the iCEBreaker."""
    test_dual_matches_golden(tile, acc_bits, lanes, "log", stochastic_hw=False, pipelined=False)


def test_unpipelined_build_holds_the_totals():
    """Without ``pipelined`` at T = 4 with one lane the alpha and maximum delay lines
    (9 registers each) are one held register each."""
    def registers(pipelined):
        text = convert(Log4Quantizer(NibbleParams(tile=4, lanes=1, acc_bits=19,
                                                  pipelined=pipelined)), "log4_quantizer")
        return len(re.findall(r"reg .*(alpha|max)_(fin\d+|held)\b", text))
    assert registers(True) == 18
    assert registers(False) == 2


def test_build_without_stochastic_rounding_is_smaller():
    """NibbleParams.stochastic = False leaves out the generators and the fraction bits
    of the bank (a narrower memory, no xorshift state)."""
    def memory_bits(stochastic):
        text = convert(Log4Quantizer(NibbleParams(tile=4, stochastic=stochastic)),
                       "log4_quantizer")
        return text, sum(int(w) + 1 for w in re.findall(r"reg \[(\d+):0\] \S+ \[\d+:0\];", text))
    with_hw, bits_with = memory_bits(True)
    without, bits_without = memory_bits(False)
    assert "xorshift" in with_hw.lower() or "random" in with_hw.lower()
    assert "random" not in without.lower()
    assert bits_without < bits_with
