"""Processing element: one 4-bit MAC of the output-stationary systolic array.

A PE owns one element P[m, n] of a T x T output tile. Each step it takes the operand pair
that reaches it, forms the exact integer product ``a * b`` and adds it to a narrow
accumulator (``NibbleParams.psum_bits`` bits). On the step that carries a tile
reduction's last product it hands the finished partial sum to a second register
(``psum``) and restarts, so the next tile accumulates while the previous one drains.

Operand values (the golden model's :func:`golden.formats.element_values`)
    a: a 4-bit code read as int4 (-8..7) or uint4 (0..15).
    b: a 4-bit code read as int4 (-8..7, the PE multiplies) or radix-4 FP4
    [s | e2 e1 e0] with value (-1)**s * 4**(e-1), 0 for e == 0 (the PE shifts).
    The tile exponent and the TPR phase are not part of the element; they are applied
    once per tile at the array edge, so the PE never rescales.

Why the operands are re-encoded at the array edge
    The raw codes are re-encoded once per row (a) and once per column (b) by
    :func:`encode_a` and :func:`encode_b`, and the PEs see only the encoded form:

    * a as sign and magnitude (|a| <= 15, 4 bits), so a shifted magnitude never needs
      sign-extension muxes;
    * b as sign and one 4-bit magnitude code that holds both kinds: 0..8 is an int4
      magnitude |b|, 9..15 is an FP4 exponent e = 1..7 (code 8 + e), 0 is zero. The
      mode travels with the operand, so the PE has no mode inputs and the mode may
      change at any step.

    The product's sign s = sign(a) xor sign(b) is applied as ``acc + (t xor s) + s`` (a
    conditional two's-complement negation folded into the accumulator's carry-in), and
    the int4 multiply |a| * |b| (|b| <= 8) is one 7-bit addition X + Y with
    X in {0, 4|a|, 8|a|} and Y in {0, |a|, 2|a|, -|a|}: 3 = 4 - 1, 5 = 4 + 1,
    6 = 4 + 2, 7 = 8 - 1. This keeps a full PE near the size of a bare shift-MAC.
"""

# No ``from __future__ import annotations``: data.Struct reads its annotations as shapes.
from amaranth.hdl import C, Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams

from .pipeline import REPLICA_SUFFIX, stage

__all__ = ["OperandA", "OperandB", "Decoded", "PE", "add_with_carry", "encode_a", "encode_b",
           "encode_swapped", "decode_operands", "product_magnitude", "PRODUCT_BITS"]

#: Width (with sign) of one PE product: |uint4 * fp4| <= 15 * 4**6 = 61440 < 2**16.
PRODUCT_BITS = 17
#: First magnitude code of the FP4 range: code = FP4_CODE_BASE + e for e = 1..7.
FP4_CODE_BASE = 8


class OperandA(data.Struct):
    """Operand a as it travels along a PE row (5 bits).

    Members
    -------
    mag : unsigned(4)
        |a|, 0..15 (int4 -8 gives 8); with ``swap``, a's FP4 magnitude code (as in
        :class:`OperandB`).
    neg : unsigned(1)
        1 if a < 0.
    swap : unsigned(1)
        a is the FP4 operand (dY in dX = dY . W^T) and b the int4 one: the PE exchanges
        the roles of ``mag`` and ``b.code`` (:func:`encode_swapped`).
    """

    mag: unsigned(4)
    neg: unsigned(1)
    swap: unsigned(1)


class OperandB(data.Struct):
    """Operand b as it travels down a PE column (5 bits).

    Members
    -------
    code : unsigned(4)
        Magnitude code: 0 is zero; 1..8 an int4 magnitude |b|; 9..15 an FP4 power
        4**(code-9), i.e. FP4 exponent field e = code - 8.
    neg : unsigned(1)
        The sign bit of b (int4: b < 0; FP4: the s bit, even when e == 0).
    """

    code: unsigned(4)
    neg: unsigned(1)


