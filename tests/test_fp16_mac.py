"""Tests of ``fpga.fp16_mac``: the FP16-multiply, FP32-accumulate baseline MAC, in the
Amaranth simulator, against NumPy float16/float32 arithmetic.

The reference applies the MAC's documented subnormal rule (binary16 subnormal inputs read
as zeros of their sign, binary32 subnormal results flushed to zeros of their sign) and
otherwise is plain NumPy: ``np.float32(acc) + np.float32(a) * np.float32(b)``, every
operand float32, so the product is exact and the sum rounded once to nearest even. Results
are compared bit for bit; a NaN must be the quiet NaN 0x7FC00000.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from fpga.fp16_mac import FP16MAC, QUIET_NAN, Binary32, fp32_add, unpack_binary32

F32_MIN_NORMAL = np.float32(2.0 ** -126)


# --- NumPy reference ------------------------------------------------------------------

def half(bits: int) -> np.float32:
    """A binary16 pattern as float32, subnormals read as zeros of their sign."""
    value = np.array([bits], dtype=np.uint16).view(np.float16)[0]
    if (bits >> 10) & 0x1F == 0:
        value = np.float16(-0.0) if bits & 0x8000 else np.float16(0.0)
    return np.float32(value)


def flush(x: np.float32) -> np.float32:
    """Flush a binary32 subnormal to a zero of its sign."""
    if x != 0 and abs(x) < F32_MIN_NORMAL:
        return np.float32(np.copysign(np.float32(0.0), x))
    return x


def bits32(x: np.float32) -> int:
    """The bit pattern the MAC must show for ``x`` (NaNs as the quiet NaN)."""
    if np.isnan(x):
        return QUIET_NAN
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def f32(bits: int) -> np.float32:
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def f16_bits(value) -> int:
    return int(np.array([value], dtype=np.float16).view(np.uint16)[0])


def mac_reference(steps) -> list[int]:
    """Accumulator bits after each step (a_bits, b_bits, en, clear)."""
    acc = np.float32(0.0)
    out = []
    with np.errstate(all="ignore"):
        for a, b, en, clear in steps:
            if clear:
                acc = np.float32(0.0)
            elif en:
                acc = flush(np.float32(acc + half(a) * half(b)))
            out.append(bits32(acc))
    return out


# --- Simulation -----------------------------------------------------------------------

def run_mac(steps) -> list[int]:
    """Drive (a_bits, b_bits, en, clear) per clock cycle; the accumulator after each."""
    dut = FP16MAC()
    got = []

    async def testbench(ctx):
        for a, b, en, clear in steps:
            ctx.set(dut.a.as_value(), a)
            ctx.set(dut.b.as_value(), b)
            ctx.set(dut.en, en)
            ctx.set(dut.clear, clear)
            await ctx.tick()
            got.append(ctx.get(dut.acc.as_value()))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return got


def check_mac(steps):
    got = run_mac(steps)
    want = mac_reference(steps)
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            a, b, en, clear = steps[i]
            prev = want[i - 1] if i else 0
            raise AssertionError(
                f"step {i}: acc {g:#010x} ({f32(g)!r}), expected {w:#010x} ({f32(w)!r}); "
                f"a={a:#06x} ({half(a)!r}) b={b:#06x} ({half(b)!r}) en={en} clear={clear}, "
                f"acc before {prev:#010x} ({f32(prev)!r})")
    return got


class AdderHarness(Elaboratable):
    """The MAC's binary32 adder alone, on arbitrary (non-subnormal) binary32 inputs."""

    def __init__(self):
        self.x = Signal(32)
        self.y = Signal(32)
        self.sum = Signal(32)

    def elaborate(self, platform):
        m = Module()
        x = unpack_binary32(m, Binary32(self.x), "x")
        y = unpack_binary32(m, Binary32(self.y), "y")
        m.d.comb += self.sum.eq(fp32_add(m, x, y, "s"))
        return m


def check_adder(pairs):
    dut = AdderHarness()
    got = []

    async def testbench(ctx):
        for x, y in pairs:
            ctx.set(dut.x, x)
            ctx.set(dut.y, y)
            got.append(ctx.get(dut.sum))

    sim = Simulator(dut)
    sim.add_testbench(testbench)
    sim.run()
    with np.errstate(all="ignore"):
        for (x, y), g in zip(pairs, got):
            w = bits32(flush(np.float32(f32(x) + f32(y))))
            assert g == w, (f"{f32(x)!r} + {f32(y)!r}: got {g:#010x} ({f32(g)!r}), "
                            f"expected {w:#010x} ({f32(w)!r})")


