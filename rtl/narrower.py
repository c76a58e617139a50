"""The narrower: the rescaler's beats of L elements in, beats of Q elements out.

The rescaler must run at the array's pace, L = ``params.lanes`` elements per cycle
(a partial-sum tile every T cycles); the output stages behind it see only *finished*
tiles, one per output tile of the GEMM, and run at Q = ``params.out_lanes`` elements per
cycle (:attr:`golden.params.NibbleParams.out_lanes`). The narrower sits between: it
buffers L-element beats with their mask bits and hands each on as G = L / Q beats of Q
elements, in order (elements 0..Q-1 first), so a tile stays in row-major order.

Storage: G block-RAM memories, memory g holding elements gQ..gQ+Q-1 of every beat (each
with its ReLU' and clip mask bits), and a small one for the beats' out_exp; all are
written together, one beat per cycle. They are read every cycle at the read pointer
(an enable moves the pointer, it never reaches the memories' outputs), into registers,
and a G-way multiplexer picks the group into the output register: three cycles from a
read to its beat on ``r``.

Flow control is by credits on both sides: the writer (the drain, for the rescaler)
holds one of :attr:`capacity` credits per beat it sends and gets one back on ``freed``
when the beat's last group has been read; the narrower reads a group only with a credit
for the buffer behind it (``credit``, ``take_credit``).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from wire.streams import OUT_EXP_BITS

from .layouts import acc_row_layout
from .pipeline import register_copy
from .queue import ram_attrs

__all__ = ["Narrower"]


def _group_layout(acc_bits: int, lanes: int) -> data.StructLayout:
    """What a memory stores per beat: ``lanes`` accumulators and their mask bits."""
    return data.StructLayout({"acc": data.ArrayLayout(signed(acc_bits), lanes),
                              "mask": unsigned(lanes), "clip_mask": unsigned(lanes)})


class Narrower(wiring.Component):
    """Beats of L = ``params.lanes`` elements in, of Q = ``params.out_lanes`` out.

    Parameters
    ----------
    params : NibbleParams
        ``lanes`` (L), ``out_lanes`` (Q < L) and ``acc_bits``.
    depth : int or None
        L-element beats it holds; default two tiles (2 T * T / L), so a finished tile
        can come in while the previous one goes out.

    Attributes
    ----------
    w : In(stream.Signature(acc_row_layout(params), always_ready=True))
        The rescaler's beats (the writer holds a credit for each).
    w_mask, w_clip_mask : In(L)
        The beat's ReLU' and clip mask bits, with it.
    r : Out(stream.Signature(acc_row_layout(params.out_params), always_ready=True))
        Q-element beats, G per input beat, elements 0..Q-1 first; three cycles after the
        read (``take_credit``) that sent them.
    r_mask, r_clip_mask : Out(Q)
        The beat's mask bits, with it.
    credit : In(1)
        The buffer behind has room for a beat: the narrower may read one.
    take_credit : Out(1)
        A beat is read (it will be on ``r`` three cycles later).
    freed : Out(1)
        An input beat's slot became free (its last group was read): the writer's credit.
    fault : Out(1)
        Sticky: a beat was written while the memory was full.
    capacity : int
        ``depth``: the writer's credits.
    """

    #: Cycles from ``take_credit`` to the beat on ``r``.
    latency = 3

    def __init__(self, params: NibbleParams, depth: int | None = None):
        L, Q = params.lanes, params.out_lanes
        if Q >= L:
            raise ValueError(f"a narrower needs out_lanes < lanes, got {Q} and {L}")
        depth = 2 * params.beats_per_tile if depth is None else depth
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._params, self.capacity = params, depth
        self.groups = L // Q
        super().__init__({
            "w": In(stream.Signature(acc_row_layout(params), always_ready=True)),
            "w_mask": In(L), "w_clip_mask": In(L),
            "r": Out(stream.Signature(acc_row_layout(params.out_params), always_ready=True)),
            "r_mask": Out(Q), "r_clip_mask": Out(Q),
            "credit": In(1), "take_credit": Out(1), "freed": Out(1), "fault": Out(1),
        })

    def elaborate(self, platform):
        p, D, G = self._params, self.capacity, self.groups
        Q = p.out_lanes
        m = Module()
        group = _group_layout(p.acc_bits, Q)
        mems = []
        for g in range(G):
            m.submodules[f"mem{g}"] = mem = Memory(
                shape=group, depth=D, init=[], attrs=ram_attrs(group.size, D, platform))
            mems.append(mem)
        m.submodules.exps = exps = Memory(shape=signed(OUT_EXP_BITS), depth=D, init=[],
                                          attrs=ram_attrs(OUT_EXP_BITS, D, platform))

        # ---- Write: every memory at the write pointer, one beat per cycle.
        waddr = Signal(range(D))
        with m.If(self.w.valid):
            m.d.sync += waddr.eq(Mux(waddr == D - 1, 0, waddr + 1))
        for g, mem in enumerate(mems):
            wp = mem.write_port()
            lanes = slice(g * Q, (g + 1) * Q)
            m.d.comb += [wp.addr.eq(waddr), wp.en.eq(self.w.valid),
                         wp.data.acc.eq(Cat(*self.w.payload.acc[lanes])),
                         wp.data.mask.eq(self.w_mask[lanes]),
                         wp.data.clip_mask.eq(self.w_clip_mask[lanes])]
        ewp = exps.write_port()
        m.d.comb += [ewp.addr.eq(waddr), ewp.en.eq(self.w.valid),
                     ewp.data.eq(self.w.payload.out_exp)]

        # ---- Groups readable: a register count, + G per beat written, - 1 per read;
        # ``ready`` (a register) says the next count is nonzero.
        readable = Signal(range(G * D + 1))
        ready = Signal()
        kept = Signal.like(readable)
        read = Signal.like(readable)
        en = Signal()
        m.d.comb += [kept.eq(readable + Mux(self.w.valid, G, 0)), read.eq(kept - 1),
                     en.eq(ready & self.credit), self.take_credit.eq(en)]
        m.d.sync += [readable.eq(Mux(en, read, kept)),
                     ready.eq(Mux(en, read != 0, kept != 0))]
        # (full: every slot holds a beat with a group unread, the oldest perhaps only one)
        with m.If(self.w.valid & (readable > G * (D - 1))):
            m.d.sync += self.fault.eq(1)

        # ---- Read: the memories at the pointer every cycle (a read moves the pointer).
        raddr, rgroup = Signal(range(D)), Signal(range(G))
        m.d.comb += self.freed.eq(en & (rgroup == G - 1))
        with m.If(en):
            m.d.sync += rgroup.eq(rgroup + 1)              # G is a power of two: wraps
            with m.If(rgroup == G - 1):
                m.d.sync += raddr.eq(Mux(raddr == D - 1, 0, raddr + 1))
        # (1) the memories' outputs, (2) into registers, with the group, (3) the group's
        # elements into the output register (a select copy per lane).
        v1, v2 = Signal(), Signal()
        g1 = Signal(range(G), reset_less=True)
        m.d.sync += [v1.eq(en), v2.eq(v1), g1.eq(rgroup), self.r.valid.eq(v2)]
        held = []
        for g, mem in enumerate(mems):
            rp = mem.read_port(transparent_for=())   # a slot is read after its write
            m.d.comb += [rp.addr.eq(raddr), rp.en.eq(1)]
            reg = Signal(group, name=f"held{g}", reset_less=True)
            m.d.sync += reg.eq(rp.data)
            held.append(reg)
        erp = exps.read_port(transparent_for=())
        m.d.comb += [erp.addr.eq(raddr), erp.en.eq(1)]
        exp2 = Signal(signed(OUT_EXP_BITS), reset_less=True)
        m.d.sync += exp2.eq(erp.data)
        # the group's index, two cycles on: one copy per lane and one for the mask bits
        for n in range(Q):
            sel = register_copy(m, g1, f"group_lane{n}")
            m.d.sync += self.r.payload.acc[n].eq(_pick(sel, [h.acc[n] for h in held]))
        sel = register_copy(m, g1, "group_mask")
        m.d.sync += [self.r_mask.eq(_pick(sel, [h.mask for h in held])),
                     self.r_clip_mask.eq(_pick(sel, [h.clip_mask for h in held])),
                     self.r.payload.out_exp.eq(exp2)]
        return m


def _pick(sel, values):
    """``values[sel]`` as a tree of two-way multiplexers (a power-of-two count)."""
    level = 0
    while len(values) > 1:
        values = [Mux(sel[level], values[2 * i + 1], values[2 * i])
                  for i in range(len(values) // 2)]
        level += 1
    return values[0]
