"""The feeder: issues every reduction tile's k-steps into the systolic array.

A tile starts only when both operand tiles are loaded and the psum queue behind the
array has room for the tile's T result rows (a credit); once started, its T k-steps go
in on consecutive cycles, so the array never waits in the middle of a tile.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from wire.streams import KIND_CODES, TILE_COUNT_BITS

from .layouts import command_layout
from .loop_counter import LoopCounter
from .pipeline import delays
from .tile_buffer import TileBuffer

__all__ = ["Feeder"]


class Feeder(wiring.Component):
    """k-step issue for one GEMM at a time, in the tile order of :mod:`wire.streams`.

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T).

    Attributes
    ----------
    start : In(1)
        A GEMM begins: ``cmd`` holds its command from this cycle until it ends (the
        tile counters restart from it in this cycle).
    cmd : In(command_layout())
    a_full, b_full : In(1)
        The operand tile buffers hold the next A and B tile (``TileBuffer.full``).
    credit : In(1)
        The psum queue has room for one more tile.
    take_credit : Out(1)
        A tile starts (it uses that room).
    read : Out(1)
        Read the next k-step of both tile buffers (``TileBuffer.read``): the issue.
    a_read_col, b_read_col : Out(1)
        How the buffers read: A needs column k of its tile, B row k; a transposed
        operand is stored the other way round.
    release : Out(1)
        The buffers' tiles are done (with the read of the last step).
    valid, last, a_signed, b_fp4, a_fp4 : Out(1)
        The :class:`rtl.systolic_array.SystolicArray` inputs for the buffer vectors of
        this cycle (``valid`` and ``last`` follow an issue by the buffers'
        ``TileBuffer.READ_LATENCY``, as the vectors do).
    done : Out(1)
        Every tile of the GEMM has been issued.
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        super().__init__({
            "start": In(1), "cmd": In(command_layout()),
            "a_full": In(1), "b_full": In(1),
            "credit": In(1), "take_credit": Out(1),
            "read": Out(1),
            "a_read_col": Out(1), "b_read_col": Out(1),
            "release": Out(1),
            "valid": Out(1), "last": Out(1),
            "a_signed": Out(1), "b_fp4": Out(1), "a_fp4": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        T = self._params.tile
        cmd = self.cmd
        m = Module()
        m.submodules.steps = steps = LoopCounter({
            "k": (T - 1).bit_length(), "t": TILE_COUNT_BITS,
            "j": TILE_COUNT_BITS, "i": TILE_COUNT_BITS})
        active, issue = Signal(name="active"), Signal()
        with m.If(self.start):
            m.d.sync += active.eq(1)
        with m.Elif(issue & steps.i_wrap):
            m.d.sync += active.eq(0)

        # k = 0 starts a tile: operands and a credit needed. The other steps just follow.
        # Every input of ``issue`` is a register (``active`` falls with the last issue).
        in_tile = Signal()           # registered steps.k != 0
        m.d.comb += [
            steps.restart.eq(self.start),
            steps.k_last.eq(T - 1), steps.t_last.eq(cmd.k_last),
            steps.j_last.eq(cmd.n_last), steps.i_last.eq(cmd.m_last),
            issue.eq(active & (in_tile | (self.a_full & self.b_full & self.credit))),
            steps.step.eq(issue),
            self.take_credit.eq(issue & ~in_tile),
            self.read.eq(issue),
            self.release.eq(issue & steps.k_wrap),
            self.a_read_col.eq(~cmd.a_trans),
            self.b_read_col.eq(cmd.b_trans),
            self.done.eq(steps.done),
            self.a_signed.eq(cmd.a_kind == KIND_CODES["int4"]),
            self.b_fp4.eq(cmd.b_kind == KIND_CODES["fp4"]),
            self.a_fp4.eq(cmd.a_kind == KIND_CODES["fp4"]),
        ]
        valid = delays(m, issue, TileBuffer.READ_LATENCY, "valid_d")
        last = delays(m, issue & steps.k_wrap, TileBuffer.READ_LATENCY, "last_d")
        m.d.comb += [self.valid.eq(valid[-1]), self.last.eq(last[-1])]
        # in_tile: steps.k != 0 as it will be, in a register.
        k_next = Signal.like(steps.k)
        with m.If(self.start):
            m.d.comb += k_next.eq(0)
        with m.Elif(issue):
            m.d.comb += k_next.eq(Mux(steps.k_wrap, 0, steps.k + 1))
        with m.Else():
            m.d.comb += k_next.eq(steps.k)
        m.d.sync += in_tile.eq(k_next != 0)
        return m
