"""Per-tile radix rescaler: tile partial sums in, saturating wide accumulators out.

Implements the accumulation of ``golden.gemm.tiled_gemm``: for every reduction tile t,
term = P_t * 2**(s_t - out_exp) (a right shift rounds half to even), acc = sat(acc + term)
after each addition, and a sticky flag records any saturation. The shift is one number
for the whole T x T tile, so the array needs one shifter per column at its edge, not a
barrel shifter in every PE (or only L = ``lanes`` shifters, fed L elements of a row per
cycle, for small FPGAs); the shifter's controls (direction, amount, the sticky-bit mask)
are decoded once per beat, into one register copy per lane.

Five pipeline stages, because shift, round, add and saturate in one cycle were the
longest path of the whole board build: (0, 1) register the beat while its shift is
decoded in two steps, (2a) the coarse shift (a multiple of 4) and the sticky bit, (2b)
the fine shift and rounding, (3) add, saturate and store the sums at the tail of the
ring of accumulators (LUT RAM with a head pointer, or rotating flip-flop rows for iCE40;
see :class:`TileRescaler`). The accumulators a beat adds to are read from the ring a
cycle ahead, into a register.
"""

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams

from .layouts import acc_row_layout, rescale_row_layout
from .pe import add_with_carry
from .pipeline import REPLICA_SUFFIX, register_copy, stage

__all__ = ["TileRescaler", "ShiftControl", "decode_shift", "shift_round_half_even"]


class ShiftControl:
    """Registered controls of one ``x * 2**shift`` for x of ``width`` bits (one copy per
    lane): ``is_left``; ``left`` (0..out_width-1); ``right`` (0..width, past which
    every x rounds to 0 anyway); ``sticky_mask`` (bit j set iff j < right - 1: the bits
    below the guard bit)."""

    def __init__(self, width: int, out_width: int, name: str):
        # (named as flip-flop copies: synthesis keeps one set per lane, see rtl.pipeline)
        self.is_left = Signal(name=f"{name}_is_left{REPLICA_SUFFIX}", reset_less=True)
        self.left = Signal(range(out_width), name=f"{name}_left{REPLICA_SUFFIX}",
                           reset_less=True)
        self.right = Signal(range(width + 1), name=f"{name}_right{REPLICA_SUFFIX}",
                            reset_less=True)
        self.sticky_mask = Signal(width, name=f"{name}_sticky_mask{REPLICA_SUFFIX}",
                                  reset_less=True)


#: Consumers (lanes) per copy of :func:`decode_shift`'s first-stage registers.
DECODE_GROUP = 4


def decode_shift(m: Module, shift, ctls, width: int, out_width: int):
    """Drive every :class:`ShiftControl` of ``ctls`` (copies, one per consumer) from a
    signed ``shift`` through two registers: (1) the direction, the left amount and the
    negated shift, (2) the right amount and the sticky mask, so that no step has more
    than one compare or add. The first registers are copied once per
    :data:`DECODE_GROUP` consumers: the sticky mask is ``width`` compares of the negated
    shift per consumer (one copy for 16 lanes was a 10.2 ns path on the ULX3S 16x16 at
    11a4f22)."""
    for g in range(0, len(ctls), DECODE_GROUP):
        # (named as copies, ending in the replica suffix, so synthesis keeps them apart)
        def name(sig, what):
            return f"{sig.name[:-len(REPLICA_SUFFIX)]}_{what}{REPLICA_SUFFIX}"
        ctl = ctls[g]
        is_left = Signal(name=name(ctl.is_left, "a"), reset_less=True)
        left = Signal.like(ctl.left, name=name(ctl.left, "a"), reset_less=True)
        back = Signal(len(shift) + 1, name=name(ctl.right, "neg"), reset_less=True)  # -shift
        m.d.sync += [
            is_left.eq(shift >= 0),
            left.eq(Mux(shift < 0, 0, Mux(shift < out_width, shift, out_width - 1))),
            back.eq(Mux(shift < 0, -shift, 0)),
        ]
        right = Mux(back < width, back, width)
        sticky_mask = Cat(*(back > j + 1 for j in range(width)))
        for copy in ctls[g:g + DECODE_GROUP]:
            m.d.sync += [
                copy.is_left.eq(is_left),
                copy.left.eq(left),
                copy.right.eq(right),
                copy.sticky_mask.eq(sticky_mask),
            ]


