"""The drain: finished psum rows and their exponents, paired into rescaler beats.

The systolic array writes every finished tile's rows into the psum queue; the exponent
prefetch queues each tile's s_t and each output tile's out_exp. The drain reads the
three queues in step, computes each tile's shift s_t - out_exp ahead of its rows, and
hands the rescaler one beat of L = ``lanes`` elements per cycle. A beat of a tile that
finishes an output tile (``last``) also needs a credit for the output unit behind the
rescaler, and (with the ReLU' mask on) a mask row; it waits for both here, before the
rescaler, because nothing after this point stops.
"""

from amaranth.hdl import C, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from wire.streams import OUT_EXP_BITS, TILE_COUNT_BITS

from .exponent_prefetch import S_BITS
from .layouts import SHIFT_BITS, psum_row_layout, rescale_row_layout
from .loop_counter import LoopCounter
from .queue import QueueRead

__all__ = ["PsumDrain"]

_TAG = data.StructLayout({"shift": signed(SHIFT_BITS), "out_exp": signed(OUT_EXP_BITS),
                          "first": 1, "last": 1})


class PsumDrain(wiring.Component):
    """Reads psum rows, s_t and out_exp from their queues; emits rescaler beats.

    A tag stage computes the next tiles' ``shift`` (read the exponent queues, then
    subtract, one step per cycle) into two tag slots, used in turn, while the current
    tile drains; the current tile's tag sits in its slot beside the psum queue's head
    row, which leaves as T / L beats.
    Every decision starts at registers: the queue heads' valid bits, the credit flag,
    the tag's valid bit. One beat per cycle at full speed (with T * T / L < 4, a tile
    every three cycles: the tag stage needs that long).

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T) and ``lanes`` (L).

    Attributes
    ----------
    start : In(1)
        A GEMM begins (the tile counters restart).
    k_last : In(TILE_COUNT_BITS)
        The GEMM's Kt - 1 (reduction tiles per output tile, minus one).
    psum : In(stream.Signature(psum_row_layout(params)))
        The psum queue's rows (a :class:`rtl.queue.StreamQueue`, whose ``valid`` and
        ``payload`` come from registers).
    s, out_exp : In(QueueRead(...))
        The exponent prefetch's queues.
    tile_read : Out(1)
        A tile's last row left the psum queue: its room there is free.
    credit : In(1)
        The output unit has room for one more beat.
    take_credit : Out(1)
        A ``last`` beat goes out (it uses that room).
    mask_en : In(1)
        ``last`` beats need a mask row each (int and fp4 output with ``mask_en``).
    mask : In(stream.Signature(T))
        ReLU' mask rows, one per row of an output tile.
    beat : Out(stream.Signature(rescale_row_layout(params), always_ready=True))
        The rescaler's input.
    beat_mask : Out(L)
        The mask bits of ``beat`` (meaningful on ``last`` beats with ``mask_en``).
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        super().__init__({
            "start": In(1), "k_last": In(TILE_COUNT_BITS),
            "psum": In(stream.Signature(psum_row_layout(params))),
            "s": In(QueueRead(signed(S_BITS))),
            "out_exp": In(QueueRead(signed(OUT_EXP_BITS))),
            "tile_read": Out(1),
            "credit": In(1), "take_credit": Out(1),
            "mask_en": In(1), "mask": In(stream.Signature(params.tile)),
            "beat": Out(stream.Signature(rescale_row_layout(params), always_ready=True)),
            "beat_mask": Out(params.lanes),
        })

    def elaborate(self, platform):
        m = Module()
        T, L = self._params.tile, self._params.lanes
        slices = T // L
        tags, full, cur, wr, write, write_last = self._tag_ring(m)
        tag = Signal(_TAG)            # the head row's tile's tag: the slot ``cur`` names
        m.d.comb += tag.eq(Mux(cur, tags[1], tags[0]))

        m.submodules.rows = rows = LoopCounter({"row": (T - 1).bit_length()})
        m.d.comb += [rows.restart.eq(self.start), rows.row_last.eq(T - 1)]
        part = Signal(range(slices)) if slices > 1 else C(0, 1)
        part_last = part == slices - 1

        # The current slot's full bit, its ``last`` and ``last`` with the mask on, kept
        # in registers of their own, so the decision to emit is one or two LUTs of
        # registers: each is computed for both outcomes (the tile goes on, or it ends
        # and ``cur`` moves on) and ``tile_done`` picks one.
        here, last, need = Signal(name="tag_here"), Signal(name="tag_last"), Signal()
        emit, pop, tile_done = Signal(name="emit"), Signal(), Signal()
        m.d.comb += [
            emit.eq(self.psum.valid & here & (~last | (self.credit & (~need | self.mask.valid)))),
            pop.eq(emit & part_last),
            tile_done.eq(pop & rows.row_wrap),
            self.psum.ready.eq(pop),
            rows.step.eq(pop),
            self.tile_read.eq(tile_done),
            self.take_credit.eq(emit & last),
            self.mask.ready.eq(pop & need),
        ]

        def after_write(slot):
            """(full, last) of ``slot`` (0 or 1, a Value) after this cycle's write,
            before any clear."""
            written = write & (wr == slot)
            return (Mux(slot, full[1], full[0]) | written,
                    Mux(written, write_last, Mux(slot, tags[1].last, tags[0].last)))

        here_stay, last_stay = after_write(cur)
        here_move, last_move = after_write(~cur)
        last_next = Mux(tile_done, last_move, last_stay)
        m.d.sync += [here.eq(Mux(tile_done, here_move, here_stay)), last.eq(last_next),
                     need.eq(last_next & self.mask_en)]
        # A finished tile frees its slot and moves ``cur`` on: two flip-flops, however
        # wide a tag (its load used to be the enable of every tag bit: 11.2 ns on the
        # ULX3S 16x16 at 11a4f22).
        with m.If(tile_done):
            m.d.sync += cur.eq(~cur)
        for i in range(2):
            with m.If(write & (wr == i)):
                m.d.sync += full[i].eq(1)
            with m.Elif(tile_done & (cur == i)):
                m.d.sync += full[i].eq(0)
        if slices > 1:
            with m.If(emit):
                m.d.sync += part.eq(part + 1)

        width = L * len(self.psum.payload[0])
        m.d.comb += [
            self.beat.valid.eq(emit),
            self.beat.payload.psums.eq(self.psum.payload.as_value().word_select(part, width)),
            self.beat.payload.shift.eq(tag.shift),
            self.beat.payload.out_exp.eq(tag.out_exp),
            self.beat.payload.first.eq(tag.first),
            self.beat.payload.last.eq(tag.last),
            self.beat_mask.eq(self.mask.payload.word_select(part, L)),
        ]
        return m

    def _tag_ring(self, m):
        """Two tag slots, filled in turn by the tag stage and emptied in turn by finished
        tiles: the next tiles' shift, out_exp and flags, fetched while the current tile
        drains (pop s_t, and out_exp at t = 0, into registers, then subtract into the
        free slot). Returns the slots, their full bits, the read and write pointers
        (``cur``, ``wr``), ``write`` (the slot ``wr`` names is written this cycle) and
        the ``last`` flag being written."""
        m.submodules.tags = tags = LoopCounter({"t": TILE_COUNT_BITS})
        m.d.comb += [tags.restart.eq(self.start), tags.t_last.eq(self.k_last)]
        slots = [Signal(_TAG, name=f"tag{i}") for i in range(2)]
        full = [Signal(name=f"tag{i}_full") for i in range(2)]
        cur, wr = Signal(name="tag_cur"), Signal(name="tag_wr")
        f1, f1_first, f1_last = Signal(name="f1"), Signal(), Signal()   # popped, in registers
        s_r = Signal(signed(S_BITS))
        oe = Signal(signed(OUT_EXP_BITS))
        fetch = Signal()
        # (the slot the fetch will fill is empty: it only fills when f1 is not pending)
        m.d.comb += [
            fetch.eq(~Mux(wr, full[1], full[0]) & ~f1 & self.s.rdy
                     & ((tags.t != 0) | self.out_exp.rdy)),
            self.s.en.eq(fetch),
            self.out_exp.en.eq(fetch & (tags.t == 0)),
            tags.step.eq(fetch),
        ]
        m.d.sync += [f1.eq(fetch), f1_first.eq(tags.t == 0), f1_last.eq(tags.t_wrap)]
        with m.If(fetch):
            m.d.sync += s_r.eq(self.s.data)
            with m.If(tags.t == 0):
                m.d.sync += oe.eq(self.out_exp.data)
        for i in range(2):
            with m.If(f1 & (wr == i)):
                m.d.sync += [slots[i].shift.eq(s_r - oe), slots[i].out_exp.eq(oe),
                             slots[i].first.eq(f1_first), slots[i].last.eq(f1_last)]
        with m.If(f1):
            m.d.sync += wr.eq(~wr)
        return slots, full, cur, wr, f1, f1_last