# --- MAC tests ------------------------------------------------------------------------

ONE, TWO, HALF = f16_bits(1.0), f16_bits(2.0), f16_bits(0.5)
MAX16, MIN16 = 0x7BFF, 0x0400              # 65504 and 2**-14
INF16, NINF16, NAN16 = 0x7C00, 0xFC00, 0x7E00
P0, N0 = 0x0000, 0x8000


def steps_of(*pairs, en=1, clear=0):
    return [(a, b, en, clear) for a, b in pairs]


def test_zeros_and_signs():
    """+0 and -0 products and sums: +0 unless both addends are -0; clear loads +0."""
    got = check_mac(steps_of((N0, P0), (P0, N0), (N0, N0), (ONE, N0), (0x8001, ONE),
                             (ONE, ONE), (f16_bits(-1.0), ONE), (N0, ONE)))
    assert got[0] == 0 and got[5] == bits32(np.float32(1.0)) and got[6] == 0


def test_extreme_normals():
    """max * max, min * min (2**-28: exact, far below 1's half ulp), and their cancellation."""
    check_mac(steps_of((MAX16, MAX16), (MAX16, MAX16 | 0x8000), (MIN16, MIN16),
                       (ONE, ONE), (MIN16, MIN16), (MIN16 | 0x8000, MIN16),
                       (MAX16, MIN16), (0xFBFF, 0xFBFF)))


def test_rounding_ties_to_even():
    """1 + 2**-24 is a tie (stays 1: even); (1 + 2**-23) + 2**-24 rounds up to the even
    1 + 2**-22; a tie with sticky bits below it rounds up."""
    tiny = f16_bits(2.0 ** -12)                      # tiny * tiny = 2**-24
    got = check_mac(steps_of((ONE, ONE), (tiny, tiny), (tiny, f16_bits(2.0 ** -11)),
                             (tiny, tiny)))
    assert got[1] == bits32(np.float32(1.0))
    assert got[3] == bits32(np.float32(1.0 + 2.0 ** -22))
    # 1 + 2**-24 + 2**-48 is above the tie: rounds up.
    check_mac([(0, 0, 0, 1)] + steps_of((ONE, ONE), (f16_bits(2.0 ** -24 * 1.5), ONE),
                                        (f16_bits(-(2.0 ** -24 * 0.5)), ONE)))


def test_cancellation():
    """Sums that cancel all but a few low bits need a long left normalization."""
    a = f16_bits(1.0009765625)                     # 1 + 2**-10
    b = f16_bits(1.0 + 3 * 2.0 ** -10)
    check_mac(steps_of((a, b), (a | 0x8000, b), (a, b), (f16_bits(-1.0), b),
                       (a, a), (f16_bits(-1.0), f16_bits(1.001953125))))


def test_subnormal_inputs_flush():
    """Subnormal binary16 inputs count as zeros of their sign."""
    got = check_mac(steps_of((0x0001, MAX16), (0x03FF, 0x03FF), (ONE, ONE), (0x8200, MAX16)))
    assert got[0] == 0 and got[2] == got[3] == bits32(np.float32(1.0))


def test_infinity_and_nan_propagate():
    """inf * x is inf, inf * 0 (also a subnormal) and inf - inf are NaN, NaN stays until
    clear."""
    check_mac(steps_of((INF16, ONE), (ONE, ONE), (INF16, TWO), (NINF16, ONE), (ONE, ONE))
              + [(0, 0, 0, 1)]
              + steps_of((NINF16, HALF), (NINF16, NINF16))
              + [(0, 0, 1, 1)]
              + steps_of((INF16, P0)) + [(0, 0, 0, 1)]
              + steps_of((0x0001, INF16)) + [(0, 0, 0, 1)]
              + steps_of((ONE, NAN16 | 0x8000), (ONE, ONE)) + [(0, 0, 0, 1)]
              + steps_of((MAX16, MAX16), (0xFE01, ONE)))


def test_enable_and_clear():
    """en low holds the accumulator; clear wins over en."""
    check_mac([(ONE, TWO, 1, 0), (ONE, TWO, 0, 0), (MAX16, MAX16, 0, 0), (ONE, TWO, 1, 1),
               (HALF, HALF, 1, 0), (HALF, HALF, 0, 1), (HALF, HALF, 1, 0)])


