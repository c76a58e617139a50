"""FP16 multiply, FP32 accumulate: the 16-bit baseline MAC that nibble's area is measured against.

The IBM paper compares its 4-bit MAC with "FP16 hardware": an IEEE binary16 multiply whose
product is accumulated in binary32, the MAC of mixed-precision training. :class:`FP16MAC` is
that MAC as a systolic-array PE would hold it, written as lean as it can be while staying
correct: one registered binary32 accumulator, the multiply and the add in one clock cycle,
no pipeline registers, no operand registers, no DSP blocks (``fpga/area.py`` synthesizes it
with DSPs disabled, like nibble's PE).

Semantics (what the tests check against NumPy)
    ``acc <- fp32(acc + fp32(a) * fp32(b))`` on every cycle with ``en`` high. The product of
    two binary16 normals has at most 22 significant bits and an exponent in -28..31, so it
    is exact in binary32; the sum is rounded once, to nearest, ties to even. This is NumPy's
    ``np.float32(acc) + np.float32(a) * np.float32(b)`` with all three in float32.

Subnormals: flushed to zero
    A binary16 input with exponent field 0 counts as a zero of its sign (denormals-are-zero),
    and a binary32 result below 2**-126 in magnitude is flushed to a zero of its sign
    (flush-to-zero). For this MAC the output flush never fires: every product is a multiple
    of 2**-48 (the least fp16 normal ulp, 2**-24, squared), so every accumulator value is
    too, and a nonzero one is at least 2**-48 >> 2**-126. The binary32 adder keeps the
    flush anyway (a few LUTs), so :func:`fp32_add` is a correct FTZ adder on its own.

Overflow
    A finite product is below 2**32 and cannot move an accumulator above 2**57 (from there
    on it is less than half an ulp), so finite inputs never overflow binary32. The adder
    still rounds an overflowing sum to an infinity of its sign, as IEEE 754 does.

Infinities and NaNs: propagated
    Inf and NaN inputs follow IEEE 754: inf * 0 and inf - inf give NaN, a NaN operand gives
    NaN, an infinity otherwise stays an infinity of its sign, and once ``acc`` holds an
    infinity or a NaN it keeps it until ``clear``. Every NaN the MAC produces is the quiet
    NaN 0x7FC00000 (NaN payloads and NaN signs are not propagated). Under denormals-are-zero
    a subnormal times an infinity is a zero times an infinity, i.e. NaN.

Zero signs
    A sum that is exactly zero is +0 unless both addends are -0 (round to nearest); products
    of zeros keep their sign. ``clear`` loads +0.
"""

# No ``from __future__ import annotations``: data.Struct reads its annotations as shapes.
from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["Binary16", "Binary32", "Unpacked32", "FP16MAC", "fp16_product", "unpack_binary32",
           "fp32_add", "QUIET_NAN"]

#: The one NaN the MAC writes: binary32 quiet NaN, sign 0, payload 0.
QUIET_NAN = 0x7FC00000


class Binary16(data.Struct):
    """An IEEE 754 binary16 (half precision) bit pattern.

    Members
    -------
    frac : unsigned(10)
        Fraction (significand without the hidden bit).
    exp : unsigned(5)
        Biased exponent (bias 15); 0 is zero or subnormal (read as zero), 31 is inf or NaN.
    sign : unsigned(1)
        1 for negative.
    """

    frac: unsigned(10)
    exp: unsigned(5)
    sign: unsigned(1)


class Binary32(data.Struct):
    """An IEEE 754 binary32 (single precision) bit pattern.

    Members
    -------
    frac : unsigned(23)
        Fraction (significand without the hidden bit).
    exp : unsigned(8)
        Biased exponent (bias 127); 0 is zero (subnormals are flushed), 255 is inf or NaN.
    sign : unsigned(1)
        1 for negative.
    """

    frac: unsigned(23)
    exp: unsigned(8)
    sign: unsigned(1)


class Unpacked32(data.Struct):
    """A binary32 value opened up for the adder.

    Members
    -------
    sig : unsigned(24)
        Significand with the hidden bit, 1.23 fixed point; 0 for a zero.
    exp : unsigned(8)
        Biased exponent (bias 127); 0 for a zero. Meaningless for inf and NaN.
    sign : unsigned(1)
        1 for negative (also for -0 and -inf).
    inf : unsigned(1)
        The value is an infinity.
    nan : unsigned(1)
        The value is a NaN.
    """

    sig: unsigned(24)
    exp: unsigned(8)
    sign: unsigned(1)
    inf: unsigned(1)
    nan: unsigned(1)


