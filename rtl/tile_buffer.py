"""Double-buffered operand tile: loaded row by row, read one reduction step at a time.

The host streams every operand tile as it is stored (row by row). The GEMM needs, at
reduction step k, column k of an A tile and row k of a B tile. A transposed operand
(W^T in dX = dY.W^T, X^T in dW = X^T.dY) is read the other way round, so the host never
rearranges data: ``read_col`` picks column or row reads.

The feeder reads a tile's steps once, in order k = 0..T-1, so the read bank does not
need a T-way multiplexer per code (a crossbar of T * T codes, whose wiring limited the
clock): it shifts. Each read takes row 0 (or column 0) and moves the bank up by a row
(or left by a column), so every code only ever goes to its neighbour.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams

from .layouts import operand_row_layout
from .pipeline import REPLICA_SUFFIX

__all__ = ["TileBuffer"]


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
    read : In(1)
        Read the read bank's next step: the tile's steps k = 0, 1, ..., T - 1 are read
        once each, in that order, while ``full``, and the read bank is released with the
        last (a read moves the bank's codes, so a step cannot be read twice).
    read_col : In(1)
        1: ``vector`` is column k of the stored tile; 0: row k (the same for all T reads
        of a tile).
    vector : Out(operand_row_layout(params))
        The T codes of the row or column that a ``read`` named ``READ_LATENCY`` cycles
        earlier (element i from row/column position i).
    release : In(1)
        The read bank is done (pulse with the last step's read): it may be loaded again.
    READ_LATENCY : int
        Cycles from a ``read`` to its ``vector``: 2. The request goes into registers
        (one copy per row of each bank, for the shift enables); in the next cycle the
        vector register takes row 0 or column 0 of the read bank while the bank shifts.
    """

    READ_LATENCY = 2

    def __init__(self, params: NibbleParams):
        self._params = params
        super().__init__({
            "load": In(stream.Signature(operand_row_layout(params))),
            "full": Out(1),
            "read": In(1),
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
        wbank = Signal(name="wbank")
        wrow = Signal(range(T))
        rbank = Signal()
        loaded = Signal()            # this beat completes bank wbank
        take = Signal()
        m.d.comb += [self.load.ready.eq(~bank_full[wbank]),
                     take.eq(self.load.valid & self.load.ready),
                     loaded.eq(take & (wrow == T - 1))]
        with m.If(take):
            m.d.sync += wrow.eq(wrow + 1)
            with m.If(wrow == T - 1):
                m.d.sync += wbank.eq(~wbank)
        # A bank fills with its last row and empties on release (never both at once: a
        # bank loads only while it is empty, and is released only while it is full).
        # ``full`` is the register of bank_full[rbank] as it will be.
        # The beat taken in one cycle is written into its row in the next, from
        # registers: the payload and one enable per row of each bank (each drives the
        # 4 T flip-flops of its row). The bank counts as full as soon as its last beat
        # is taken: a read moves the bank's rows two cycles after ``full`` shows it,
        # one cycle after that last row is written.
        payload = Signal(row_shape, reset_less=True)
        m.d.sync += payload.eq(self.load.payload)
        wen = [[Signal(name=f"wen{b}_{r}") for r in range(T)] for b in range(2)]
        for b in range(2):
            m.d.sync += [wen[b][r].eq(take & (wbank == b) & (wrow == r)) for r in range(T)]
        next_full = [Signal(name=f"full{b}_next") for b in range(2)]
        for b in range(2):
            m.d.comb += next_full[b].eq((bank_full[b] & ~(self.release & (rbank == b)))
                                        | (loaded & (wbank == b)))
            m.d.sync += bank_full[b].eq(next_full[b])
        m.d.sync += self.full.eq(Mux(rbank ^ self.release, next_full[1], next_full[0]))
        with m.If(self.release):
            m.d.sync += rbank.eq(~rbank)

        # Read side. The request, decoded per bank and direction, in one register per
        # row (each drives the 4 T flip-flops of its row): up[b][r] shifts bank b up a
        # row, left[b][r] left a column. The vector takes row 0 / column 0 of the bank
        # that shifts, in the same cycle.
        # (copies that synthesis must keep: it merges identical flip-flops, and the one
        # left would reach every row of both banks)
        up = [[Signal(name=f"up{b}_{r}{REPLICA_SUFFIX}") for r in range(T)] for b in range(2)]
        left = [[Signal(name=f"left{b}_{r}{REPLICA_SUFFIX}") for r in range(T)]
                for b in range(2)]
        read_col, read_bank = Signal(name="read_col"), Signal(name="read_bank")
        for b in range(2):
            this = self.read & (rbank == b)
            for r in range(T):
                m.d.sync += [up[b][r].eq(this & ~self.read_col),
                             left[b][r].eq(this & self.read_col)]
        m.d.sync += [read_col.eq(self.read_col), read_bank.eq(rbank)]
        vector = Signal(row_shape, reset_less=True)
        m.d.comb += self.vector.eq(vector)
        column0 = [Cat(*(banks[b][r][0] for r in range(T))) for b in range(2)]
        m.d.sync += vector.eq(Mux(read_col, Mux(read_bank, column0[1], column0[0]),
                                  Mux(read_bank, banks[1][0], banks[0][0])))
        for b in range(2):
            for r in range(T):
                row = banks[b][r]
                with m.If(wen[b][r]):
                    m.d.sync += row.eq(payload)
                with m.Elif(up[b][r]):
                    if r + 1 < T:
                        m.d.sync += row.eq(banks[b][r + 1])
                with m.Elif(left[b][r]):
                    m.d.sync += row.eq(Cat(*(row[c + 1] for c in range(T - 1))))
        return m
