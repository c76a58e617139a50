"""The T x T output-stationary systolic array of 4-bit MACs.

Why output-stationary
    Every PE owns one element P[m, n] of the T x T output tile for a whole K-tile
    reduction (T steps). The tile partial sum P_t = A_t @ B_t is therefore complete, and
    exact, at the PEs; it leaves the array once per tile, row by row, and the per-tile
    radix rescaling (P_t * 2**(Ea + Eb + phases - out_exp), one shift amount for the
    whole tile) is a single shared shifter at the array edge instead of a barrel
    shifter in every PE. The partial sums stay narrow (``params.psum_bits``), and only the
    operands move: a flows right along the rows, b flows down the columns.

Why it never stalls
    Nothing in the array has an enable: a global enable would have to reach every one of
    its thousands of flip-flops through the fabric (FPGA tools give only clocks a global
    network), which is what kept a 16 x 16 array from routing. Instead a ``valid`` bit
    travels with every operand (as in Gemmini's mesh): a step with ``valid`` low is a
    bubble, and a PE that sees one holds its accumulator. The output ``psum`` is
    valid-only; whoever issues k-steps must make sure the rows can be stored (the
    accelerator counts credits for its psum queue), so the array never has to wait.

Data flow
    Step k of a tile reduction presents column k of the A tile (``a_col[m]`` =
    a[m, k]) and row k of the B tile (``b_row[n]`` = b[k, n]). The edges re-encode the
    codes for the PEs (:func:`rtl.pe.encode_a`, :func:`rtl.pe.encode_b`) and skew them:
    row m of a (with its ``valid`` and ``last`` bits) is delayed m cycles and column n of
    b n cycles, so a[m, k] and b[k, n] meet in PE(m, n). A PE that sees ``last`` moves
    its finished sum to its drain register and starts the next tile at once (double
    buffering), so tiles follow each other without idle steps.

Timing (every cycle is a step; see :attr:`SystolicArray.latency`)
    Let the last k-step of a tile reduction be presented in cycle s.

    * PE(m, n) captures the finished sum in cycle s + m + n + 3 (its operands reach it
      in cycle s + m + n, :attr:`rtl.pe.PE.LATENCY` = 3) and holds it from cycle
      s + m + n + 4 until cycle s + T + m + n + 3 at least, so all of row m is held in
      cycle s + T + m + 3 (with back-to-back tiles, only then). The row is sampled then.
    * Each column picks the sampled row out of its T PEs with an AND-OR tree of 4-input
      groups, one register per level (``drain_levels`` = ceil(log4 T) levels).
    * Row m is on ``psum`` (``valid`` high for exactly one cycle) in cycle
      s + T + m + 3 + ``drain_levels``: a tile whose first k-step is in cycle c gives its
      row 0 in cycle c + ``latency`` = c + 2T + 2 + ``drain_levels`` and its row T - 1
      T - 1 cycles later.
    * Drain bandwidth equals compute bandwidth (T rows per T-step tile), so back-to-back
      tiles give a gap-free output and the array takes one k-step per cycle
      indefinitely: 100 % utilization apart from the pipeline fill and flush. Bubbles
      anywhere are harmless: they do not count as k-steps and only delay the tiles they
      precede or split. Between GEMMs nothing needs flushing, even when the mode changes.

Reset
    Only control state has a reset: the ``valid`` and ``last`` bits, and (through one
    register per row, :attr:`rtl.pe.PE.clear`) the accumulators, so that a GEMM cut
    short leaves nothing behind. Operand, product and drain registers have none.
"""

from functools import reduce

from amaranth.hdl import C, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from rtl.layouts import operand_row_layout, psum_row_layout
from rtl.pe import PE, OperandA, OperandB, encode_a, encode_b, encode_swapped
from rtl.pipeline import REPLICA_SUFFIX, stage

__all__ = ["SystolicArray", "drain_levels", "array_latency"]

#: Rows combined per register level of the drain's AND-OR tree.
DRAIN_FAN_IN = 4
#: Columns per intermediate copy of a row's ready bit (T >= 4).
ROW_READY_GROUP = 4


