"""Double-buffered operand tile: loaded row by row, read one row or column per step.

The host streams every operand tile as it is stored (row by row). The GEMM needs, at
reduction step k, column k of an A tile and row k of a B tile. A transposed operand
(W^T in dX = dY.W^T, X^T in dW = X^T.dY) is read the other way round, so the host never
rearranges data: ``read_col`` picks column or row reads.

Skewed storage. Both banks live in T small memories, the *lanes*, of 4-bit codes, 2T
deep (bank b at addresses b T .. b T + T - 1): distributed RAM, two TRELLIS_DPR16X4 per
lane on ECP5 at T = 16. Element (r, c) of a tile is stored in lane (r + c) mod T at
address r, so the tile's diagonals run across the lanes and every row *and* every
column has exactly one element in each lane: either comes out of one read of all lanes.

* Row r is written to every lane at address r, rotated by r (element c to lane
  (r + c) mod T).
* Row k is read at address k in every lane, column k at address (j - k) mod T in lane
  j; either way lane (i + k) mod T holds element i, and the T codes are rotated back by
  k.

A rotation is a barrel shifter: log2 T stages of 2:1 multiplexers, stage s moving every
code 2**s places when bit s of the amount is set. That replaces the two ways a buffer of
flip-flops pays for transposed reads: a T x T crossbar (each output code picking any of
T codes on its own select: T-way multiplexers whose wiring limited the clock), or banks
that shift on every read (2 T * T codes in flip-flops, each behind a 3-way input
multiplexer: load, up a row, left a column), which made the buffers most of the logic
of a 16 x 16 array after the PEs.

Timing. A row taken in cycle t goes through the first half of the rotation into
registers, and through the second half in t + 1 into the lanes, which write it at the
end of t + 1 (its address and write enable from registers too). A read in cycle c
registers every lane's read address; in c + 1 the lanes are read (asynchronously: the
LUT RAM's output) and the codes go through the first half of the rotation back into
registers, in c + 2 through the second half into the ``vector`` register. A tile's first
read comes at the earliest in the cycle after its last row was taken (``full``), and
reads the lanes in the next cycle, once that row is written.
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams

from .layouts import operand_row_layout
from .pipeline import stage

__all__ = ["TileBuffer"]


def rotate(codes, amount, stages, direction):
    """The barrel stages ``stages`` of a rotation of the list ``codes`` by ``amount``:
    stage s moves every code 2**s positions when bit s of ``amount`` is set, towards
    higher positions (``direction`` +1: code i goes to i + amount, mod T) or lower ones
    (-1: position i takes code i + amount)."""
    T = len(codes)
    for s in stages:
        step = direction << s
        codes = [Mux(amount[s], codes[(i - step) % T], codes[i]) for i in range(T)]
    return codes


class TileBuffer(wiring.Component):
    """Two banks of T x T operand codes: one is read while the other loads.

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T).

    Attributes
    ----------
    load : In(stream.Signature(operand_row_layout(params)))
        Tile rows as stored, row 0 first, T beats per tile. ``load.ready`` comes from
        registers (the bank being loaded is free).
    full : Out(1)
        The read bank holds a complete tile (a register: it reflects a load or a
        release one cycle later).
    read : In(1)
        Read the read bank's next step: the tile's steps k = 0, 1, ..., T - 1 are read
        once each, in that order, while ``full``, and the read bank is released with the
        last (the buffer counts the steps).
    read_col : In(1)
        With ``read``. 1: ``vector`` is column k of the stored tile; 0: row k (the
        feeder keeps it the same for all T reads of a tile).
    vector : Out(operand_row_layout(params))
        The T codes of the row or column that a ``read`` named ``READ_LATENCY`` cycles
        earlier (element i from row/column position i), in a register.
    release : In(1)
        The read bank is done (pulse with the last step's read): it may be loaded again.
    READ_LATENCY : int
        Cycles from a ``read`` to its ``vector``: 3. The lanes' read addresses go into
        registers; in the next cycle the lanes are read and the codes go through half
        of the rotation back into registers; in the cycle after, through the other half
        into the vector register.
    """

    READ_LATENCY = 3

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
        m = Module()
        T = self._params.tile
        # No memory attributes: an asynchronous read leaves synthesis no block RAM to map
        # to, only LUT RAM (or flip-flops, on a device without it).
        code = operand_row_layout(self._params).elem_shape
        lanes = [Memory(shape=code, depth=2 * T, init=[]) for _ in range(T)]
        for j, lane in enumerate(lanes):
            m.submodules[f"lane{j}"] = lane
        take, wbank, wrow, rbank = self._banks(m)
        self._write(m, lanes, take, wbank, wrow)
        self._read(m, lanes, rbank)
        return m

    def _halves(self):
        """The barrel stages (log2 T) as two ranges: the first cycle's and the second's."""
        stages = (self._params.tile - 1).bit_length()
        return range(stages // 2), range(stages // 2, stages)

    def _banks(self, m):
        """Which bank loads (``wbank``, at row ``wrow``) and which is read (``rbank``),
        the two full bits, ``load.ready`` and ``full``. Returns (take, wbank, wrow,
        rbank): ``take`` is 1 in the cycle a row is taken."""
        T = self._params.tile
        bank_full = Array(Signal(name=f"full{b}") for b in range(2))
        wbank, rbank = Signal(name="wbank"), Signal(name="rbank")
        wrow = Signal(range(T), name="wrow")
        take, loaded = Signal(), Signal()      # loaded: this beat completes bank wbank
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
        next_full = [Signal(name=f"full{b}_next") for b in range(2)]
        for b in range(2):
            m.d.comb += next_full[b].eq((bank_full[b] & ~(self.release & (rbank == b)))
                                        | (loaded & (wbank == b)))
            m.d.sync += bank_full[b].eq(next_full[b])
        m.d.sync += self.full.eq(Mux(rbank ^ self.release, next_full[1], next_full[0]))
        with m.If(self.release):
            m.d.sync += rbank.eq(~rbank)
        return take, wbank, wrow, rbank

    def _write(self, m, lanes, take, wbank, wrow):
        """The row taken in cycle t, rotated by its row number (half the stages in t,
        half in t + 1), written into every lane at the end of t + 1: element c to lane
        (r + c) mod T, at address wbank T + r."""
        first, second = self._halves()
        payload = [self.load.payload[c] for c in range(self._params.tile)]
        half = [stage(m, code, f"wcode{j}") for j, code in
                enumerate(rotate(payload, wrow, first, +1))]
        amount = stage(m, wrow, "wrot")
        addr = stage(m, Cat(wrow, wbank), "waddr")
        enable = Signal(name="wen")            # control: no write after a reset
        m.d.sync += enable.eq(take)
        for lane, code in zip(lanes, rotate(half, amount, second, +1)):
            port = lane.write_port()
            m.d.comb += [port.addr.eq(addr), port.data.eq(code), port.en.eq(enable)]

    def _read(self, m, lanes, rbank):
        """The step counter, each lane's read address in a register (cycle c), the lanes'
        codes rotated back by the step (half in c + 1, half in c + 2) into ``vector``."""
        T = self._params.tile
        first, second = self._halves()
        k = Signal(range(T), name="step")      # reads of the read bank's tile so far
        with m.If(self.release):
            m.d.sync += k.eq(0)
        with m.Elif(self.read):
            m.d.sync += k.eq(k + 1)
        codes = []
        for j, lane in enumerate(lanes):
            port = lane.read_port(domain="comb")
            # row k: address k; column k: row (j - k) mod T, the one on lane j
            row = Mux(self.read_col, (j - k)[:len(k)], k)
            m.d.comb += port.addr.eq(stage(m, Cat(row, rbank), f"raddr{j}"))
            codes.append(port.data)
        amount = stage(m, k, "rrot1")
        half = [stage(m, code, f"rcode{i}") for i, code in
                enumerate(rotate(codes, amount, first, -1))]
        vector = Signal(operand_row_layout(self._params), reset_less=True)
        m.d.sync += vector.eq(Cat(*rotate(half, stage(m, amount, "rrot2"), second, -1)))
        m.d.comb += self.vector.eq(vector)
