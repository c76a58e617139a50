"""The log4 gradient unit: accumulator tiles in, radix-4 FP4 codes plus a tile exponent out.

Bit-exact with ``golden.formats.quantize(acc * 2**out_exp, "fp4", tile=T, phase=phase,
rounding=..., exps=...)``. The integer formulation it implements, for a tile with weight
2**out_exp and an element magnitude a = |acc| with bit length n (a = 0 has n = 0):

* tile exponent (auto): amax = max a; E = -128 if amax == 0, else
  E = clip(bit_length(amax) - 1 + out_exp - 12, -128, 127). bit_length(max a) equals
  bit_length(OR of all a), so the tile needs one OR tree, not a max tree.
* element: r = n - 1 + out_exp - phase - E (= floor(log2 v) - phase - E of the golden).
  ``log``: k = ceil(r / 2). ``linear``: k = floor(r / 2), plus one when r is odd and
  a >= 1.25 * 2**(n-1), i.e. one of the two bits below the leading one is set (this is
  golden's v >= 2.5 * G_k0; for even r that midpoint lies above the binade). Both are
  k = (r + inc) >> 1 with inc = log | mid. r < -1 flushes to 0, k < 0 (only r = -1)
  becomes 0, k > 6 saturates to 6; the code is [neg & nonzero | k + 1].

So an element is fully described by (n, mid, neg): the tile buffer stores those (8 bits
for acc_bits 32..53) per element instead of the accumulator.
"""

import operator
from functools import reduce

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.formats import FP4_TOP_K
from golden.params import EXP_MAX, EXP_MIN, NibbleParams
from wire.streams import OUT_EXP_BITS, TILE_EXP_BITS

from .bit_length import bit_length_of_smear, smear
from .layouts import acc_row_layout, code_row_layout
from .pe import magnitude
from .pipeline import delays, stage
from .tile_bank import TileBank, bank_tiles

__all__ = ["Log4Quantizer"]

#: The magnitudes' smear is split by a register after the steps below this one (bit j
#: ORs _PRE bits of the magnitude first).
_PRE = 4

#: Tile exponent = floor(log2 amax) - FP4_E_OFFSET puts the tile maximum on the top code.
FP4_E_OFFSET = 2 * FP4_TOP_K


