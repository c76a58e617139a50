"""The Accelerator's stream beats: every field's name, width and offset, in pure Python.

This is the one definition of the beats that cross the Accelerator's ports. The gateware
builds its Amaranth layouts from it (:mod:`rtl.layouts`; ``tests/test_wire.py`` checks
that the two agree field by field), and the host side packs and unpacks with it
(:mod:`wire.gemm_protocol`, :mod:`wire.host_link`) without importing Amaranth.

Tile order
    An output tile of T x T accumulators travels as T beats, row 0 first; each beat holds
    one row (T elements, element 0 in the least significant bits). Every beat of a tile
    repeats the tile's exponent, so a unit never needs a separate header beat. Tiles
    follow each other without gaps in the numbering: beat i belongs to row i mod T.

GEMM streams (the ``Accelerator``; C = A . B, Mt x Kt x Nt tiles)
    ``cmd``      one :data:`COMMAND` beat per GEMM.
    For every output tile (i, j), i outer, j inner, and reduction tile t = 0..Kt-1:
    ``a_exps``   Ea[i, t] (signed :data:`TILE_EXP_BITS` bits), Kt beats per output tile,
                 sent ahead of the codes is fine (the controller prefetches them to
                 choose out_exp).
    ``a_codes``  the A tile (i, t) as the host stores it, T :func:`operand_row` beats,
                 row 0 first. For a transposed operand (A = S^T) that is the stored tile
                 S(t, i), rows of S; the hardware reads it column-wise.
    ``b_exps``, ``b_codes``  the same for B tile (t, j) (stored tile S(j, t) if B = S^T).
    ``mask``     int or fp4 mode with mask_en: T :func:`mask_row` beats per output tile,
                 row 0 first; bit n of a field is element n of that row.
    ``result``   :func:`tile_result_beats` :func:`result` beats per output tile: its T
                 rows, row 0 first, and in dual mode its two summary beats; ``last`` on
                 the final beat of the GEMM.
    Partial tiles travel whole: the padding must be codes of value 0 (the driver sends
    code 0; fp4's 0b1000 is 0 too), since padding elements take part in the tile
    partial sums and, in int and fp4 mode, in the output tile's maximum. The host
    crops the result.

Dual fp4 mode (the gradient unit; ``out_dual``, :func:`golden.output.log4_quantize_fused`)
    Each output tile returns T + 2 beats (:func:`tile_result_beats`), all with the usual
    ``saturated`` and ``last``:

    * rows 0..T-1, both phases' codes: ``data`` holds the row's T phase-0 codes in its
      low 4T bits, as a single-phase fp4 row does (element n at bits 4n+3..4n), and its
      T phase-1 codes in the next 4T bits (element n at bits 4T+4n+3..4T+4n); the rest
      is zero. ``exp`` is the shared tile exponent E of both phases;
    * the alpha beat: ``data`` holds the tile's alpha partial
      (:func:`golden.output.alpha_partials`, the exact sum of the accumulators whose
      ``clip_mask`` bit is 1) as a two's-complement number of
      :func:`golden.output.alpha_sum_bits` bits in its low bits, the rest zero; ``exp``
      is the tile's out_exp (the weight of the sum, as in raw mode);
    * the maximum beat: ``data`` holds the tile's largest masked magnitude
      (:func:`golden.output.tile_max_magnitudes`), unsigned, in its low acc_bits bits,
      the rest zero; ``exp`` is the tile's out_exp.

    The summary beats are whole beats rather than spare bits of the code rows, so the
    format is the same for every T and acc_bits (at T = 2, acc_bits = 18 the code rows
    have 20 spare bits, less than the 48 a summary needs).

Bit order
    A :class:`Struct`'s first field sits in the least significant bits, an
    :class:`Array`'s element 0 too (as in Amaranth's StructLayout and ArrayLayout, which
    :mod:`rtl.layouts` builds from these). Packed words are therefore read from bit 0 up
    in the order the fields are listed (the offsets of the command and result words are
    spelled out at :data:`COMMAND` and :func:`result`). Signed fields are two's
    complement.

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

from dataclasses import dataclass

from golden.params import NibbleParams
from golden.xorshift import SEED_BITS as _GOLDEN_SEED_BITS

__all__ = ["OUT_EXP_BITS", "TILE_EXP_BITS", "CODE_BITS", "KIND_CODES", "OUT_MODES",
           "TILE_COUNT_BITS", "CLIP_MANT_BITS", "CLIP_EXP_BITS", "Field", "Struct", "Array",
           "SEED_BITS", "COMMAND", "operand_row", "mask_row", "result",
           "tile_result_beats", "port_beat_bits"]

#: Width of an accumulator tile's out_exp. |out_exp| <= 256 + 2 + 64 < 512.
OUT_EXP_BITS = 10
#: Width of an operand or result tile exponent E (-128..127).
TILE_EXP_BITS = 8
#: Width of one 4-bit element code.
CODE_BITS = 4
#: Element kinds as the command encodes them.
KIND_CODES = {"int4": 0, "uint4": 1, "fp4": 2}
#: Output modes as the command encodes them.
OUT_MODES = {"raw": 0, "int": 1, "fp4": 2}
#: Width of a tile count field; a GEMM has at most 2**TILE_COUNT_BITS tiles per dimension.
TILE_COUNT_BITS = 8
#: PACT clip threshold alpha = clip_mant * 2**clip_exp.
CLIP_MANT_BITS, CLIP_EXP_BITS = 8, 8
#: Width of the command's stochastic-rounding seed (:data:`golden.xorshift.SEED_BITS`).
SEED_BITS = _GOLDEN_SEED_BITS


# ------------------------------------------------------------------------ descriptions

@dataclass(frozen=True)
class Field:
    """One field of a :class:`Struct`: ``width`` bits from bit ``offset`` up."""

    name: str
    width: int
    signed: bool
    offset: int

    def check(self, value: int) -> int:
        """``value`` as the field's unsigned bit pattern; ValueError if it does not fit."""
        lo, hi = ((-(1 << (self.width - 1)), (1 << (self.width - 1)) - 1) if self.signed
                  else (0, (1 << self.width) - 1))
        if not lo <= value <= hi:
            raise ValueError(f"field {self.name} holds {lo}..{hi}, got {value!r}")
        return int(value) & ((1 << self.width) - 1)


