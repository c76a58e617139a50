"""Exponent prefetch: per-tile exponent sums and each output tile's out_exp, ahead of the data.

For output tile (i, j) and reduction tile t the rescaler needs the shift
s_t - out_exp with s_t = Ea[i, t] + Eb[t, j] + a_phase + b_phase, and out_exp depends on
every s_t of the output tile (``golden.gemm.out_exponents``)::

    out_exp = max_t s_t + bound_bits - (acc_bits - 1),
    bound_bits = bit_length(Kt * T * Amax * Bmax)

so the prefetch reads the exponent streams ahead of the operand tiles: it writes every
s_t into one queue and every out_exp into another, and the drain reads both when the
tiles' partial sums arrive.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import ELEMENT_MAX, NibbleParams
from wire.streams import KIND_CODES, OUT_EXP_BITS, TILE_COUNT_BITS, TILE_EXP_BITS

from .bit_length import bit_length
from .layouts import command_layout
from .loop_counter import LoopCounter
from .queue import Queue, QueueRead, RegisterSlice

__all__ = ["ExponentPrefetch", "S_BITS"]

#: s_t = Ea + Eb + phases spans -256..256.
S_BITS = 10
#: out_exp values the prefetch may run ahead by (the drain reads one per output tile).
OE_DEPTH = 8


class ExponentPrefetch(wiring.Component):
    """Reads the GEMM's tile exponents ahead of its data and queues s_t and out_exp.

    A four-stage pipeline, one arithmetic step per stage: (1) take an exponent pair and
    add it, (2) queue s_t and update the running maximum, (3) add the bound to the
    maximum of a finished output tile, (4) queue out_exp. It takes one pair per cycle
    while its queues have room.

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T) and ``acc_bits``.

    Attributes
    ----------
    start : In(1)
        A GEMM begins: ``cmd`` holds its command from this cycle until it ends (the
        tile counters restart from it in this cycle).
    cmd : In(command_layout())
        The command (tile counts, kinds, phases).
    a_exps, b_exps : In(stream.Signature(signed(8)))
        Ea[i, t] and Eb[t, j], Kt of each per output tile, in the tile order of
        :mod:`wire.streams`. Both are taken together.
    s : Out(QueueRead(signed(S_BITS)))
        s_t, one per reduction tile, in tile order (the read side of a
        :class:`rtl.queue.Queue`, through a :class:`rtl.queue.RegisterSlice`: ``rdy``
        and ``data`` are registers; without ``NibbleParams.pipelined``, the queue's own
        read side).
    out_exp : Out(QueueRead(signed(OUT_EXP_BITS)))
        out_exp, one per output tile, in tile order.
    fault : Out(1)
        Sticky: a queue was misused (never in a correct design).
    """

    #: Cycles from ``start`` to the first exponent pair it may take (the bound's
    #: registers).
    BOUND_CYCLES = 4

    def __init__(self, params: NibbleParams):
        self._params = params
        self.s_depth = 2 << TILE_COUNT_BITS   # two output tiles of up to 256 terms
        super().__init__({
            "start": In(1),
            "cmd": In(command_layout()),
            "a_exps": In(stream.Signature(signed(TILE_EXP_BITS))),
            "b_exps": In(stream.Signature(signed(TILE_EXP_BITS))),
            "s": Out(QueueRead(signed(S_BITS))),
            "out_exp": Out(QueueRead(signed(OUT_EXP_BITS))),
            "fault": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cmd = self.cmd
        m.submodules.s_queue = s_queue = Queue(signed(S_BITS), self.s_depth)
        m.submodules.oe_queue = oe_queue = Queue(signed(OUT_EXP_BITS), OE_DEPTH)
        # Each queue's head leaves through a register slice (the queue's memory output is
        # slow, and its reader, the drain, may sit far away).
        for name, queue, port in (("s", s_queue, self.s), ("out_exp", oe_queue, self.out_exp)):
            if not self._params.pipelined:       # (the slow-clock profile: no slice)
                wiring.connect(m, queue.r, wiring.flipped(port))
                continue
            m.submodules[f"{name}_slice"] = cut = RegisterSlice(queue.r.data.shape())
            m.d.comb += [cut.w.valid.eq(queue.r.rdy), cut.w.payload.eq(queue.r.data),
                         queue.r.en.eq(cut.w.ready & queue.r.rdy),
                         port.rdy.eq(cut.r.valid), port.data.eq(cut.r.payload),
                         cut.r.ready.eq(port.en)]
        # (a pop of an empty output is the reader's misuse, sticky like the queues')
        misuse = Signal()
        with m.If((self.s.en & ~self.s.rdy) | (self.out_exp.en & ~self.out_exp.rdy)):
            m.d.sync += misuse.eq(1)
        m.d.comb += self.fault.eq(s_queue.fault | oe_queue.fault | misuse)

        m.submodules.tiles = tiles = LoopCounter({"t": TILE_COUNT_BITS, "j": TILE_COUNT_BITS,
                                                  "i": TILE_COUNT_BITS})
        m.d.comb += [tiles.restart.eq(self.start), tiles.t_last.eq(cmd.k_last),
                     tiles.j_last.eq(cmd.n_last), tiles.i_last.eq(cmd.m_last)]
        bound, bound_ready = self._bound(m)
        active = Signal()
        with m.If(self.start):
            m.d.sync += active.eq(1)
        with m.Elif(tiles.done):
            m.d.sync += active.eq(0)

        # Room: an s_t reaches its queue one cycle after its pair is taken, an out_exp
        # three cycles after (at most three in flight).
        go = Signal()
        m.d.comb += go.eq(active & bound_ready & ~tiles.done & self.a_exps.valid
                          & self.b_exps.valid & (s_queue.level <= self.s_depth - 2)
                          & (~tiles.t_wrap | (oe_queue.level <= OE_DEPTH - 4)))
        m.d.comb += [self.a_exps.ready.eq(go), self.b_exps.ready.eq(go), tiles.step.eq(go)]

        # (1) s_t of the pair.
        s1 = Signal(signed(S_BITS))
        v1, first1, last1 = Signal(name="v1"), Signal(), Signal()
        m.d.sync += [v1.eq(go), first1.eq(tiles.t == 0), last1.eq(tiles.t_wrap),
                     s1.eq(self.a_exps.payload + self.b_exps.payload
                           + cmd.a_phase + cmd.b_phase)]
        # (2) queue it; running maximum over the output tile.
        s_max = Signal(signed(S_BITS))
        fin = Signal()
        m.d.comb += [s_queue.w.valid.eq(v1), s_queue.w.payload.eq(s1)]
        m.d.sync += fin.eq(v1 & last1)
        with m.If(v1):
            m.d.sync += s_max.eq(Mux(first1 | (s1 > s_max), s1, s_max))
        # (3) out_exp = max + bound, (4) queued.
        oe = Signal(signed(OUT_EXP_BITS))
        oe_valid = Signal()
        m.d.sync += [oe.eq(s_max + bound), oe_valid.eq(fin)]
        m.d.comb += [oe_queue.w.valid.eq(oe_valid), oe_queue.w.payload.eq(oe)]
        return m

    def _bound(self, m):
        """(bound_bits - (acc_bits - 1), ready): fixed for the whole GEMM, so computed
        once per command in registered steps after ``start`` (ready four cycles after
        it). Each Amax is odd * 2**z with odd in {1, 15} (int4 8, uint4 15, fp4 4096),
        so Kt * T * Amax * Bmax is Kt times at most two factors 15 = 16 - 1 (two
        subtractions, no multiplier), shifted by the z's and log2 T, which only add to
        the bit length."""
        T, cmd = self._params.tile, self.cmd
        odd_15, pow_2 = {}, {}
        for kind, code in KIND_CODES.items():
            value = ELEMENT_MAX[kind]
            z = (value & -value).bit_length() - 1
            assert value >> z in (1, 15), f"{kind}: Amax {value} is not (1 or 15) * 2**z"
            odd_15[code], pow_2[code] = value >> z == 15, z
        scaled = Signal(TILE_COUNT_BITS + 1)
        m.d.comb += scaled.eq(cmd.k_last + 1)
        for n, kind_field in enumerate((cmd.a_kind, cmd.b_kind)):
            # one subtraction per register (the first into ``scaled0``, the second into
            # ``scaled_r`` below)
            is_15 = Cat(*(kind_field == code for code, yes in odd_15.items() if yes)).any()
            wider = Signal(len(scaled) + 4, name=f"scaled{n}")
            value = Mux(is_15, (scaled << 4) - scaled, scaled)
            if n == 0:
                m.d.sync += wider.eq(value)
            else:
                m.d.comb += wider.eq(value)
            scaled = wider
        pow_sum = Signal(range(64))
        with m.Switch(Cat(cmd.a_kind, cmd.b_kind)):
            for ka, za in pow_2.items():
                for kb, zb in pow_2.items():
                    with m.Case(ka | (kb << 2)):
                        m.d.comb += pow_sum.eq(za + zb + (T.bit_length() - 1))
        scaled_r = Signal.like(scaled, name="scaled_r")
        pow_sum_r = Signal.like(pow_sum, name="pow_sum_r")
        bound = Signal(signed(8), name="bound")
        m.d.sync += [scaled_r.eq(scaled), pow_sum_r.eq(pow_sum),
                     bound.eq(bit_length(m, scaled_r, "scaled_bits") + pow_sum_r
                              - (self._params.acc_bits - 1))]
        wait = Signal(2)  # cycles until ``bound`` holds this command's value
        with m.If(self.start):
            m.d.sync += wait.eq(self.BOUND_CYCLES - 1)
        with m.Elif(wait != 0):
            m.d.sync += wait.eq(wait - 1)
        return bound, wait == 0