class Log4Quantizer(wiring.Component):
    """Log4 (radix-4 FP4) gradient quantizer with per-tile exponents.

    A tile travels as R = T * T / L beats of L = ``params.lanes`` elements (a beat is a
    row when L = T), in row-major order. The unit stores a whole tile (it needs the tile
    maximum before encoding any element) as (n, mid, neg) per element in a
    :class:`rtl.tile_bank.TileBank` of several tiles: while one tile is read out the next
    ones are written, one beat per cycle each way.

    The unit never stalls. Its input is valid-only: the producer holds one of
    ``capacity`` credits for every beat it sends and gets one back on ``freed``. Its
    output is valid-only too: it reads a beat out only with a credit for the buffer
    behind it (``credit``, ``take_credit``). Pipelines, one step of logic per stage:

    * write: |acc| and sign into a register, their smears in two halves into a second
      and a third, bit length and ``mid`` into a fourth that the bank takes; the OR of
      the tile's magnitudes accumulates beside it;
    * finalize, five stages after a tile's last beat is written: the smear of the OR,
      its bit length, floor(log2 amax) - 12, the clamped (or external) tile exponent E,
      the element offset out_exp - phase - E;
    * read, five cycles from a read to its codes: the bank's read, a register, the
      exponent r, the rounded k, the code into the output register.

    Parameters
    ----------
    params : NibbleParams
        Uses ``tile`` (T), ``lanes`` (L) and ``acc_bits``.

    Attributes
    ----------
    acc_in : In(stream.Signature(acc_row_layout(params), always_ready=True))
        Accumulator tiles, R beats per tile, row-major. ``acc`` holds L two's-complement
        integers; ``out_exp`` (repeated on every beat) is the tile's weight, so an
        element's value is acc * 2**out_exp.
    freed : Out(1)
        A beat's room in the unit is free again: one input credit back.
    codes_out : Out(stream.Signature(code_row_layout(params), always_ready=True))
        FP4 tiles, R beats per tile in the same order. ``codes`` holds L codes
        [sign | e2 e1 e0]; ``exp`` (repeated on every beat) is the tile exponent E, so a
        nonzero code decodes to (-1)**sign * 2**(2(e-1) + phase + E).
    credit : In(1)
        The buffer behind ``codes_out`` has room for one more beat.
    take_credit : Out(1)
        A beat is read out (it uses that room; it arrives 5 cycles later).
    phase : In(1)
        Two-phase-rounding phase: 0 even-power grid, 1 odd-power grid.
    linear : In(1)
        Rounding mode: 0 ``log`` (nearest in the log domain), 1 ``linear`` (nearest by
        the arithmetic midpoint). Both round ties up.
    ext_exp_en : In(1)
        1: use ``ext_exp`` as every tile's E (per-layer GradScale); 0: E from the tile max.
    ext_exp : In(signed(8))
        The external tile exponent, -128..127.
    capacity : int
        Input credits: the tile bank's N R beats (:func:`rtl.tile_bank.bank_tiles`).

    ``phase``, ``linear``, ``ext_exp_en`` and ``ext_exp`` must be held constant while a
    tile is inside the unit.
    """

    #: Cycles from a beat read out of the bank (``take_credit``) to its codes on
    #: ``codes_out``.
    READ_LATENCY = 5

    def __init__(self, params: NibbleParams):
        self._params = params
        self.capacity = bank_tiles(params.beats_per_tile) * params.beats_per_tile
        super().__init__({
            "acc_in": In(stream.Signature(acc_row_layout(params), always_ready=True)),
            "freed": Out(1),
            "codes_out": Out(stream.Signature(code_row_layout(params), always_ready=True)),
            "credit": In(1),
            "take_credit": Out(1),
            "phase": In(1),
            "linear": In(1),
            "ext_exp_en": In(1),
            "ext_exp": In(signed(TILE_EXP_BITS)),
        })

    def _shapes(self):
        """Exact ranges of the exponent arithmetic, so nothing wraps for any out_exp / E."""
        acc_bits = self._params.acc_bits
        oexp_lo, oexp_hi = -2 ** (OUT_EXP_BITS - 1), 2 ** (OUT_EXP_BITS - 1) - 1
        p_shape = range(-1 + oexp_lo - FP4_E_OFFSET, acc_bits - 1 + oexp_hi - FP4_E_OFFSET + 1)
        base_lo, base_hi = oexp_lo - 1 - EXP_MAX, oexp_hi - EXP_MIN
        base_shape = range(base_lo, base_hi + 1)                  # out_exp - phase - E
        r_shape = range(base_lo - 1, acc_bits - 1 + base_hi + 1)  # n - 1 + base
        k_shape = range((base_lo - 1) // 2, (acc_bits + base_hi) // 2 + 1)
        elem = data.StructLayout({
            "n": range(acc_bits + 1),  # bit length of |acc|; 0 means zero
            "mid": 1,                  # |acc| >= 1.25 * 2**(n-1): linear rounds an odd r up
            "neg": 1,
        })
        meta = data.StructLayout({"e": signed(TILE_EXP_BITS), "base": base_shape})
        return p_shape, base_shape, r_shape, k_shape, elem, meta

    def elaborate(self, platform):
        L, R = self._params.lanes, self._params.beats_per_tile
        *_, elem, meta = self._shapes()
        m = Module()
        m.submodules.bank = bank = TileBank(data.ArrayLayout(elem, L), R, meta)
        m.d.comb += self.freed.eq(bank.freed)
        tile_or, tile_oexp, done = self._write_side(m, bank)
        self._finalize(m, bank, tile_or, tile_oexp, done)
        self._read_side(m, bank)
        return m

    def _write_side(self, m, bank):
        """|acc| and sign into a register; bit lengths and ``mid`` into the register the
        bank takes; the tile's OR accumulated with the bank write. Returns the OR, the
        tile's out_exp, and the pulse ``done`` in the cycle after a tile's last write."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        *_, elem, _ = self._shapes()
        a_valid = Signal()
        mags = [Signal(acc_bits, name=f"mag{i}", reset_less=True) for i in range(L)]
        negs = [Signal(name=f"neg{i}", reset_less=True) for i in range(L)]
        a_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        m.d.sync += [a_valid.eq(self.acc_in.valid), a_oexp.eq(self.acc_in.payload.out_exp)]
        for i in range(L):
            acc = self.acc_in.payload.acc[i]
            m.d.sync += [mags[i].eq(magnitude(m, acc)), negs[i].eq(acc < 0)]

        # The smears of the magnitudes in two registered halves (bit j ORs 4 bits, then
        # 8 of those), their OR beside them, then bit length and ``mid`` into the register
        # the bank takes.
        p_valid = Signal()
        p_mags = [stage(m, mags[i], f"p_mag{i}") for i in range(L)]
        p_pre = [stage(m, smear(m, mags[i], f"mag_pre{i}", stop=_PRE), f"p_pre{i}")
                 for i in range(L)]
        p_negs = [stage(m, negs[i], f"p_neg{i}") for i in range(L)]
        p_or, p_oexp = stage(m, reduce(operator.or_, mags), "p_or"), stage(m, a_oexp, "p_oexp")
        m.d.sync += p_valid.eq(a_valid)
        b_valid = Signal()
        b_mags = [Signal(acc_bits, name=f"b_mag{i}", reset_less=True) for i in range(L)]
        b_smears = [Signal(acc_bits, name=f"b_smear{i}", reset_less=True) for i in range(L)]
        b_negs = [Signal(name=f"b_neg{i}", reset_less=True) for i in range(L)]
        b_or = Signal(acc_bits, reset_less=True)
        b_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        m.d.sync += [b_valid.eq(p_valid), b_or.eq(p_or), b_oexp.eq(p_oexp)]
        for i in range(L):
            m.d.sync += [b_mags[i].eq(p_mags[i]), b_negs[i].eq(p_negs[i]),
                         b_smears[i].eq(smear(m, p_pre[i], f"mag_smear{i}", start=_PRE))]
        row = Signal(data.ArrayLayout(elem, L), reset_less=True)
        w_valid = Signal()
        row_or = Signal(acc_bits, reset_less=True)
        w_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        m.d.sync += [w_valid.eq(b_valid), row_or.eq(b_or), w_oexp.eq(b_oexp)]
        for i in range(L):
            z = b_smears[i]
            lead = z & ~(z >> 1)
            m.d.sync += [
                row[i].n.eq(bit_length_of_smear(m, z, f"n{i}")),
                row[i].mid.eq((b_mags[i] & ((lead >> 1) | (lead >> 2))).any()),
                row[i].neg.eq(b_negs[i]),
            ]
        m.d.comb += [bank.w.valid.eq(w_valid), bank.w.payload.eq(row)]

        tile_or = Signal(acc_bits, reset_less=True)  # OR of |acc| over the tile so far
        tile_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        w_first = Signal(init=1)
        done = Signal()
        m.d.sync += done.eq(w_valid & bank.w_last)
        with m.If(w_valid):
            m.d.sync += [tile_or.eq(Mux(w_first, 0, tile_or) | row_or), tile_oexp.eq(w_oexp),
                         w_first.eq(bank.w_last)]
        return tile_or, tile_oexp, done

    def _finalize(self, m, bank, tile_or, tile_oexp, done):
        """Five register stages from a tile's OR to its meta in the bank."""
        acc_bits = self._params.acc_bits
        p_shape, base_shape, *_ = self._shapes()

        f = delays(m, done, 5, "fin")
        # (1) the OR, (2) its smear, (3) its bit length
        or1, oexp1 = stage(m, tile_or, "fin_or"), stage(m, tile_oexp, "fin_oexp1")
        z2, oexp2 = stage(m, smear(m, or1, "tile_smear"), "fin_z"), stage(m, oexp1, "fin_oexp2")
        n3 = stage(m, bit_length_of_smear(m, z2, "tile_n"), "fin_n", shape=range(acc_bits + 1))
        oexp3 = stage(m, oexp2, "fin_oexp3")
        # (4) p = floor(log2 amax) - 12
        p4 = stage(m, oexp3 + n3 - (1 + FP4_E_OFFSET), "fin_p", shape=p_shape)
        zero4, oexp4 = stage(m, n3 == 0, "fin_zero"), stage(m, oexp3, "fin_oexp4")
        # (5) the tile exponent
        tile_e = Signal(signed(TILE_EXP_BITS))
        with m.If(self.ext_exp_en):
            m.d.comb += tile_e.eq(self.ext_exp)
        with m.Elif(zero4 | (p4 < EXP_MIN)):
            m.d.comb += tile_e.eq(EXP_MIN)
        with m.Elif(p4 > EXP_MAX):
            m.d.comb += tile_e.eq(EXP_MAX)
        with m.Else():
            m.d.comb += tile_e.eq(p4)
        e5, oexp5 = stage(m, tile_e, "fin_e"), stage(m, oexp4, "fin_oexp5")
        m.d.comb += [
            bank.fin.valid.eq(f[5]),
            bank.fin.payload.e.eq(e5),
            bank.fin.payload.base.eq(oexp5 - self.phase - e5),
        ]

    def _read_side(self, m, bank):
        """Five cycles from a read to its codes: the bank's read, a register, the
        exponent r = n - 1 + out_exp - phase - E, k = (r + inc) >> 1, the code."""
        L = self._params.lanes
        _, base_shape, r_shape, k_shape, *_ = self._shapes()
        read = Signal()
        m.d.comb += [read.eq(bank.r_rdy & self.credit), bank.r_en.eq(read),
                     self.take_credit.eq(read)]
        v = delays(m, read, self.READ_LATENCY - 1, "rd_valid")

        beat = stage(m, bank.r_data, "rd_beat")
        base1, e1 = stage(m, bank.r_meta.base, "rd_base"), stage(m, bank.r_meta.e, "rd_e1")
        codes = Signal.like(self.codes_out.payload.codes)
        for i in range(L):
            info = beat[i]
            r = stage(m, base1 + info.n - 1, f"r{i}", shape=r_shape)
            zero2, mid2 = stage(m, info.n == 0, f"zero{i}"), stage(m, info.mid, f"mid{i}")
            neg2 = stage(m, info.neg, f"neg{i}_2")
            # arithmetic shift: floor
            k = stage(m, (r + (~self.linear | mid2)) >> 1, f"k{i}", shape=k_shape)
            flush3, neg3 = stage(m, zero2 | (r < -1), f"flush{i}"), stage(m, neg2, f"neg{i}_3")
            e = Signal(3, name=f"e{i}")
            with m.If(flush3):
                m.d.comb += e.eq(0)
            with m.Elif(k <= 0):
                m.d.comb += e.eq(1)
            with m.Elif(k >= FP4_TOP_K):
                m.d.comb += e.eq(FP4_TOP_K + 1)
            with m.Else():
                m.d.comb += e.eq(k + 1)
            m.d.comb += codes[i].eq(Cat(e, neg3 & (e != 0)))
        e2 = stage(m, e1, "rd_e2")
        e3 = stage(m, e2, "rd_e3")
        # The output beat: datapath, so no reset (only ``valid`` has one).
        out = Signal.like(self.codes_out.payload, reset_less=True)
        m.d.sync += [self.codes_out.valid.eq(v[-1]), out.codes.eq(codes), out.exp.eq(e3)]
        m.d.comb += self.codes_out.payload.eq(out)