def shift_round_half_even(m: Module, x, ctl: ShiftControl, out_width: int, name: str):
    """x * 2**shift as a signed ``out_width`` value ``shifted`` and a 1-bit ``round_up``,
    with x * 2**shift rounded half to even = shifted + round_up (x signed; left shifts
    must keep the result inside ``out_width`` and give round_up = 0). The caller adds
    round_up as the carry-in of its next adder, which saves an incrementer per column.

    Two register stages, each a few levels of logic: (a) x shifted by the amount's
    multiple of 4 (both directions) and the sticky bit, (b) the rest of the shift (0..3)
    and the rounding decision. ``shifted`` and ``round_up`` are the second stage's
    inputs, to be registered by the caller.

    One arithmetic shifter of x with a zero appended below gives floor(x / 2**right) and
    the guard bit (the highest bit shifted out); the bits below the guard are ORed
    through the shared mask into the sticky bit. Ties (guard set, sticky clear) round to
    the even neighbour. The coarse right shift keeps the guard: it only drops bits below
    right - 4, which the sticky bit has."""
    # (a) coarse shifts and the sticky bit, into registers
    right_lo = ctl.right[:2]
    left_lo = ctl.left[:2]
    y = Signal(signed(len(x) + 1), name=f"{name}_y", reset_less=True)
    xl = Signal(signed(out_width), name=f"{name}_xl", reset_less=True)
    sticky = Signal(name=f"{name}_sticky", reset_less=True)
    is_left = Signal(name=f"{name}_is_left", reset_less=True)
    r_lo = Signal(2, name=f"{name}_r_lo", reset_less=True)
    l_lo = Signal(2, name=f"{name}_l_lo", reset_less=True)
    m.d.sync += [
        y.eq(Cat(C(0, 1), x).as_signed() >> Cat(C(0, 2), ctl.right[2:])),
        xl.eq(x << Cat(C(0, 2), ctl.left[2:])),
        sticky.eq((x.as_unsigned() & ctl.sticky_mask).any()),
        is_left.eq(ctl.is_left), r_lo.eq(right_lo), l_lo.eq(left_lo),
    ]
    # (b) the fine shifts and the rounding decision
    w = Signal(signed(len(x) + 1), name=f"{name}_w")     # [floor(x / 2**right) | guard]
    up = Signal(name=f"{name}_up")
    m.d.comb += [w.eq(y >> r_lo), up.eq(w[0] & (sticky | w[1]))]
    out = Signal(signed(out_width), name=name)
    m.d.comb += out.eq(Mux(is_left, xl << l_lo, w[1:].as_signed()))
    return out, up & ~is_left