def encode_a(code, a_signed) -> Value:
    """Re-encode an operand-a code into :class:`OperandA` bits.

    Parameters
    ----------
    code : Value, 4 bits
        The a element code: two's complement int4 or uint4.
    a_signed : Value, 1 bit
        1: ``code`` is int4, 0: uint4.

    Returns
    -------
    Value
        5 bits, laid out as :class:`OperandA`.
    """
    code = Value.cast(code)
    neg = a_signed & code[3]
    return Cat(Mux(neg, -code, code)[:4], neg, C(0, 1))


def encode_swapped(a_code, b_code):
    """Encode an FP4 a and an int4 b with exchanged roles (``OperandA.swap`` set).

    The PE multiplies a magnitude by a magnitude code, and only b's path decodes FP4.
    For an FP4 a the row edge therefore sends a's FP4 magnitude code, the column edge
    sends |b| (an int4 magnitude, which is also a valid :class:`OperandB` int code),
    and every PE swaps the two 4-bit fields back: two 4-bit muxes per PE.

    Returns
    -------
    (Value, Value)
        :class:`OperandA` and :class:`OperandB` bits.
    """
    a_fp4 = encode_b(a_code, C(1, 1))
    b_int = encode_a(b_code, C(1, 1))
    return Cat(a_fp4[:5], C(1, 1)), b_int[:5]


def encode_b(code, b_fp4) -> Value:
    """Re-encode an operand-b code into :class:`OperandB` bits.

    Parameters
    ----------
    code : Value, 4 bits
        The b element code: two's complement int4, or FP4 [s | e2 e1 e0].
    b_fp4 : Value, 1 bit
        1: ``code`` is FP4, 0: int4.

    Returns
    -------
    Value
        5 bits, laid out as :class:`OperandB`.
    """
    code = Value.cast(code)
    exp = code[:3]
    fp4_code = Cat(exp, exp.any())          # FP4_CODE_BASE + e, or 0 for e == 0
    int4_code = Mux(code[3], -code, code)[:4]
    return Cat(Mux(b_fp4, fp4_code, int4_code), code[3])


def add_with_carry(m: Module, x: Value, y: Value, carry_in: Value, width: int) -> Value:
    """``(x + y + carry_in) mod 2**width`` as one adder: the carry-in enters through an
    extra low bit (1 + carry_in), which maps onto a single carry chain."""
    total = Signal(width + 1)
    m.d.comb += total.eq(Cat(C(1, 1), x[:width]) + Cat(carry_in, y[:width]))
    return total[1:]


def magnitude(m: Module, x: Value, zero: Value = C(0, 1)) -> Value:
    """|x| of a signed ``x`` as an unsigned value of its width (so |-2**(w-1)| fits),
    or 0 where ``zero``: (x xor s) + s with s the sign, one carry chain behind one LUT
    per bit (not a negation and a multiplexer)."""
    width = len(x)
    s = x[-1] & ~zero
    flipped = Signal(width, name="mag_flip")
    m.d.comb += flipped.eq(Mux(zero, 0, x.as_unsigned() ^ s.replicate(width)))
    return add_with_carry(m, flipped, C(0, width), s, width)


