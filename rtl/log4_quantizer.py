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

from amaranth.hdl import Array, Cat, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.formats import FP4_TOP_K
from golden.params import EXP_MAX, EXP_MIN, NibbleParams

from .bit_length import bit_length, bit_length_of_smear, smear
from .layouts import OUT_EXP_BITS, TILE_EXP_BITS, acc_row_layout, code_row_layout

__all__ = ["Log4Quantizer"]

#: Tile exponent = floor(log2 amax) - FP4_E_OFFSET puts the tile maximum on the top code.
FP4_E_OFFSET = 2 * FP4_TOP_K


class Log4Quantizer(wiring.Component):
    """Log4 (radix-4 FP4) gradient quantizer with per-tile exponents.

    A tile travels as R = T * T / L beats of L = ``params.lanes`` elements (a beat is a
    row when L = T), in row-major order. The unit buffers a whole tile (it needs the tile
    maximum before encoding any element), double-buffered in block RAM: while one tile
    is emitted the next one is taken in, so it sustains one beat per cycle. A tile's
    first code beat is valid 5 cycles after its last accumulator beat is accepted;
    throughput is R cycles per tile.

    Parameters
    ----------
    params : NibbleParams
        Uses ``tile`` (T), ``lanes`` (L) and ``acc_bits``.

    Attributes
    ----------
    acc_in : In(stream.Signature(acc_row_layout(params)))
        Accumulator tiles, R beats per tile, row-major. ``acc`` holds L two's-complement
        integers; ``out_exp`` (repeated on every beat) is the tile's weight, so an
        element's value is acc * 2**out_exp.
    codes_out : Out(stream.Signature(code_row_layout(params)))
        FP4 tiles, R beats per tile in the same order. ``codes`` holds L codes
        [sign | e2 e1 e0]; ``exp`` (repeated on every beat) is the tile exponent E, so a
        nonzero code decodes to (-1)**sign * 2**(2(e-1) + phase + E).
    phase : In(1)
        Two-phase-rounding phase: 0 even-power grid, 1 odd-power grid.
    linear : In(1)
        Rounding mode: 0 ``log`` (nearest in the log domain), 1 ``linear`` (nearest by
        the arithmetic midpoint). Both round ties up.
    ext_exp_en : In(1)
        1: use ``ext_exp`` as every tile's E (per-layer GradScale); 0: E from the tile max.
    ext_exp : In(signed(8))
        The external tile exponent, -128..127.

    ``phase``, ``linear``, ``ext_exp_en`` and ``ext_exp`` must be held constant while a
    tile is inside the unit.
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        super().__init__({
            "acc_in": In(stream.Signature(acc_row_layout(params))),
            "codes_out": Out(stream.Signature(code_row_layout(params))),
            "phase": In(1),
            "linear": In(1),
            "ext_exp_en": In(1),
            "ext_exp": In(signed(TILE_EXP_BITS)),
        })

    def elaborate(self, platform):
        L, R, acc_bits = self._params.lanes, self._params.beats_per_tile, self._params.acc_bits
        m = Module()

        # Exact ranges of the exponent arithmetic, so nothing wraps for any out_exp / E.
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
        # Block RAM even when small: in flip-flops a small tile's buffer costs more logic
        # cells than an iCE40 UP5K can spare.
        m.submodules.buf = buf = Memory(shape=data.ArrayLayout(elem, L), depth=2 * R, init=[],
                                         attrs={"ram_style": "block"})
        wr = buf.write_port()
        rd = buf.read_port(transparent_for=())  # a bank is never read and written at once

        # Per-bank state. held[b]: bank b holds a whole tile (from its last beat's write)
        # not yet fully read; full[b]: that tile's exponent bank_e[b] and element offset
        # bank_base[b] are ready too, so it may be read.
        held = Array(Signal(name=f"held{b}") for b in range(2))
        full = Array(Signal(name=f"full{b}") for b in range(2))
        bank_e = Array(Signal(signed(TILE_EXP_BITS), name=f"bank_e{b}") for b in range(2))
        bank_base = Array(Signal(base_shape, name=f"bank_base{b}") for b in range(2))

        # ---- Write side: one beat per cycle into bank wbank, from an input register of
        # magnitudes and signs (|acc| in front of it; bit lengths, the tile's OR and the
        # memory write behind it, so the two carry and encoder chains are not in series).
        wbank = Signal()
        wrow = Signal(range(R))
        tile_or = Signal(acc_bits)  # OR of |acc| over the beats of this tile so far

        w_valid = Signal()
        mags = [Signal(acc_bits, name=f"mag{i}") for i in range(L)]
        negs = [Signal(name=f"neg{i}") for i in range(L)]
        w_oexp = Signal(signed(OUT_EXP_BITS))
        rbank = Signal()
        rrow = Signal(range(R))
        # A beat may go into a bank that is still being read once the reader is past it.
        free = ~held[wbank] | ((rbank == wbank) & (rrow > wrow))
        in_ready = ~w_valid | free
        m.d.comb += self.acc_in.ready.eq(in_ready)
        with m.If(in_ready):
            m.d.sync += w_valid.eq(self.acc_in.valid)
            with m.If(self.acc_in.valid):
                m.d.sync += w_oexp.eq(self.acc_in.payload.out_exp)
                for i in range(L):
                    acc = self.acc_in.payload.acc[i]
                    # unsigned, so -2**(acc_bits-1) is exact
                    m.d.sync += [mags[i].eq(abs(acc)), negs[i].eq(acc < 0)]

        row = Signal(data.ArrayLayout(elem, L))
        for i in range(L):
            z = smear(m, mags[i], f"mag_smear{i}")
            lead = z & ~(z >> 1)
            m.d.comb += [
                row[i].n.eq(bit_length_of_smear(m, z, f"n{i}")),
                row[i].mid.eq((mags[i] & ((lead >> 1) | (lead >> 2))).any()),
                row[i].neg.eq(negs[i]),
            ]
        row_or = Signal(acc_bits)
        m.d.comb += row_or.eq(reduce(operator.or_, mags))

        m.d.comb += [
            wr.addr.eq(Cat(wrow, wbank)),
            wr.data.eq(row),
            wr.en.eq(w_valid & free),
        ]
        # A finished tile's bit length goes through one register (fin_*) to the tile
        # exponent, which is stored with the bank; the bank is full from then on.
        fin_valid, fin_bank = Signal(), Signal()
        fin_n = Signal(range(acc_bits + 1))
        fin_oexp = Signal(signed(OUT_EXP_BITS))
        m.d.sync += fin_valid.eq(0)
        with m.If(wr.en):
            m.d.sync += [wrow.eq(wrow + 1), tile_or.eq(tile_or | row_or)]
            with m.If(wrow == R - 1):
                m.d.sync += [
                    fin_valid.eq(1),
                    fin_bank.eq(wbank),
                    fin_n.eq(bit_length(m, tile_or | row_or, "tile_n")),
                    fin_oexp.eq(w_oexp),
                    held[wbank].eq(1),
                    wbank.eq(~wbank),
                    tile_or.eq(0),
                ]

        # ---- Tile exponent of the finished tile, and the element offset it implies.
        p = Signal(p_shape)  # floor(log2 amax) - 12
        m.d.comb += p.eq(fin_oexp + fin_n - (1 + FP4_E_OFFSET))
        tile_e = Signal(signed(TILE_EXP_BITS))
        with m.If(self.ext_exp_en):
            m.d.comb += tile_e.eq(self.ext_exp)
        with m.Elif((fin_n == 0) | (p < EXP_MIN)):
            m.d.comb += tile_e.eq(EXP_MIN)
        with m.Elif(p > EXP_MAX):
            m.d.comb += tile_e.eq(EXP_MAX)
        with m.Else():
            m.d.comb += tile_e.eq(p)
        base = Signal(base_shape)
        m.d.comb += base.eq(fin_oexp - self.phase - tile_e)
        with m.If(fin_valid):
            m.d.sync += [bank_e[fin_bank].eq(tile_e), bank_base[fin_bank].eq(base),
                         full[fin_bank].eq(1)]

        # ---- Read side, two stages that advance together when the output register is
        # empty or consumed (so valid never waits on ready and holds while stalled): the
        # memory's read register, then the encoded codes in the output register, so no
        # encoding logic sits behind the unit's output.
        rd_valid, out_valid = Signal(), Signal()
        rd_e, out_e = Signal(signed(TILE_EXP_BITS)), Signal(signed(TILE_EXP_BITS))
        rd_base = Signal(base_shape)  # latched: the bank may refill while output stalls
        codes = Signal.like(self.codes_out.payload.codes)
        advance = ~out_valid | self.codes_out.ready
        m.d.comb += [rd.addr.eq(Cat(rrow, rbank)), rd.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [rd_valid.eq(full[rbank]), out_valid.eq(rd_valid), out_e.eq(rd_e),
                         self.codes_out.payload.codes.eq(codes)]
            with m.If(full[rbank]):
                m.d.sync += [rrow.eq(rrow + 1), rd_e.eq(bank_e[rbank]),
                             rd_base.eq(bank_base[rbank])]
                with m.If(rrow == R - 1):
                    m.d.sync += [full[rbank].eq(0), held[rbank].eq(0), rbank.eq(~rbank)]

        # ---- Encode the beat in the read register.
        m.d.comb += [self.codes_out.valid.eq(out_valid), self.codes_out.payload.exp.eq(out_e)]
        for i in range(L):
            info = rd.data[i]
            r = Signal(r_shape, name=f"r{i}")
            k = Signal(k_shape, name=f"k{i}")
            e = Signal(3, name=f"e{i}")
            m.d.comb += [
                r.eq(rd_base + info.n - 1),
                k.eq((r + (~self.linear | info.mid)) >> 1),  # arithmetic shift: floor
            ]
            with m.If((info.n == 0) | (r < -1)):
                m.d.comb += e.eq(0)
            with m.Elif(k <= 0):
                m.d.comb += e.eq(1)
            with m.Elif(k >= FP4_TOP_K):
                m.d.comb += e.eq(FP4_TOP_K + 1)
            with m.Else():
                m.d.comb += e.eq(k + 1)
            m.d.comb += codes[i].eq(Cat(e, info.neg & (e != 0)))

        return m
