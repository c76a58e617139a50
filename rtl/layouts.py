"""Payload layouts shared by the RTL units, the drivers and the testbenches.

One definition of every stream beat lives here; the driver, the cocotb testbenches and
the FPGA host bridge all pack and unpack through these layouts.

Tile order
    An output tile of T x T accumulators travels as T beats, row 0 first; each beat holds
    one row (T elements, element 0 in the least significant bits). Every beat of a tile
    repeats the tile's exponent, so a unit never needs a separate header beat. Tiles
    follow each other without gaps in the numbering: beat i belongs to row i mod T.

    Inside the accelerator, the output path (rescaler, requantizer, log4 unit) carries
    a tile as ``params.beats_per_tile`` beats of ``params.lanes`` elements: the tile's
    elements in row-major order, L at a time (with L = T, one row per beat, as above).
    Its layouts (:func:`rescale_row_layout`, :func:`acc_row_layout`,
    :func:`code_row_layout`) are L elements wide; the array's psum rows and the
    accelerator's ports stay T wide.

GEMM streams (the ``Accelerator``; C = A . B, Mt x Kt x Nt tiles)
    ``cmd``      one :func:`command_layout` beat per GEMM.
    For every output tile (i, j), i outer, j inner, and reduction tile t = 0..Kt-1:
    ``a_exps``   Ea[i, t] (signed 8 bits), Kt beats per output tile, sent ahead of the
                 codes is fine (the controller prefetches them to choose out_exp).
    ``a_codes``  the A tile (i, t) as the host stores it, T :func:`operand_row_layout`
                 beats, row 0 first. For a transposed operand (A = S^T) that is the
                 stored tile S(t, i), rows of S; the hardware reads it column-wise.
    ``b_exps``, ``b_codes``  the same for B tile (t, j) (stored tile S(j, t) if B = S^T).
    ``mask``     int or fp4 mode with mask_en: T beats of T bits per output tile, row 0
                 first; bit n of a beat is element n of that row.
    ``result``   T :func:`result_layout` beats per output tile, row 0 first; ``last`` on
                 the final beat of the GEMM.
    Partial tiles travel whole: the padding must be codes of value 0 (the driver sends
    code 0; fp4's 0b1000 is 0 too), since padding elements take part in the tile
    partial sums and, in int and fp4 mode, in the output tile's maximum. The host
    crops the result.

Bit order
    Every payload is an Amaranth layout: a StructLayout's first member sits in the least
    significant bits, an ArrayLayout's element 0 too. Packed words are therefore read
    from bit 0 up in the order the layouts below list their members (the offsets of the
    command and result words are spelled out in :func:`command_layout` and
    :func:`result_layout`).

Stream timing (what a driver may rely on)
    The six input streams are independent: drive them concurrently and never make one
    wait for another (in particular, do not hold back the command until the operands
    are taken: the operand buffers hold only two tiles each). A command is taken only
    once the previous GEMM has produced its last result beat (which may still wait at
    the result port for the host; results stay in order). The operand
    code streams are taken whenever their buffers have room, whatever the command:
    up to two T-row tiles (plus two rows in the input register slice) of the next GEMM
    may arrive before its command and while the previous GEMM drains. The exponent
    streams are taken only while a GEMM runs, from its command on (never ahead of it),
    and mask rows whenever the mask queue (:data:`rtl.accelerator.MASK_QUEUE_DEPTH`
    rows) has room. Beats are consumed strictly in the order above, so the next
    GEMM's early beats are never mixed into the current one.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Value, signed, unsigned
from amaranth.lib import data

from golden.gemm import KIND_PAIRS
from golden.params import NibbleParams

__all__ = ["OUT_EXP_BITS", "TILE_EXP_BITS", "CODE_BITS", "SHIFT_BITS", "acc_row_layout",
           "code_row_layout", "operand_row_layout", "psum_row_layout", "rescale_row_layout", "KIND_CODES",
           "OUT_MODES", "TILE_COUNT_BITS", "CLIP_MANT_BITS", "CLIP_EXP_BITS", "command_layout",
           "command_is_legal", "result_layout"]

#: Width of an accumulator tile's out_exp. |out_exp| <= 256 + 2 + 64 < 512.
OUT_EXP_BITS = 10
#: Width of an operand or result tile exponent E (-128..127).
TILE_EXP_BITS = 8
#: Width of one 4-bit element code.
CODE_BITS = 4


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
    """One row of an operand tile as the host stores it: T 4-bit codes, element 0 in the
    least significant bits (int4 two's complement, uint4 0..15, fp4 [s | e2 e1 e0])."""
    return data.ArrayLayout(unsigned(CODE_BITS), params.tile)


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


# ---------------------------------------------------------------- accelerator interface

#: Element kinds as the command encodes them.
KIND_CODES = {"int4": 0, "uint4": 1, "fp4": 2}
#: Output modes as the command encodes them.
OUT_MODES = {"raw": 0, "int": 1, "fp4": 2}
#: Width of a tile count field; a GEMM has at most 2**TILE_COUNT_BITS tiles per dimension.
TILE_COUNT_BITS = 8
#: PACT clip threshold alpha = clip_mant * 2**clip_exp.
CLIP_MANT_BITS, CLIP_EXP_BITS = 8, 8


def command_layout() -> data.StructLayout:
    """One GEMM command: C = A . B with A (M x K) and B (K x N), both in T x T tiles.

    Members, from the least significant bit (64 bits in all)
    -----------------------------------------------------------
    m_last [7:0], k_last [15:8], n_last [23:16] : unsigned(TILE_COUNT_BITS)
        ceil(M/T) - 1, ceil(K/T) - 1, ceil(N/T) - 1: index of the last tile.
    a_kind [25:24], b_kind [27:26] : unsigned(2)
        :data:`KIND_CODES` (int4 0, uint4 1, fp4 2). Legal pairs (A x B), those of
        :data:`golden.gemm.KIND_PAIRS`: int4 x int4, uint4 x int4, int4 x fp4,
        uint4 x fp4, fp4 x int4. B is never uint4 and not both are fp4 (the PE has no
        encoding for them; ``golden.gemm`` says why); code 3 is no kind.
    a_phase [28], b_phase [29] : 1
        TPR phase of an fp4 operand. On an int operand the bit is still added to that
        operand's tile exponents (s_t = Ea + Eb + a_phase + b_phase), so it means
        "E + 1 for every tile": defined, but the golden ``QTensor`` and the driver never
        set it (express it in the exponents instead).
    a_trans [30], b_trans [31] : 1
        The operand is the transpose of what the host streams (W^T, X^T): its tiles
        are read column-wise.
    out_mode [33:32] : unsigned(2)
        :data:`OUT_MODES`: raw accumulators 0, int requantized 1, fp4 quantized 2;
        code 3 is no mode.
    out_unsigned [34] : 1
        int mode: 1 uint4 with ReLU (and optional PACT clip), 0 int4. Ignored in the
        other modes.
    clip_en [35], clip_mant [43:36] (unsigned), clip_exp [51:44] (signed)
        int mode with out_unsigned = 1: clip at alpha = clip_mant * 2**clip_exp (PACT;
        clip_mant = 0 makes every output 0). Ignored otherwise: with int4 output (there
        is no clip on a signed output) and in raw and fp4 mode.
    mask_en [52] : 1
        int and fp4 modes: zero elements whose ``mask`` bit is 0 before quantizing
        (ReLU'/PACT' in the backward pass); the GEMM then takes T mask beats per output
        tile. Ignored in raw mode (no mask beats are read). In a partial output tile the
        bits of the padding positions may hold anything: with zero pad codes those
        accumulators are 0, and a 0 quantizes to code 0 whether masked or not.
    out_phase [53], out_linear [54] : 1
        fp4 mode: TPR phase of the result and rounding (0 log, 1 linear). Ignored
        otherwise.
    ext_exp_en [55], ext_exp [63:56] (signed)
        fp4 mode: use ext_exp as every result tile's exponent (per-layer GradScale).
        Ignored otherwise.

    Every other combination of field values is a defined GEMM. A command that is not
    legal (:func:`command_is_legal`: a kind pair outside the list above, or out_mode 3)
    is taken from the stream but refused: no GEMM runs, no result beat comes, and the
    Accelerator's sticky ``refused`` flag rises (the host bridge reports it in STATUS);
    beats already sent for it stay queued, so reset before going on. The host side
    (``rtl.gemm_protocol.check_job``) never builds such a command.
    """
    return data.StructLayout({
        "m_last": unsigned(TILE_COUNT_BITS),
        "k_last": unsigned(TILE_COUNT_BITS),
        "n_last": unsigned(TILE_COUNT_BITS),
        "a_kind": unsigned(2),
        "b_kind": unsigned(2),
        "a_phase": 1,
        "b_phase": 1,
        "a_trans": 1,
        "b_trans": 1,
        "out_mode": unsigned(2),
        "out_unsigned": 1,
        "clip_en": 1,
        "clip_mant": unsigned(CLIP_MANT_BITS),
        "clip_exp": signed(CLIP_EXP_BITS),
        "mask_en": 1,
        "out_phase": 1,
        "out_linear": 1,
        "ext_exp_en": 1,
        "ext_exp": signed(TILE_EXP_BITS),
    })


def command_is_legal(cmd) -> Value:
    """1 if ``cmd`` (a :func:`command_layout` view) is a legal command: (a_kind, b_kind)
    one of :data:`golden.gemm.KIND_PAIRS` and out_mode one of :data:`OUT_MODES`."""
    kinds = Cat(cmd.a_kind, cmd.b_kind)
    pairs = [KIND_CODES[a] | KIND_CODES[b] << 2 for a, b in KIND_PAIRS]
    return (Cat(*(kinds == code for code in pairs)).any()
            & Cat(*(cmd.out_mode == code for code in OUT_MODES.values())).any())


def result_layout(params: NibbleParams) -> data.StructLayout:
    """One result beat: one row of an output tile.

    Members, from the least significant bit (W = T * acc_bits)
    ------------------------------------------------------------
    data [W-1:0] : unsigned(T * acc_bits)
        raw mode: T accumulators of acc_bits (two's complement), element 0 lowest.
        int and fp4 modes: T 4-bit codes in the low 4T bits, the rest zero.
    exp [W+9:W] : signed(OUT_EXP_BITS)
        raw mode: the tile's out_exp (value = acc * 2**out_exp). Code modes: the tile
        exponent E (-128..127, sign-extended).
    saturated [W+10] : 1
        Some accumulation of this GEMM saturated so far (final on the ``last`` beat).
    last [W+11] : 1
        The last beat of the GEMM.
    """
    return data.StructLayout({
        "data": unsigned(params.tile * params.acc_bits),
        "exp": signed(OUT_EXP_BITS),
        "saturated": 1,
        "last": 1,
    })
