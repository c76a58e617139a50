"""Processing element: one 4-bit MAC of the output-stationary systolic array.

A PE owns one element P[m, n] of a T x T output tile. Each step it takes the operand pair
that reaches it, forms the exact integer product ``a * b`` and adds it to a narrow
accumulator (:func:`golden.params.psum_bits` bits). On the step that carries a tile
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

from golden.params import NibbleParams, psum_bits

__all__ = ["OperandA", "OperandB", "PE", "add_with_carry", "encode_a", "encode_b", "encode_swapped",
           "PRODUCT_BITS"]

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


class PE(wiring.Component):
    """One MAC of the systolic array: accumulates a tile reduction, double-buffered.

    On every step (``en`` high) the PE registers the operands and the ``last`` flag that
    reach it and passes them on unchanged on ``a_out``/``b_out``/``last_out`` (a moves
    right, b moves down, the flag moves with a). The product of the registered operands
    is added to the accumulator on the next step; when the registered flag says that
    product is the tile's last, the sum goes to ``psum`` and the accumulator clears.

    Timing, in steps (clock cycles with ``en`` high): operands presented on ``a_in``/
    ``b_in`` in step s are multiplied and accumulated in step s + 1. If ``last_in`` was
    high in step s, ``psum`` holds the finished sum from step s + 2 on, until the next
    tile's last product replaces it (at the earliest T steps later).

    Parameters
    ----------
    params : NibbleParams
        Only ``params.tile`` is used: it sets the accumulator width.

    Attributes
    ----------
    en : In(1)
        Advance enable; with 0 nothing in the PE changes.
    a_in : In(OperandA)
        Operand a of this step (from the left neighbour, or the row edge).
    b_in : In(OperandB)
        Operand b of this step (from the neighbour above, or the column edge).
    last_in : In(1)
        1 if this step's operands are the last of a tile reduction (k = T - 1).
    a_out : Out(OperandA)
        Registered ``a_in``, for the right neighbour.
    b_out : Out(OperandB)
        Registered ``b_in``, for the neighbour below.
    last_out : Out(1)
        Registered ``last_in``, for the right neighbour.
    psum : Out(signed(psum_bits(T)))
        The last finished tile partial sum sum_k a[k] * b[k], an exact integer in
        element units (no tile exponent, no phase).
    psum_bits : int
        Width of ``psum`` and of the accumulator: :func:`golden.params.psum_bits` (T).
    """

    def __init__(self, params: NibbleParams):
        self.psum_bits = psum_bits(params.tile)
        super().__init__({
            "en": In(1),
            "a_in": In(OperandA),
            "b_in": In(OperandB),
            "last_in": In(1),
            "a_out": Out(OperandA),
            "b_out": Out(OperandB),
            "last_out": Out(1),
            "psum": Out(signed(self.psum_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        width = self.psum_bits

        a = Signal(OperandA)
        b = Signal(OperandB)
        last = Signal()
        acc = Signal(signed(width))
        with m.If(self.en):
            m.d.sync += [a.eq(self.a_in), b.eq(self.b_in), last.eq(self.last_in)]
        m.d.comb += [self.a_out.eq(a), self.b_out.eq(b), self.last_out.eq(last)]

        mag = Mux(a.swap, b.code, a.mag)
        code = Mux(a.swap, a.mag, b.code)
        neg = Signal()
        m.d.comb += neg.eq(a.neg ^ b.neg)

        # int4 b: |a| * |b| = X + Y, one 7-bit adder (the product is at most 15 * 8).
        x4, x8, y1, y0 = Signal(), Signal(), Signal(), Signal()
        m.d.comb += [
            x4.eq((code >= 3) & (code <= 6)),            # X = 4|a| for |b| = 3..6
            x8.eq((code == 7) | (code == 8)),            # X = 8|a| for |b| = 7, 8
            y1.eq(code[1] & ~code[3]),                   # Y = 2|a| (y = 2) or -|a| (y = 3)
            y0.eq(code[0] & ~code[3]),                   # Y = |a| (y = 1) or -|a| (y = 3)
        ]
        y_neg = y1 & y0
        mag7 = Cat(mag, C(0, 3))
        x = Signal(7)
        y = Signal(7)
        m.d.comb += [
            x.eq(Mux(x4, mag7 << 2, 0) | Mux(x8, mag7 << 3, 0)),
            # -|a| as ~|a| + 1: the + 1 is the adder's carry-in.
            y.eq(Mux(y1, Mux(y0, ~mag7, mag7 << 1), Mux(y0, mag7, 0))),
        ]
        product_int = add_with_carry(m, x, y, y_neg, 7)

        # FP4 b: |a| << 2(e-1), a one-hot select per exponent (at most two candidate
        # magnitude bits per product bit), no barrel shifter.
        sel = [Signal(name=f"fp4_sel{k}") for k in range(7)]
        for k in range(7):
            m.d.comb += sel[k].eq(code == FP4_CODE_BASE + 1 + k)

        term = Signal(PRODUCT_BITS)
        for j in range(PRODUCT_BITS - 1):
            bit = 0
            for k in range(7):
                if 0 <= j - 2 * k < 4:
                    bit = bit | (sel[k] & mag[j - 2 * k])
            if j < 7:
                bit = bit | product_int[j]           # 0 for FP4 codes, as every sel is for int4
            m.d.comb += term[j].eq(bit ^ neg)
        m.d.comb += term[PRODUCT_BITS - 1].eq(neg)   # sign of (|product| xor neg)

        # acc + (|product| xor neg) + neg = acc +- |product|.
        term_wide = Signal(signed(width))
        m.d.comb += term_wide.eq(term.as_signed())
        total = add_with_carry(m, acc, term_wide, neg, width)

        # The capture and the clear share one condition, which maps onto the flip-flops'
        # clock enable and synchronous reset (one LUT per PE, none per bit).
        capture = Signal()
        m.d.comb += capture.eq(self.en & last)
        with m.If(self.en):
            m.d.sync += acc.eq(total)
        with m.If(capture):
            m.d.sync += [acc.eq(0), self.psum.eq(total)]
        return m