class Struct:
    """Fields packed from bit 0 up, the first one lowest (an Amaranth StructLayout's order).

    ``fields`` is a sequence of ``(name, width, signed)``.
    """

    def __init__(self, fields):
        self.fields, offset = [], 0
        for name, width, signed in fields:
            self.fields.append(Field(name, width, signed, offset))
            offset += width
        self.size = offset
        self._by_name = {f.name: f for f in self.fields}

    def __getitem__(self, name: str) -> Field:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.fields)

    def __repr__(self):
        inner = ", ".join(f"{f.name}: {'s' if f.signed else 'u'}{f.width}" for f in self.fields)
        return f"Struct({inner})"

    def pack(self, values: dict) -> int:
        """The word of ``values`` ({field: int}; fields left out are 0), as an unsigned
        integer. ValueError for an unknown field or a value that does not fit."""
        unknown = set(values) - set(self._by_name)
        if unknown:
            raise ValueError(f"no field {', '.join(sorted(unknown))} in {self!r}")
        word = 0
        for name, value in values.items():
            field = self._by_name[name]
            word |= field.check(value) << field.offset
        return word

    def unpack(self, word: int) -> dict:
        """{field: int} of a packed word; signed fields sign-extended."""
        if not 0 <= word < 1 << self.size:
            raise ValueError(f"word {word:#x} does not fit {self.size} bits")
        out = {}
        for f in self.fields:
            value = word >> f.offset & ((1 << f.width) - 1)
            out[f.name] = value - (1 << f.width) if f.signed and value >> (f.width - 1) else value
        return out


@dataclass(frozen=True)
class Array:
    """``length`` elements of ``elem_width`` bits, element 0 lowest (an ArrayLayout)."""

    elem_width: int
    length: int
    signed: bool = False

    @property
    def size(self) -> int:
        return self.elem_width * self.length


# ------------------------------------------------------------------------------ beats