def test_random_full_range_finite():
    """Uniformly random finite binary16 patterns (subnormals included), random en and
    occasional clears: operands across every exponent, big and small sums."""
    rng = np.random.default_rng(1)
    n = 3000
    a = rng.integers(0, 1 << 16, n)
    b = rng.integers(0, 1 << 16, n)
    a[(a >> 10) & 0x1F == 0x1F] &= 0xBFFF           # no inf/NaN: exponent 31 -> 15
    b[(b >> 10) & 0x1F == 0x1F] &= 0xBFFF
    en = rng.random(n) < 0.9
    clear = rng.random(n) < 0.02
    check_mac([(int(x), int(y), int(e), int(c)) for x, y, e, c in zip(a, b, en, clear)])


def test_random_dot_products():
    """Gaussian operands as in training (many cancellations, acc near the products),
    dot products of length 1..64, each started by clear."""
    rng = np.random.default_rng(2)
    steps = []
    while len(steps) < 3000:
        k = int(rng.integers(1, 65))
        scale = 2.0 ** rng.integers(-12, 8)
        a = (rng.normal(size=k) * scale).astype(np.float16).view(np.uint16)
        b = rng.normal(size=k).astype(np.float16).view(np.uint16)
        steps.append((0, 0, 0, 1))
        steps += [(int(x), int(y), 1, 0) for x, y in zip(a, b)]
    check_mac(steps)


def test_random_with_specials():
    """Random patterns including infinities and NaNs (about one in 16 operands), cleared
    often enough that finite sums keep being checked."""
    rng = np.random.default_rng(3)
    n = 1500
    a = rng.integers(0, 1 << 16, n)
    b = rng.integers(0, 1 << 16, n)
    special = rng.random(n) < 0.06
    a[special] = rng.choice([INF16, NINF16, NAN16, 0xFC01, P0, N0], special.sum())
    clear = rng.random(n) < 0.1
    check_mac([(int(x), int(y), 1, int(c)) for x, y, c in zip(a, b, clear)])


# --- binary32 adder tests -------------------------------------------------------------

def fp32_bits(sign, exp, frac):
    return (np.asarray(sign, np.int64) << 31) | (np.asarray(exp, np.int64) << 23) | frac


def test_adder_random_alignment():
    """x + y over every exponent difference 0..40 and beyond, both signs, full fractions;
    near-equal fractions force deep cancellation."""
    rng = np.random.default_rng(4)
    n = 2500
    ex = rng.integers(1, 255, n)
    ey = np.clip(ex - rng.integers(-40, 41, n), 1, 254)
    fx = rng.integers(0, 1 << 23, n)
    fy = rng.integers(0, 1 << 23, n)
    close = rng.random(n) < 0.3                     # nearly equal magnitudes
    ey[close] = ex[close] - rng.integers(0, 2, close.sum())
    ey = np.clip(ey, 1, 254)
    fy[close] = (fx[close] + rng.integers(-4, 5, close.sum())) % (1 << 23)
    x = fp32_bits(rng.integers(0, 2, n), ex, fx)
    y = fp32_bits(rng.integers(0, 2, n), ey, fy)
    check_adder([(int(a), int(b)) for a, b in zip(x, y)])


def test_adder_edges():
    """Overflow to inf, underflow flushed to signed zero, zeros, inf and NaN operands,
    exact cancellation, round-to-even carries into the exponent."""
    fmax, fmin = 0x7F7FFFFF, 0x00800000
    inf, ninf, nan = 0x7F800000, 0xFF800000, 0x7FC00001
    one = 0x3F800000
    pairs = [
        (fmax, fmax), (fmax, 0x73000000), (fmax, 0x73000001), (fmax | 1 << 31, 0xF3800000),
        (0x00C00000, 0x80A00000), (0x80C00000, 0x00A00000),      # 1.5m - 1.25m: subnormal
        (0x00E00000, 0x80800000), (0x80E00000, 0x00800000),      # 0.75m: exponent field 0
        (fmin, 0x80800001), (0x00800001, 0x80800000), (fmin, fmin), (fmin, 0x80800000),
        (0, 0), (0, 1 << 31), (1 << 31, 1 << 31), (one, 1 << 31), (1 << 31, one | 1 << 31),
        (one, one | 1 << 31), (0x3FFFFFFF, 0x33800000), (0x3FFFFFFF, 0x33000000),
        (0x3F7FFFFF, 0x33800000), (0x3F7FFFFF, 0x33000000), (one, 0xB3800000),
        (one, 0xB3000001), (inf, one), (one, ninf), (inf, inf), (inf, ninf), (ninf, inf),
        (nan, one), (one, nan), (nan, inf), (fmax, 0), (0, fmin),
    ]
    check_adder(pairs + [(y, x) for x, y in pairs])
