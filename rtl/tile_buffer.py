"""Double-buffered operand tile: loaded row by row, read one reduction step at a time.

The host streams every operand tile as it is stored (row by row). The GEMM needs, at
reduction step k, column k of an A tile and row k of a B tile. A transposed operand
(W^T in dX = dY.W^T, X^T in dW = X^T.dY) is read the other way round, so the host never
rearranges data: ``read_col`` picks column or row reads.
"""

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams

from .layouts import operand_row_layout

__all__ = ["TileBuffer", "step_copies_layout"]


def step_copies_layout(params: NibbleParams) -> data.ArrayLayout:
    """T copies of a reduction step k (0..T-1), one per element of a read vector."""
    return data.ArrayLayout(range(params.tile), params.tile)


class TileBuffer(wiring.Component):
    """Two banks of T x T operand codes: one is read while the other loads.

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T).

    Attributes
    ----------
    load : In(stream.Signature(operand_row_layout(params)))
        Tile rows as stored, row 0 first, T beats per tile.
    full : Out(1)
        The read bank holds a complete tile (a register: it reflects a load or a
        release one cycle later).
    step : In(step_copies_layout(params))
        Reduction step k to read, one copy per element of ``vector`` (all equal): each
        element's T-way read multiplexer then has a select of its own instead of one
        decode shared by all T * T codes of a bank.
    read_col : In(1)
        1: ``vector`` is column k of the stored tile; 0: row k.
    vector : Out(operand_row_layout(params))
        The T codes of the row or column that ``step`` and ``read_col`` named
        ``READ_LATENCY`` cycles earlier (element i from row/column position i).
    release : In(1)
        The read bank is done (pulse with the last step's read): it may be loaded again.
    READ_LATENCY : int
        Cycles from a read (``step``) to its ``vector``: 3. The read goes through three
        registers: the request (``step``, ``read_col`` and the read bank), each element's
        row and column candidates in both banks (T-way multiplexers), then the one
        ``read_col`` and the read bank pick.
    """

    READ_LATENCY = 3

    def __init__(self, params: NibbleParams):
        self._params = params
        super().__init__({
            "load": In(stream.Signature(operand_row_layout(params))),
            "full": Out(1),
            "step": In(step_copies_layout(params)),
            "read_col": In(1),
            "vector": Out(operand_row_layout(params)),
            "release": In(1),
        })

    def elaborate(self, platform):
        T = self._params.tile
        m = Module()
        row_shape = operand_row_layout(self._params)
        banks = [[Signal(row_shape, name=f"bank{b}_row{r}", reset_less=True) for r in range(T)]
                 for b in range(2)]
        bank_full = Array(Signal(name=f"full{b}") for b in range(2))

        # Load side: fill bank wbank row by row.
        wbank = Signal()
        wrow = Signal(range(T))
        rbank = Signal()
        loaded = Signal()            # this beat completes bank wbank
        m.d.comb += [self.load.ready.eq(~bank_full[wbank]),
                     loaded.eq(self.load.valid & self.load.ready & (wrow == T - 1))]
        with m.If(self.load.valid & self.load.ready):
            for b in range(2):
                for r in range(T):
                    with m.If((wbank == b) & (wrow == r)):
                        m.d.sync += banks[b][r].eq(self.load.payload)
            m.d.sync += wrow.eq(wrow + 1)
            with m.If(wrow == T - 1):
                m.d.sync += wbank.eq(~wbank)
        # A bank fills with its last row and empties on release (never both at once: a
        # bank loads only while it is empty, and is released only while it is full).
        # ``full`` is the register of bank_full[rbank] as it will be.
        next_full = [Signal(name=f"full{b}_next") for b in range(2)]
        for b in range(2):
            m.d.comb += next_full[b].eq((bank_full[b] & ~(self.release & (rbank == b)))
                                        | (loaded & (wbank == b)))
            m.d.sync += bank_full[b].eq(next_full[b])
        m.d.sync += self.full.eq(Mux(rbank ^ self.release, next_full[1], next_full[0]))

        # Read side: the request into registers; row k and column k of each bank,
        # element by element, into registers (T-way multiplexers); then the one
        # ``read_col`` and the read bank ask for. The bank may be reloaded from the
        # cycle after its release: its last step reads it in that cycle, and a row
        # written then lands after the read.
        # The read request first goes into registers here (the reader sits elsewhere).
        step = Signal.like(self.step, name="step_r", reset_less=True)
        read_col0, read_bank0 = Signal(name="read_col0"), Signal(name="read_bank0")
        m.d.sync += [step.eq(self.step), read_col0.eq(self.read_col), read_bank0.eq(rbank)]
        by_row = [Signal(row_shape, name=f"by_row{b}", reset_less=True) for b in range(2)]
        by_col = [Signal(row_shape, name=f"by_col{b}", reset_less=True) for b in range(2)]
        read_col, read_bank = Signal(name="read_col"), Signal(name="read_bank")
        vector = Signal(row_shape, reset_less=True)
        m.d.comb += self.vector.eq(vector)
        m.d.sync += [read_col.eq(read_col0), read_bank.eq(read_bank0)]
        for b in range(2):
            rows = Array(banks[b])
            for i in range(T):
                m.d.sync += [by_row[b][i].eq(rows[step[i]][i]),
                             by_col[b][i].eq(rows[i][step[i]])]
        m.d.sync += vector.eq(Mux(read_col, Mux(read_bank, by_col[1], by_col[0]),
                                  Mux(read_bank, by_row[1], by_row[0])))
        with m.If(self.release):
            m.d.sync += rbank.eq(~rbank)
        return m