#: One GEMM command: C = A . B with A (M x K) and B (K x N), both in T x T tiles.
#:
#: Fields, from the least significant bit (98 bits in all):
#:
#: m_last [7:0], k_last [15:8], n_last [23:16] : unsigned(TILE_COUNT_BITS)
#:     ceil(M/T) - 1, ceil(K/T) - 1, ceil(N/T) - 1: index of the last tile.
#: a_kind [25:24], b_kind [27:26] : unsigned(2)
#:     :data:`KIND_CODES` (int4 0, uint4 1, fp4 2). Legal pairs (A x B), those of
#:     :data:`golden.gemm.KIND_PAIRS`: int4 x int4, uint4 x int4, int4 x fp4,
#:     uint4 x fp4, fp4 x int4. B is never uint4 and not both are fp4 (the PE has no
#:     encoding for them; ``golden.gemm`` says why); code 3 is no kind.
#: a_phase [28], b_phase [29] : 1
#:     TPR phase of an fp4 operand. On an int operand the bit is still added to that
#:     operand's tile exponents (s_t = Ea + Eb + a_phase + b_phase), so it means
#:     "E + 1 for every tile": defined, but the golden ``QTensor`` and the driver never
#:     set it (express it in the exponents instead).
#: a_trans [30], b_trans [31] : 1
#:     The operand is the transpose of what the host streams (W^T, X^T): its tiles
#:     are read column-wise.
#: out_mode [33:32] : unsigned(2)
#:     :data:`OUT_MODES`: raw accumulators 0, int requantized 1, fp4 quantized 2;
#:     code 3 is no mode.
#: out_unsigned [34] : 1
#:     int mode: 1 uint4 with ReLU (and optional PACT clip), 0 int4. Ignored in the
#:     other modes.
#: clip_en [35], clip_mant [43:36] (unsigned), clip_exp [51:44] (signed)
#:     int mode with out_unsigned = 1: clip at alpha = clip_mant * 2**clip_exp (PACT;
#:     clip_mant = 0 makes every output 0). Ignored otherwise: with int4 output (there
#:     is no clip on a signed output) and in raw and fp4 mode.
#: mask_en [52] : 1
#:     int and fp4 modes: zero elements whose ``mask`` bit is 0 before quantizing
#:     (ReLU'/PACT' in the backward pass) and, in dual fp4 mode, sum the accumulators
#:     whose ``clip_mask`` bit is 1 into the alpha partial (no mask beats: nothing is
#:     zeroed and every alpha partial is 0); the GEMM then takes T :func:`mask_row`
#:     beats per output tile. Ignored in raw mode (no mask beats are read). In a
#:     partial output tile the bits of the padding positions may hold anything: with
#:     zero pad codes those accumulators are 0, and a 0 quantizes to code 0 whether
#:     masked or not (and adds 0 to the alpha partial).
#: out_phase [53], out_linear [54] : 1
#:     fp4 mode: TPR phase of the result (ignored with out_dual, which emits both) and
#:     rounding (0 log, 1 linear; ignored with out_stochastic). Ignored otherwise.
#: ext_exp_en [55], ext_exp [63:56] (signed)
#:     fp4 mode: use ext_exp as every result tile's exponent (per-layer GradScale).
#:     Ignored otherwise.
#: out_dual [64] : 1
#:     fp4 mode: the gradient unit (:func:`golden.output.log4_quantize_fused`): both
#:     TPR phases from the one tile exponent, each tile's alpha partial over the mask
#:     beats' ``clip_mask`` bits and its largest masked magnitude; T + 2 result beats per
#:     output tile (module docstring, "Dual fp4 mode"). Ignored otherwise.
#: out_stochastic [65] : 1
#:     fp4 mode: stochastic rounding (golden's ``rounding="stochastic"``) with the
#:     random words of :mod:`golden.xorshift` seeded by ``seed``; out_linear is then
#:     ignored. Ignored otherwise.
#: seed [97:66] : unsigned(SEED_BITS)
#:     fp4 mode with out_stochastic: the generators' seed s (any 32-bit value). Ignored
#:     otherwise.
#:
#: Every other combination of field values is a defined GEMM. A command that is not
#: legal (:func:`rtl.layouts.command_is_legal`: a kind pair outside the list above, or
#: out_mode 3) is taken from the stream but refused: no GEMM runs, no result beat comes,
#: and the Accelerator's sticky ``refused`` flag rises (the host bridge reports it in
#: STATUS); beats already sent for it stay queued, so reset before going on. The host
#: side (:func:`wire.gemm_protocol.check_job`) never builds such a command.
COMMAND = Struct([
    ("m_last", TILE_COUNT_BITS, False),
    ("k_last", TILE_COUNT_BITS, False),
    ("n_last", TILE_COUNT_BITS, False),
    ("a_kind", 2, False),
    ("b_kind", 2, False),
    ("a_phase", 1, False),
    ("b_phase", 1, False),
    ("a_trans", 1, False),
    ("b_trans", 1, False),
    ("out_mode", 2, False),
    ("out_unsigned", 1, False),
    ("clip_en", 1, False),
    ("clip_mant", CLIP_MANT_BITS, False),
    ("clip_exp", CLIP_EXP_BITS, True),
    ("mask_en", 1, False),
    ("out_phase", 1, False),
    ("out_linear", 1, False),
    ("ext_exp_en", 1, False),
    ("ext_exp", TILE_EXP_BITS, True),
    ("out_dual", 1, False),
    ("out_stochastic", 1, False),
    ("seed", SEED_BITS, False),
])


