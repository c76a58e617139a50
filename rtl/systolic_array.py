"""The T x T output-stationary systolic array of 4-bit MACs.

Why output-stationary
    Every PE owns one element P[m, n] of the T x T output tile for a whole K-tile
    reduction (T steps). The tile partial sum P_t = A_t @ B_t is therefore complete, and
    exact, at the PEs; it leaves the array once per tile, row by row, and the per-tile
    radix rescaling (P_t * 2**(Ea + Eb + phases - out_exp), one shift amount for the
    whole tile) is a single shared shifter at the array edge instead of a barrel
    shifter in every PE. The partial sums stay narrow (``psum_bits(T)``), and only the
    operands move: a flows right along the rows, b flows down the columns.

Data flow
    Step k of a tile reduction presents column k of the A tile (``a_col[m]`` =
    a[m, k]) and row k of the B tile (``b_row[n]`` = b[k, n]). The edges re-encode the
    codes for the PEs (:func:`rtl.pe.encode_a`, :func:`rtl.pe.encode_b`) and skew them:
    row m of a is delayed m steps and column n of b n steps, so a[m, k] and b[k, n]
    meet in PE(m, n). A flag marking a tile's last step travels with a; a PE that sees it
    moves its finished sum to its drain register and starts the next tile at once
    (double buffering), so tiles follow each other without idle steps.

Timing
    A *step* is a clock cycle with ``en`` high; in a cycle with ``en`` low nothing moves
    (a beat on ``psum`` stays until it is taken). Let the last k-step of a tile
    reduction (its T-th valid step) be step s.

    * PE(m, n) accumulates the products of step s' in step s' + m + n + 1 and holds the
      finished tile from step s + m + n + 2 until step s + T + m + n + 1 at least.
    * Row m of the tile is read out in step s + T + 1 + m (with back-to-back tiles the
      one step in which all of row m is held). ``psum.valid`` is high and
      ``psum.payload`` holds the row from the clock cycle after that step until the
      beat is taken (at once when ``psum.ready`` is high). The T rows of a tile leave in
      T consecutive steps, row 0 first.
    * With ``en`` always high and no bubbles, a tile whose first k-step is in cycle c
      gives its row 0 in cycle c + 2T + 1 and its row T-1 in cycle c + 3T.
    * Drain bandwidth equals compute bandwidth (T rows per T-step tile), so back-to-back
      tiles give a gap-free output stream and the array takes one k-step per ``en``
      cycle indefinitely: 100% utilization apart from the pipeline fill and flush.

Flush
    After the last step of the last tile, keep ``en`` high for 2T more steps (``valid``
    low). The last row is on ``psum`` in the cycle after the 2T-th of them. Bubbles
    (``valid`` low) anywhere are harmless: they push zero operands, do not count as
    k-steps, and only delay the tiles they precede or split. Between GEMMs no flush is
    needed: the next GEMM's tiles may follow at once, even in another mode.

Backpressure
    ``psum`` is a valid/ready stream (valid never waits on ready). A beat is read out
    only in a step, so the rule for the controller is: ``en`` must be low in every cycle
    in which ``psum.valid`` is high and ``psum.ready`` low, i.e. it ANDs
    ``~psum.valid | psum.ready`` into ``en`` (a combinational path from ``psum.ready`` to
    ``en``; none from ``en`` back to ``psum.valid``). A stalled beat then stays on
    ``psum`` and the whole array waits with it. A consumer that is always ready (the
    rescaler takes one row per cycle) simply ties ``psum.ready`` high, and since a tile
    drains in exactly one tile time the array then never stalls for its output. The
    operand inputs have no ready of their own: ``en`` is the array's flow control.
"""

from functools import reduce

