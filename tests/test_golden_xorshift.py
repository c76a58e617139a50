"""Tests of ``golden.xorshift``: the generator the stochastic FP4 rounding draws from.

The references here are scalar Python integers (no NumPy shared with the code under
test): Marsaglia's published first output, the step's matrix over GF(2) for the period,
and a walk over the result tiles for the order of the draws.
"""

from __future__ import annotations

import numpy as np
import pytest

from golden.xorshift import (COLUMN_STRIDE, RAND_BITS, SHIFTS, ZERO_SEED_STATE, check_seed,
                             column_states, column_words, element_words, phase_bits, step)

M32 = (1 << 32) - 1


def ref_step(x: int) -> int:
    """xorshift32 on a Python int, as Marsaglia (2003) writes it."""
    a, b, c = SHIFTS
    x ^= (x << a) & M32
    x ^= x >> b
    x ^= (x << c) & M32
    return x


def ref_states(seed: int, tile: int) -> list:
    states = [(seed + (c + 1) * COLUMN_STRIDE) % (1 << 32) for c in range(tile)]
    return [s or M32 for s in states]


# ---- the step ---------------------------------------------------------------------------

def test_first_output_is_marsaglias():
    """Marsaglia's paper gives 723471715 as the first output of xor32 from 2463534242,
    with the triple (13, 17, 5)."""
    assert SHIFTS == (13, 17, 5)
    assert int(step(np.array([2463534242], dtype=np.uint32))[0]) == 723471715


def test_vector_step_matches_scalar_reference():
    rng = np.random.default_rng(1)
    states = rng.integers(1, 1 << 32, size=500, dtype=np.uint64).astype(np.uint32)
    got = states
    want = [int(s) for s in states]
    for _ in range(5):
        got = step(got)
        want = [ref_step(s) for s in want]
    assert [int(g) for g in got] == want


def _gf2_apply(cols, x: int) -> int:
    """The GF(2) matrix with columns ``cols`` times the bit vector ``x``."""
    out, j = 0, 0
    while x:
        if x & 1:
            out ^= cols[j]
        x >>= 1
        j += 1
    return out


def _gf2_power(cols, n: int):
    result = [1 << j for j in range(32)]                        # identity
    base = list(cols)
    while n:
        if n & 1:
            result = [_gf2_apply(base, c) for c in result]
        base = [_gf2_apply(base, c) for c in base]
        n >>= 1
    return result