def operand_row(params: NibbleParams) -> Array:
    """One row of an operand tile as the host stores it: T 4-bit codes, element 0 in the
    least significant bits (int4 two's complement, uint4 0..15, fp4 [s | e2 e1 e0])."""
    return Array(CODE_BITS, params.tile)


def mask_row(params: NibbleParams) -> Struct:
    """One mask beat: one row of an output tile's two element masks.

    Fields, from the least significant bit
    ----------------------------------------
    mask [T-1:0] : unsigned(T)
        ReLU'/PACT' mask (golden's ``mask``): bit n = 0 zeroes element n before
        quantizing. int and fp4 modes.
    clip_mask [2T-1:T] : unsigned(T)
        dual fp4 mode: bit n = 1 adds element n's accumulator to the tile's alpha
        partial (golden's ``clip_mask``). Ignored in the other modes.
    """
    return Struct([("mask", params.tile, False), ("clip_mask", params.tile, False)])


def tile_result_beats(params: NibbleParams, dual: bool) -> int:
    """Result beats per output tile: T rows, plus the alpha and maximum beats in dual
    fp4 mode (module docstring)."""
    return params.tile + (2 if dual else 0)


def result(params: NibbleParams) -> Struct:
    """One result beat: one row of an output tile.

    Fields, from the least significant bit (W = T * acc_bits)
    -----------------------------------------------------------
    data [W-1:0] : unsigned(T * acc_bits)
        raw mode: T accumulators of acc_bits (two's complement), element 0 lowest.
        int and fp4 modes: T 4-bit codes in the low 4T bits, the rest zero. Dual fp4
        mode: 2T codes (phase 0 low), or a summary (module docstring).
    exp [W+9:W] : signed(OUT_EXP_BITS)
        raw mode and dual mode's summary beats: the tile's out_exp (value = acc *
        2**out_exp). Code rows: the tile exponent E (-128..127, sign-extended).
    saturated [W+10] : 1
        Some accumulation of this GEMM saturated so far (final on the ``last`` beat).
    last [W+11] : 1
        The last beat of the GEMM.
    """
    return Struct([
        ("data", params.tile * params.acc_bits, False),
        ("exp", OUT_EXP_BITS, True),
        ("saturated", 1, False),
        ("last", 1, False),
    ])


def port_beat_bits(params: NibbleParams) -> dict:
    """Width in bits of one beat of each input stream, by port name."""
    row = operand_row(params).size
    return {"cmd": COMMAND.size, "a_codes": row, "a_exps": TILE_EXP_BITS, "b_codes": row,
            "b_exps": TILE_EXP_BITS, "mask": mask_row(params).size}