class PE(wiring.Component):
    """One MAC of the systolic array: accumulates a tile reduction, double-buffered.

    The PE never stalls and has no enable. Every cycle it registers the operands, the
    ``valid`` bit and the ``last`` flag that reach it and passes them on unchanged on
    ``a_out``/``b_out``/``valid_out``/``last_out`` (a moves right with its two flags,
    b moves down). Three pipeline stages follow, each a few levels of logic, so that a
    PE closes timing however far the router takes its wires: (1) the operands are
    decoded (:func:`decode_operands`), (2) the product's magnitude is formed
    (:func:`product_magnitude`), (3) it is added to the accumulator with its sign. A
    step whose ``valid`` bit is 0 is a bubble: the accumulator holds. When the flag
    says a product is the tile's last, the sum goes to ``psum`` and the accumulator
    clears. (Decode and product in one stage saved 18 flip-flops per PE, but that
    stage took 12-13.5 ns in the first 16 x 16 build that routed: the PE's cells
    spread out in a full die.)

    Timing, in clock cycles: operands presented on ``a_in``/``b_in`` in cycle c are
    decoded in cycle c + 1, multiplied in cycle c + 2 and accumulated in cycle c + 3
    (:attr:`LATENCY` = 3). If ``last_in`` was high in cycle c, ``capture`` is high in
    cycle c + 3 and ``psum`` holds the finished sum from cycle c + 4 on, until the next
    tile's last product replaces it (at the earliest T cycles later).

    Parameters
    ----------
    params : NibbleParams
        Only ``params.tile`` is used: it sets the accumulator width.

    Attributes
    ----------
    a_in : In(OperandA)
        Operand a of this step (from the left neighbour, or the row edge).
    b_in : In(OperandB)
        Operand b of this step (from the neighbour above, or the column edge).
    valid_in : In(1)
        1 if this step carries a k-step of a tile reduction, 0 for a bubble.
    last_in : In(1)
        1 if this step's operands are the last of a tile reduction (k = T - 1); only
        together with ``valid_in``.
    a_out, b_out, valid_out, last_out
        The registered ``a_in``, ``b_in``, ``valid_in``, ``last_in``, for the
        neighbours (a and its flags go right, b goes down).
    clear : In(1)
        Clears the accumulator (with priority over a product): the array's registered
        copy of the reset, so that a GEMM cut short by a reset leaves nothing behind.
        The operand and product registers have no reset: ``valid`` guards them.
    psum : Out(signed(params.psum_bits))
        The last finished tile partial sum sum_k a[k] * b[k], an exact integer in
        element units (no tile exponent, no phase).
    capture : Out(1)
        1 in the cycle in which ``psum`` takes a finished sum (it holds it from the
        next cycle on).
    psum_bits : int
        Width of ``psum`` and of the accumulator: ``params.psum_bits``.
    LATENCY : int
        Cycles from the last operands on ``a_in``/``b_in`` to ``capture``: 3.
    """

    LATENCY = 3

    def __init__(self, params: NibbleParams):
        self.psum_bits = params.psum_bits
        super().__init__({
            "a_in": In(OperandA),
            "b_in": In(OperandB),
            "valid_in": In(1),
            "last_in": In(1),
            "a_out": Out(OperandA),
            "b_out": Out(OperandB),
            "valid_out": Out(1),
            "last_out": Out(1),
            "clear": In(1),
            "psum": Out(signed(self.psum_bits)),
            "capture": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        width = self.psum_bits

        # Stage 0: the operands and their flags (data registers without reset).
        a = Signal(OperandA, reset_less=True)
        b = Signal(OperandB, reset_less=True)
        # The valid and last bits of PE (m, n) depend on m + n only: every PE of an
        # anti-diagonal has the same ones, and synthesis would merge them into one
        # flip-flop per diagonal, routed across the whole array (the worst paths of
        # the first 16 x 16 build, 14 ns of routing). Named as copies, each PE keeps its
        # own (see rtl.pipeline).
        valid = Signal(name=f"valid{REPLICA_SUFFIX}")
        last = Signal(name=f"last{REPLICA_SUFFIX}")
        m.d.sync += [a.eq(self.a_in), b.eq(self.b_in), valid.eq(self.valid_in),
                     last.eq(self.last_in)]
        m.d.comb += [self.a_out.eq(a), self.b_out.eq(b), self.valid_out.eq(valid),
                     self.last_out.eq(last)]

        # Stage 1: which field is the magnitude, which the code, and the code decoded.
        dec = Signal(Decoded, name="decoded", reset_less=True)
        m.d.sync += dec.eq(decode_operands(m, a, b))
        valid1 = Signal(name=f"valid1{REPLICA_SUFFIX}")
        last1 = Signal(name=f"last1{REPLICA_SUFFIX}")
        m.d.sync += [valid1.eq(valid), last1.eq(last)]
        # Stage 2: the product's magnitude (one 7-bit add, or a one-hot shift).
        term = stage(m, product_magnitude(m, dec), "term")
        neg2 = stage(m, dec.neg, "neg2")
        valid2 = Signal(name=f"valid2{REPLICA_SUFFIX}")
        last2 = Signal(name=f"last2{REPLICA_SUFFIX}")
        m.d.sync += [valid2.eq(valid1), last2.eq(last1)]

        # Stage 3: acc + (|product| xor neg) + neg = acc +- |product|.
        acc = Signal(signed(width), reset_less=True)
        term_wide = Signal(signed(width))
        m.d.comb += term_wide.eq(Cat(term ^ neg2.replicate(PRODUCT_BITS - 1), neg2).as_signed())
        total = add_with_carry(m, acc, term_wide, neg2, width)
        # The capture and the clear share one condition, which maps onto the flip-flops'
        # synchronous reset (one LUT per PE, none per bit).
        with m.If(valid2):
            m.d.sync += acc.eq(total)
        with m.If(last2 | self.clear):
            m.d.sync += acc.eq(0)
        # The finished sum: datapath, no reset (the array reads it only on ``capture``;
        # a reset on it was one more load of the board reset on every PE).
        psum = Signal.like(self.psum, reset_less=True)
        with m.If(last2):
            m.d.sync += psum.eq(total)
        m.d.comb += [self.psum.eq(psum), self.capture.eq(last2)]
        return m


class Decoded(data.Struct):
    """A PE's operands after stage 1: the magnitude that is multiplied, the multiplier
    code decoded, and the product's sign.

    Members
    -------
    mag : unsigned(4)
        |a| (or, swapped, |b|).
    sel : unsigned(7)
        One-hot FP4 exponent: bit k set for the power 4**k (code 9 + k); 0 for int4.
    x4, x8, y1, y0 : unsigned(1)
        The int4 multiply as X + Y: X = 4|a| (x4) or 8|a| (x8), Y = |a| (y0), 2|a| (y1)
        or -|a| (both).
    neg : unsigned(1)
        The product is negative (a's sign xor b's).
    """

    mag: unsigned(4)
    sel: unsigned(7)
    x4: unsigned(1)
    x8: unsigned(1)
    y1: unsigned(1)
    y0: unsigned(1)
    neg: unsigned(1)


def decode_operands(m: Module, a: Value, b: Value) -> Value:
    """:class:`Decoded` bits of registered operands ``a`` (:class:`OperandA`) and ``b``
    (:class:`OperandB`): two levels of logic (the swap multiplexer, the decode)."""
    code = Mux(a.swap, a.mag, b.code)
    return Cat(
        Mux(a.swap, b.code, a.mag),
        Cat(*(code == FP4_CODE_BASE + 1 + k for k in range(7))),
        (code >= 3) & (code <= 6),                   # X = 4|a| for |b| = 3..6
        (code == 7) | (code == 8),                   # X = 8|a| for |b| = 7, 8
        code[1] & ~code[3],                          # Y = 2|a| (y = 2) or -|a| (y = 3)
        code[0] & ~code[3],                          # Y = |a| (y = 1) or -|a| (y = 3)
        a.neg ^ b.neg,
    )


def product_magnitude(m: Module, dec) -> Value:
    """|a * b| (PRODUCT_BITS - 1 bits) from :class:`Decoded` operands: the int4 product
    as one 7-bit addition X + Y (|b| <= 8: 3 = 4 - 1, 5 = 4 + 1, 6 = 4 + 2, 7 = 8 - 1),
    ORed with the FP4 product |a| << 2(e-1), a one-hot select per exponent (at most two
    candidate magnitude bits per product bit, no barrel shifter); one of them is 0."""
    mag7 = Cat(dec.mag, C(0, 3))
    x = Signal(7)
    y = Signal(7)
    m.d.comb += [
        x.eq(Mux(dec.x4, mag7 << 2, 0) | Mux(dec.x8, mag7 << 3, 0)),
        # -|a| as ~|a| + 1: the + 1 is the adder's carry-in.
        y.eq(Mux(dec.y1, Mux(dec.y0, ~mag7, mag7 << 1), Mux(dec.y0, mag7, 0))),
    ]
    product_int = add_with_carry(m, x, y, dec.y1 & dec.y0, 7)
    bits = []
    for j in range(PRODUCT_BITS - 1):
        bit = 0
        for k in range(7):
            if 0 <= j - 2 * k < 4:
                bit = bit | (dec.sel[k] & dec.mag[j - 2 * k])
        if j < 7:
            bit = bit | product_int[j]           # 0 for FP4 codes, as every sel is for int4
        bits.append(bit)
    return Cat(*bits)
