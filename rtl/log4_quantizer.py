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

Dual mode (the gradient unit, ``golden.output.log4_quantize_fused``): both TPR phases
come from the one tile exponent E, which does not depend on the phase, so the unit
encodes every element twice from the same (n, mid, neg): at r (phase 0) and at r - 1
(phase 1). Beside the tile it reduces the accumulators themselves: the alpha partial,
the exact sum of the accumulators whose clip-mask bit is set (before the ReLU' mask,
:func:`golden.output.alpha_partials`), and the largest masked magnitude
(:func:`golden.output.tile_max_magnitudes`), each an adder or comparator tree over the
lanes and a running sum or maximum over the tile's beats, finalized with E.

Stochastic rounding (``golden.formats``' ``rounding="stochastic"``): the bank also keeps
each element's 17 bits below its leading one (``frac``), and the read side draws one
:class:`rtl.column_random.ColumnRandom` word per element in output order and hands r,
frac and the word's half of each phase to :func:`rtl.stochastic_round.stochastic_exponent`.
"""

import operator
from functools import reduce

from amaranth.hdl import Cat, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.formats import FP4_TOP_K
from golden.output import alpha_sum_bits
from golden.params import EXP_MAX, EXP_MIN, NibbleParams
from golden.xorshift import RAND_BITS, SEED_BITS
from wire.streams import CODE_BITS, OUT_EXP_BITS, TILE_EXP_BITS

from .bit_length import bit_length_of_smear, smear
from .column_random import ColumnRandom
from .layouts import acc_row_layout, out_beat_layout
from .pe import magnitude
from .pipeline import delays, register_copy, stage
from .stochastic_round import FRAC_BITS, stochastic_exponent
from .tile_bank import TileBank, bank_tiles

__all__ = ["Log4Quantizer"]

#: The magnitudes' smear is split by a register after the steps below this one (bit j
#: ORs _PRE bits of the magnitude first).
_PRE = 4

#: Tile exponent = floor(log2 amax) - FP4_E_OFFSET puts the tile maximum on the top code.
FP4_E_OFFSET = 2 * FP4_TOP_K

#: Register stages of the write side, from ``acc_in`` to the bank's write port.
_WRITE_STAGES = 5
#: Register stages of the finalize pipeline, from the pulse after a tile's last write.
_FIN_STAGES = 5


def _tree(m, values, combine, name):
    """``values`` reduced pairwise with ``combine``, one register level per pair level
    (log2 len(values) levels; a power-of-two count). Returns the root."""
    level = 0
    while len(values) > 1:
        level += 1
        values = [stage(m, combine(values[2 * i], values[2 * i + 1]), f"{name}_l{level}_{i}")
                  for i in range(len(values) // 2)]
    return values[0]


def _larger(a, b):
    """The larger of two unsigned values: one comparator and its multiplexer."""
    return Mux(a > b, a, b)


def _max_tree(m, values, name):
    """The largest of ``values`` (unsigned, a power-of-two count), two register levels
    per pair level: the comparison into a register beside both values, then the
    multiplexer (one comparator and its multiplexer in one cycle were a 10.2 ns path,
    ULX3S 8x8 at 2feb78f). Returns the root."""
    level = 0
    while len(values) > 1:
        level += 1
        picked = []
        for i in range(len(values) // 2):
            a, b = values[2 * i], values[2 * i + 1]
            gt = stage(m, a > b, f"{name}_l{level}_{i}_gt")
            a_r, b_r = stage(m, a, f"{name}_l{level}_{i}_a"), stage(m, b, f"{name}_l{level}_{i}_b")
            picked.append(stage(m, Mux(gt, a_r, b_r), f"{name}_l{level}_{i}"))
        values = picked
    return values[0]


class Log4Quantizer(wiring.Component):
    """Log4 (radix-4 FP4) gradient quantizer with per-tile exponents; in dual mode the
    gradient unit (both TPR phases, the alpha partial and the tile maximum).

    A tile travels as R = T * T / L beats of L = ``params.lanes`` elements (a beat is a
    row when L = T), in row-major order. The unit stores a whole tile (it needs the tile
    maximum before encoding any element) as (n, mid, neg) per element in a
    :class:`rtl.tile_bank.TileBank` of several tiles: while one tile is read out the next
    ones are written, one beat per cycle each way.

    The unit never stalls. Its input is valid-only: the producer holds one of
    ``capacity`` credits for every beat it sends and gets one back on ``freed``. Its
    output is valid-only too: it sends a beat only with a credit for the buffer behind
    it (``credit``, ``take_credit``). Pipelines, one step of logic per stage:

    * write: the masked |acc|, the sign and the clipped accumulator into a register, the
      magnitudes' smears in two halves into a second and a third, bit length, leading
      zeros and ``mid`` into a fourth, the magnitude shifted left by its leading zeros
      (``frac``) into a fifth that the bank takes; the OR of the tile's magnitudes
      accumulates beside it. From the first register, an adder tree of the clipped accumulators and
      a comparator tree of the magnitudes (log2 L levels), then the running alpha sum and
      maximum over the tile's beats, delayed to meet the finalize;
    * finalize, five stages after a tile's last beat is written: the smear of the OR,
      its bit length, floor(log2 amax) - 12, the clamped (or external) tile exponent E,
      the element offset out_exp - phase - E (out_exp - E in dual mode), into the bank
      with the tile's alpha partial, maximum and out_exp;
    * read, six cycles from a read to its codes: the bank's read, a register, the
      exponents r and r - 1 (and the random words' halves), the rounded k of each (and
      stochastic rounding's first stage), the codes (and its exponent fields) into a
      register, the mode's codes into the output register.
      In dual mode each tile's R code beats are followed by 2 G summary beats (G = T /
      L): the G slices of the tile's alpha beat, then the G of its maximum beat, each
      with the same six-cycle latency.

    Parameters
    ----------
    params : NibbleParams
        Uses ``tile`` (T), ``lanes`` (L) and ``acc_bits``.

    Attributes
    ----------
    acc_in : In(stream.Signature(acc_row_layout(params), always_ready=True))
        Accumulator tiles, R beats per tile, row-major, not masked. ``acc`` holds L
        two's-complement integers; ``out_exp`` (repeated on every beat) is the tile's
        weight, so an element's value is acc * 2**out_exp.
    mask_in : In(L)
        With the beat, with ``mask_en``: bit i = 0 zeroes lane i's element before
        quantizing (ReLU'/PACT'), for E, the codes and the tile maximum.
    clip_mask_in : In(L)
        With the beat, with ``mask_en``: bit i = 1 adds lane i's accumulator (not
        masked) to the tile's alpha partial. Without ``mask_en`` nothing is added.
    mask_en : In(1)
        The mask bits are meaningful (the GEMM's mask_en).
    freed : Out(1)
        A beat's room in the unit is free again: one input credit back.
    codes_out : Out(stream.Signature(out_beat_layout(params), always_ready=True))
        Per tile, R code beats in the input's order: ``data`` holds the L codes
        [sign | e2 e1 e0] at the single phase (``dual`` = 0) or at phase 0 in its low 4L
        bits, and in dual mode the phase-1 codes in the next 4L bits (0 otherwise); the
        rest is 0. ``exp`` is the tile exponent E, so a nonzero code decodes to
        (-1)**sign * 2**(2(e-1) + phase + E). In dual mode 2G summary beats follow: slice
        g of the alpha beat and then of the maximum beat (:mod:`wire.streams`: the alpha
        partial as a two's-complement number of ``alpha_sum_bits(T, acc_bits)`` bits,
        the maximum as acc_bits unsigned, zero-extended to T * acc_bits bits; slice g is
        bits g L acc_bits and up), ``exp`` the tile's out_exp: both in units of
        2**out_exp.
    credit : In(1)
        The buffer behind ``codes_out`` has room for one more beat.
    take_credit : Out(1)
        A beat is sent (it uses that room; it arrives :attr:`READ_LATENCY` cycles later).
    phase : In(1)
        Two-phase-rounding phase: 0 even-power grid, 1 odd-power grid. Ignored with
        ``dual``.
    dual : In(1)
        Dual mode: both phases and the summary beats.
    linear : In(1)
        Rounding mode: 0 ``log`` (nearest in the log domain), 1 ``linear`` (nearest by
        the arithmetic midpoint). Both round ties up. Ignored with ``stochastic``.
    stochastic : In(1)
        Stochastic rounding with the generators' words: phase 0 (or a single phase 0)
        takes bits 31..16 of an element's word, phase 1 bits 15..0
        (:mod:`golden.xorshift`).
    seed : In(32)
        The generators' seed s, sampled with ``load``; drive it from a register.
    load : In(1)
        Seed the generators (:class:`rtl.column_random.ColumnRandom`): pulse it at the
        start of each GEMM, before its first beat comes out. Every code beat the unit
        sends steps them once (summary beats do not).
    ext_exp_en : In(1)
        1: use ``ext_exp`` as every tile's E (per-layer GradScale); 0: E from the tile max.
    ext_exp : In(signed(8))
        The external tile exponent, -128..127.
    capacity : int
        Input credits: the tile bank's N R beats (:func:`rtl.tile_bank.bank_tiles`).

    ``phase``, ``dual``, ``linear``, ``stochastic``, ``mask_en``, ``ext_exp_en`` and
    ``ext_exp`` must be held constant while a tile is inside the unit.
    """

    #: Cycles from a beat sent (``take_credit``) to it on ``codes_out``.
    READ_LATENCY = 6

    def __init__(self, params: NibbleParams):
        self._params = params
        self.capacity = bank_tiles(params.beats_per_tile) * params.beats_per_tile
        L = params.lanes
        super().__init__({
            "acc_in": In(stream.Signature(acc_row_layout(params), always_ready=True)),
            "mask_in": In(L),
            "clip_mask_in": In(L),
            "mask_en": In(1),
            "freed": Out(1),
            "codes_out": Out(stream.Signature(out_beat_layout(params), always_ready=True)),
            "credit": In(1),
            "take_credit": Out(1),
            "phase": In(1),
            "dual": In(1),
            "linear": In(1),
            "stochastic": In(1),
            "seed": In(SEED_BITS),
            "load": In(1),
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
        r_shape = range(base_lo - 2, acc_bits - 1 + base_hi + 1)  # n - 1 + base (- 1)
        k_shape = range((base_lo - 2) // 2, (acc_bits + base_hi) // 2 + 1)
        elem = {
            "n": range(acc_bits + 1),  # bit length of |acc|; 0 means zero
            "mid": 1,                  # |acc| >= 1.25 * 2**(n-1): linear rounds an odd r up
            "neg": 1,
        }
        if self._params.stochastic:
            elem["frac"] = FRAC_BITS   # the bits below the leading one, highest first
        elem = data.StructLayout(elem)
        meta = data.StructLayout({
            "e": signed(TILE_EXP_BITS), "base": base_shape, "out_exp": signed(OUT_EXP_BITS),
            "alpha": signed(alpha_sum_bits(self._params.tile, acc_bits)),
            "max": unsigned(acc_bits),
        })
        return p_shape, base_shape, r_shape, k_shape, elem, meta

    def elaborate(self, platform):
        L, R = self._params.lanes, self._params.beats_per_tile
        *_, elem, meta = self._shapes()
        m = Module()
        m.submodules.bank = bank = TileBank(data.ArrayLayout(elem, L), R, meta)
        m.d.comb += self.freed.eq(bank.freed)
        tile_or, tile_oexp, done, first_stage = self._write_side(m, bank)
        alpha, tile_max = self._summaries(m, *first_stage)
        self._finalize(m, bank, tile_or, tile_oexp, done, alpha, tile_max)
        self._read_side(m, bank)
        return m

    def _write_side(self, m, bank):
        """The masked |acc|, sign and clipped accumulator into a register; bit lengths,
        leading zeros and ``mid`` into a fourth, ``frac`` into the fifth, which the bank
        takes; the tile's OR accumulated with the bank write. Returns the OR, the tile's
        out_exp, the pulse ``done`` in the cycle after a tile's last write, and the first
        register stage (valid, last beat of its tile, magnitudes, clipped accumulators)
        for the summaries."""
        L, R, acc_bits = self._params.lanes, self._params.beats_per_tile, self._params.acc_bits
        a_valid, a_last = Signal(), Signal()
        mags = [Signal(acc_bits, name=f"mag{i}", reset_less=True) for i in range(L)]
        negs = [Signal(name=f"neg{i}", reset_less=True) for i in range(L)]
        clipped = [Signal(signed(acc_bits), name=f"clipped{i}", reset_less=True) for i in range(L)]
        a_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        in_row = Signal(range(R))                    # the input beat's place in its tile
        with m.If(self.acc_in.valid):
            m.d.sync += in_row.eq(in_row + 1)        # R is a power of two: wraps
        m.d.sync += [a_valid.eq(self.acc_in.valid), a_last.eq(in_row == R - 1),
                     a_oexp.eq(self.acc_in.payload.out_exp)]
        for i in range(L):
            acc = self.acc_in.payload.acc[i]
            # (a copy of mask_en per lane: it reaches every bit of the lane's magnitude)
            mask_en = register_copy(m, self.mask_en, f"mask_en_lane{i}")
            off = mask_en & ~self.mask_in[i]
            m.d.sync += [mags[i].eq(magnitude(m, acc, off)), negs[i].eq((acc < 0) & ~off),
                         clipped[i].eq(Mux(mask_en & self.clip_mask_in[i], acc, 0))]

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
        w_valid, row, row_or, w_oexp = self._element_stages(
            m, b_valid, b_mags, b_smears, b_negs, b_or, b_oexp)
        m.d.comb += [bank.w.valid.eq(w_valid), bank.w.payload.eq(row)]

        tile_or = Signal(acc_bits, reset_less=True)  # OR of |acc| over the tile so far
        tile_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        w_first = Signal(init=1)
        done = Signal()
        m.d.sync += done.eq(w_valid & bank.w_last)
        with m.If(w_valid):
            m.d.sync += [tile_or.eq(Mux(w_first, 0, tile_or) | row_or), tile_oexp.eq(w_oexp),
                         w_first.eq(bank.w_last)]
        return tile_or, tile_oexp, done, (a_valid, a_last, mags, clipped)

    def _element_stages(self, m, b_valid, b_mags, b_smears, b_negs, b_or, b_oexp):
        """The write side's last two stages, from the magnitudes and their smears: bit
        length, ``mid``, sign and leading zeros into a register, then ``frac`` (the
        magnitude shifted up by its leading zeros, the 17 bits below the leading one)
        into the row the bank takes. Returns its valid, the row, and the beat's OR and
        out_exp beside it."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        *_, elem, _ = self._shapes()
        c_row = Signal(data.ArrayLayout(elem, L), reset_less=True)
        c_valid = Signal()
        c_or = Signal(acc_bits, reset_less=True)
        c_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        c_mags = [Signal(acc_bits, name=f"c_mag{i}", reset_less=True) for i in range(L)]
        c_zeros = [Signal(range(acc_bits + 1), name=f"c_lz{i}", reset_less=True) for i in range(L)]
        m.d.sync += [c_valid.eq(b_valid), c_or.eq(b_or), c_oexp.eq(b_oexp)]
        for i in range(L):
            z = b_smears[i]
            lead = z & ~(z >> 1)
            m.d.sync += [
                c_row[i].n.eq(bit_length_of_smear(m, z, f"n{i}")),
                c_row[i].mid.eq((b_mags[i] & ((lead >> 1) | (lead >> 2))).any()),
                c_row[i].neg.eq(b_negs[i]),
                c_mags[i].eq(b_mags[i]),
                # leading zeros acc_bits - n, from the leading one as n is (no subtraction)
                c_zeros[i].eq(Cat(*(Cat(*(lead[j] for j in range(acc_bits)
                                          if (acc_bits - 1 - j) >> k & 1)).any()
                                    for k in range(len(c_zeros[i]))))),
            ]
        # ``frac``: the magnitude shifted up to its leading one, the 17 bits below it.
        row = Signal(data.ArrayLayout(elem, L), reset_less=True)
        w_valid = Signal()
        row_or = Signal(acc_bits, reset_less=True)
        w_oexp = Signal(signed(OUT_EXP_BITS), reset_less=True)
        m.d.sync += [w_valid.eq(c_valid), row_or.eq(c_or), w_oexp.eq(c_oexp)]
        for i in range(L):
            top = acc_bits - 1
            m.d.sync += [row[i].n.eq(c_row[i].n), row[i].mid.eq(c_row[i].mid),
                         row[i].neg.eq(c_row[i].neg)]
            if self._params.stochastic:   # (else the shift and leading zeros go unused)
                m.d.sync += row[i].frac.eq((c_mags[i] << c_zeros[i])[top - FRAC_BITS:top])
        return w_valid, row, row_or, w_oexp

    def _summaries(self, m, a_valid, a_last, mags, clipped):
        """The tile's alpha partial and maximum, from the write side's first register:
        log2 L tree levels, the running sum and maximum over the tile's beats, then
        registers up to the finalize's last stage (where the bank takes them)."""
        L, T, acc_bits = self._params.lanes, self._params.tile, self._params.acc_bits
        levels = L.bit_length() - 1
        beat_sum = _tree(m, clipped, operator.add, "alpha_tree")
        # (the maximum in two register levels per pair level where the finalize leaves
        # time for them, up to L = 16; the alpha sum waits for it)
        if 2 + 2 * levels <= _WRITE_STAGES + 1 + _FIN_STAGES:
            beat_max = _max_tree(m, mags, "max_tree")
            for k in range(levels):
                beat_sum = stage(m, beat_sum, f"alpha_wait{k}")
            levels *= 2
        else:
            beat_max = _tree(m, mags, _larger, "max_tree")
        valid = delays(m, a_valid, levels, "sum_valid")[-1]
        last = a_last
        for k in range(levels):
            last = stage(m, last, f"sum_last{k + 1}")
        alpha = Signal(signed(alpha_sum_bits(T, acc_bits)), name="alpha_run", reset_less=True)
        tile_max = Signal(acc_bits, name="max_run", reset_less=True)
        first = Signal(init=1, name="sum_first")
        with m.If(valid):
            m.d.sync += [alpha.eq(Mux(first, 0, alpha) + beat_sum),
                         tile_max.eq(Mux(first | (beat_max > tile_max), beat_max, tile_max)),
                         first.eq(last)]
        # A tile's totals are in the running registers 2 + levels cycles after its last
        # beat came in; the finalize's last stage is _WRITE_STAGES + 1 + _FIN_STAGES.
        wait = _WRITE_STAGES + 1 + _FIN_STAGES - (2 + levels)
        if not self._params.pipelined and 1 <= wait <= self._params.beats_per_tile:
            return self._held_totals(m, valid & last, alpha, tile_max)
        for k in range(wait):
            alpha, tile_max = stage(m, alpha, f"alpha_fin{k}"), stage(m, tile_max, f"max_fin{k}")
        return alpha, tile_max

    @staticmethod
    def _held_totals(m, ending, alpha, tile_max):
        """A tile's alpha partial and maximum held in one register each from the cycle
        after they are complete (``ending``: the running registers take the tile's last
        beat now) until the next tile's are: instead of a delay line of ``wait``
        registers, where a tile is ``beats_per_tile`` >= ``wait`` beats long (the next
        tile's totals are complete R cycles later at the soonest), so the finalize,
        ``wait`` cycles after the totals were complete, reads the same values. For a
        slow clock (``NibbleParams.pipelined`` off), where each of those registers costs
        a logic cell."""
        done = Signal(name="sum_done")
        held_alpha = Signal.like(alpha, name="alpha_held", reset_less=True)
        held_max = Signal.like(tile_max, name="max_held", reset_less=True)
        m.d.sync += done.eq(ending)
        with m.If(done):
            m.d.sync += [held_alpha.eq(alpha), held_max.eq(tile_max)]
        return held_alpha, held_max

    def _finalize(self, m, bank, tile_or, tile_oexp, done, alpha, tile_max):
        """Five register stages from a tile's OR to its meta in the bank."""
        acc_bits = self._params.acc_bits
        p_shape, base_shape, *_ = self._shapes()

        f = delays(m, done, _FIN_STAGES, "fin")
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
            bank.fin.valid.eq(f[_FIN_STAGES]),
            bank.fin.payload.e.eq(e5),
            bank.fin.payload.base.eq(oexp5 - (self.phase & ~self.dual) - e5),
            bank.fin.payload.out_exp.eq(oexp5),
            bank.fin.payload.alpha.eq(alpha),
            bank.fin.payload.max.eq(tile_max),
        ]

    def _read_side(self, m, bank):
        """Six cycles from a beat sent to it on ``codes_out``. A code beat: the bank's
        read, a register, the exponents r = n - 1 + base and r - 1, k = (r + inc) >> 1 of
        each, the codes of each rounding, the mode's. A summary beat (dual mode, after a
        tile's last code beat): its slice of the tile's alpha or maximum, chosen from the
        meta of the tile's last read, in the same six cycles."""
        L, R = self._params.lanes, self._params.beats_per_tile
        groups = self._params.tile // L
        read, summary = Signal(), Signal()
        in_summary = Signal()                        # the tile's summary beats are next
        slot = Signal(range(2 * groups))             # which summary beat
        row = Signal(range(R))                       # the next read's place in its tile
        m.d.comb += [read.eq(~in_summary & bank.r_rdy & self.credit),
                     summary.eq(in_summary & self.credit), bank.r_en.eq(read),
                     self.take_credit.eq(read | summary)]
        with m.If(read):
            m.d.sync += row.eq(row + 1)              # R is a power of two: wraps
            with m.If(row == R - 1):
                m.d.sync += in_summary.eq(self.dual)
        with m.If(summary):
            m.d.sync += slot.eq(slot + 1)
            with m.If(slot == 2 * groups - 1):
                m.d.sync += [slot.eq(0), in_summary.eq(0)]
        v = delays(m, read | summary, self.READ_LATENCY - 1, "rd_valid")
        read1 = delays(m, read, 1, "rd_read")[-1]
        s = delays(m, summary, self.READ_LATENCY - 2, "rd_summary")

        lo, hi, exp = self._codes(m, bank, read)
        sum_data, oexp = self._summary_slice(m, bank, read1, stage(m, stage(m, slot, "rd_slot1"),
                                                                     "rd_slot2"))
        for k in (4, 5):
            sum_data, oexp = stage(m, sum_data, f"sum_data{k}"), stage(m, oexp, f"sum_oexp{k}")
        # The output beat: datapath, so no reset (only ``valid`` has one). Each lane's
        # codes choose with a copy of the summary flag of their own.
        out = Signal.like(self.codes_out.payload, reset_less=True)
        width = CODE_BITS * L
        for i in range(L):
            is_sum = register_copy(m, s[-1], f"summary_lane{i}")
            for half, codes in ((0, lo), (1, hi)):
                at = half * width + CODE_BITS * i
                m.d.sync += out.data[at:at + CODE_BITS].eq(
                    Mux(is_sum, sum_data[at:at + CODE_BITS], codes[i]))
        is_sum = register_copy(m, s[-1], "summary_high")
        m.d.sync += [out.data[2 * width:].eq(Mux(is_sum, sum_data[2 * width:], 0)),
                     out.exp.eq(Mux(is_sum, oexp, exp)),
                     self.codes_out.valid.eq(v[-1])]
        m.d.comb += self.codes_out.payload.eq(out)

    def _codes(self, m, bank, read):
        """Per lane, the code (comb, from registers four cycles after the ``read``) at r
        (the single phase, or phase 0) and at r - 1 (dual mode's phase 1; 0 otherwise),
        each of the mode's rounding; and the tile exponent E at the same time."""
        L = self._params.lanes
        _, base_shape, r_shape, k_shape, *_ = self._shapes()
        stochastic_hw = self._params.stochastic
        if stochastic_hw:
            words = self._random_words(m, read)      # with the beat's third register
        beat = stage(m, bank.r_data, "rd_beat")
        base1, e1 = stage(m, bank.r_meta.base, "rd_base"), stage(m, bank.r_meta.e, "rd_e1")
        lo, hi = [], []
        for i in range(L):
            info = beat[i]
            zero2, mid2 = stage(m, info.n == 0, f"zero{i}"), stage(m, info.mid, f"mid{i}")
            frac2 = stage(m, info.frac, f"frac{i}") if stochastic_hw else None
            neg2 = stage(m, info.neg, f"neg{i}_2")
            neg3 = stage(m, neg2, f"neg{i}_3")
            neg4 = stage(m, neg3, f"neg{i}_4")
            inc = ~self.linear | mid2
            # (per lane: the phase-1 code is 0 outside dual mode, and the rounding mode)
            single = register_copy(m, ~self.dual, f"single_lane{i}")
            if stochastic_hw:
                stochastic = register_copy(m, self.stochastic, f"stochastic_lane{i}")
            for codes, minus, off in ((lo, 1, 0), (hi, 2, single)):
                name = f"{minus - 1}_{i}"
                r = stage(m, base1 + info.n - minus, f"r{name}", shape=r_shape)
                # arithmetic shift: floor
                k = stage(m, (r + inc) >> 1, f"k{name}", shape=k_shape)
                flush = stage(m, zero2 | (r < -1) | off, f"flush{name}")
                det = stage(m, self._code(m, k, flush, neg3, f"e{name}"), f"code{name}")
                if not stochastic_hw:
                    codes.append(det)
                    continue
                e = stochastic_exponent(m, zero2 | off, r, frac2, words[i][minus - 1],
                                        f"sr{name}")
                codes.append(Mux(stochastic, Cat(e, neg4 & (e != 0)), det))
        e4 = stage(m, stage(m, stage(m, e1, "rd_e2"), "rd_e3"), "rd_e4")
        return lo, hi, e4

    def _random_words(self, m, read):
        """Per lane, the element's random integers (phase-0 half, phase-1 half) in
        registers three cycles after its ``read``: the generators step with every code
        beat read, and the words come STEP_LATENCY = 2 cycles later. A single-phase pass
        at phase 1 takes the phase-1 half for its codes."""
        L = self._params.lanes
        m.submodules.random = rng = ColumnRandom(self._params)
        m.d.comb += [rng.seed.eq(self.seed), rng.load.eq(self.load), rng.step.eq(read)]
        assert ColumnRandom.STEP_LATENCY == 2
        words = []
        for i in range(L):
            word = rng.words[i]
            late = register_copy(m, self.phase & ~self.dual, f"phase1_only_lane{i}")
            high, low = word[RAND_BITS:], word[:RAND_BITS]
            words.append((stage(m, Mux(late, low, high), f"u0_{i}"), stage(m, low, f"u1_{i}")))
        return words

    @staticmethod
    def _code(m, k, flush, neg, name):
        """The code [neg & nonzero | e] of a rounded k: 0 if flushed, k clamped to 0..6,
        plus one."""
        e = Signal(3, name=name)
        with m.If(flush):
            m.d.comb += e.eq(0)
        with m.Elif(k <= 0):
            m.d.comb += e.eq(1)
        with m.Elif(k >= FP4_TOP_K):
            m.d.comb += e.eq(FP4_TOP_K + 1)
        with m.Else():
            m.d.comb += e.eq(k + 1)
        return Cat(e, neg & (e != 0))

    def _summary_slice(self, m, bank, read1, slot2):
        """(slice, out_exp) of summary beat ``slot2`` in a register, a cycle after it is
        chosen from the meta of the last read (held from the cycle after each read):
        slots 0..G-1 the alpha beat's slices, G..2G-1 the maximum beat's. The slice
        register holds only the low bits a slice can have nonzero (zero-extended)."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        groups = self._params.tile // L
        width = L * acc_bits
        *_, meta = self._shapes()
        held = Signal(meta, name="summary_meta", reset_less=True)
        with m.If(read1):
            m.d.sync += held.eq(bank.r_meta)
        # (a slice's nonzero bits: at most the alpha partial's, however wide the beat)
        alpha_bits = alpha_sum_bits(self._params.tile, acc_bits)
        sum_data = Signal(min(width, alpha_bits), name="sum_data3", reset_less=True)
        with m.Switch(slot2):
            for key, value in ((0, held.alpha), (groups, held.max)):
                bits = Value.cast(value).as_unsigned()
                for g in range(-(-len(bits) // width)):
                    with m.Case(key + g):
                        m.d.sync += sum_data.eq(bits[g * width:(g + 1) * width])
            with m.Default():
                m.d.sync += sum_data.eq(0)
        return sum_data, stage(m, held.out_exp, "sum_oexp3")
