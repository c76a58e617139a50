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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import EXP_MAX, EXP_MIN, NibbleParams
from wire.streams import CLIP_EXP_BITS, CLIP_MANT_BITS, OUT_EXP_BITS, TILE_EXP_BITS

# CLIP_MANT_BITS, CLIP_EXP_BITS: alpha = clip_mant * 2**clip_exp, unsigned / signed.
from .bit_length import bit_length_of_smear, smear
from .layouts import acc_row_layout, code_row_layout
from .pe import magnitude
from .pipeline import REPLICA_SUFFIX, delays, register_copy, stage
from .tile_bank import TileBank, bank_tiles

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
    Flat AND-OR logic on masks of z (see :mod:`rtl.bit_length`); :func:`_over_masks`
    and :func:`_over` are its two halves, for a register between them."""
    n = bit_length_of_smear(m, z, f"{name}_n")
    over = Signal(name=f"{name}_over")
    m.d.comb += over.eq(_over(x, *_over_masks(z, wide)))
    return n, over


def _over_masks(z, wide):
    """The masks of ``over`` from z = smear(x): the top b bits below bit_length(x), and
    the bits below those."""
    return Mux(wide, z & ~(z >> 4), z & ~(z >> 3)), Mux(wide, z >> 4, z >> 3)


def _over(x, top, below):
    """x > qmax * 2**(n - b): x has all of its top b bits set and some bit below them."""
    return ~(~x & top).any() & (x & below).any()


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
    row when L = T), in row-major order. The unit stores a whole tile (E needs the tile
    maximum before any element is encoded) as |x| and sign, acc_bits + 1 bits per
    element, in a :class:`rtl.tile_bank.TileBank` of several tiles, so the next tiles are
    written while the current one is read: one beat per cycle in, one out.

    The unit never stalls. Its input is valid-only: the producer holds one of
    ``capacity`` credits for every beat it sends and gets one back on ``freed``. Its
    output is valid-only too: it reads a beat out only with a credit for the buffer
    behind it (``credit``, ``take_credit``). Pipelines, one step of logic per stage:

    * write: mask, ReLU and |x| into a register, then into the bank; the tile
      statistics (maximum magnitude, the OR of the magnitudes, the clip threshold)
      follow through a register of their own (the bank's register sits by its block
      RAM) and a max tree with two registers per level (compare, then select; log2 L
      levels, at least one register);
    * finalize, six stages after a tile's statistics are complete: the clip
      threshold's shift, its two halves with the smear of the maximum, then the bit
      length, the clip test and the unclamped exponent, the tile exponent E, the
      element shift;
    * read, nine cycles from a read to its codes: the bank's read, two registers (a
      block RAM's output drives nothing but a register), the shift masks, the coarse shift,
      the shift window, the rounding, the clamp of the magnitude, the sign into the
      output register.

    Parameters
    ----------
    params : NibbleParams
        Uses ``tile`` (T), ``lanes`` (L) and ``acc_bits``.

    Attributes
    ----------
    acc_in : In(stream.Signature(acc_row_layout(params), always_ready=True))
        Accumulator tiles, R beats per tile, row-major. ``acc`` holds L two's-complement
        integers; ``out_exp`` (repeated on every beat) is the tile's weight: an element's
        value is acc * 2**out_exp.
    mask_in : In(L)
        The ReLU' mask of the beat on ``acc_in`` (bit i for element i), used while
        ``mask_en`` is 1. Bit 1 keeps the element, bit 0 makes it 0 before quantizing
        (the host sets it where the forward pre-activation lay in (0, alpha)).
    freed : Out(1)
        A beat's room in the unit is free again: one input credit back.
    codes_out : Out(stream.Signature(code_row_layout(params), always_ready=True))
        Quantized tiles, R beats per tile in the same order. ``codes`` holds L codes
        q (int4: 4-bit two's complement -8..7; uint4: 0..15); ``exp`` (repeated on every
        beat) is the tile exponent E, -128..127: an element's value is q * 2**E.
    credit : In(1)
        The buffer behind ``codes_out`` has room for one more beat.
    take_credit : Out(1)
        A beat is read out (it uses that room; it arrives :attr:`READ_LATENCY` cycles
        later).
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
        1: apply ``mask_in``.
    capacity : int
        Input credits: the tile bank's N R beats (:func:`rtl.tile_bank.bank_tiles`).

    The configuration ports (``unsigned_out`` ... ``mask_en``) must be held constant from
    :attr:`CONFIG_LEAD` = 6 cycles before a tile's first beat arrives until its last code
    beat has left (the clip values derived from them go through 6 registers; the write
    side takes ``unsigned_out`` and ``mask_en`` through a copy per lane).
    """

    #: Cycles the configuration ports must be steady before a tile's first beat.
    CONFIG_LEAD = 6

    #: Cycles from a beat read out of the bank (``take_credit``) to its codes on
    #: ``codes_out``.
    READ_LATENCY = 9

    def __init__(self, params: NibbleParams):
        self._params = params
        self.capacity = bank_tiles(params.beats_per_tile) * params.beats_per_tile
        super().__init__({
            "acc_in": In(stream.Signature(acc_row_layout(params), always_ready=True)),
            "mask_in": In(params.lanes),
            "freed": Out(1),
            "codes_out": Out(stream.Signature(code_row_layout(params), always_ready=True)),
            "credit": In(1),
            "take_credit": Out(1),
            "unsigned_out": In(1),
            "clip_en": In(1),
            "clip_mant": In(unsigned(CLIP_MANT_BITS)),
            "clip_exp": In(signed(CLIP_EXP_BITS)),
            "mask_en": In(1),
        })

    def _element(self):
        return data.StructLayout({"mag": unsigned(self._params.acc_bits), "neg": 1})

    def _meta(self):
        acc_bits = self._params.acc_bits
        return data.StructLayout({"exp": signed(TILE_EXP_BITS),
                                  "sh": range(acc_bits + _FRAC + 2), "lim": 4})

    def elaborate(self, platform):
        L, R = self._params.lanes, self._params.beats_per_tile
        m = Module()
        m.submodules.bank = bank = TileBank(data.ArrayLayout(self._element(), L), R,
                                            self._meta())
        m.d.comb += self.freed.eq(bank.freed)
        stats = self._write_side(m, bank)
        e_alpha, q_alpha = self._clip_constants(m)
        self._finalize(m, bank, stats, e_alpha, q_alpha)
        self._read_side(m, bank)
        return m

    def _write_side(self, m, bank):
        """Mask, ReLU, |x| and sign into a register, then into the bank; the tile's
        running maximum and OR behind a pipelined max tree. Returns the statistics
        registers (amax, tile_or, d = clip_exp - out_exp, out_exp) and the pulse ``done``
        in the cycle after a tile's statistics are complete."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        u = self.unsigned_out
        row = Signal(data.ArrayLayout(self._element(), L), reset_less=True)
        w_valid = Signal()
        d = Signal(signed(OUT_EXP_BITS + 1), reset_less=True)   # clip_exp - out_exp
        oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        m.d.sync += [w_valid.eq(self.acc_in.valid),
                     d.eq(self.clip_exp - self.acc_in.payload.out_exp),
                     oexp.eq(self.acc_in.payload.out_exp)]
        # ``unsigned_out`` and ``mask_en`` reach every bit of every lane's magnitude: a
        # flip-flop copy per lane (one register from the accelerator's copy to 16 lanes
        # x 32 bits took 12.7 ns in the 16 x 16 build). The configuration is steady
        # long before a tile's first beat, so the copies' cycle costs nothing.
        u_lane = [register_copy(m, u, f"unsigned_lane{i}") for i in range(L)]
        mask_en_lane = [register_copy(m, self.mask_en, f"mask_en_lane{i}") for i in range(L)]
        for i in range(L):
            acc = self.acc_in.payload.acc[i]
            zero = (mask_en_lane[i] & ~self.mask_in[i]) | (u_lane[i] & (acc < 0))
            m.d.sync += [row[i].mag.eq(magnitude(m, acc, zero)),
                         row[i].neg.eq(~zero & (acc < 0))]
        w_first = Signal(init=1)   # the next beat written starts a tile
        m.d.comb += [bank.w.valid.eq(w_valid), bank.w.payload.eq(row)]
        with m.If(w_valid):
            m.d.sync += w_first.eq(bank.w_last)

        # The max tree, two registers per level (the compares, then the selects; at
        # least one register); the beat's flags and tile values travel along.
        mags = [row[i].mag for i in range(L)]
        flags = [w_valid, w_first, bank.w_last, d, oexp, reduce(operator.or_, mags)]

        def later(flags, name):
            regs = [Signal(len(f), name=f"{name}_{k}", reset_less=k > 0)
                    for k, f in enumerate(flags)]
            m.d.sync += [r.eq(f) for r, f in zip(regs, flags)]
            return regs

        # The tree starts from a register of its own: ``row`` sits by the bank's block
        # RAM, and a net from it to the first compares crossed the die.
        mags = [stage(m, mag, f"tree_in{i}") for i, mag in enumerate(mags)]
        flags = later(flags, "tree_in")
        level = 0
        while True:
            if len(mags) > 1:
                pairs = [(stage(m, a, f"cmp{level}_{i}a"), stage(m, b, f"cmp{level}_{i}b"),
                          stage(m, a > b, f"cmp{level}_{i}gt"))
                         for i, (a, b) in enumerate(zip(mags[::2], mags[1::2]))]
                flags = later(flags, f"cmp_stat{level}")
                mags = [Mux(gt, a, b) for a, b, gt in pairs]
            mags = [stage(m, v, f"row_max{level}_{i}") for i, v in enumerate(mags)]
            flags, level = later(flags, f"stat{level}"), level + 1
            if len(mags) == 1:
                break
        s_valid, s_first, s_last, s_d, s_oexp, s_or = flags

        amax = Signal(acc_bits, reset_less=True)      # max |x| over the tile so far ...
        tile_or = Signal(acc_bits, reset_less=True)   # ... and the OR of all |x|
        tile_d = Signal.like(d, reset_less=True)
        tile_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        done = Signal()
        m.d.sync += done.eq(s_valid & s_last)
        with m.If(s_valid):
            m.d.sync += [
                tile_oexp.eq(s_oexp),  # the same on every beat
                tile_d.eq(s_d.as_signed()),
                amax.eq(Mux(s_first | (mags[0] > amax), mags[0], amax)),
                tile_or.eq(Mux(s_first, 0, tile_or) | s_or),
            ]
        return amax, tile_or, tile_d, tile_oexp, done

    def _clip_constants(self, m):
        """Tile-independent clip values, a 6-register pipeline from the configuration
        (see the note on configuration ports). With an element clipped the tile takes
        E = clip(clip_exp + e(clip_mant)) and the cap q_alpha = round(alpha / 2**E)."""
        u = self.unsigned_out
        # e(clip_mant) as (n, over) in registers, then E.
        n_m, over_m = _int_exp(m, self.clip_mant, smear(m, self.clip_mant, "mant_smear"), u,
                               "e_mant")
        n_r, over_r = stage(m, n_m, "e_mant_n_r"), stage(m, over_m, "e_mant_over_r")
        zero_r = stage(m, self.clip_mant == 0, "clip_mant_zero_r")
        # the sum, then the clamp (each is a carry chain)
        esum_r = stage(m, _exp_add(self.clip_exp, n_r, over_r, u), "e_alpha_sum")
        zero_rr = stage(m, zero_r, "clip_mant_zero_rr")
        e_alpha = Signal(signed(TILE_EXP_BITS))
        sh_a = Signal(range(CLIP_MANT_BITS + _FRAC + 2))  # clip_mant << 4 fits 12 bits
        qa_floor, qa_up = _round_half_even(Cat(Const(0, _FRAC), self.clip_mant), sh_a)
        qa_floor_r, qa_up_r = Signal.like(qa_floor), Signal()
        q_alpha = Signal(4)
        m.d.sync += [
            e_alpha.eq(Mux(zero_rr, EXP_MIN, _clamp(esum_r, EXP_MIN, EXP_MAX))),
            sh_a.eq(_clamp(e_alpha - self.clip_exp + _FRAC, 0, CLIP_MANT_BITS + _FRAC + 1)),
            qa_floor_r.eq(qa_floor),
            qa_up_r.eq(qa_up),
            q_alpha.eq(_clamp(qa_floor_r + qa_up_r, 0, 15)),
        ]
        return e_alpha, q_alpha

    def _finalize(self, m, bank, stats, e_alpha, q_alpha):
        """Six register stages from a tile's complete statistics to its meta in the
        bank: (1) the clip threshold's shift, (2) its shift by a multiple of 8 and the
        smear of the maximum (= the smear of the OR; its first two steps in (1)) with the
        masks of its top bits, (3) the rest of the threshold's shift, the maximum's bit
        length and top bits, (4) the clip test and the unclamped exponent, (5) the tile
        exponent E and the largest positive code, (6) the element shift
        E - out_exp + 4."""
        acc_bits = self._params.acc_bits
        amax, tile_or, tile_d, tile_oexp, done = stats
        u = self.unsigned_out
        SH_MAX = acc_bits + _FRAC + 1  # shifts from here on give 0

        f = delays(m, done, 6, "fin")
        # (1..3) thr = floor(alpha / 2**out_exp), saturated, x > thr iff x * 2**out_exp >
        # alpha: clip_mant << (acc_bits - 1) (already beyond every |x|) shifted right by
        # r = acc_bits - 1 - d, a multiple of 8 in (2) and the rest in (3). In (1), r and
        # its two clamps: d >= acc_bits - 1 (r = 0, thr the top) and d <= -8 (thr =
        # clip_mant >> 8 = 0). (One shift direction, one step per stage: a two-way
        # shift and its select in (2) took 10.4 ns on the ULX3S 16x16 at 11a4f22.)
        d = tile_d
        top = self.clip_mant << (acc_bits - 1)
        r1 = stage(m, acc_bits - 1 - d, "thr_r1", shape=signed(len(d) + 1))
        hi1 = stage(m, d >= acc_bits - 1, "thr_hi1")
        lo1 = stage(m, d <= -CLIP_MANT_BITS, "thr_lo1")
        # (the smear in two halves, across the register: smear(smear(x, stop=4),
        # start=4) == smear(x))
        or1 = stage(m, smear(m, tile_or, "or_smear", stop=4), "or1")
        amax1 = stage(m, amax, "amax1")
        oexp1 = stage(m, tile_oexp, "oexp1")
        # (2)
        coarse = Cat(Const(0, 3), r1[3:(acc_bits + CLIP_MANT_BITS - 1).bit_length()])
        thr2 = stage(m, Mux(hi1, top, Mux(lo1, 0, top >> coarse)), "thr2",
                     shape=unsigned(acc_bits + CLIP_MANT_BITS - 1))
        fine2 = stage(m, Mux(hi1 | lo1, 0, r1[:3]), "thr_fine2", shape=unsigned(3))
        z = smear(m, or1, "amax_smear", start=4)
        z2, amax2, oexp2 = stage(m, z, "z2"), stage(m, amax1, "amax2"), stage(m, oexp1, "oexp2")
        top2, below2 = (stage(m, mask, name) for mask, name in
                        zip(_over_masks(z, u), ("over_top2", "over_below2")))
        # (3)
        thr3 = stage(m, thr2 >> fine2, "thr3", shape=unsigned(len(thr2)))
        n = bit_length_of_smear(m, z2, "e_amax_n")
        over = _over(amax2, top2, below2)
        n3, over3, oexp3 = stage(m, n, "n3"), stage(m, over, "over3"), stage(m, oexp2, "oexp3")
        amax3 = stage(m, amax2, "amax3")
        # (4)
        clip4 = stage(m, self.unsigned_out & self.clip_en & (amax3 > thr3), "clip4")
        esum4 = stage(m, _exp_add(oexp3, n3, over3, u), "esum4")
        nonzero4 = stage(m, n3 != 0, "nonzero4")
        oexp4 = stage(m, oexp3, "oexp4")
        # (5)
        exp5 = stage(m, Mux(clip4, e_alpha, Mux(nonzero4, _clamp(esum4, EXP_MIN, EXP_MAX),
                                                EXP_MIN)), "exp5")
        lim5 = stage(m, Mux(u, Mux(clip4, q_alpha, 15), 7), "lim5")
        oexp5 = stage(m, oexp4, "oexp5")
        # (6)
        sh6 = stage(m, _clamp(exp5 - oexp5 + _FRAC, 0, SH_MAX), "sh6",
                    shape=range(SH_MAX + 1))
        exp6, lim6 = stage(m, exp5, "exp6"), stage(m, lim5, "lim6")
        m.d.comb += [
            bank.fin.valid.eq(f[6]),
            bank.fin.payload.exp.eq(exp6),
            bank.fin.payload.sh.eq(sh6),
            bank.fin.payload.lim.eq(lim6),
        ]

    def _read_side(self, m, bank):
        """Nine cycles from a read to its codes, one step of logic each: the bank's
        registered read (a block RAM's output, slow: two registers after it), a
        register with the shift masks decoded from the tile's meta, the magnitude
        shifted by the element shift's multiple of 8 with the sticky and overflow bits,
        the window of 6 bits (the rest of the shift), the rounding, the clamp of the
        magnitude, and the sign into the output register."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        read = Signal()
        m.d.comb += [read.eq(bank.r_rdy & self.credit), bank.r_en.eq(read),
                     self.take_credit.eq(read)]
        v = delays(m, read, self.READ_LATENCY - 1, "rd_valid")

        # (0) the beat and its tile's meta in flip-flops: the beat through two, the
        # first of them by the block RAM (its clock-to-out and the route to the lanes
        # were an 11.3 ns path on the ULX3S 16x16 at df084b0); the meta alongside.
        beat0 = stage(m, stage(m, bank.r_data, "rd_beat_ram"), "rd_beat0")
        meta = stage(m, stage(m, bank.r_meta, "rd_meta_ram"), "rd_meta")
        # (1) masks over magnitude bit j, shared by the beat: the guard bit is at
        # s - 1 = sh - 5, the sticky bits below it, the saturating bits above s + 4 = sh.
        beat = stage(m, beat0, "rd_beat")
        # the shift reaches every lane's window shifter: a flip-flop copy per lane
        sh = [stage(m, meta.sh, f"rd_sh{i}{REPLICA_SUFFIX}") for i in range(L)]
        sticky_mask = stage(m, Cat(*(meta.sh > j + _FRAC + 1 for j in range(acc_bits))),
                            "rd_sticky_mask")
        over_mask = stage(m, Cat(Const(0, 1), *(meta.sh < j for j in range(1, acc_bits))),
                          "rd_over_mask")
        exp1, lim1 = stage(m, meta.exp, "rd_exp1"), stage(m, meta.lim, "rd_lim1")
        # (2a) the magnitude shifted by sh's multiple of 8 (the 13 bits the window can
        # still take), sticky and overflow per element; (2b) the window (guard, then 5
        # result bits) at the rest of the shift.
        win, sticky, over, neg = [], [], [], []
        for i in range(L):
            a = beat[i].mag
            coarse = stage(m, (Cat(Const(0, _FRAC + 1), a) >> Cat(Const(0, 3), sh[i][3:]))[:13],
                           f"coarse{i}")
            fine = stage(m, sh[i][:3], f"fine{i}")
            sticky_a = stage(m, (a & sticky_mask).any(), f"sticky{i}_a")
            over_a = stage(m, (a & over_mask).any(), f"over{i}_a")
            neg_a = stage(m, beat[i].neg, f"neg{i}_a")
            win.append(stage(m, (coarse >> fine)[:6], f"win{i}"))
            sticky.append(stage(m, sticky_a, f"sticky{i}"))
            over.append(stage(m, over_a, f"over{i}"))
            neg.append(stage(m, neg_a, f"neg{i}_2"))
        exp2, lim2 = (stage(m, stage(m, exp1, "rd_exp2a"), "rd_exp2"),
                      stage(m, stage(m, lim1, "rd_lim2a"), "rd_lim2"))
        # (3) round half to even.
        qm = [stage(m, win[i][1:] + (win[i][0] & (sticky[i] | win[i][1])), f"qm{i}")
              for i in range(L)]
        over3 = [stage(m, over[i], f"over{i}_3") for i in range(L)]
        neg3 = [stage(m, neg[i], f"neg{i}_3") for i in range(L)]
        exp3, lim3 = stage(m, exp2, "rd_exp3"), stage(m, lim2, "rd_lim3")
        # (4) clamp the magnitude: int4 reaches -8, uint4 / int4 positives reach lim.
        cms, neg4 = [], []
        for i in range(L):
            top = Mux(neg3[i], 8, lim3)
            cms.append(stage(m, Mux(over3[i] | (qm[i] > top), top, qm[i]), f"cm{i}",
                             shape=range(16)))
            neg4.append(stage(m, neg3[i], f"neg{i}_4"))
        exp4 = stage(m, exp3, "rd_exp4")
        # (5) the sign, into the output register (a compare, a multiplexer and a
        # negation in one stage took 11.9 ns in the 16 x 16 build).
        codes = Signal.like(self.codes_out.payload.codes)
        for i in range(L):
            m.d.comb += codes[i].eq(Mux(neg4[i], -cms[i], cms[i]))
        # The output beat: datapath, so no reset (only ``valid`` has one).
        out = Signal.like(self.codes_out.payload, reset_less=True)
        m.d.sync += [self.codes_out.valid.eq(v[-1]), out.codes.eq(codes), out.exp.eq(exp4)]
        m.d.comb += self.codes_out.payload.eq(out)