def drain_levels(tile: int) -> int:
    """Register levels of the drain tree for T = ``tile``: ceil(log4 T), at least 1."""
    levels, rows = 1, -(-tile // DRAIN_FAN_IN)
    while rows > 1:
        levels, rows = levels + 1, -(-rows // DRAIN_FAN_IN)
    return levels


def array_latency(tile: int) -> int:
    """Cycles from a tile's first k-step to its row 0 on ``psum``: 2T + 2 + drain_levels(T)
    (2T - 1 + the PE's :attr:`rtl.pe.PE.LATENCY` + drain_levels)."""
    return 2 * tile - 1 + PE.LATENCY + drain_levels(tile)


class SystolicArray(wiring.Component):
    """T x T output-stationary array of :class:`rtl.pe.PE`; see the module docstring
    for the data flow, the timing and the reset.

    Parameters
    ----------
    params : NibbleParams
        ``params.tile`` is T, the array edge and the tile edge.

    Attributes
    ----------
    valid : In(1)
        1: this cycle's inputs are a k-step of a tile reduction; 0: a bubble (the other
        inputs are ignored).
    last : In(1)
        1 on the last k-step (k = T - 1) of a tile reduction (ignored on a bubble). A
        reduction is exactly T valid steps (the driver zero-pads partial tiles).
    a_signed : In(1)
        Kind of this step's a codes: 1 int4, 0 uint4. Sampled with the operands, so it
        may change from one tile to the next.
    b_fp4 : In(1)
        Kind of this step's b codes: 1 FP4 [s | e2 e1 e0], 0 int4.
    a_fp4 : In(1)
        1: this step's a codes are FP4 and its b codes int4 (dX = dY . W^T);
        ``a_signed`` and ``b_fp4`` are then ignored.
    a_col : In(ArrayLayout(unsigned(4), T))
        Column k of the A tile: element m is the code of a[m, k].
    b_row : In(ArrayLayout(unsigned(4), T))
        Row k of the B tile: element n is the code of b[k, n].
    psum : Out(stream.Signature(ArrayLayout(signed(params.psum_bits), T), always_ready=True))
        The finished tiles of partial sums, T beats per tile, row 0 first, each valid for
        one cycle (there is no ready); element n of the beat for row m is
        P[m, n] = sum_k a[m, k] * b[k, n] over the tile reduction, exact, in element
        units (no tile exponents, no phase).
    latency : int
        Cycles from a tile's first k-step to its row 0 on ``psum``: 2T + 2 +
        ``drain_levels(T)``.
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        self.psum_bits = params.psum_bits
        self.latency = array_latency(params.tile)
        super().__init__({
            "valid": In(1),
            "last": In(1),
            "a_signed": In(1),
            "b_fp4": In(1),
            "a_fp4": In(1),
            "a_col": In(operand_row_layout(params)),
            "b_row": In(operand_row_layout(params)),
            "psum": Out(stream.Signature(psum_row_layout(params), always_ready=True)),
        })

    def elaborate(self, platform):
        m = Module()
        size = self._params.tile

        def delay(value, cycles, name, data, suffix=""):
            """``value`` delayed by ``cycles`` registers (data registers have no reset),
            named ``name_<i><suffix>``."""
            for i in range(cycles):
                reg = Signal.like(value, name=f"{name}_{i}{suffix}", reset_less=data)
                m.d.sync += reg.eq(value)
                value = reg
            return value

        pes = [[PE(self._params) for _ in range(size)] for _ in range(size)]
        for row in range(size):
            # A registered copy of the reset per row clears the row's accumulators.
            # (identical in every row: named as a copy, so synthesis keeps one per row)
            clear = Signal(name=f"clear_row{row}{REPLICA_SUFFIX}", init=1)
            m.d.sync += clear.eq(0)
            for col in range(size):
                m.submodules[f"pe_{row}_{col}"] = pes[row][col]
                m.d.comb += pes[row][col].clear.eq(clear)

        # Row edge: encode, then delay row m (with its valid and last bits) by m cycles.
        for row in range(size):
            a_enc = Signal(OperandA, name=f"a_enc{row}")
            a_swapped, _ = encode_swapped(self.a_col[row], C(0, 4))
            a_plain = encode_a(self.a_col[row], self.a_signed)
            m.d.comb += a_enc.eq(Mux(self.a_fp4, a_swapped, a_plain))
            pe = pes[row][0]
            m.d.comb += [
                pe.a_in.eq(delay(a_enc, row, f"a_skew{row}", True)),
                # (the same delay line in every row: named as copies, so that synthesis
                # keeps each row's own instead of one line routed down the array)
                pe.valid_in.eq(delay(self.valid, row, f"valid_skew{row}", False,
                                     REPLICA_SUFFIX)),
                pe.last_in.eq(delay(self.last & self.valid, row, f"last_skew{row}", False,
                                    REPLICA_SUFFIX)),
            ]

        # Column edge: encode, delay column n by n cycles.
        for col in range(size):
            b_enc = Signal(OperandB, name=f"b_enc{col}")
            _, b_swapped = encode_swapped(C(0, 4), self.b_row[col])
            m.d.comb += b_enc.eq(Mux(self.a_fp4, b_swapped, encode_b(self.b_row[col], self.b_fp4)))
            m.d.comb += pes[0][col].b_in.eq(delay(b_enc, col, f"b_skew{col}", True))

        for row in range(size):
            for col in range(size):
                pe = pes[row][col]
                if col > 0:
                    left = pes[row][col - 1]
                    m.d.comb += [pe.a_in.eq(left.a_out), pe.valid_in.eq(left.valid_out),
                                 pe.last_in.eq(left.last_out)]
                if row > 0:
                    m.d.comb += pe.b_in.eq(pes[row - 1][col].b_out)

        self._drain(m, pes)
        return m

    def _drain(self, m, pes):
        """Row m is held by all its PEs in the cycle after its last column captured
        (see Timing); a one-hot ``ready`` bit per row picks it there, and each column
        ORs its rows' masked sums through a tree of 4-input groups, one register per
        level. A shift chain through the drain registers cannot work: the captures
        sweep the array as a skewed wavefront that would overwrite values still in
        flight, and deskewing the columns would cost T(T-1)/2 more psum-wide
        registers.

        Each row's ready bit reaches the T columns' AND gates through a flip-flop copy
        per column (a single register per row, by the last column, drove T x psum_bits
        gates across the row). The copies are loaded from the captures of the column
        before the last, a cycle ahead (row m's PE in column T - 2 captures one cycle
        before the one in column T - 1; for T = 2 that is column 0). (A multiplexer
        tree on the row's binary index was tried for the 16 x 16 build: 681 more LUTs
        at T = 16 after flattening, so the AND-OR stays.)"""
        size = self._params.tile
        ready = [Signal(name=f"row_ready{row}") for row in range(size)]
        if size < 4:
            early = [Signal(name=f"row_ready_early{row}") for row in range(size)]
            m.d.sync += [early[row].eq(pes[row][size - 2].capture) for row in range(size)]
            m.d.sync += [ready[row].eq(early[row]) for row in range(size)]
            # (data-path copies: no reset; only ``ready`` decides ``valid``)
            masks = [[stage(m, early[row], f"row_ready{row}_col{col}{REPLICA_SUFFIX}")
                      for col in range(size)] for row in range(size)]
        else:
            masks = [self._row_ready_copies(m, pes, row, ready[row]) for row in range(size)]
        # Level 0: every row, masked by its ready bit; each level ORs groups of
        # DRAIN_FAN_IN into one register (the rows are one-hot, so OR picks the one).
        parts = [([Mux(masks[row][col], pes[row][col].psum, 0) for col in range(size)],
                  ready[row]) for row in range(size)]
        level = 0
        while True:
            groups = [parts[i:i + DRAIN_FAN_IN] for i in range(0, len(parts), DRAIN_FAN_IN)]
            merged = []
            for g, group in enumerate(groups):
                cols = [Signal.like(pes[0][0].psum, name=f"drain{level}_{g}_col{col}",
                                    reset_less=True) for col in range(size)]
                valid = Signal(name=f"drain{level}_{g}_valid")
                m.d.sync += [cols[col].eq(reduce(lambda x, y: x | y, [p[0][col] for p in group]))
                             for col in range(size)]
                m.d.sync += valid.eq(reduce(lambda x, y: x | y, [p[1] for p in group]))
                merged.append((cols, valid))
            parts, level = merged, level + 1
            if len(parts) == 1:
                break
        cols, valid = parts[0]
        m.d.comb += [self.psum.valid.eq(valid)]
        m.d.comb += [self.psum.payload[col].eq(cols[col]) for col in range(size)]

    def _row_ready_copies(self, m, pes, row, ready):
        """(T >= 4) Row ``row``'s ready bit, and its per-column copies for the AND
        gates, from the captures of column T - 3, two cycles ahead, through a copy per
        :data:`ROW_READY_GROUP` columns: one register driving T copies along the row was
        a 10.1 ns route on the ULX3S 16x16 at df084b0. Returns the column copies."""
        size = self._params.tile
        early = Signal(name=f"row_ready_early{row}")
        m.d.sync += early.eq(pes[row][size - 3].capture)
        masks = []
        for g in range(0, size, ROW_READY_GROUP):
            group = stage(m, early, f"row_ready{row}_group{g}{REPLICA_SUFFIX}")
            masks += [stage(m, group, f"row_ready{row}_col{col}{REPLICA_SUFFIX}")
                      for col in range(g, min(g + ROW_READY_GROUP, size))]
        middle = Signal(name=f"row_ready_middle{row}")
        m.d.sync += [middle.eq(early), ready.eq(middle)]
        return masks
