"""The INT requantizer: accumulator tiles in, int4 or uint4 codes plus a tile exponent out.

Bit-exact with ``golden.formats.quantize(y, kind, tile=T)``, where v = acc * 2**out_exp
and y = v for ``int4``, y = clip(v, 0, alpha) (ReLU, then the optional PACT clip) for
``uint4``; with the ReLU' mask on, elements whose mask bit is 0 are 0 before that.

The integer formulation it implements (qmax = 7 or 15, b = bit_length(qmax) = 3 or 4;
x is acc after mask and ReLU, a = |x|):

* tile exponent: for an integer a > 0 with n = bit_length(a), the smallest e with
  a <= qmax * 2**e is e = n - b, plus 1 when the top b bits of a are all ones and a lower
  bit is set (then a > qmax * 2**(n - b)). This is golden's frexp rule in integers.
  E = clip(out_exp + e(amax), -128, 127), or -128 for an all-zero tile.
* clip: x * 2**out_exp > alpha iff x > thr = floor(alpha / 2**out_exp) (x is an integer),
  so the tile has a clipped element iff amax > thr. A clipped element equals alpha, which
  may lie between accumulator steps; it is the largest value of its tile, so the tile
  takes E = clip(clip_exp + e(clip_mant), -128, 127) (-128 if clip_mant = 0) whatever
  its accumulators are. No element needs a clip compare of its own: rounding and
  clipping are monotonic, so a clipped element's code q_alpha = q(alpha) equals
  min(q(x), q_alpha), and q_alpha, a constant of the configuration, caps every code of
  such a tile.
* element: q = clip(round_half_even(x * 2**(out_exp - E)), qmin, qmax), done on the
  magnitude (round half to even is symmetric) with s = E - out_exp: the bits of a at
  s-1 (guard) .. s+4 come out of one 6-bit-wide shifter; everything below the guard is
  the sticky bit, anything above s+4 saturates. s < 0 (a tiny maximum, s >= -3, or E
  clipped at 127) is a left shift: the shifter sees a * 2**4 and s + 4 clipped at 0, so
  any a >= 1 shifted by 4 or more still saturates, as the true left shift would.
"""

import operator
from functools import reduce

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.params import EXP_MAX, EXP_MIN, NibbleParams

# CLIP_MANT_BITS, CLIP_EXP_BITS: alpha = clip_mant * 2**clip_exp, unsigned / signed.
from .bit_length import bit_length_of_smear, smear
from .layouts import (CLIP_EXP_BITS, CLIP_MANT_BITS, OUT_EXP_BITS, TILE_EXP_BITS,
                      acc_row_layout, code_row_layout)

__all__ = ["Requantizer"]

#: Zero bits below the magnitude, so left shifts by up to 4 reuse the right shifter.
_FRAC = 4


def _clamp(x, lo, hi):
    """Clamp to lo..hi; no lower compare for an unsigned x and lo = 0 (always false)."""
    upper = Mux(x > hi, hi, x)
    if lo == 0 and not x.shape().signed:
        return upper
    return Mux(x < lo, lo, upper)


def _int_exp(m, x, z, wide, name):
    """(n, over) with n = bit_length(x) and over = x > qmax * 2**(n - b), given
    z = smear(x); qmax, b = 15, 4 if ``wide`` else 7, 3. For x > 0, e(x) = n - b + over.
    Flat AND-OR logic on masks of z (see :mod:`rtl.bit_length`)."""
    n = bit_length_of_smear(m, z, f"{name}_n")
    top = Mux(wide, z & ~(z >> 4), z & ~(z >> 3))  # the top b bits below n
    over = Signal(name=f"{name}_over")
    m.d.comb += over.eq(~(~x & top).any() & (x & Mux(wide, z >> 4, z >> 3)).any())
    return n, over


def _exp_add(base, n, over, wide):
    """base + e(x) from _int_exp's (n, over), as a signed value."""
    return base + Cat(n, Const(0, 1)).as_signed() + over - Mux(wide, 4, 3)