def unpack_binary32(m: Module, bits, name: str = "x"):
    """Open a binary32 pattern for :func:`fp32_add`.

    ``bits`` must not be a subnormal (exponent field 0 with a nonzero fraction): the hidden
    bit is ``exp != 0`` and the fraction is taken as it is. The MAC's accumulator never
    holds one, because the adder flushes them.

    Returns
    -------
    View of :class:`Unpacked32`
    """
    bits = Binary32(bits) if not isinstance(bits, data.View) else bits
    x = Signal(Unpacked32, name=name)
    top = bits.exp == 0xFF
    m.d.comb += [
        x.sig.eq(Cat(bits.frac, bits.exp != 0)),
        x.exp.eq(bits.exp),
        x.sign.eq(bits.sign),
        x.inf.eq(top & (bits.frac == 0)),
        x.nan.eq(top & (bits.frac != 0)),
    ]
    return x


def fp16_product(m: Module, a, b, name: str = "p"):
    """The exact binary32 product of two binary16 patterns, unpacked.

    Subnormal inputs are read as zeros. The 11 x 11-bit significand product lies in
    [1, 4); it is normalized to 1.21 (one 22-bit 2:1 multiplexer, which also forces the
    significand of a zero product to 0) and its exponent is ea + eb - 30 + 127 (+1 when
    the product is >= 2), always inside 99..158: never a binary32 overflow or subnormal.

    Returns
    -------
    View of :class:`Unpacked32`
    """
    a_zero, b_zero = a.exp == 0, b.exp == 0
    a_inf, b_inf = (a.exp == 0x1F) & (a.frac == 0), (b.exp == 0x1F) & (b.frac == 0)
    a_nan, b_nan = (a.exp == 0x1F) & (a.frac != 0), (b.exp == 0x1F) & (b.frac != 0)
    zero = Signal(name=f"{name}_zero")
    m.d.comb += zero.eq(a_zero | b_zero)

    prod = Signal(22, name=f"{name}_sig22")                 # [1, 4) in 2.20 fixed point
    m.d.comb += prod.eq(Cat(a.frac, C(1, 1)) * Cat(b.frac, C(1, 1)))
    high = prod[21]
    p = Signal(Unpacked32, name=name)
    m.d.comb += [
        p.sig.eq(Mux(zero, 0, Cat(C(0, 2), Mux(high, prod, prod << 1)[:22]))),
        p.exp.eq(Mux(zero, 0, a.exp + b.exp + (127 - 30) + high)),
        p.sign.eq(a.sign ^ b.sign),
        p.nan.eq(a_nan | b_nan | (a_inf & b_zero) | (b_inf & a_zero)),
        p.inf.eq((a_inf | b_inf) & ~(a_nan | b_nan)),   # inf * 0 is caught by nan first
    ]
    return p


def _shift_right_sticky(m: Module, value, amount, name: str):
    """``value >> amount`` (unsigned) as a logarithmic shifter, and the OR of every bit
    shifted out (collected per stage, so no mask of the shift amount is needed). The last
    bit of ``amount`` shifts everything out."""
    width = len(value)
    cur, sticky = value, C(0, 1)
    for k in range(len(amount)):
        step = 1 << k
        if step < width:
            shifted, lost = cur[step:], cur[:step].any()
        else:
            shifted, lost = C(0, width), cur.any()
        nxt = Signal(width, name=f"{name}_s{k}")
        m.d.comb += nxt.eq(Mux(amount[k], shifted, cur))
        sticky = sticky | (amount[k] & lost)
        cur = nxt
    return cur, sticky


def _normalize_left(m: Module, value, name: str):
    """Shift ``value`` left until its top bit is 1; returns (shifted, count). Each stage
    tests whether the top 2**k bits are zero, so the leading-zero count comes out of the
    shifter itself (16, 8, 4, 2, 1: up to 31 positions). A zero value gives a zero result."""
    width = len(value)
    cur = value
    count = []
    for k in reversed(range(5)):
        step = 1 << k
        zero_top = Signal(name=f"{name}_z{step}")
        m.d.comb += zero_top.eq(cur[width - step:] == 0)
        nxt = Signal(width, name=f"{name}_s{step}")
        m.d.comb += nxt.eq(Mux(zero_top, cur << step, cur))
        count.append(zero_top)
        cur = nxt
    return cur, Cat(*reversed(count))