class TileRescaler(wiring.Component):
    """Adds shifted tile partial sums into T x T saturating accumulators.

    A beat carries L = ``params.lanes`` elements of a tile (a whole row when L = T), so
    a tile is R = T * T / L beats. The accumulators of one output tile are R beats kept
    in a ring: beats arrive in the order 0..R-1 for every reduction tile, so the head of
    the ring is always the beat the next one updates, and the updated beat goes to the
    tail. The ring is built one of two ways (``ring``):

    * ``"ram"``: one memory per lane, R x acc_bits, with an asynchronous read port and a
      synchronous write port, and a head pointer. On ECP5 it maps to LUT RAM
      (TRELLIS_DPR16X4, 16 x 4 bits each) instead of flip-flops: at T = 16, L = 16,
      acc_bits = 32 the accumulators are 8,192 bits, 128 LUT RAMs instead of 8,192 FFs
      in a design at 75 % of the LFE5U-85F's FFs whose 16 x 16 array did not route.
    * ``"registers"``: R rows of L * acc_bits flip-flops, rotated on every beat, so no
      address multiplexer is needed. For iCE40, which has no LUT RAM: there yosys builds
      a short memory from flip-flops and a read multiplexer, more logic than the rotating
      rows (at T = 2), and a deeper one (R = 16) from block RAM, folding the head
      register into its read port.

    Either way the accumulators a beat adds to are read a cycle ahead into a register,
    and the unit behaves the same cycle for cycle. The unit never stalls: it takes a
    beat in any cycle its input is valid, and an accumulator beat leaves
    :attr:`latency` = 5 cycles after the psum beat that finished it came in, valid for
    one cycle (there is no ready; the accelerator holds a credit for every ``last`` beat
    it sends).

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T), ``lanes`` (L) and ``acc_bits``.
    ring : str
        ``"ram"`` (default; LUT RAM, for ECP5) or ``"registers"`` (flip-flops, for
        iCE40): how the accumulators are stored, see above.

    Attributes
    ----------
    psum_in : In(stream.Signature(rescale_row_layout(params), always_ready=True))
        Tile partial sums, R beats per reduction tile in row-major order, with the
        tile's shift s_t - out_exp and the ``first``/``last`` reduction-tile flags.
    acc_out : Out(stream.Signature(acc_row_layout(params), always_ready=True))
        Finished accumulator beats (from ``last`` beats), R per output tile, with out_exp.
    saturated : Out(1)
        Sticky: some accumulation saturated since the last ``clear``. It covers a beat
        from the cycle after the beat's accumulators were computed (at the latest one
        cycle after the beat that ends its output tile left on ``acc_out``).
    clear : In(1)
        Clears ``saturated`` (the controller pulses it at the start of a GEMM, when no
        beat of the previous GEMM is left in the pipeline).
    latency : int
        Cycles from a beat on ``psum_in`` to its accumulators on ``acc_out``.
    """

    latency = 5
    #: The values of ``ring``.
    RINGS = ("ram", "registers")

    def __init__(self, params: NibbleParams, ring: str = "ram"):
        if ring not in self.RINGS:
            raise ValueError(f"ring must be one of {self.RINGS}, got {ring!r}")
        self._params = params
        self._ring = ring
        super().__init__({
            "psum_in": In(stream.Signature(rescale_row_layout(params), always_ready=True)),
            "acc_out": Out(stream.Signature(acc_row_layout(params), always_ready=True)),
            "saturated": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        v1, beat1, ctls = self._decode(m)
        v2a, v2, last2, oexp2, terms, round_up = self._terms(m, v1, beat1, ctls)
        new_row, row_saturated = self._accumulate(m, v2a, v2, beat1.first, terms,
                                                   round_up)
        L = self._params.lanes
        # The sticky flag follows one cycle later, from registered per-lane bits.
        sat_r = Signal(L, reset_less=True)
        sat_valid = Signal()
        m.d.sync += [sat_r.eq(Cat(*row_saturated)), sat_valid.eq(v2)]
        with m.If(self.clear):
            m.d.sync += self.saturated.eq(0)
        with m.Elif(sat_valid & sat_r.any()):
            m.d.sync += self.saturated.eq(1)

        # The output beat: datapath, so no reset (only ``valid`` has one).
        out = Signal.like(self.acc_out.payload, reset_less=True)
        m.d.sync += [self.acc_out.valid.eq(v2 & last2), out.out_exp.eq(oexp2)]
        m.d.sync += [out.acc[n].eq(new_row[n]) for n in range(L)]
        m.d.comb += self.acc_out.payload.eq(out)
        return m

    def _decode(self, m):
        """Stages 0 and 1: the beat, while its shift is decoded in two steps. Returns
        stage 1's valid bit and beat, and the decoded shift of each lane."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        width = self._params.psum_bits
        layout = rescale_row_layout(self._params)
        v0, v1 = Signal(name="v0"), Signal()
        beat0 = Signal(layout, reset_less=True)
        beat1 = Signal(layout, reset_less=True)
        # The decoded shift reaches every lane's shifters: a copy of its registers per lane.
        ctls = [ShiftControl(width, acc_bits + 1, f"shift1_lane{n}") for n in range(L)]
        m.d.sync += [v0.eq(self.psum_in.valid), beat0.eq(self.psum_in.payload),
                     v1.eq(v0), beat1.eq(beat0)]
        decode_shift(m, self.psum_in.payload.shift, ctls, width, acc_bits + 1)
        return v1, beat1, ctls

    def _terms(self, m, v1, beat1, ctls):
        """Stages 2a and 2b: the terms P_t * 2**shift, rounded. Returns the valid bits of
        2a and 2b, 2b's ``last`` and ``out_exp``, and per lane the term and its rounding
        increment (registers of 2b)."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        v2a, v2 = Signal(name="v2a"), Signal(name="v2")
        terms = [Signal(signed(acc_bits + 1), name=f"term{n}", reset_less=True) for n in range(L)]
        round_up = [Signal(name=f"round_up{n}", reset_less=True) for n in range(L)]
        last2a, last2 = Signal(reset_less=True), Signal(reset_less=True)
        oexp2a = Signal.like(beat1.out_exp, reset_less=True)
        oexp2 = Signal.like(beat1.out_exp, reset_less=True)
        m.d.sync += [v2a.eq(v1), last2a.eq(beat1.last), oexp2a.eq(beat1.out_exp),
                     v2.eq(v2a), last2.eq(last2a), oexp2.eq(oexp2a)]
        for n in range(L):
            shifted, up = shift_round_half_even(m, beat1.psums[n], ctls[n], acc_bits + 1,
                                                f"shifted{n}")
            m.d.sync += [terms[n].eq(shifted), round_up[n].eq(up)]
        return v2a, v2, last2, oexp2, terms, round_up

    def _accumulate(self, m, v2a, v2, first1, terms, round_up):
        """Stage 3: add to the beat's accumulators (the rounding increment is the
        carry-in) and saturate, and store the sums back in the ring. The accumulators
        come from a register loaded one cycle ahead from the ring (zero for a first tile),
        so no multiplexer sits in front of the adder. The sum has acc_bits + 2 bits; it
        fits acc_bits iff its top three bits agree. Returns per lane the new accumulator
        and whether it saturated (both combinational, in stage 3)."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
        # The store's write enable and the first-tile flag reach every accumulator of a
        # lane: each lane gets its own flip-flop copies of them.
        v2_lane = [register_copy(m, v2a, f"rescaler_v2_lane{n}") for n in range(L)]
        first_lane = [register_copy(m, first1, f"rescaler_first_lane{n}")
                      for n in range(L)]

        # The head after this cycle (the accumulators the next beat adds to), per lane.
        old_row = [Signal(acc_bits, name=f"old_acc{n}", reset_less=True) for n in range(L)]
        new_row, row_saturated = [], []
        for n in range(L):
            old_wide = Signal(signed(acc_bits + 2), name=f"old_wide{n}")
            term_wide = Signal(signed(acc_bits + 2), name=f"term_wide{n}")
            m.d.comb += [old_wide.eq(old_row[n].as_signed()), term_wide.eq(terms[n])]
            total = Signal(signed(acc_bits + 2), name=f"sum{n}")
            m.d.comb += total.eq(
                add_with_carry(m, old_wide, term_wide, round_up[n], acc_bits + 2))
            top = total[acc_bits - 1:]
            sat = Signal(name=f"sat{n}")
            m.d.comb += sat.eq(~(top.all() | ~top.any()))
            clipped = Signal(signed(acc_bits), name=f"acc{n}")
            m.d.comb += clipped.eq(Mux(sat, Mux(total[-1], lo, hi), total[:acc_bits]))
            new_row.append(clipped)
            row_saturated.append(sat)

        if self._ring == "ram":
            heads = self._ring_ram(m, v2a, v2, v2_lane, new_row)
        else:
            heads = self._ring_registers(m, v2_lane, new_row)
        for n in range(L):
            m.d.sync += old_row[n].eq(Mux(first_lane[n], 0, heads[n]))
        return new_row, row_saturated

    def _ring_registers(self, m, v2_lane, new_row):
        """The ring as R rows of flip-flops, rotated on every stage-3 beat: the updated
        head goes to the tail. Returns per lane the head after this cycle: rows[1] if
        the ring rotates now, else rows[0]."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        R = self._params.beats_per_tile
        rows = [[Signal(acc_bits, name=f"acc_row{i}_lane{n}", reset_less=True)
                 for n in range(L)] for i in range(R)]
        for n in range(L):
            with m.If(v2_lane[n]):
                m.d.sync += [rows[i][n].eq(rows[i + 1][n]) for i in range(R - 1)]
                m.d.sync += rows[R - 1][n].eq(new_row[n])
        return [Mux(v2_lane[n], rows[1 % R][n], rows[0][n]) for n in range(L)]

    def _ring_ram(self, m, v2a, v2, v2_lane, new_row):
        """The ring as one memory per lane (R x acc_bits) with an asynchronous read port
        and a synchronous write port, and a head pointer h (the slot of the beat the next
        stage-3 beat updates). A stage-3 beat writes its sums at h and advances h, so the
        slot it frees is the tail. Returns per lane the head after this cycle,
        mem[h + 1] if a beat is in stage 3 now, else mem[h].

        The store is a cycle late: the write port takes the sums from a register (the
        adder and the saturation end at that register, not at the RAM's write port),
        with the slot and the enable delayed to match.

        Read after write: the read port returns the contents before this cycle's write.
        A beat in stage 3 in cycle c updates slot h; its store lands at the end of
        c + 1. That slot is read next for the beat R beats later, one cycle before that
        beat's stage 3: in cycle c + R - 1 at the soonest, after the store for R >= 3.
        At R = 2 (T = 2, L = 2) that read is in c + 1, beside the store: the register
        being stored is taken instead of the read (a bypass, built only for R = 2). In
        a cycle without a stage-3 beat the pointer stays, and nothing reads a slot with
        a store pending but the one case above.

        Only the pointer has a reset: the data are read only after they are written
        (a first reduction tile adds to zero, not to the ring)."""
        L, acc_bits = self._params.lanes, self._params.acc_bits
        R = self._params.beats_per_tile
        assert R >= 2, "the read-after-write order needs R >= 2 (lanes <= tile, tile >= 2)"

        def wrap(ptr):
            return Mux(ptr == R - 1, 0, ptr + 1)

        # h, h + 1 and h + 2 (mod R) in registers, so every address is a choice among them.
        h = Signal(range(R), name="ring_head")
        h1 = Signal(range(R), name="ring_head1", init=1 % R)
        h2 = Signal(range(R), name="ring_head2", init=2 % R)
        with m.If(v2):
            m.d.sync += [h.eq(h1), h1.eq(h2), h2.eq(wrap(h2))]
        h_next = Mux(v2, h1, h)                 # h in the next cycle
        h_next1 = Mux(v2, h2, h1)               # h + 1 in the next cycle
        # The next cycle's read address, h + 1 if a beat is in stage 3 then (v2a now).
        raddr_next = Mux(v2a, h_next1, h_next)
        heads = []
        for n in range(L):
            # Each lane's memory (acc_bits / 4 LUT RAMs per 16 slots on ECP5) has its
            # own flip-flop copies of the addresses, as it has of the write enable.
            slot = register_copy(m, h_next, f"rescaler_slot_lane{n}")      # stage 3's
            waddr = register_copy(m, slot, f"rescaler_waddr_lane{n}")
            wen = register_copy(m, v2_lane[n], f"rescaler_wen_lane{n}")
            raddr = register_copy(m, raddr_next, f"rescaler_raddr_lane{n}")
            store = stage(m, new_row[n], f"acc_store{n}")
            m.submodules[f"acc_mem{n}"] = mem = Memory(shape=acc_bits, depth=R, init=[])
            wp = mem.write_port()
            rp = mem.read_port(domain="comb")
            m.d.comb += [wp.addr.eq(waddr), wp.en.eq(wen), wp.data.eq(store),
                         rp.addr.eq(raddr)]
            heads.append(rp.data if R > 2 else
                         Mux(wen & (waddr == raddr), store, rp.data))
        return heads
