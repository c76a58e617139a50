"""Requantizer against golden's int output stage (golden.output.requantize), code for code,
in Amaranth's simulator.

Stimulus is full-range and stalled: random accumulators over every bit length, out_exp
over -300..300 plus the layout's extremes (so E clips at -128 and 127), tiles exactly on
rounding ties of both parities, all-zero, single-element, saturating, negative-only and
most-negative tiles, PACT thresholds below, at, between and above the elements, the
ReLU' mask, random valid gaps on both inputs and random ready backpressure on the output.
"""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden.output import requantize
from golden.params import NibbleParams
from wire.streams import OUT_EXP_BITS
from rtl.generate import convert
from rtl.requantizer import Requantizer
from verif.amaranth_credits import run_credited
from verif.scoreboard import tile_result

ACC_BITS = 32
OUT_EXP_MIN, OUT_EXP_MAX = -2 ** (OUT_EXP_BITS - 1), 2 ** (OUT_EXP_BITS - 1) - 1
ACC_MIN, ACC_MAX = -2 ** (ACC_BITS - 1), 2 ** (ACC_BITS - 1) - 1


# ---------------------------------------------------------------------------- models

def golden_tile(acc, out_exp, unsigned_out, clip=None, mask=None):
    """(codes, E) of one tile from golden's int output stage
    (:func:`golden.output.requantize`); ``clip`` is a (mant, exp) pair or None, which the
    hardware ignores for int4 output; ``mask`` a 0/1 array (0 zeroes the element)."""
    q = requantize(tile_result(acc, out_exp), "uint4" if unsigned_out else "int4",
                   clip=clip if unsigned_out else None, mask=mask)
    return q.codes.astype(int).tolist(), int(q.exps[0, 0])


def _int_exp(a, qmax):
    """Smallest e with a <= qmax * 2**e for an integer a > 0 (the hardware's rule)."""
    b, n = qmax.bit_length(), a.bit_length()
    lo = n - b
    over = lo > 0 and (a >> lo) == qmax and a & ((1 << lo) - 1) != 0
    return n - b + over


def _rne(x, s):
    """x * 2**-s, rounded half to even."""
    if s <= 0:
        return x << -s
    q, rem, half = x >> s, x & ((1 << s) - 1), 1 << (s - 1)
    return q + (rem > half or (rem == half and q & 1))


def integer_tile(acc, out_exp, unsigned_out, clip=None, mask=None):
    """The same in integers only, the way rtl/requantizer.py's docstring formulates it:
    E from bit lengths, the clip as one tile-level compare with floor(alpha / 2**out_exp),
    a clipped tile's E and code cap from (clip_mant, clip_exp) alone."""
    qmin, qmax = (0, 15) if unsigned_out else (-8, 7)
    xs = [0 if mask is not None and not mask[r][c] else max(x, 0) if unsigned_out else x
          for r, row in enumerate(acc) for c, x in enumerate(row)]
    amax = max(abs(x) for x in xs)
    clipped, cap = False, qmax
    if clip is not None and unsigned_out:
        mant, cexp = clip
        d = cexp - out_exp
        clipped = amax > (mant << d if d >= 0 else mant >> -d)
    if clipped:
        e_tile = -128 if mant == 0 else min(max(cexp + _int_exp(mant, qmax), -128), 127)
        cap = min(_rne(mant, e_tile - cexp), qmax)
    elif amax:
        e_tile = min(max(out_exp + _int_exp(amax, qmax), -128), 127)
    else:
        e_tile = -128
    codes = [min(max(_rne(x, e_tile - out_exp), qmin), cap) for x in xs]
    t = len(acc)
    return [codes[i:i + t] for i in range(0, t * t, t)], e_tile


def _formulation_case(unsigned_out, out_exp, clip, mask, flat):
    acc = [flat[i:i + 4] for i in range(0, 16, 4)]
    mask = None if mask is None else [mask[i:i + 4] for i in range(0, 16, 4)]
    assert integer_tile(acc, out_exp, unsigned_out, clip, mask) == \
        golden_tile(acc, out_exp, unsigned_out, clip, mask)


MASKS = st.one_of(st.none(), st.lists(st.integers(0, 1), min_size=16, max_size=16))
CLIP_PAIRS = st.tuples(st.integers(0, 255), st.integers(-128, 127))


