"""Tests of ``golden.gemm`` (tiled GEMM, accumulator contract) and ``golden.params``.

The reference below is an exact Python-int model of the accumulator contract: tiles are
looped over explicitly, right shifts round half to even through ``Fraction.__round__``,
and saturation is applied after every addition. Operands are built directly as
``QTensor`` codes + exponents, so these tests do not depend on the quantizer.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from golden.formats import QTensor
from golden.gemm import KIND_PAIRS, GemmResult, check_kind_pair, shift_round_half_even, tiled_gemm
from golden.params import ACC_BITS_MAX, NibbleParams

EMIN, EMAX = -128, 127
AMAX = {"int4": 8, "uint4": 15, "fp4": 4096}
CODE_RANGE = {"int4": (-8, 7), "uint4": (0, 15), "fp4": (0, 15)}
KINDS = ("int4", "uint4", "fp4")
#: (a kind, b kind) pairs of the three training GEMMs (forward, dX, dW, both orders).
TRAINING_PAIRS = [("uint4", "int4"), ("int4", "int4"), ("fp4", "int4"), ("uint4", "fp4"),
                  ("int4", "fp4")]
#: Every pair the golden GEMM takes (golden.gemm.KIND_PAIRS; B is never uint4, not both fp4).
ALL_PAIRS = list(KIND_PAIRS)
#: The pairs it refuses.
ILLEGAL_PAIRS = [(a, b) for a in KINDS for b in KINDS if (a, b) not in KIND_PAIRS]
#: Legal pairs whose transpose (B^T A^T) is legal too.
SWAPPABLE_PAIRS = [(a, b) for a, b in ALL_PAIRS if (b, a) in ALL_PAIRS]

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def min_acc_bits(tile: int) -> int:
    """Bits of one exact uint4 x fp4 tile partial sum, plus sign: log2(T) + 16 + 1."""
    return tile.bit_length() - 1 + 17


# --------------------------------------------------------------------------------------
# Exact reference
# --------------------------------------------------------------------------------------

def element_int(code: int, kind: str) -> int:
    if kind == "fp4":
        e = code & 0b111
        mag = 0 if e == 0 else 4 ** (e - 1)
        return -mag if code & 0b1000 else mag
    return int(code)


def ref_shift(x: int, shift: int) -> int:
    """x * 2**shift, a right shift rounding half to even (Python's round on Fraction)."""
    if shift >= 0:
        return x << shift
    return round(Fraction(x, 1 << -shift))


def ref_gemm(a_codes, a_exps, ka, pa, b_codes, b_exps, kb, pb, tile, acc_bits):
    """Exact accumulator model; returns (acc, out_exps, saturated) as Python ints."""
    m, k = len(a_codes), len(a_codes[0])
    n = len(b_codes[0])
    kt_n = -(-k // tile)
    A = [[element_int(int(c), ka) for c in row] for row in a_codes]
    B = [[element_int(int(c), kb) for c in row] for row in b_codes]
    bound_bits = (kt_n * tile * AMAX[ka] * AMAX[kb]).bit_length()
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc = [[0] * n for _ in range(m)]
    out = [[None] * (-(-n // tile)) for _ in range(-(-m // tile))]
    sat = False
    for i in range(m):
        for j in range(n):
            ti, tj = i // tile, j // tile
            s = [int(a_exps[ti][t]) + int(b_exps[t][tj]) + pa + pb for t in range(kt_n)]
            oe = max(s) + bound_bits - (acc_bits - 1)
            out[ti][tj] = oe
            v = 0
            for t in range(kt_n):
                p_t = sum(A[i][kk] * B[kk][j] for kk in range(t * tile, min(k, (t + 1) * tile)))
                v += ref_shift(p_t, s[t] - oe)
                if v > hi:
                    v, sat = hi, True
                elif v < lo:
                    v, sat = lo, True
            acc[i][j] = v
    return acc, out, sat


def run_both(a: QTensor, b: QTensor, acc_bits: int):
    res = tiled_gemm(a, b, acc_bits=acc_bits)
    ref = ref_gemm(a.codes.tolist(), a.exps.tolist(), a.kind, a.phase,
                   b.codes.tolist(), b.exps.tolist(), b.kind, b.phase, a.tile, acc_bits)
    return res, ref


def assert_matches(res: GemmResult, ref, shape, tile, acc_bits):
    acc, out, sat = ref
    assert isinstance(res, GemmResult)
    assert res.acc.shape == shape
    assert res.out_exps.shape == (-(-shape[0] // tile), -(-shape[1] // tile))
    assert res.tile == tile and res.acc_bits == acc_bits
    assert res.out_exps.astype(np.int64).tolist() == out
    assert [[int(v) for v in row] for row in res.acc] == acc
    assert res.saturated == sat
    assert isinstance(res.saturated, (bool, np.bool_))


def exact_product(a: QTensor, b: QTensor):
    """Exact sum of products of the dequantized operands (floats are exact rationals)."""
    da, db = a.dequantize(), b.dequantize()
    fa = [[Fraction(float(v)) for v in row] for row in da]
    fb = [[Fraction(float(v)) for v in row] for row in db]
    k = len(fb)
    return [[sum((fa[i][kk] * fb[kk][j] for kk in range(k)), Fraction(0))
             for j in range(len(fb[0]))] for i in range(len(fa))]


def pow2(e: int) -> Fraction:
    return Fraction(1 << e) if e >= 0 else Fraction(1, 1 << -e)


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------

def codes_for(kind, shape):
    lo, hi = CODE_RANGE[kind]
    # bias towards the extreme codes, which set the partial-sum bounds
    return hnp.arrays(np.int64, shape,
                      elements=st.one_of(st.integers(lo, hi), st.sampled_from([lo, hi])))


def exps_for(shape, style, base):
    if style == "full":
        el = st.integers(EMIN, EMAX)
    elif style == "extreme":
        el = st.sampled_from([EMIN, EMIN + 1, EMAX - 1, EMAX, 0])
    else:                                    # narrow: a few values around base
        el = st.integers(base, base + 3)
    return hnp.arrays(np.int64, shape, elements=el)


@st.composite
def operands(draw, pairs=TRAINING_PAIRS, tiles=(2, 4, 8), max_side=10, styles=None,
             acc_bits=None):
    ka, kb = draw(st.sampled_from(pairs))
    pa = draw(st.sampled_from([0, 1])) if ka == "fp4" else 0
    pb = draw(st.sampled_from([0, 1])) if kb == "fp4" else 0
    t = draw(st.sampled_from(tiles))
    m, k, n = (draw(st.integers(1, max_side)) for _ in range(3))
    mt, kt, nt = (-(-v // t) for v in (m, k, n))
    style = draw(st.sampled_from(styles or ["full", "extreme", "narrow"]))
    base = draw(st.integers(EMIN, EMAX - 3))
    a = QTensor(draw(codes_for(ka, (m, k))), draw(exps_for((mt, kt), style, base)), ka, t, pa)
    b = QTensor(draw(codes_for(kb, (k, n))), draw(exps_for((kt, nt), style, base)), kb, t, pb)
    if acc_bits is None:
        bits = draw(st.one_of(st.integers(min_acc_bits(t), ACC_BITS_MAX),
                              st.sampled_from([min_acc_bits(t), 32, ACC_BITS_MAX])))
    else:
        bits = acc_bits
    return a, b, bits


# --------------------------------------------------------------------------------------
# shift_round_half_even
# --------------------------------------------------------------------------------------

def test_shift_round_half_even_ties_hand_examples():
    # x / 2: -3.5 -2.5 -1.5 -0.5 0.5 1.5 2.5 3.5
    x = np.array([-7, -5, -3, -1, 1, 3, 5, 7])
    np.testing.assert_array_equal(shift_round_half_even(x, -1), [-4, -2, -2, 0, 0, 2, 2, 4])
    # x / 4: ties at .5 and non-ties at .25 / .75
    x = np.array([2, 6, 10, 14, -2, -6, -10, 1, 3, -1, -3, 5, 7])
    np.testing.assert_array_equal(shift_round_half_even(x, -2),
                                  [0, 2, 2, 4, 0, -2, -2, 0, 1, 0, -1, 1, 2])
    # no shift and left shifts are exact
    np.testing.assert_array_equal(shift_round_half_even(x, 0), x)
    np.testing.assert_array_equal(shift_round_half_even(x, 3), x * 8)
    # per-element shifts broadcast against x
    np.testing.assert_array_equal(shift_round_half_even([3, 3, 3, 3], [-1, -2, 0, 2]),
                                  [2, 1, 3, 12])
    np.testing.assert_array_equal(shift_round_half_even([[5, 5, 5], [-5, -5, -5]],
                                                        [[-1, -2, -3]]),
                                  [[2, 1, 1], [-2, -1, -1]])        # 2.5, 1.25, 0.625
    np.testing.assert_array_equal(shift_round_half_even([[6, -6], [10, -10]], -2),
                                  [[2, -2], [2, -2]])                # 1.5, 2.5


def test_shift_round_half_even_huge_shifts():
    big = (1 << 61) - 1
    cases = [
        (big, -61, 1), (-big, -61, -1),           # 0.99999... -> +-1
        (big, -62, 0), (-big, -62, 0),            # just under 0.5 -> 0
        (1 << 60, -61, 0), (-(1 << 60), -61, 0),  # exactly +-0.5 -> 0 (even)
        (3 << 59, -61, 1), (-(3 << 59), -61, -1),  # 0.75 -> +-1
        (3 << 59, -60, 2), (-(3 << 59), -60, -2),  # 1.5 -> +-2
        (5 << 58, -60, 1),                        # 1.25 -> 1
        (big, -63, 0), (-big, -64, 0), (big, -100, 0), (-big, -1000, 0),
        (-(1 << 61) + 1, -10 ** 6, 0), (1, -10 ** 9, 0), (-1, -10 ** 9, 0), (0, -500, 0),
        (1, 61, 1 << 61), (-1, 62, -(1 << 62)), (big, 1, 2 * big),
    ]
    for x, s, want in cases:
        assert int(shift_round_half_even(x, s)) == want, (x, s)
        assert int(shift_round_half_even(np.array([x]), np.array([s]))[0]) == want, (x, s)


@settings(max_examples=300, deadline=None)
@given(x=st.integers(-(1 << 61) + 1, (1 << 61) - 1), s=st.integers(-400, 0))
def test_shift_round_half_even_right_matches_integer_reference(x, s):
    assert int(shift_round_half_even(x, s)) == ref_shift(x, s)


@settings(max_examples=200, deadline=None)
@given(q=st.integers(-(1 << 40), 1 << 40), d=st.integers(1, 20), tie=st.booleans())
def test_shift_round_half_even_exact_ties(q, d, tie):
    """x = q * 2**d + (2**(d-1) if tie else 0): halves go to the even neighbour."""
    x = (q << d) + ((1 << (d - 1)) if tie else 0)
    got = int(shift_round_half_even(x, -d))
    if not tie:
        assert got == q
    else:
        assert got == (q if q % 2 == 0 else q + 1)
        assert got % 2 == 0


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_shift_round_half_even_vectorized_left_and_right(data):
    n = data.draw(st.integers(1, 30))
    xs = data.draw(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=n, max_size=n))
    ss = [data.draw(st.integers(-100, 62 - max(abs(x), 1).bit_length() - 1)) for x in xs]
    got = shift_round_half_even(np.array(xs, dtype=np.int64), np.array(ss, dtype=np.int64))
    assert got.dtype == np.int64 and got.shape == (n,)
    assert [int(v) for v in got] == [ref_shift(x, s) for x, s in zip(xs, ss)]


# --------------------------------------------------------------------------------------
# tiled_gemm vs the exact reference
# --------------------------------------------------------------------------------------

@SETTINGS
@given(ops=operands())
def test_tiled_gemm_matches_exact_reference_training_pairs(ops):
    a, b, bits = ops
    res, ref = run_both(a, b, bits)
    assert_matches(res, ref, (a.shape[0], b.shape[1]), a.tile, bits)


@SETTINGS
@given(ops=operands(pairs=ALL_PAIRS, tiles=(2, 4, 8, 16), max_side=20))
def test_tiled_gemm_matches_exact_reference_all_pairs(ops):
    a, b, bits = ops
    res, ref = run_both(a, b, bits)
    assert_matches(res, ref, (a.shape[0], b.shape[1]), a.tile, bits)


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=operands(tiles=(32, 64), max_side=70))
def test_tiled_gemm_matches_exact_reference_large_tiles(ops):
    a, b, bits = ops
    res, ref = run_both(a, b, bits)
    assert_matches(res, ref, (a.shape[0], b.shape[1]), a.tile, bits)


TRAINING_PAIRS_PHASES = [(ka, kb, pa, pb) for ka, kb in TRAINING_PAIRS
                         for pa in ((0, 1) if ka == "fp4" else (0,))
                         for pb in ((0, 1) if kb == "fp4" else (0,))]


@pytest.mark.parametrize("ka,kb,pa,pb", TRAINING_PAIRS_PHASES)
def test_tiled_gemm_one_by_one_by_one(ka, kb, pa, pb):
    lo_a, hi_a = CODE_RANGE[ka]
    lo_b, hi_b = CODE_RANGE[kb]
    for ca in (lo_a, hi_a, 1):
        for cb in (lo_b, hi_b, 3):
            for ea, eb in ((0, 0), (EMIN, EMIN), (EMAX, EMAX), (EMIN, EMAX), (5, -7)):
                a = QTensor([[ca]], [[ea]], ka, 2, pa)
                b = QTensor([[cb]], [[eb]], kb, 2, pb)
                for bits in (18, 32, ACC_BITS_MAX):
                    res, ref = run_both(a, b, bits)
                    assert_matches(res, ref, (1, 1), 2, bits)
                    # a single product never needs a right shift when it fits exactly
                    if bits >= 32:
                        want = (Fraction(element_int(ca, ka)) * element_int(cb, kb)
                                * pow2(ea + eb + pa + pb))
                        assert Fraction(int(res.acc[0, 0])) * pow2(int(res.out_exps[0, 0])) \
                            == want


def test_tiled_gemm_hand_example_out_exp_and_rounding():
    """int4 x int4, T=2, K=4 (two reduction tiles), acc_bits=32, worked by hand.

    bound = n_t * T * 8 * 8 = 256 -> bit_length 9; out_exp = max s + 9 - 31 = max s - 22.
    Tile 0: s = 0 -> shift +22. Tile 1: s = -23 -> shift -1 (x / 2, half to even).
    """
    b = QTensor([[1], [1], [1], [1]], [[0], [0]], "int4", 2)
    for p1, want1 in ((1, 0), (3, 2), (5, 2), (7, 4), (-1, 0), (-3, -2), (-5, -2), (2, 1)):
        # P_0 = 2 + 3 = 5; P_1 = p1 (split as p1 = x + y with int4 codes)
        x = max(-8, min(7, p1))
        y = p1 - x
        a = QTensor([[2, 3, x, y]], [[0, -23]], "int4", 2)
        res = tiled_gemm(a, b, acc_bits=32)
        assert res.out_exps.tolist() == [[-22]]
        assert int(res.acc[0, 0]) == 5 * 2 ** 22 + want1, p1
        assert not res.saturated


def test_tiled_gemm_extreme_exponent_spread_hand_example():
    """Exponents -128 and 127 in one reduction: the small term shifts right by 255+."""
    a = QTensor([[1, 1, 7, 7]], [[127, -128]], "int4", 2)
    b = QTensor([[1], [1], [1], [1]], [[0], [0]], "int4", 2)
    res = tiled_gemm(a, b, acc_bits=32)
    # s = (127, -128); out_exp = 127 + 9 - 31 = 105; term0 = 2 << 22; term1 = 14 >> 233 -> 0
    assert res.out_exps.tolist() == [[105]]
    assert int(res.acc[0, 0]) == 2 << 22
    assert res.value()[0, 0] == 2.0 ** 128
    assert not res.saturated
    # fp4 (phase 1) x int4: s = 127 + 127 + 1 vs -128 - 128 + 1
    a = QTensor([[7, 7, 15, 15]], [[127, -128]], "fp4", 2, 1)
    b = QTensor([[7], [7], [7], [7]], [[127], [-128]], "int4", 2)
    bits = ACC_BITS_MAX
    res = tiled_gemm(a, b, acc_bits=bits)
    bound_bits = (2 * 2 * 4096 * 8).bit_length()            # 18
    assert res.out_exps.tolist() == [[255 + bound_bits - (bits - 1)]]
    # tile 0: 2 * 4096 * 7 shifted left; tile 1 (-2 * 4096 * 7) shifts right by 510: 0
    assert int(res.acc[0, 0]) == (2 * 4096 * 7) << (bits - 1 - bound_bits)
    assert not res.saturated


@SETTINGS
@given(ops=operands(styles=["extreme"]))
def test_tiled_gemm_extreme_spreads_match_reference(ops):
    a, b, bits = ops
    res, ref = run_both(a, b, bits)
    assert_matches(res, ref, (a.shape[0], b.shape[1]), a.tile, bits)


@SETTINGS
@given(ops=operands(pairs=SWAPPABLE_PAIRS, tiles=(2, 4, 8, 16), max_side=20))
def test_tiled_gemm_transpose_symmetry(ops):
    """(A B)^T = B^T A^T term by term: same partial sums, shifts and saturation."""
    a, b, bits = ops
    r1 = tiled_gemm(a, b, acc_bits=bits)
    r2 = tiled_gemm(b.T, a.T, acc_bits=bits)
    np.testing.assert_array_equal(r2.acc, r1.acc.T)
    np.testing.assert_array_equal(r2.out_exps, r1.out_exps.T)
    assert r2.saturated == r1.saturated


# --------------------------------------------------------------------------------------
# No right shift -> exact product
# --------------------------------------------------------------------------------------

@st.composite
def no_shift_operands(draw, pairs=ALL_PAIRS):
    """Operands whose exponent spread fits the accumulator head room, so no term shifts right."""
    ka, kb = draw(st.sampled_from(pairs))
    pa = draw(st.sampled_from([0, 1])) if ka == "fp4" else 0
    pb = draw(st.sampled_from([0, 1])) if kb == "fp4" else 0
    t = draw(st.sampled_from((2, 4, 8, 16)))
    m, k, n = (draw(st.integers(1, 12)) for _ in range(3))
    mt, kt, nt = (-(-v // t) for v in (m, k, n))
    need = (kt * t * AMAX[ka] * AMAX[kb]).bit_length() + 1
    bits = draw(st.integers(max(min_acc_bits(t), need), ACC_BITS_MAX))
    room = bits - need                    # largest allowed spread of s_t
    spread_a = draw(st.integers(0, room))
    spread_b = room - spread_a
    base_a = draw(st.integers(EMIN, EMAX - spread_a))
    base_b = draw(st.integers(EMIN, EMAX - spread_b))
    ea = draw(hnp.arrays(np.int64, (mt, kt), elements=st.integers(base_a, base_a + spread_a)))
    eb = draw(hnp.arrays(np.int64, (kt, nt), elements=st.integers(base_b, base_b + spread_b)))
    a = QTensor(draw(codes_for(ka, (m, k))), ea, ka, t, pa)
    b = QTensor(draw(codes_for(kb, (k, n))), eb, kb, t, pb)
    return a, b, bits


@SETTINGS
@given(ops=no_shift_operands())
def test_no_right_shift_gives_exact_product(ops):
    a, b, bits = ops
    t = a.tile
    res, ref = run_both(a, b, bits)
    assert_matches(res, ref, (a.shape[0], b.shape[1]), t, bits)
    # premise: no term needs a right shift
    s = a.exps.astype(np.int64)[:, :, None] + b.exps.astype(np.int64)[None, :, :] \
        + a.phase + b.phase
    assert np.all(s - res.out_exps[:, None, :] >= 0)
    assert not res.saturated            # exact accumulation cannot overflow
    want = exact_product(a, b)
    val = res.value()
    assert val.dtype == np.float64 and val.shape == res.acc.shape
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            oe = int(res.out_exps[i // t, j // t])
            assert Fraction(int(res.acc[i, j])) * pow2(oe) == want[i][j]
            assert Fraction(float(val[i, j])) == want[i][j]


def test_value_is_exact_product_for_widest_accumulator():
    """value() goes through float64, so the no-right-shift exactness promise needs
    |acc| <= 2**53, i.e. acc_bits <= 54. (ACC_BITS_MAX was 62 in the first draft, where
    acc = 49 * 2**50 + 1 came back from value() as 49.0.)

    int4 x int4, T=8, K=16: bound = 2 * 8 * 64 = 1024 (11 bits); out_exp = 11 - (B - 1).
    Tile 0 (all -8 * -8, P = 512, s = 0) shifts left by B - 12; tile 1 (P = 1) has
    s = 12 - B, so it is not shifted: acc = 2**(B - 3) + 1 uses B - 2 bits.
    """
    bits = ACC_BITS_MAX
    assert bits <= 54
    with pytest.raises(ValueError):
        NibbleParams(8, bits + 1)
    a_codes = np.zeros((1, 16), dtype=int)
    a_codes[0, :8], a_codes[0, 8] = -8, 1
    b_codes = np.zeros((16, 1), dtype=int)
    b_codes[:8, 0], b_codes[8, 0] = -8, 1
    a = QTensor(a_codes, [[0, 12 - bits]], "int4", 8)
    b = QTensor(b_codes, [[0], [0]], "int4", 8)
    res = tiled_gemm(a, b, acc_bits=bits)
    assert res.out_exps.tolist() == [[12 - bits]]
    assert int(res.acc[0, 0]) == 2 ** (bits - 3) + 1
    exact = exact_product(a, b)[0][0]
    assert exact == 512 + pow2(12 - bits)
    assert Fraction(float(res.value()[0, 0])) == exact
    assert not res.saturated


# --------------------------------------------------------------------------------------
# Saturation
# --------------------------------------------------------------------------------------

def _long_reduction(n_pos, n_neg, ka, ca, kb, c_pos, c_neg, tile=2):
    """1 x K times K x 1 with K = (n_pos + n_neg) * tile; every exponent 0."""
    nt = n_pos + n_neg
    a = QTensor(np.full((1, nt * tile), ca), np.zeros((1, nt), dtype=int), ka, tile)
    bc = np.concatenate([np.full(n_pos * tile, c_pos), np.full(n_neg * tile, c_neg)])
    b = QTensor(bc.reshape(-1, 1), np.zeros((nt, 1), dtype=int), kb, tile)
    return a, b


def test_saturation_positive_is_sticky_and_applied_after_each_add():
    """uint4 x fp4, T=2, minimum acc_bits 18, worked by hand.

    Each tile: P = 2 * 15 * 4096 = 15 * 2**13. With n_t = 16484 tiles, n_t * P has
    bit_length 31, so out_exp = 31 - 17 = 14 and each term is P / 2**14 = 7.5 -> 8.
    After 16384 positive tiles the sum reaches 2**17 > 2**17 - 1 and saturates; the
    following 100 negative tiles (term -8 each) then bring it down from 2**17 - 1.
    Saturating only at the end would give 2**17 - 800 instead.
    """
    bits = min_acc_bits(2)
    assert bits == 18
    with pytest.raises(ValueError):
        NibbleParams(tile=2, acc_bits=bits - 1)
    a, b = _long_reduction(16384, 100, "uint4", 15, "fp4", 0b0111, 0b1111)
    res = tiled_gemm(a, b, acc_bits=bits)
    assert res.out_exps.tolist() == [[14]]
    assert int(res.acc[0, 0]) == (2 ** 17 - 1) - 800
    assert res.saturated                                  # sticky: final value is in range
    ref = ref_gemm(a.codes.tolist(), a.exps.tolist(), "uint4", 0,
                   b.codes.tolist(), b.exps.tolist(), "fp4", 0, 2, bits)
    assert ref == ([[(2 ** 17 - 1) - 800]], [[14]], True)


def test_saturation_negative_clips_to_most_negative():
    """uint4 x int4, T=2, acc_bits 18: P = 2 * 15 * -8 = -240 per tile.

    n_t = 16385: n_t * 2 * 15 * 8 has bit_length 22, out_exp = 22 - 17 = 5, so each term
    is -240 / 32 = -7.5 -> -8 and the sum -131080 < -2**17 saturates to -2**17.
    """
    a, b = _long_reduction(16385, 0, "uint4", 15, "int4", -8, 0)
    res = tiled_gemm(a, b, acc_bits=18)
    assert res.out_exps.tolist() == [[5]]
    assert int(res.acc[0, 0]) == -(2 ** 17)
    assert res.saturated


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ops=operands(pairs=ALL_PAIRS, tiles=(2, 4, 8), max_side=10))
def test_saturated_flag_false_without_saturation(ops):
    """For short reductions the exponent rule leaves head room: nothing saturates."""
    a, b, bits = ops
    res, ref = run_both(a, b, bits)
    assert ref[2] is False
    assert not res.saturated
    lim = 1 << (bits - 1)
    assert np.all(res.acc >= -lim) and np.all(res.acc < lim)


def test_saturated_flag_false_for_full_scale_products():
    for ka, kb in ALL_PAIRS:
        hi_a = {"int4": -8, "uint4": 15, "fp4": 7}[ka]
        hi_b = {"int4": -8, "uint4": 15, "fp4": 7}[kb]
        for t in (2, 8, 64):
            a = QTensor(np.full((t, 3 * t), hi_a), np.zeros((1, 3)), ka, t)
            b = QTensor(np.full((3 * t, 2), hi_b), np.zeros((3, 1)), kb, t)
            for bits in (min_acc_bits(t), 32, ACC_BITS_MAX):
                res = tiled_gemm(a, b, acc_bits=bits)
                assert not res.saturated, (ka, kb, t, bits)


# --------------------------------------------------------------------------------------
# Bad inputs and NibbleParams
# --------------------------------------------------------------------------------------

def _q(kind, shape, tile, phase=0):
    mt, kt = (-(-v // tile) for v in shape)
    return QTensor(np.ones(shape, dtype=int), np.zeros((mt, kt), dtype=int), kind, tile, phase)


def test_tiled_gemm_rejects_tile_mismatch():
    with pytest.raises(ValueError):
        tiled_gemm(_q("int4", (4, 4), 2), _q("int4", (4, 4), 4))


@pytest.mark.parametrize("ka,kb", ILLEGAL_PAIRS)
def test_tiled_gemm_rejects_illegal_kind_pairs(ka, kb):
    """A uint4 B, or two fp4 operands, have no encoding in the PE: a one-line ValueError
    naming the pair, not a result the hardware would not give."""
    assert kb == "uint4" or (ka, kb) == ("fp4", "fp4")
    a, b = _q(ka, (2, 2), 2), _q(kb, (2, 2), 2)
    with pytest.raises(ValueError, match=f"cannot multiply {ka} \\(A\\) by {kb} \\(B\\)") as err:
        tiled_gemm(a, b)
    assert "\n" not in str(err.value)


def test_illegal_pairs_are_the_uint4_b_and_fp4_fp4_ones():
    assert sorted(ILLEGAL_PAIRS) == sorted([("int4", "uint4"), ("uint4", "uint4"),
                                            ("fp4", "uint4"), ("fp4", "fp4")])


def test_study_kind_fp4r2_pairs_as_fp4():
    check_kind_pair("uint4", "fp4r2")
    check_kind_pair("fp4r2", "int4")
    for ka, kb in (("fp4r2", "fp4"), ("fp4", "fp4r2"), ("int4", "uint4")):
        with pytest.raises(ValueError, match="cannot multiply"):
            check_kind_pair(ka, kb)


def test_tiled_gemm_rejects_inner_dimension_mismatch():
    with pytest.raises(ValueError):
        tiled_gemm(_q("int4", (3, 4), 2), _q("int4", (5, 3), 2))
    with pytest.raises(ValueError):
        tiled_gemm(_q("int4", (3, 4), 2), _q("int4", (3, 4), 2))


@pytest.mark.parametrize("t", [2, 4, 8, 16, 32, 64])
def test_tiled_gemm_acc_bits_range(t):
    a, b = _q("uint4", (3, 5), t), _q("fp4", (5, 2), t, 1)
    for bits in (min_acc_bits(t) - 1, 0, 1, ACC_BITS_MAX + 1, 63, 64, 128, -32):
        with pytest.raises(ValueError):
            tiled_gemm(a, b, acc_bits=bits)
    for bits in (True, 32.0, "32", None):
        with pytest.raises(ValueError):
            tiled_gemm(a, b, acc_bits=bits)
    for bits in (min_acc_bits(t), ACC_BITS_MAX):
        assert tiled_gemm(a, b, acc_bits=bits).acc_bits == bits


def test_tiled_gemm_rejects_non_qtensor_operands():
    with pytest.raises(ValueError):
        tiled_gemm(np.ones((2, 2)), _q("int4", (2, 2), 2))
    with pytest.raises(ValueError):
        tiled_gemm(_q("int4", (2, 2), 2), [[1, 1], [1, 1]])


def test_nibble_params_defaults_and_validation():
    p = NibbleParams()
    assert (p.tile, p.acc_bits) == (8, 32)
    for t in (2, 4, 8, 16, 32, 64):
        need = min_acc_bits(t)            # 18, 19, 20, 21, 22, 23
        assert need == {2: 18, 4: 19, 8: 20, 16: 21, 32: 22, 64: 23}[t]
        assert NibbleParams(t, need).acc_bits == need
        assert NibbleParams(t, ACC_BITS_MAX).acc_bits == ACC_BITS_MAX
        assert NibbleParams(np.int64(t), 32).tile == t
        assert type(NibbleParams(np.int64(t), 32).tile) is int
        for bad in (need - 1, ACC_BITS_MAX + 1, 63, 0, -1):
            with pytest.raises(ValueError):
                NibbleParams(t, bad)
    for bad_tile in (0, 1, 3, 128, True, 8.0, "8", None, -2):
        with pytest.raises(ValueError):
            NibbleParams(bad_tile, 32)
    for bad_bits in (True, False, 32.0, "32", None):
        with pytest.raises(ValueError):
            NibbleParams(8, bad_bits)
    with pytest.raises(Exception):
        p.tile = 4                        # frozen
    # lanes: default T, any power of two 1..T, one beat per L elements of a tile
    assert p.lanes == 8 and p.beats_per_tile == 8
    assert NibbleParams(4, 32, lanes=1).beats_per_tile == 16
    assert NibbleParams(4, 32, lanes=4) == NibbleParams(4, 32)
    for bad_lanes in (0, 3, 16, -1, True, 2.0, "2"):
        with pytest.raises(ValueError):
            NibbleParams(8, 32, lanes=bad_lanes)
