"""Payload layouts shared by the RTL units, the drivers and the testbenches.

One definition of every stream beat lives here; the driver, the cocotb testbenches and
the FPGA host bridge all pack and unpack through these layouts.

Tile order
    An output tile of T x T accumulators travels as T beats, row 0 first; each beat holds
    one row (T elements, element 0 in the least significant bits). Every beat of a tile
    repeats the tile's exponent, so a unit never needs a separate header beat. Tiles
    follow each other without gaps in the numbering: beat i belongs to row i mod T.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from golden.params import NibbleParams, psum_bits

__all__ = ["OUT_EXP_BITS", "TILE_EXP_BITS", "CODE_BITS", "SHIFT_BITS", "acc_row_layout",
           "code_row_layout", "psum_row_layout"]

#: Width of an accumulator tile's out_exp. |out_exp| <= 256 + 2 + 64 < 512.
OUT_EXP_BITS = 10
#: Width of an operand or result tile exponent E (-128..127).
TILE_EXP_BITS = 8
#: Width of one 4-bit element code.
CODE_BITS = 4


def acc_row_layout(params: NibbleParams) -> data.StructLayout:
    """One row of an accumulator tile.

    Members
    -------
    acc : ArrayLayout(signed(acc_bits), T)
        Accumulator contents, two's complement.
    out_exp : signed(OUT_EXP_BITS)
        The tile's weight: an element's value is acc * 2**out_exp.
    """
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(params.acc_bits), params.tile),
        "out_exp": signed(OUT_EXP_BITS),
    })


def code_row_layout(params: NibbleParams) -> data.StructLayout:
    """One row of a quantized tile.

    Members
    -------
    codes : ArrayLayout(unsigned(4), T)
        4-bit codes: int4 as two's complement, uint4 as 0..15, fp4 as [s | e2 e1 e0].
    exp : signed(TILE_EXP_BITS)
        The tile exponent E.
    """
    return data.StructLayout({
        "codes": data.ArrayLayout(unsigned(CODE_BITS), params.tile),
        "exp": signed(TILE_EXP_BITS),
    })


#: Width of a tile term's shift s_t - out_exp (|s_t| <= 258, |out_exp| < 512).
SHIFT_BITS = 11


def psum_row_layout(params: NibbleParams) -> data.StructLayout:
    """One row of a tile partial sum on its way into the rescaler.

    Members
    -------
    psums : ArrayLayout(signed(psum_bits(T)), T)
        Exact tile partial sums P_t[m, n] of row m.
    shift : signed(SHIFT_BITS)
        s_t - out_exp: the term is psums * 2**shift (right shifts round half to even).
    out_exp : signed(OUT_EXP_BITS)
        The output tile's exponent, passed through to the accumulator rows.
    first : 1
        This is reduction tile t = 0: the accumulator row starts from zero.
    last : 1
        This is the last reduction tile: the finished accumulator row leaves.
    """
    return data.StructLayout({
        "psums": data.ArrayLayout(signed(psum_bits(params.tile)), params.tile),
        "shift": signed(SHIFT_BITS),
        "out_exp": signed(OUT_EXP_BITS),
        "first": 1,
        "last": 1,
    })
