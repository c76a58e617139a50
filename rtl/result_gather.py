"""The result port: output-path beats gathered into result rows, counted to the GEMM's end.

With L = ``lanes`` < T the output path carries a row as T / L beats; the gather holds the
first T / L - 1 of them and sends the row with the last one, so the result port is one
row per beat whatever L is. It also counts the rows, marks the GEMM's final beat
(``last``) and reports when it has been taken (``done``).

In dual fp4 mode (:mod:`wire.streams`) a tile is T + 2 rows: the code rows gather each
beat's phase-0 codes (its low 4 L bits) into the row's low 4 T bits and its phase-1 codes
(the next 4 L) into the next 4 T, and the alpha and maximum rows gather whole beats, as
raw rows do.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from wire.streams import CODE_BITS, OUT_MODES, TILE_COUNT_BITS

from .layouts import command_layout, out_beat_layout, result_layout
from .loop_counter import LoopCounter
from .pipeline import register_copy

__all__ = ["ResultGather", "out_beat_layout"]


class ResultGather(wiring.Component):
    """Gathers output-path beats into result rows and counts them.

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T), ``lanes`` (L), ``acc_bits``.

    Attributes
    ----------
    start : In(1)
        A GEMM begins (the row count restarts).
    cmd : In(command_layout())
        The GEMM's command (``out_mode``, ``out_dual`` and the tile counts).
    beats : In(stream.Signature(out_beat_layout(params)))
        The output path's beats, T / L per result row (T rows per tile, T + 2 in dual
        fp4 mode).
    saturated : In(1)
        The rescaler's sticky flag, sent with every result row (frozen while a row waits,
        so a stalled beat does not change).
    result : Out(stream.Signature(result_layout(params)))
        The result rows (:func:`rtl.layouts.result_layout`).
    done : Out(1)
        The GEMM's last result row is being taken.
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        super().__init__({
            "start": In(1), "cmd": In(command_layout()),
            "beats": In(stream.Signature(out_beat_layout(params))),
            "saturated": In(1),
            "result": Out(stream.Signature(result_layout(params))),
            "done": Out(1),
        })

    def elaborate(self, platform):
        T, L, acc_bits = self._params.tile, self._params.lanes, self._params.acc_bits
        slices = T // L
        cmd, res = self.cmd, self.result.payload
        m = Module()
        raw = cmd.out_mode == OUT_MODES["raw"]
        dual = cmd.out_dual & (cmd.out_mode == OUT_MODES["fp4"])
        beat = self.beats.payload
        m.submodules.rows = rows = LoopCounter({"row": (T + 1).bit_length(),
                                                "j": TILE_COUNT_BITS, "i": TILE_COUNT_BITS})
        if slices == 1:
            beats = [beat.data]
            m.d.comb += [self.result.valid.eq(self.beats.valid),
                         self.beats.ready.eq(self.result.ready)]
        else:
            part = Signal(range(slices))
            part_last = part == slices - 1
            held = [Signal(L * acc_bits, name=f"held_beat{j}", reset_less=True)
                    for j in range(slices - 1)]
            beats = held + [beat.data]
            m.d.comb += [
                self.result.valid.eq(self.beats.valid & part_last),
                self.beats.ready.eq(~part_last | self.result.ready),
            ]
            with m.If(self.beats.valid & self.beats.ready):
                m.d.sync += part.eq(Mux(part_last, 0, part + 1))
                with m.Switch(part):
                    for j in range(slices - 1):
                        with m.Case(j):
                            m.d.sync += held[j].eq(beat.data)
        width = CODE_BITS * L

        def codes(half):
            return Cat(*(b[half * width:(half + 1) * width] for b in beats))
        # The row multiplexer's selects from flip-flop copies of the mode by the gather:
        # the command register sits by the command port (out_dual -> the result slice
        # was a 10.0 ns path, 9.0 ns of it routing, on the ULX3S 8x8 at 375df57). The
        # command is steady long before a GEMM's first result row.
        raw_near = register_copy(m, raw, "gather_raw")
        dual_near = register_copy(m, dual, "gather_dual")
        m.d.comb += [res.data.eq(Mux(raw_near | (dual_near & (rows.row >= T)), Cat(*beats),
                                     Mux(dual_near, Cat(codes(0), codes(1)), codes(0)))),
                     res.exp.eq(beat.exp)]

        taken = self.result.valid & self.result.ready
        m.d.comb += [rows.restart.eq(self.start), rows.step.eq(taken),
                     rows.row_last.eq(Mux(dual, T + 1, T - 1)), rows.j_last.eq(cmd.n_last),
                     rows.i_last.eq(cmd.m_last),
                     res.last.eq(rows.i_wrap), self.done.eq(taken & rows.i_wrap)]
        # The sticky flag may rise while a row waits; freeze it in a stalled row so the
        # payload stays stable (it is final on the last row: every accumulation is done).
        stalled_before = Signal()
        saturated_before = Signal()
        m.d.sync += [stalled_before.eq(self.result.valid & ~self.result.ready),
                     saturated_before.eq(res.saturated)]
        m.d.comb += res.saturated.eq(Mux(stalled_before, saturated_before, self.saturated))
        return m