def _round_half_even(v, sh):
    """floor(v / 2**sh) for an unsigned v, and whether round half to even adds 1."""
    q0 = v >> sh
    guard = (v & Cat(*(sh == i + 1 for i in range(len(v))))).any()
    sticky = (v & Cat(*(sh > i + 1 for i in range(len(v))))).any()
    return q0, guard & (sticky | q0[0])


class Requantizer(wiring.Component):
    """INT requantizer: int4 / uint4 codes with one power-of-two exponent per tile.

    A tile travels as R = T * T / L beats of L = ``params.lanes`` elements (a beat is a
    row when L = T), in row-major order. The unit buffers a whole tile (E needs the tile
    maximum before any element is encoded) as |x| and sign, acc_bits + 1 bits per
    element, double-buffered in one block-RAM ``Memory`` of 2R beats: the next tile is
    written behind the read-out of the current one, so for R >= 4 the unit sustains one
    beat per cycle, R cycles per tile (R = 2: about 3). A tile's first code beat is valid
    6 cycles after its last accumulator beat was accepted: 1 cycle registers the beat
    (mask, ReLU and |x| before a register, the max tree after it), 2 compute the tile
    exponent, 1 reads the buffer and the element shift, 1 registers the beat, and 1
    encodes the codes into the output register. From
    L = 8 on, the max tree is pipelined too, which adds log2(L) - 1 cycles.

    Parameters
    ----------
    params : NibbleParams
        Uses ``tile`` (T), ``lanes`` (L) and ``acc_bits``.

    Attributes
    ----------
    acc_in : In(stream.Signature(acc_row_layout(params)))
        Accumulator tiles, R beats per tile, row-major. ``acc`` holds L two's-complement
        integers; ``out_exp`` (repeated on every beat) is the tile's weight: an element's
        value is acc * 2**out_exp.
    mask_in : In(stream.Signature(L))
        ReLU' mask, one beat per accumulator beat (bit i for element i), consumed only
        while ``mask_en`` is 1. Bit 1 keeps the element, bit 0 makes it 0 before
        quantizing (the host sets it where the forward pre-activation lay in (0, alpha)).
    codes_out : Out(stream.Signature(code_row_layout(params)))
        Quantized tiles, R beats per tile in the same order. ``codes`` holds L codes
        q (int4: 4-bit two's complement -8..7; uint4: 0..15); ``exp`` (repeated on every
        beat) is the tile exponent E, -128..127: an element's value is q * 2**E.
    unsigned_out : In(1)
        1: uint4 with ReLU (and the optional clip); 0: int4.
    clip_en : In(1)
        1: clip uint4 inputs at alpha (PACT). Ignored for int4.
    clip_mant : In(unsigned(8))
        Mantissa of the PACT threshold: alpha = clip_mant * 2**clip_exp, in the same
        units as acc * 2**out_exp. The host rounds PACT's learned alpha to this form;
        clip_mant = 0 makes every uint4 output 0.
    clip_exp : In(signed(8))
        Exponent of the PACT threshold.
    mask_en : In(1)
        1: pair every accumulator beat with a ``mask_in`` beat and apply it.

    The configuration ports (``unsigned_out`` ... ``mask_en``) must be held constant from
    4 cycles before a tile's first beat is offered until its last code beat has left (the
    clip values derived from them go through 4 registers).
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        super().__init__({
            "acc_in": In(stream.Signature(acc_row_layout(params))),
            "mask_in": In(stream.Signature(params.lanes)),
            "codes_out": Out(stream.Signature(code_row_layout(params))),
            "unsigned_out": In(1),
            "clip_en": In(1),
            "clip_mant": In(unsigned(CLIP_MANT_BITS)),
            "clip_exp": In(signed(CLIP_EXP_BITS)),
            "mask_en": In(1),
        })

    def elaborate(self, platform):
        L, R, acc_bits = self._params.lanes, self._params.beats_per_tile, self._params.acc_bits
        SH_MAX = acc_bits + _FRAC + 1  # shifts from here on give 0
        u = self.unsigned_out
        clipping = u & self.clip_en
        m = Module()

        elem = data.StructLayout({"mag": unsigned(acc_bits), "neg": 1})  # |x|, x < 0
        # Block RAM even when small: in flip-flops a small tile's buffer costs more logic
        # cells than an iCE40 UP5K can spare.
        m.submodules.buf = buf = Memory(shape=data.ArrayLayout(elem, L), depth=2 * R, init=[],
                                         attrs={"ram_style": "block"})
        wr = buf.write_port()
        rd = buf.read_port(transparent_for=())  # never the row being written (see free)

        # Per-bank state. held[b]: bank b holds a whole tile (from its last row's take)
        # not yet fully read; full[b]: that tile is also finalized, so it may be read.
        held = Array(Signal(name=f"held{b}") for b in range(2))
        full = Array(Signal(name=f"full{b}") for b in range(2))
        bank_exp = Array(Signal(signed(TILE_EXP_BITS), name=f"bank_exp{b}") for b in range(2))
        bank_oexp = Array(Signal(signed(OUT_EXP_BITS), name=f"bank_oexp{b}") for b in range(2))
        bank_lim = Array(Signal(4, name=f"bank_lim{b}") for b in range(2))

        wbank, wrow = Signal(), Signal(range(R))
        rbank, rrow = Signal(), Signal(range(R))

        # ---- Write side: ReLU' mask, ReLU, magnitudes and the running maximum.
        # A row may go into a bank that is still being read once the reader is past it.
        free = ~held[wbank] | ((rbank == wbank) & (rrow > wrow))
        mask_ok = ~self.mask_en | self.mask_in.valid
        take = Signal()
        m.d.comb += [
            self.acc_in.ready.eq(free & mask_ok),
            self.mask_in.ready.eq(self.mask_en & free & self.acc_in.valid),
            take.eq(self.acc_in.valid & self.acc_in.ready),
        ]
        row = Signal(data.ArrayLayout(elem, L))
        for i in range(L):
            acc = self.acc_in.payload.acc[i]
            zero = (self.mask_en & ~self.mask_in.payload[i]) | (u & (acc < 0))
            m.d.comb += [
                row[i].mag.eq(Mux(zero, 0, abs(acc))),  # unsigned: |-2**(acc_bits-1)| fits
                row[i].neg.eq(~zero & (acc < 0)),
            ]
        # The buffer write is registered: its enable fans out to the whole row of RAM.
        # A row is read at least 4 cycles after it was taken, so the delay is invisible.
        m.d.sync += [wr.en.eq(take), wr.addr.eq(Cat(wrow, wbank)), wr.data.eq(row)]

        # thr = floor(alpha / 2**out_exp), saturated: x > thr iff x * 2**out_exp > alpha.
        d = Signal(signed(OUT_EXP_BITS + 1))
        thr = Signal(acc_bits + CLIP_MANT_BITS)
        m.d.comb += d.eq(self.clip_exp - self.acc_in.payload.out_exp)
        with m.If(d >= 0):  # clip_mant << (acc_bits - 1) already exceeds every |x|
            m.d.comb += thr.eq(self.clip_mant << Mux(d >= acc_bits - 1, acc_bits - 1,
                                                     d[:(acc_bits - 1).bit_length()]))
        with m.Else():
            m.d.comb += thr.eq(self.clip_mant >> Mux(-d >= CLIP_MANT_BITS, CLIP_MANT_BITS,
                                                     (-d)[:4]))

        # The tile statistics follow one cycle behind the take, from the registered row
        # (the buffer's write data): masking and |x| then sit in front of a register, not
        # in front of the max tree, which is the longest path of the write side.
        w_valid, w_first, w_last, w_bank = Signal(), Signal(), Signal(), Signal()
        w_thr = Signal.like(thr)
        w_oexp = Signal(signed(OUT_EXP_BITS))
        m.d.sync += w_valid.eq(take)
        with m.If(take):
            m.d.sync += [w_first.eq(wrow == 0), w_last.eq(wrow == R - 1), w_bank.eq(wbank),
                         w_thr.eq(thr), w_oexp.eq(self.acc_in.payload.out_exp)]
        mags = [wr.data[i].mag for i in range(L)]
        row_smear = smear(m, reduce(operator.or_, mags), "row_smear")
        # From L = 8 on, a register after every tree level but the last (the beat's flags
        # travel along): the longer latency still leaves one beat per cycle, as the next
        # tile's beats take R >= L cycles to arrive. At R = 4 that would cost throughput.
        level = 0
        while len(mags) > 1:
            mags = [Mux(a > b, a, b) for a, b in zip(mags[::2], mags[1::2])]
            level += 1
            if L >= 8 and len(mags) > 1:
                staged = [Signal(acc_bits, name=f"row_max{level}_{i}") for i in range(len(mags))]
                m.d.sync += [r.eq(v) for r, v in zip(staged, mags)]
                mags = staged
                flags = [w_valid, w_first, w_last, w_bank, w_thr, w_oexp, row_smear]
                later = [Signal.like(f, name=f"{f.name}_l{level}") for f in flags]
                m.d.sync += [r.eq(f) for r, f in zip(later, flags)]
                w_valid, w_first, w_last, w_bank, w_thr, w_oexp, row_smear = later

        amax = Signal(acc_bits)  # max |x| over the tile so far ...
        amax_smear = Signal(acc_bits)  # ... and smear(amax), for a shallow finalize
        tile_thr = Signal.like(thr)
        tile_oexp = Signal(signed(OUT_EXP_BITS))
        fin = [Signal(name=f"fin{k}") for k in range(2)]  # finalize pipeline: valid ...
        fin_bank = [Signal(name=f"fin_bank{k}") for k in range(2)]  # ... and its bank
        m.d.sync += [fin[1].eq(fin[0]), fin_bank[1].eq(fin_bank[0])]
        m.d.sync += fin[0].eq(0)
        with m.If(take):
            m.d.sync += wrow.eq(wrow + 1)
            with m.If(wrow == R - 1):
                m.d.sync += [wrow.eq(0), wbank.eq(~wbank), held[wbank].eq(1)]
        with m.If(w_valid):
            m.d.sync += [
                tile_oexp.eq(w_oexp),  # the same on every row
                tile_thr.eq(w_thr),
                amax.eq(Mux(w_first | (mags[0] > amax), mags[0], amax)),
                amax_smear.eq(Mux(w_first, 0, amax_smear) | row_smear),
            ]
            with m.If(w_last):
                m.d.sync += [fin[0].eq(1), fin_bank[0].eq(w_bank)]

        # ---- Tile-independent clip values, a 4-register pipeline from the configuration
        # (see the note on configuration ports). With an element clipped the tile takes
        # E = clip(clip_exp + e(clip_mant)) and the cap q_alpha = round(alpha / 2**E).
        e_alpha = Signal(signed(TILE_EXP_BITS))
        sh_a = Signal(range(CLIP_MANT_BITS + _FRAC + 2))  # clip_mant << 4 fits 12 bits
        qa_floor, qa_up = _round_half_even(Cat(Const(0, _FRAC), self.clip_mant), sh_a)
        qa_floor_r, qa_up_r = Signal.like(qa_floor), Signal()
        q_alpha = Signal(4)
        m.d.sync += [
            e_alpha.eq(Mux(self.clip_mant == 0, EXP_MIN, _clamp(
                _exp_add(self.clip_exp, *_int_exp(
                    m, self.clip_mant, smear(m, self.clip_mant, "mant_smear"), u, "e_mant"), u),
                EXP_MIN, EXP_MAX))),
            sh_a.eq(_clamp(e_alpha - self.clip_exp + _FRAC, 0, CLIP_MANT_BITS + _FRAC + 1)),
            qa_floor_r.eq(qa_floor),
            qa_up_r.eq(qa_up),
            q_alpha.eq(_clamp(qa_floor_r + qa_up_r, 0, 15)),
        ]

        # ---- Finalize, 2 pipelined steps after a tile's statistics are complete (the
        # next tile may already be arriving). 1: the clip test and bit length / top bits
        # of amax.
        f_clip, f_over = Signal(), Signal()
        f_n = Signal(range(acc_bits + 1))
        f_oexp = Signal(signed(OUT_EXP_BITS))
        n, over = _int_exp(m, amax, amax_smear, u, "e_amax")
        m.d.sync += [
            f_clip.eq(clipping & (amax > tile_thr)),
            f_n.eq(n),
            f_over.eq(over),
            f_oexp.eq(tile_oexp),
        ]
        # 2: the tile exponent and the largest positive code (qmax, or q_alpha: see
        # above); the bank is ready. The element shift follows from them at read time.
        with m.If(fin[1]):
            m.d.sync += [
                bank_exp[fin_bank[1]].eq(Mux(f_clip, e_alpha, Mux(
                    f_n != 0, _clamp(_exp_add(f_oexp, f_n, f_over, u), EXP_MIN, EXP_MAX),
                    EXP_MIN))),
                bank_oexp[fin_bank[1]].eq(f_oexp),
                bank_lim[fin_bank[1]].eq(Mux(u, Mux(f_clip, q_alpha, 15), 7)),
                full[fin_bank[1]].eq(1),
            ]

        # ---- Read side, two stages that advance together: a registered memory read
        # (with the bank's element shift and limit), then the encoded codes in the output
        # register, so no encoding logic sits behind the unit's output.
        rd_valid, out_valid = Signal(), Signal()
        rd_exp, out_exp = Signal(signed(TILE_EXP_BITS)), Signal(signed(TILE_EXP_BITS))
        sh = Signal(range(SH_MAX + 1))
        lim = Signal(4)
        codes = Signal.like(self.codes_out.payload.codes)
        advance = ~out_valid | self.codes_out.ready
        m.d.comb += [rd.addr.eq(Cat(rrow, rbank)), rd.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [rd_valid.eq(full[rbank]), out_valid.eq(rd_valid), out_exp.eq(rd_exp),
                         self.codes_out.payload.codes.eq(codes)]
            with m.If(full[rbank]):
                m.d.sync += [
                    rd_exp.eq(bank_exp[rbank]),
                    sh.eq(_clamp(bank_exp[rbank] - bank_oexp[rbank] + _FRAC, 0, SH_MAX)),
                    lim.eq(bank_lim[rbank]),
                    rrow.eq(rrow + 1),
                ]
                with m.If(rrow == R - 1):
                    m.d.sync += [rrow.eq(0), rbank.eq(~rbank), full[rbank].eq(0),
                                 held[rbank].eq(0)]

        # Masks over magnitude bit j, shared by the row: the guard bit is at s - 1 =
        # sh - 5, the sticky bits below it, the saturating bits above s + 4 = sh.
        sticky_mask = Cat(*(sh > j + _FRAC + 1 for j in range(acc_bits)))
        over_mask = Cat(Const(0, 1), *(sh < j for j in range(1, acc_bits)))  # sh < 0: never
        for i in range(L):
            a, neg = rd.data[i].mag, rd.data[i].neg
            win = (Cat(Const(0, _FRAC + 1), a) >> sh)[:6]  # guard, then 5 result bits
            up = win[0] & ((a & sticky_mask).any() | win[1])
            qm = win[1:] + up
            top = Mux(neg, 8, lim)  # int4 reaches -8, uint4 / int4 positives reach lim
            cm = Mux((a & over_mask).any() | (qm > top), top, qm)
            m.d.comb += codes[i].eq(Mux(neg, -cm, cm))
        m.d.comb += [
            self.codes_out.payload.exp.eq(out_exp),
            self.codes_out.valid.eq(out_valid),
        ]
        return m