def test_period_is_two_to_the_32_minus_1():
    """The step is linear over GF(2); its order is 2**32 - 1 = 3*5*17*257*65537 exactly
    (M**n = I for n = 2**32 - 1, and for no n/q with q a prime factor), so every
    non-zero state lies on one cycle of that length."""
    cols = [ref_step(1 << j) for j in range(32)]
    identity = [1 << j for j in range(32)]
    n = (1 << 32) - 1
    assert _gf2_power(cols, n) == identity
    for q in (3, 5, 17, 257, 65537):
        assert _gf2_power(cols, n // q) != identity, q


def test_zero_is_a_fixed_point_the_seeding_avoids():
    assert int(step(np.zeros(1, np.uint32))[0]) == 0
    # the one seed that would put column 0 on state 0 gets all ones instead
    bad = (-COLUMN_STRIDE) % (1 << 32)
    states = column_states(bad, 8)
    assert states[0] == ZERO_SEED_STATE == M32 and np.all(states != 0)
    words = column_words(bad, 8, 16)
    assert np.all(words != 0)


# ---- seeding ----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 12345, (1 << 32) - 1, (-3 * COLUMN_STRIDE) % (1 << 32)])
@pytest.mark.parametrize("tile", [2, 8, 64])
def test_column_states_follow_the_rule(seed, tile):
    states = column_states(seed, tile)
    assert [int(s) for s in states] == ref_states(seed, tile)
    assert len(set(states.tolist())) == tile                      # distinct columns


def test_seeds_give_distinct_reproducible_streams():
    a = column_words(7, 8, 64)
    assert np.array_equal(a, column_words(7, 8, 64))
    for other in (8, 7 + (1 << 31), 0):
        assert not np.array_equal(a, column_words(other, 8, 64))
    # column c's stream is the scalar generator run from its seeded state
    seeded = ref_states(7, 8)
    for c in range(8):
        x, want = seeded[c], []
        for _ in range(64):
            x = ref_step(x)
            want.append(x)
        assert [int(w) for w in a[:, c]] == want


@pytest.mark.parametrize("bad", [-1, 1 << 32, 1.5, True, "7", None, np.float64(3.0)])
def test_bad_seeds_are_one_line_value_errors(bad):
    with pytest.raises(ValueError, match="seed") as info:
        check_seed(bad)
    assert "\n" not in str(info.value)


# ---- the order of the draws -------------------------------------------------------------

@pytest.mark.parametrize("shape, tile", [((8, 8), 8), ((13, 21), 8), ((5, 3), 4), ((70, 9), 64)])
def test_element_words_follow_the_result_stream(shape, tile):
    """Tile (i, j) with i outer, j inner, rows 0..T-1; column n mod T's generator steps
    once per element, padding of partial tiles included."""
    m, n = shape
    mt, nt = -(-m // tile), -(-n // tile)
    gens = ref_states(99, tile)
    want = np.zeros((mt * tile, nt * tile), dtype=np.int64)
    for i in range(mt):
        for j in range(nt):
            for row in range(tile):
                for c in range(tile):
                    gens[c] = ref_step(gens[c])
                    want[i * tile + row, j * tile + c] = gens[c]
    got = element_words(99, shape, tile)
    assert got.shape == shape
    assert np.array_equal(got.astype(np.int64), want[:m, :n])


def test_phase_halves():
    words = np.array([0x12345678, 0xFFFF0000, 0x0000FFFF], dtype=np.uint32)
    assert phase_bits(words, 0).tolist() == [0x1234, 0xFFFF, 0]
    assert phase_bits(words, 1).tolist() == [0x5678, 0, 0xFFFF]
    assert RAND_BITS == 16


# ---- statistics ---------------------------------------------------------------------------

def test_columns_are_independent_and_uniform():
    """Over 4096 draws: the 16-bit numbers of any two columns (and the two halves of one
    word) are uncorrelated within 4.5 sigma, no two columns share a word, and the top
    four bits are uniform (chi-square, 15 degrees of freedom, p > 1e-4)."""
    tile, n = 8, 4096
    words = column_words(2024, tile, n)
    sigma = 1 / np.sqrt(n)
    for half in (0, 1):
        u = phase_bits(words, half).astype(np.float64)
        corr = np.corrcoef(u.T)
        off = corr[~np.eye(tile, dtype=bool)]
        assert np.max(np.abs(off)) < 4.5 * sigma, np.max(np.abs(off))
        counts = np.bincount((u.astype(np.int64) >> 12).ravel(), minlength=16)
        expect = u.size / 16
        assert np.sum((counts - expect) ** 2 / expect) < 46.0       # chi2(15) at 1e-4
    hi, lo = (phase_bits(words, h).astype(np.float64).ravel() for h in (0, 1))
    assert abs(np.corrcoef(hi, lo)[0, 1]) < 4.5 / np.sqrt(hi.size)
    seen = [set(words[:, c].tolist()) for c in range(tile)]
    assert all(not (seen[a] & seen[b]) for a in range(tile) for b in range(a + 1, tile))


def test_rounding_decisions_of_columns_are_independent():
    """The event 'u < 2**14' (probability 1/4) of two columns coincides as often as
    independence predicts (1/16), within 5 sigma."""
    words = column_words(31337, 16, 8192)
    ev = phase_bits(words, 0) < (1 << 14)
    for a, b in ((0, 1), (3, 4), (0, 15), (7, 8)):
        both = np.mean(ev[:, a] & ev[:, b])
        sigma = np.sqrt(1 / 16 * 15 / 16 / len(ev))
        assert abs(both - 1 / 16) < 5 * sigma, (a, b, both)