@settings(max_examples=400, deadline=None)
@given(st.booleans(), st.integers(OUT_EXP_MIN, OUT_EXP_MAX), st.one_of(st.none(), CLIP_PAIRS),
       MASKS, st.lists(st.one_of(st.integers(ACC_MIN, ACC_MAX), st.integers(-40, 40),
                                 st.integers(0, 31).map(lambda n: 2 ** n),
                                 st.integers(1, 28).map(lambda n: 15 << n),
                                 st.integers(1, 28).map(lambda n: 7 << n)),
                       min_size=16, max_size=16))
def test_integer_formulation_matches_golden(unsigned_out, out_exp, clip, mask, flat):
    """The hardware's integer rule (bit lengths, exact alpha compare, code cap) is golden's."""
    _formulation_case(unsigned_out, out_exp, clip, mask, flat)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_integer_clip_matches_golden(data):
    """The same with the elements around alpha = mant * 2**k accumulator steps (k < 0:
    alpha between two steps), often with the tile maximum exactly floor(alpha)."""
    clip = data.draw(CLIP_PAIRS)
    k = data.draw(st.integers(-8, 22))
    out_exp = max(OUT_EXP_MIN, min(OUT_EXP_MAX, clip[1] - k))
    k = clip[1] - out_exp
    steps = clip[0] << k if k >= 0 else clip[0] >> -k  # floor(alpha / 2**out_exp)
    flat = data.draw(st.lists(st.one_of(st.sampled_from([steps - 1, steps, steps + 1]),
                                        st.integers(-3, 3), st.integers(0, max(steps, 0))),
                              min_size=16, max_size=16))
    if data.draw(st.booleans()):
        flat = [min(x, steps) for x in flat]
    _formulation_case(True, out_exp, clip, data.draw(MASKS), flat)


# ---------------------------------------------------------------------------- runner

def _beats(tile_rows, lanes):
    """A tile's elements in row-major order, ``lanes`` per beat."""
    flat = [v for row in tile_rows for v in row]
    return [flat[k:k + lanes] for k in range(0, len(flat), lanes)]


def run_requantizer(tile, tiles, *, unsigned_out, clip=None, mask_en=False, seed=0,
                    busy=0.6, trace=None, acc_bits=ACC_BITS, lanes=None, out_busy=None,
                    out_slots=8):
    """Send ``tiles`` [(acc, out_exp, mask)] through a Requantizer between a credited
    producer and a credited consumer (:func:`verif.amaranth_credits.run_credited`);
    return the [(codes, E)] it produces, with int4 codes sign-extended. ``trace`` (a
    dict) receives the cycles at which input and output beats were transferred."""
    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes)
    per_tile = params.beats_per_tile
    dut = Requantizer(params)
    beats, masks = [], []
    for acc, oexp, mask in tiles:
        mask_beats = [None] * per_tile if mask is None else _beats(mask, params.lanes)
        for beat, mbeat in zip(_beats(acc, params.lanes), mask_beats):
            beats.append({"acc": list(beat), "out_exp": oexp})
            masks.append(0 if mbeat is None else sum(int(b) << i for i, b in enumerate(mbeat)))

    def setup(ctx):
        ctx.set(dut.unsigned_out, int(unsigned_out))
        ctx.set(dut.clip_en, int(clip is not None))
        ctx.set(dut.clip_mant, clip[0] if clip else 0)
        ctx.set(dut.clip_exp, clip[1] if clip else 0)
        ctx.set(dut.mask_en, int(mask_en))

    got = run_credited(dut, beats, setup=setup, sideband=[(dut.mask_in, masks)], seed=seed,
                       busy=busy, out_busy=out_busy, out_slots=out_slots, trace=trace,
                       convert=lambda p: ([int(c) for c in p.codes], int(p.exp)))
    out = []
    for t in range(len(tiles)):
        tile_beats = got[t * per_tile:(t + 1) * per_tile]
        exps = {e for _, e in tile_beats}
        assert len(exps) == 1, f"tile {t}: exponent differs between beats: {exps}"
        flat = [c - 16 if not unsigned_out and c >= 8 else c for row, _ in tile_beats
                for c in row]
        codes = [flat[r * tile:(r + 1) * tile] for r in range(tile)]
        out.append((codes, exps.pop()))
    return out


