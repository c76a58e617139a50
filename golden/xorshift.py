"""The random bits of stochastic FP4 rounding: one xorshift32 generator per element column.

The hardware builds exactly this, and golden models it bit for bit, so stochastic
rounding stays as exact a contract as the deterministic modes.

Generator
    Marsaglia's xorshift32 with the shift triple (13, 17, 5) (Marsaglia, "Xorshift
    RNGs", J. Stat. Softw. 8(14), 2003): on a 32-bit state x,
    ``x ^= x << 13; x ^= x >> 17; x ^= x << 5`` (all mod 2**32). The state after the
    step is the step's output word. Its period is 2**32 - 1 over the non-zero states
    (0 maps to 0 and is never used); ``tests/test_golden_xorshift.py`` proves it from the
    step's matrix over GF(2). In hardware a step is 32 flip-flops and about 3 XORs per
    bit, no adder and no multiplier.

One generator per element column
    A result tile has T element columns c = 0..T-1; generator c serves every element of
    column c of every tile. With ``lanes`` = T (the default) that is one generator per
    lane. A build with fewer lanes keeps all T states and steps the one whose column a
    lane is processing, so the number of lanes still never changes a result (the
    invariant of :class:`golden.params.NibbleParams`).

Seeding
    The command carries a 32-bit unsigned seed s (:data:`SEED_BITS`). At the start of
    each GEMM (each call of :func:`element_words`), generator c is loaded with
    (s + (c + 1) * :data:`COLUMN_STRIDE`) mod 2**32, and with all ones
    (:data:`ZERO_SEED_STATE`) instead if that sum is 0, the one state xorshift cannot
    leave (in hardware: OR the sum with its zero flag replicated). Any 32-bit value is
    a valid seed. The stride is 2**32 / golden ratio, so the T starting states are far
    apart on the cycle and distinct for every T <= 64 (all ones is not j times the
    stride for any |j| < 64, so the replacement collides with no other column); the
    addition (not an XOR) keeps
    the XOR of two columns' streams from being the same sequence for every seed, which
    a linear generator would otherwise give. The host chooses the seed: xorshift is
    linear, so seeds that differ in a few bits give streams that agree in most bits for
    the first few steps; a host should draw seeds at random (training does, from its own
    seeded generator) rather than count them up.

Order of the steps
    A generator steps exactly once per element of its column that the output stage
    processes, whatever the element's value: masked, zero and padding elements of a
    partial edge tile all take their step. The order is the result stream's: output tile
    (i, j) with i outer and j inner, then tile rows 0..T-1. The element at row m, column
    n of the result therefore gets output number ((i * Nt + j) * T + m mod T) + 1 of
    generator n mod T, with (i, j) = (m // T, n // T) and Nt tile columns. One word
    serves both TPR phases (:data:`RAND_BITS` each): phase 0 takes bits 31..16, phase 1
    bits 15..0. A single-phase pass takes its phase's half of the same word, so the
    dual-phase unit gives, bit for bit, what two single-phase passes with the same seed
    give. Within one GEMM no generator wraps: a column sees at most
    256 * 256 * 64 = 2**22 elements, far below the period.
"""

from __future__ import annotations

import numpy as np

from .params import check_tile

__all__ = ["SEED_BITS", "RAND_BITS", "COLUMN_STRIDE", "ZERO_SEED_STATE", "SHIFTS", "check_seed", "step",
           "column_states", "column_words", "element_words", "phase_bits"]

#: Width of the command's seed.
SEED_BITS = 32
#: Width of the uniform random integer one rounding decision compares against.
RAND_BITS = 16
#: Added once per column when seeding: round(2**32 / golden ratio), odd.
COLUMN_STRIDE = 0x9E3779B9
#: A column whose seeded sum is 0 starts here instead.
ZERO_SEED_STATE = 0xFFFFFFFF
#: xorshift32's shift triple (left, right, left).
SHIFTS = (13, 17, 5)

_MASK = np.uint32(0xFFFFFFFF)


def check_seed(seed) -> int:
    """``seed`` as an int, or a one-line ``ValueError`` unless it is an integer in
    0..2**32-1."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer in 0..2**{SEED_BITS}-1, got {seed!r}")
    if not 0 <= int(seed) < 1 << SEED_BITS:
        raise ValueError(f"seed must be in 0..2**{SEED_BITS}-1, got {seed}")
    return int(seed)


def step(state: np.ndarray) -> np.ndarray:
    """One xorshift32 step of every state in ``state`` (uint32 array); returns the new
    states, which are also the output words."""
    x = np.asarray(state, dtype=np.uint32)
    left, right, left2 = (np.uint32(s) for s in SHIFTS)
    x = x ^ ((x << left) & _MASK)
    x = x ^ (x >> right)
    return x ^ ((x << left2) & _MASK)


def column_states(seed, tile: int) -> np.ndarray:
    """The T generators' states right after seeding with ``seed`` (uint32, shape (T,))."""
    seed = check_seed(seed)
    tile = check_tile(tile)
    states = [(seed + (c + 1) * COLUMN_STRIDE) % (1 << SEED_BITS) for c in range(tile)]
    return np.array([s if s else ZERO_SEED_STATE for s in states], dtype=np.uint32)


def column_words(seed, tile: int, steps: int) -> np.ndarray:
    """The first ``steps`` output words of each column's generator, uint32 (steps, T):
    row s is every generator's output at its (s + 1)-th step. ``seed`` may be a
    sequence of seeds: then one such array per seed, (len(seed), steps, T)."""
    many = np.ndim(seed) > 0
    states = (np.stack([column_states(int(s), tile) for s in seed]) if many
              else column_states(seed, tile))
    out = np.empty((steps, *states.shape), dtype=np.uint32)
    for s in range(steps):
        states = step(states)
        out[s] = states
    return np.moveaxis(out, 0, -2) if many else out


def element_words(seed, shape, tile: int) -> np.ndarray:
    """The 32-bit word each element of a (M, N) result gets, in the order of the module
    docstring (uint32, shape ``shape``; (len(seed), M, N) for a sequence of seeds)."""
    m, n = shape
    tile = check_tile(tile)
    mt, nt = -(-m // tile), -(-n // tile)
    words = column_words(seed, tile, mt * nt * tile)           # (tile i, tile j, row) x column
    lead = words.shape[:-2]
    words = words.reshape(*lead, mt, nt, tile, tile).swapaxes(-3, -2)
    return words.reshape(*lead, mt * tile, nt * tile)[..., :m, :n]


def phase_bits(words: np.ndarray, phase: int) -> np.ndarray:
    """The :data:`RAND_BITS`-bit random integer of TPR phase ``phase`` in each word:
    bits 31..16 for phase 0, bits 15..0 for phase 1 (int64)."""
    words = np.asarray(words, dtype=np.uint32).astype(np.int64)
    return (words >> RAND_BITS) if phase == 0 else (words & ((1 << RAND_BITS) - 1))