from amaranth.hdl import C, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams, psum_bits
from rtl.layouts import operand_row_layout, psum_row_layout
from rtl.pe import PE, OperandA, OperandB, encode_a, encode_b, encode_swapped

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """T x T output-stationary array of :class:`rtl.pe.PE`; see the module docstring
    for the data flow, the timing and the flush rule.

    Parameters
    ----------
    params : NibbleParams
        ``params.tile`` is T, the array edge and the tile edge.

    Attributes
    ----------
    en : In(1)
        Advance enable: in a cycle with ``en`` low nothing moves and the inputs are
        ignored. The controller derives it from its stream handshakes.
    valid : In(1)
        1: this step is a k-step of a tile reduction; 0: a bubble (zero operands are
        pushed, ``first``, ``a_col`` and ``b_row`` are ignored).
    first : In(1)
        1 on the first k-step (k = 0) of a tile reduction. A reduction is exactly T valid
        steps (the driver zero-pads partial tiles); ``first`` resynchronizes the step
        count, the T-th valid step closes the tile.
    a_signed : In(1)
        Kind of this step's a codes: 1 int4, 0 uint4. Sampled with the operands, so it
        may change from one tile to the next without a flush.
    b_fp4 : In(1)
        Kind of this step's b codes: 1 FP4 [s | e2 e1 e0], 0 int4. Sampled with the
        operands.
    a_fp4 : In(1)
        1: this step's a codes are FP4 and its b codes int4 (dX = dY . W^T);
        ``a_signed`` and ``b_fp4`` are then ignored. Sampled with the operands.
    a_col : In(ArrayLayout(unsigned(4), T))
        Column k of the A tile: element m is the code of a[m, k].
    b_row : In(ArrayLayout(unsigned(4), T))
        Row k of the B tile: element n is the code of b[k, n].
    psum : Out(stream.Signature(ArrayLayout(signed(psum_bits(T)), T)))
        The finished tiles of partial sums, T beats per tile, row 0 first; element n of
        the beat for row m is P[m, n] = sum_k a[m, k] * b[k, n] over the tile reduction,
        exact, in element units (no tile exponents, no phase). See Backpressure in the
        module docstring for what ``psum.ready`` asks of ``en``.
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        self.psum_bits = psum_bits(params.tile)
        super().__init__({
            "en": In(1),
            "valid": In(1),
            "first": In(1),
            "a_signed": In(1),
            "b_fp4": In(1),
            "a_fp4": In(1),
            "a_col": In(operand_row_layout(params)),
            "b_row": In(operand_row_layout(params)),
            "psum": Out(stream.Signature(psum_row_layout(params))),
        })

    def elaborate(self, platform):
        m = Module()
        size = self._params.tile

        def step_reg(value, name, shape):
            """One step of delay: a register that moves only with ``en``."""
            reg = Signal(shape, name=name)
            with m.If(self.en):
                m.d.sync += reg.eq(value)
            return reg

        pes = [[PE(self._params) for _ in range(size)] for _ in range(size)]
        for row in range(size):
            for col in range(size):
                m.submodules[f"pe_{row}_{col}"] = pes[row][col]
                m.d.comb += pes[row][col].en.eq(self.en)

        # The T-th valid step of a reduction is its last; the flag travels with a.
        k_step = Signal(range(size))
        last = Signal()
        m.d.comb += last.eq(self.valid & ~self.first & (k_step == size - 1))
        with m.If(self.en & self.valid):
            m.d.sync += k_step.eq(Mux(self.first, 1, k_step + 1))

        # Row edge: encode (bubbles push a = 0, so every product of the step is 0), then
        # delay row m by m steps. The flag needs the same delays, from one shared line.
        last_line = [last]
        for i in range(1, size):
            last_line.append(step_reg(last_line[-1], f"last_skew{i}", 1))
        for row in range(size):
            a_enc = Signal(OperandA, name=f"a_enc{row}")
            a_swapped, _ = encode_swapped(self.a_col[row], C(0, 4))
            a_plain = encode_a(self.a_col[row], self.a_signed)
            m.d.comb += a_enc.eq(Mux(self.valid, Mux(self.a_fp4, a_swapped, a_plain), 0))
            a_skewed = a_enc
            for i in range(row):
                a_skewed = step_reg(a_skewed, f"a_skew{row}_{i}", OperandA)
            m.d.comb += [pes[row][0].a_in.eq(a_skewed), pes[row][0].last_in.eq(last_line[row])]

        # Column edge: encode, delay column n by n steps.
        for col in range(size):
            b_enc = Signal(OperandB, name=f"b_enc{col}")
            _, b_swapped = encode_swapped(C(0, 4), self.b_row[col])
            m.d.comb += b_enc.eq(Mux(self.a_fp4, b_swapped, encode_b(self.b_row[col], self.b_fp4)))
            b_skewed = b_enc
            for i in range(col):
                b_skewed = step_reg(b_skewed, f"b_skew{col}_{i}", OperandB)
            m.d.comb += pes[0][col].b_in.eq(b_skewed)

        for row in range(size):
            for col in range(size):
                pe = pes[row][col]
                if col > 0:
                    m.d.comb += [pe.a_in.eq(pes[row][col - 1].a_out),
                                 pe.last_in.eq(pes[row][col - 1].last_out)]
                if row > 0:
                    m.d.comb += pe.b_in.eq(pes[row - 1][col].b_out)

        # Drain: row m is complete once its last column has captured, one step after the
        # flag leaves PE(m, T-1). Each PE(m, n) holds its sum for T steps from its own
        # capture, so all of row m is held in that step (with back-to-back tiles, only
        # then), and the rows become ready one per step, row 0 first. A one-hot AND-OR
        # per column picks the ready row. A shift chain through the drain registers
        # cannot work here: the captures sweep the array as a skewed wavefront that
        # would overwrite values still in flight, and deskewing the columns would cost
        # T(T-1)/2 more psum-wide registers.
        row_ready = Signal(size)
        for row in range(size):
            m.d.comb += row_ready[row].eq(step_reg(pes[row][size - 1].last_out,
                                                   f"row_ready{row}", 1))
        with m.If(self.en):
            for col in range(size):
                picked = [Mux(row_ready[row], pes[row][col].psum, 0) for row in range(size)]
                m.d.sync += self.psum.payload[col].eq(reduce(lambda x, y: x | y, picked))
        # en is low while a beat waits (the controller's rule), so a step may overwrite
        # the output register: the previous beat, if any, is taken in that cycle.
        with m.If(self.en):
            m.d.sync += self.psum.valid.eq(row_ready.any())
        with m.Elif(self.psum.ready):
            m.d.sync += self.psum.valid.eq(0)
        return m