def check(tile, tiles, *, unsigned_out, clip=None, mask_en=False, seed=0, busy=0.6,
          acc_bits=ACC_BITS, lanes=None):
    got = run_requantizer(tile, tiles, unsigned_out=unsigned_out, clip=clip,
                          mask_en=mask_en, seed=seed, busy=busy, acc_bits=acc_bits,
                          lanes=lanes)
    for t, ((acc, oexp, mask), (codes, e_tile)) in enumerate(zip(tiles, got)):
        want_codes, want_e = golden_tile(acc, oexp, unsigned_out, clip,
                                         mask if mask_en else None)
        assert (codes, e_tile) == (want_codes, want_e), (
            f"tile {t} (out_exp {oexp}, clip {clip}): acc {acc}, mask {mask}\n"
            f"got E {e_tile} {codes}\nwant E {want_e} {want_codes}")


# ---------------------------------------------------------------------------- stimulus

def _tile(t, fill):
    return [[fill(r, c) for c in range(t)] for r in range(t)]


def random_tile(rng, t, oexp_range=(-300, 300), acc_bits=ACC_BITS):
    """Random accumulators of a random bit length (so the maximum and E vary widely),
    some zeros; full range at acc_bits."""
    bits = rng.randint(1, acc_bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    acc = _tile(t, lambda r, c: 0 if rng.random() < 0.1 else rng.randint(lo, hi))
    return acc, rng.randint(*oexp_range)


def edge_tiles(rng, t, unsigned_out):
    qmin, qmax = (0, 15) if unsigned_out else (-8, 7)
    out = [(_tile(t, lambda r, c: 0), rng.randint(-300, 300))]  # all zero
    for v in (1, -1, 3, 7, 8, 15, 16, ACC_MIN, ACC_MAX, rng.randint(ACC_MIN, ACC_MAX)):
        pos = (rng.randrange(t), rng.randrange(t))  # one nonzero element
        out.append((_tile(t, lambda r, c: v if (r, c) == pos else 0), rng.randint(-300, 300)))
    # Exact ties j + 1/2 in the quantized domain, every j of both parities: the tile
    # maximum qmax << k pins E = out_exp + k.
    for k in (1, 2, rng.randint(3, 27)):
        halves = [(2 * j + 1) << (k - 1) for j in range(qmin, qmax)]
        acc = _tile(t, lambda r, c: halves[(r * t + c) % len(halves)])
        acc[0][0] = qmax << k
        out.append((acc, rng.randint(-100, 100)))
    # Tiny maxima: E below out_exp, a left shift (amax 3 -> e' = -1, amax 1 -> -2 / -3).
    for amax in (1, 2, 3, 5):
        out.append((_tile(t, lambda r, c: rng.randint(-amax, amax)), rng.randint(-50, 50)))
    # E clipped at 127 (saturation) and at -128 (flush), including the borders and ties
    # one step past the border.
    big = _tile(t, lambda r, c: rng.randint(ACC_MIN, ACC_MAX))
    out += [(big, 200), (big, OUT_EXP_MAX), (_tile(t, lambda r, c: rng.randint(-9, 9)), 126),
            (big, -400), (big, OUT_EXP_MIN), (_tile(t, lambda r, c: 1), OUT_EXP_MAX)]
    for k in (4, 10):  # amax = qmax << k, E_acc = out_exp + k
        halves = [(2 * j + 1) << (k - 1) for j in range(qmin, qmax)]
        acc = _tile(t, lambda r, c: halves[(r * t + c) % len(halves)])
        acc[0][0] = qmax << k
        out += [(acc, 127 - k), (acc, 128 - k), (acc, -128 - k), (acc, -129 - k),
                (acc, -130 - k)]
    out.append((_tile(t, lambda r, c: rng.randint(ACC_MIN, -1)), rng.randint(-300, 300)))
    out.append((_tile(t, lambda r, c: ACC_MIN), rng.randint(-300, 300)))
    out.append((_tile(t, lambda r, c: ACC_MAX if (r + c) % 2 else ACC_MIN), 0))
    return [(acc, oexp, None) for acc, oexp in out]


def clip_tiles(rng, t, clip):
    """Tiles around alpha = mant * 2**cexp: straddling it, exactly on it (and one unit
    either side), alpha between accumulator steps, everything clipped, nothing clipped."""
    mant, cexp = clip
    out = []

    def oexp(v):
        return max(OUT_EXP_MIN, min(OUT_EXP_MAX, v))

    for _ in range(4):
        bits = rng.randint(2, ACC_BITS)
        acc = _tile(t, lambda r, c: rng.randint(-(1 << (bits - 1)), (1 << (bits - 1)) - 1))
        out.append((acc, oexp(cexp + 8 - bits + rng.randint(-2, 2))))
    for k in (0, 5, 20):  # mant << k at out_exp = cexp - k is exactly alpha
        a = mant << k
        acc = _tile(t, lambda r, c: [a, a - 1, a + 1, a // 2, -a, 0][(r + c) % 6])
        out.append((acc, oexp(cexp - k)))
    for f in (1, 3, 7):  # alpha = mant / 2**f accumulator steps: off the grid if mant odd
        acc = _tile(t, lambda r, c: (mant >> f) + rng.randint(-2, 2))
        out.append((acc, oexp(cexp + f)))
    # the threshold floor(alpha / 2**out_exp) at the ends of its shift, d = cexp -
    # out_exp: a right shift by 7 and by 8 (and beyond, where it is 0), a left shift by
    # acc_bits - 2 and - 1; tiles whose maximum is on it and one unit above
    for d in (-9, -8, -7, -1, ACC_BITS - 2, ACC_BITS - 1):
        thr = mant << d if d >= 0 else mant >> -d
        for top in (thr, thr + 1):
            acc = _tile(t, lambda r, c: max(ACC_MIN, min(ACC_MAX, [top, top - 1, 1][(r + c) % 3])))
            out.append((acc, oexp(cexp - d)))
    big = _tile(t, lambda r, c: rng.randint(ACC_MIN, ACC_MAX))
    out += [(big, oexp(cexp + 40)), (big, oexp(cexp - 40)),
            (_tile(t, lambda r, c: 0), cexp), (_tile(t, lambda r, c: -rng.randint(1, 99)), cexp)]
    return [(acc, e, None) for acc, e in out]


def with_masks(rng, t, tiles):
    return [(acc, e, _tile(t, lambda r, c: int(rng.random() < 0.6))) for acc, e, _ in tiles]


# ---------------------------------------------------------------------------- tests

TILES = (4, 8)


@pytest.mark.parametrize("unsigned_out", [False, True], ids=["int4", "uint4"])
@pytest.mark.parametrize("tile", TILES)
def test_random_tiles(tile, unsigned_out):
    rng = random.Random(100 * tile + unsigned_out)
    tiles = [(*random_tile(rng, tile), None) for _ in range(24)]
    check(tile, tiles, unsigned_out=unsigned_out, seed=tile)


@pytest.mark.parametrize("unsigned_out", [False, True], ids=["int4", "uint4"])
@pytest.mark.parametrize("tile", TILES)
def test_edge_tiles(tile, unsigned_out):
    rng = random.Random(200 * tile + unsigned_out)
    check(tile, edge_tiles(rng, tile, unsigned_out), unsigned_out=unsigned_out, seed=tile + 7)


# (mant, exp): a 1-unit alpha, odd mantissas, the exponent extremes (E clips), and alphas
# that are themselves ties in the uint4 grid (17 / 2 = 8.5 -> 8, 200 / 16 = 12.5 -> 12).
CLIPS = [(1, 0), (255, -7), (3, -128), (200, 127), (17, -3), (200, -2), (128, 0), (1, -40)]


@pytest.mark.parametrize("clip", CLIPS, ids=[f"{m}x2^{e}" for m, e in CLIPS])
@pytest.mark.parametrize("tile", TILES)
def test_pact_clip(tile, clip):
    rng = random.Random(1000 * tile + 300 * clip[0] + clip[1])
    check(tile, clip_tiles(rng, tile, clip), unsigned_out=True, clip=clip, seed=tile)


def test_pact_clip_zero_alpha():
    """clip_mant = 0: alpha = 0, so every uint4 output is 0 (E = -128)."""
    rng = random.Random(5)
    tiles = [(*random_tile(rng, 4), None) for _ in range(6)]
    check(4, tiles, unsigned_out=True, clip=(0, 3))


@pytest.mark.parametrize("mode", ["int4_clip_en", "uint4", "uint4_clip"])
@pytest.mark.parametrize("tile", TILES)
def test_relu_mask(tile, mode):
    """The ReLU' mask; int4 runs with clip_en = 1, which int4 ignores."""
    rng = random.Random(300 * tile + len(mode))
    unsigned_out = mode != "int4_clip_en"
    clip = None if mode == "uint4" else (97, -3)
    tiles = [(*random_tile(rng, tile), None) for _ in range(8)]
    if clip:
        tiles += clip_tiles(rng, tile, clip)[:8]
    tiles += edge_tiles(rng, tile, unsigned_out)[:6]
    check(tile, with_masks(rng, tile, tiles), unsigned_out=unsigned_out, clip=clip,
          mask_en=True, seed=tile + 3)


@pytest.mark.parametrize("unsigned_out", [False, True], ids=["int4", "uint4"])
def test_other_params(unsigned_out):
    """T = 2 (below full throughput, still exact) with 48-bit accumulators."""
    rng = random.Random(7 + unsigned_out)
    tiles = [(*random_tile(rng, 2, acc_bits=48), None) for _ in range(24)]
    tiles += [([[-2 ** 47, 2 ** 47 - 1], [1, 0]], e, None) for e in (-400, 0, 200)]
    check(2, tiles, unsigned_out=unsigned_out, clip=(17, -3) if unsigned_out else None,
          acc_bits=48)


#: Consumer slots that cover a credit's round trip (the read latency, the consumer's pop
#: and its credit register), so that full rate depends on the unit alone.
FULL_RATE_SLOTS = Requantizer.READ_LATENCY + 2


def documented_latency(lanes):
    """Cycles from a tile's last accumulator beat to its first code beat, as the class
    docstring states them: 1 (register) + 1 (the statistics' own register) +
    max(1, 2 log2 L) (max tree: compare, then select) + 1 (running maximum) +
    6 (finalize) + 1 (bank full) + 9 (read)."""
    return 19 + max(1, 2 * (lanes.bit_length() - 1))


@pytest.mark.parametrize("tile", TILES)
def test_throughput_and_latency(tile):
    """Without gaps or backpressure: one row per cycle in and out, T cycles per tile;
    a tile's first code row leaves ``documented_latency`` cycles after its last
    accumulator row came in."""
    rng = random.Random(tile)
    tiles = [(*random_tile(rng, tile), None) for _ in range(6)]
    trace = {}
    run_requantizer(tile, tiles, unsigned_out=False, busy=1.0, trace=trace, out_busy=1.0,
                    out_slots=FULL_RATE_SLOTS)
    n = len(tiles) * tile
    ins, outs = trace["in"], trace["out"]
    assert ins == list(range(ins[0], ins[0] + n))
    assert outs == list(range(outs[0], outs[0] + n))
    assert outs[0] - ins[tile - 1] == documented_latency(tile)


# (tile, lanes): the narrow output path of small FPGAs, L elements of a tile per beat.
NARROW = [(2, 1), (4, 1), (4, 2), (8, 2)]


@pytest.mark.parametrize("tile,lanes", NARROW)
def test_narrow_lanes(tile, lanes):
    """L < T: masked, clipped, edge and random tiles, L elements per beat, exact."""
    rng = random.Random(40 * tile + lanes)
    clip = (97, -3)
    for unsigned_out in (False, True):
        tiles = [(*random_tile(rng, tile), None) for _ in range(6)]
        tiles += edge_tiles(rng, tile, unsigned_out)
        if unsigned_out:
            tiles += clip_tiles(rng, tile, clip)
        check(tile, tiles, unsigned_out=unsigned_out, clip=clip if unsigned_out else None,
              seed=tile + lanes, lanes=lanes)
        check(tile, with_masks(rng, tile, tiles[:10]), unsigned_out=unsigned_out,
              mask_en=True, seed=lanes, lanes=lanes)


@pytest.mark.parametrize("tile,lanes", [(4, 1), (8, 2)])
def test_narrow_lanes_throughput(tile, lanes):
    """One beat per cycle at L < T: T * T / L cycles per tile, the documented latency."""
    rng = random.Random(tile + lanes)
    tiles = [(*random_tile(rng, tile), None) for _ in range(4)]
    trace = {}
    run_requantizer(tile, tiles, unsigned_out=True, busy=1.0, trace=trace, lanes=lanes,
                    out_busy=1.0, out_slots=FULL_RATE_SLOTS)
    per_tile = tile * tile // lanes
    ins, outs = trace["in"], trace["out"]
    assert ins == list(range(ins[0], ins[0] + len(tiles) * per_tile))
    assert outs == list(range(outs[0], outs[0] + len(tiles) * per_tile))
    assert outs[0] - ins[per_tile - 1] == documented_latency(lanes)


def test_converts_to_verilog():
    text = convert(Requantizer(NibbleParams(tile=8)), "requantizer")
    assert "module requantizer" in text