def fp32_add(m: Module, x, y, name: str = "sum"):
    """Binary32 addition x + y, rounded to nearest even, subnormal results flushed to zero.

    A single-path adder: order the operands by magnitude (one 31-bit comparison, so the
    difference of significands is never negative), align the smaller with guard, round and
    sticky bits, add or subtract, normalize (a right shift by one or a left shift by the
    leading-zero count), round, and let the rounding carry ripple into the exponent.

    Parameters
    ----------
    x, y : View of :class:`Unpacked32`
        The addends (:func:`unpack_binary32`, :func:`fp16_product`).

    Returns
    -------
    View of :class:`Binary32`
        The rounded sum; NaN results are :data:`QUIET_NAN`.
    """
    x_big = Signal(name=f"{name}_x_big")
    m.d.comb += x_big.eq(Cat(x.sig[:23], x.exp) >= Cat(y.sig[:23], y.exp))
    big = Signal(Unpacked32, name=f"{name}_big")
    small = Signal(Unpacked32, name=f"{name}_small")
    m.d.comb += [big.eq(Mux(x_big, x, y)), small.eq(Mux(x_big, y, x))]
    subtract = big.sign ^ small.sign

    # 27-bit significands: 1.23, then guard, round and sticky.
    diff = Signal(8, name=f"{name}_diff")
    m.d.comb += diff.eq(big.exp - small.exp)
    amount = Cat(diff[:5], diff[5:].any())
    aligned, sticky = _shift_right_sticky(m, Cat(C(0, 2), small.sig), amount, f"{name}_align")
    big27 = Cat(C(0, 3), big.sig)
    small27 = Cat(sticky, aligned)
    raw = Signal(28, name=f"{name}_raw")
    m.d.comb += raw.eq(Mux(subtract, big27 - small27, big27 + small27))

    # raw < 8 (two significands below 2); normalize to 1.xxx in raw's top bit, i.e. one
    # position to the right of big27's leading bit: e = big.exp + 1 - count.
    norm, count = _normalize_left(m, raw, f"{name}_norm")
    is_zero = ~norm[27]
    exp = Signal(signed(10), name=f"{name}_exp")
    m.d.comb += exp.eq(big.exp + 1 - count)
    lsb, guard, rest = norm[4], norm[3], norm[:3].any()
    round_up = guard & (rest | lsb)
    # Exponent and fraction as one integer: a rounding carry out of the fraction
    # renormalizes, and one out of 254.111... lands on the infinity pattern by itself.
    packed = Signal(31, name=f"{name}_packed")
    m.d.comb += packed.eq(Cat(norm[4:27], exp[:8]) + round_up)
    overflow = exp >= 0xFF
    underflow = exp <= 0

    nan = x.nan | y.nan | (x.inf & y.inf & (x.sign != y.sign))
    inf = x.inf | y.inf
    out = Signal(Binary32, name=name)
    with m.If(nan):
        m.d.comb += out.as_value().eq(QUIET_NAN)
    with m.Elif(inf):
        m.d.comb += [out.exp.eq(0xFF), out.sign.eq(Mux(x.inf, x.sign, y.sign))]
    with m.Elif(is_zero):
        m.d.comb += out.sign.eq(x.sign & y.sign)          # +0 unless -0 + -0
    with m.Elif(underflow):
        m.d.comb += out.sign.eq(big.sign)                 # flush to a zero of its sign
    with m.Elif(overflow):
        m.d.comb += [out.exp.eq(0xFF), out.sign.eq(big.sign)]
    with m.Else():
        m.d.comb += [out.frac.eq(packed[:23]), out.exp.eq(packed[23:31]),
                     out.sign.eq(big.sign)]
    return out


class FP16MAC(wiring.Component):
    """FP16 x FP16 multiply with FP32 accumulate, one MAC per clock cycle.

    See the module docstring for the arithmetic (round to nearest even, subnormals flushed,
    inf/NaN propagated). The multiply and the add are combinational between the inputs
    and the accumulator register; a pipelined or systolic version would add registers,
    so this is the smallest form of the baseline.

    Attributes
    ----------
    a : In(Binary16)
        Multiplicand, an IEEE binary16 bit pattern.
    b : In(Binary16)
        Multiplier, an IEEE binary16 bit pattern.
    en : In(1)
        1: ``acc <- fp32(acc + a * b)`` at the clock edge; 0: ``acc`` holds.
    clear : In(1)
        1: ``acc <- +0`` at the clock edge (wins over ``en``); the reset value is +0 too.
    acc : Out(Binary32)
        The accumulator, an IEEE binary32 bit pattern (never subnormal).
    """

    a: In(Binary16)
    b: In(Binary16)
    en: In(1)
    clear: In(1)
    acc: Out(Binary32)

    def elaborate(self, platform):
        m = Module()
        product = fp16_product(m, self.a, self.b, "product")
        acc = unpack_binary32(m, self.acc, "acc_unpacked")
        total = fp32_add(m, acc, product, "total")
        with m.If(self.clear):
            m.d.sync += self.acc.eq(0)
        with m.Elif(self.en):
            m.d.sync += self.acc.eq(total)
        return m
