"""The Amaranth layouts of every stream beat, built from :mod:`wire.streams`.

The beats that cross the Accelerator's ports (command, operand rows, result) are defined
once, in pure Python, in :mod:`wire.streams`, together with the tile order, the bit
order and the stream timing a driver may rely on; :func:`command_layout`,
:func:`operand_row_layout` and :func:`result_layout` turn those descriptions into
Amaranth layouts field for field (``tests/test_wire.py`` checks that they agree). The
layouts of the beats inside the accelerator are defined here.

Inside the accelerator, the output path (rescaler, requantizer, log4 unit) carries
a tile as ``params.beats_per_tile`` beats of ``params.lanes`` elements: the tile's
elements in row-major order, L at a time (with L = T, one row per beat, as on the
ports). Its layouts (:func:`rescale_row_layout`, :func:`acc_row_layout`,
:func:`code_row_layout`) are L elements wide; the array's psum rows and the
accelerator's ports stay T wide.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Value, signed, unsigned
from amaranth.lib import data

from golden.gemm import KIND_PAIRS
from golden.params import NibbleParams
from wire import streams
from wire.streams import CODE_BITS, KIND_CODES, OUT_EXP_BITS, OUT_MODES, TILE_EXP_BITS

__all__ = ["SHIFT_BITS", "acc_row_layout", "code_row_layout", "operand_row_layout",
           "psum_row_layout", "rescale_row_layout", "struct_layout", "command_layout",
           "command_is_legal", "mask_row_layout", "out_beat_layout", "result_layout"]


def _shape(field: streams.Field):
    return signed(field.width) if field.signed else unsigned(field.width)


def struct_layout(struct: streams.Struct) -> data.StructLayout:
    """The Amaranth StructLayout of a :class:`wire.streams.Struct`: the same fields, in
    the same order, of the same widths and signedness (so at the same offsets)."""
    return data.StructLayout({field.name: _shape(field) for field in struct})


def acc_row_layout(params: NibbleParams) -> data.StructLayout:
    """One beat of an accumulator tile: L = ``params.lanes`` elements of it.

    Members
    -------
    acc : ArrayLayout(signed(acc_bits), L)
        Accumulator contents, two's complement.
    out_exp : signed(OUT_EXP_BITS)
        The tile's weight: an element's value is acc * 2**out_exp.
    """
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(params.acc_bits), params.lanes),
        "out_exp": signed(OUT_EXP_BITS),
    })


def operand_row_layout(params: NibbleParams) -> data.ArrayLayout:
    """One row of an operand tile as the host stores it (:func:`wire.streams.operand_row`)."""
    row = streams.operand_row(params)
    return data.ArrayLayout(signed(row.elem_width) if row.signed else unsigned(row.elem_width),
                            row.length)


def code_row_layout(params: NibbleParams) -> data.StructLayout:
    """One beat of a quantized tile: L = ``params.lanes`` codes of it.

    Members
    -------
    codes : ArrayLayout(unsigned(4), L)
        4-bit codes: int4 as two's complement, uint4 as 0..15, fp4 as [s | e2 e1 e0].
    exp : signed(TILE_EXP_BITS)
        The tile exponent E.
    """
    return data.StructLayout({
        "codes": data.ArrayLayout(unsigned(CODE_BITS), params.lanes),
        "exp": signed(TILE_EXP_BITS),
    })


#: Width of a tile term's shift s_t - out_exp (|s_t| <= 258, |out_exp| < 512).
SHIFT_BITS = 11


def psum_row_layout(params: NibbleParams) -> data.ArrayLayout:
    """One row of a tile of partial sums as the array emits it: T exact integers of
    psum_bits(T) bits (two's complement, element units), element n lowest."""
    return data.ArrayLayout(signed(params.psum_bits), params.tile)


def rescale_row_layout(params: NibbleParams) -> data.StructLayout:
    """One beat of a tile partial sum on its way into the rescaler: L = ``params.lanes``
    elements of it.

    Members
    -------
    psums : ArrayLayout(signed(psum_bits(T)), L)
        Exact tile partial sums P_t[m, n], L consecutive ones of row m.
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
        "psums": data.ArrayLayout(signed(params.psum_bits), params.lanes),
        "shift": signed(SHIFT_BITS),
        "out_exp": signed(OUT_EXP_BITS),
        "first": 1,
        "last": 1,
    })


def out_beat_layout(params: NibbleParams) -> data.StructLayout:
    """One beat of the output path into the result queue (L = ``params.lanes``).

    Members
    -------
    data : unsigned(L * acc_bits)
        Raw mode: L accumulators. int and fp4 modes: L codes in the low 4L bits (the
        bits above mean nothing). Dual fp4 mode (:class:`rtl.log4_quantizer.Log4Quantizer`):
        L phase-0 codes in the low 4L bits and their phase-1 codes in the next 4L, or a
        slice of a tile's alpha or maximum beat (:mod:`wire.streams`).
    exp : signed(OUT_EXP_BITS)
        The tile's exponent: out_exp in raw mode and on dual mode's summary beats, E
        on code beats.
    """
    return data.StructLayout({"data": params.lanes * params.acc_bits,
                              "exp": signed(OUT_EXP_BITS)})


# ---------------------------------------------------------------- accelerator interface

def command_layout() -> data.StructLayout:
    """One GEMM command (:data:`wire.streams.COMMAND`, where its fields are documented)."""
    return struct_layout(streams.COMMAND)


def command_is_legal(cmd, params: NibbleParams | None = None) -> Value:
    """1 if ``cmd`` (a :func:`command_layout` view) is a legal command: (a_kind, b_kind)
    one of :data:`golden.gemm.KIND_PAIRS` and out_mode one of :data:`OUT_MODES`; and, on
    hardware built without stochastic rounding (``params.stochastic`` False), not an
    fp4 command that asks for it."""
    kinds = Cat(cmd.a_kind, cmd.b_kind)
    pairs = [KIND_CODES[a] | KIND_CODES[b] << 2 for a, b in KIND_PAIRS]
    legal = (Cat(*(kinds == code for code in pairs)).any()
             & Cat(*(cmd.out_mode == code for code in OUT_MODES.values())).any())
    if params is not None and not params.stochastic:
        legal &= ~((cmd.out_mode == OUT_MODES["fp4"]) & cmd.out_stochastic)
    return legal


def mask_row_layout(params: NibbleParams) -> data.StructLayout:
    """One mask beat (:func:`wire.streams.mask_row`, where its fields are documented)."""
    return struct_layout(streams.mask_row(params))


def result_layout(params: NibbleParams) -> data.StructLayout:
    """One result beat (:func:`wire.streams.result`, where its fields are documented)."""
    return struct_layout(streams.result(params))
