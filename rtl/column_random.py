"""The random words of stochastic FP4 rounding: T xorshift32 generators, one per column.

Builds :mod:`golden.xorshift` bit for bit: generator c (c = 0..T-1) serves element
column c, is seeded with (s + (c + 1) * COLUMN_STRIDE) mod 2**32 (all ones instead of
0), and steps once per element of its column in result-stream order; the state after a
step is the step's output word. Golden's order of the steps is the output path's beat
order: with L = ``params.lanes`` elements per beat, a tile row of T elements is G = T / L
beats, beat g of a row carrying columns g*L .. g*L+L-1, and the rows, tiles and GEMMs
follow one another without skipping a beat. So the column group of the next beat is
always the one after the last beat's (mod G), and the unit needs no group input: it
keeps its states in that order (see :class:`ColumnRandom`).

The log4 unit (:class:`rtl.log4_quantizer.Log4Quantizer`) holds one and steps it with
every code beat it reads out.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from golden.xorshift import COLUMN_STRIDE, SEED_BITS, SHIFTS, ZERO_SEED_STATE

from .pipeline import register_copy

__all__ = ["ColumnRandom", "xorshift_step"]

_MASK = (1 << SEED_BITS) - 1


def xorshift_step(x):
    """One xorshift32 step of a 32-bit value (combinational): three shift-XORs, which
    flatten to each output bit an XOR of 3 to 7 input bits (two LUT4 levels)."""
    left, right, left2 = SHIFTS
    x = x ^ (x << left)[:SEED_BITS]
    x = x ^ (x >> right)
    return x ^ (x << left2)[:SEED_BITS]


class ColumnRandom(wiring.Component):
    """The T xorshift32 states of :mod:`golden.xorshift`, stepped L at a time.

    The states sit in a ring of G = T / L rows of L states (a row is a column group:
    row g holds columns g*L .. g*L+L-1 after a load). A step takes the head row, steps
    its L generators and writes the new states to the tail while every other row moves
    up one place; after G steps every generator has stepped once and the rows are back
    in group order. So the step logic always reads one fixed row and writes another:
    no T/L-way multiplexer in front of the XORs and no write-address decode (with a
    group pointer instead, each lane would need a G-way 32-bit read multiplexer and G
    write enables). A row's flip-flops load on an enable (hold is the flip-flop's clock
    enable) from the row behind it or from the seeding, one LUT. With L = T (the
    default) G = 1: each lane has one state register, stepped in place. The order the
    steps must come in is the beat order of the output path (module docstring), which
    the log4 unit's reads follow.

    Timing (cycle t = the cycle an input is high):

    * ``load`` at t: the seeded states are in the ring from t + 2 on. ``seed`` is taken
      at t. A ``step`` at t is dropped (the load wins); a ``step`` from t + 1 on steps
      the new states, the first one column group 0.
    * ``step`` at t: ``words`` holds that step's output words from cycle t + 2
      (:attr:`STEP_LATENCY`) until the next step's words (or a load's states) replace
      them, at the earliest in t + 3. One step per cycle is the full rate.

    ``load`` and ``step`` go through a register first (per lane, a flip-flop copy of
    each, :func:`rtl.pipeline.register_copy`), so the fan-out to the 32 G flip-flops of
    a lane leaves from a flip-flop near them, and a late ``step`` (the log4 unit's read
    decision) drives one flip-flop per lane. ``seed`` is registered (the ring takes the
    register in the cycle after ``load``), and the T column constants are added from
    that register. Paths: a step is the ring's head, an XOR of at most 7 bits and the
    load multiplexer; a load is the seed register, a 32-bit carry chain (adding a
    constant), and the zero replacement merged with the load multiplexer. Whether a
    column's sum is 0 is decided from ``seed`` at t (the seed equals a known constant)
    into a flag register, in parallel with the adder.

    Only control state has a reset (the registered ``load`` and ``step`` and
    ``group``). The states are data: after a reset they are whatever they were, and the
    unit must be loaded before its words mean anything.

    Parameters
    ----------
    params : NibbleParams
        Uses ``tile`` (T) and ``lanes`` (L).

    Attributes
    ----------
    seed : In(32)
        The command's seed s, an unsigned integer (:data:`golden.xorshift.SEED_BITS`);
        sampled in the cycle of ``load`` only. Drive it from a register: the cycle it is
        sampled in also compares it with T constants.
    load : In(1)
        Seed every generator from ``seed``: column c starts at
        (s + (c + 1) * COLUMN_STRIDE) mod 2**32, all ones if that is 0. Pulse it at the
        start of each GEMM, before its first step; after a reset, before any step.
    step : In(1)
        Step the L generators of the next column group once: one pulse per output beat,
        in the output path's beat order, whatever the beat holds (zero, masked and
        padding elements take their step too).
    words : Out(data.ArrayLayout(32, L))
        Lane i: the output word (the state after the step) of column g*L + i for the
        most recent step, g = ``group``. From the ring's tail flip-flops, no logic.
        Between a load and its first step's words it shows group G-1's seeded states.
    group : Out(range(max(G, 2)))
        The column group g of ``words``: G-1 after a load (and after reset), advancing
        by one (mod G) with each step's words. For checks; the integration knows it from
        the beat count anyway. Constant 0 when L = T.
    """

    #: Cycles from ``step`` to its words on ``words``.
    STEP_LATENCY = 2
    #: Cycles from ``load`` to the first cycle a ``step`` steps the new states.
    LOAD_TO_STEP = 1

    def __init__(self, params: NibbleParams):
        self._params = params
        T, L = params.tile, params.lanes
        self._groups = T // L
        super().__init__({
            "seed": In(SEED_BITS),
            "load": In(1),
            "step": In(1),
            "words": Out(data.ArrayLayout(SEED_BITS, L)),
            # at least one bit: a zero-width port is an [-1:0] range in Verilog
            "group": Out(range(max(self._groups, 2))),
        })

    @staticmethod
    def column_constants(tile: int):
        """Per column c: (K_c, Z_c) with K_c = (c + 1) * COLUMN_STRIDE mod 2**32, the
        constant added to the seed, and Z_c = -K_c mod 2**32, the one seed whose sum is
        0 (and gets :data:`golden.xorshift.ZERO_SEED_STATE` instead)."""
        out = []
        for c in range(tile):
            k = (c + 1) * COLUMN_STRIDE & _MASK
            out.append((k, -k & _MASK))
        return out

    def elaborate(self, platform):
        T, L, G = self._params.tile, self._params.lanes, self._groups
        m = Module()

        # The seed and each column's "sum is zero" flag, a cycle later: the ring takes
        # them in the cycle after ``load``, together with the registered ``load``.
        seed_r = Signal(SEED_BITS, name="seed_r", reset_less=True)
        zero_r = Signal(T, name="zero_r", reset_less=True)
        consts = self.column_constants(T)
        m.d.sync += seed_r.eq(self.seed)
        m.d.sync += [zero_r[c].eq(self.seed == z) for c, (_, z) in enumerate(consts)]

        # rows[g][i]: the ring; row 0 the head, row G-1 the tail.
        rows = [[Signal(SEED_BITS, name=f"state_row{g}_lane{i}", reset_less=True)
                 for i in range(L)] for g in range(G)]
        for i in range(L):
            load_i = register_copy(m, self.load, f"xs_load_lane{i}")
            step_i = register_copy(m, self.step, f"xs_step_lane{i}")
            for g in range(G):
                c = g * L + i
                summed = (seed_r + consts[c][0])[:SEED_BITS]
                seeded = Mux(zero_r[c], ZERO_SEED_STATE, summed)
                moved = xorshift_step(rows[0][i]) if g == G - 1 else rows[g + 1][i]
                with m.If(load_i):
                    m.d.sync += rows[g][i].eq(seeded)
                with m.Elif(step_i):
                    m.d.sync += rows[g][i].eq(moved)
            m.d.comb += self.words[i].eq(rows[G - 1][i])

        if G > 1:
            load_g = register_copy(m, self.load, "xs_load_group")
            step_g = register_copy(m, self.step, "xs_step_group")
            group = Signal(range(G), name="group_r", init=G - 1)
            with m.If(load_g):
                m.d.sync += group.eq(G - 1)
            with m.Elif(step_g):
                m.d.sync += group.eq(group + 1)        # G is a power of two: wraps
            m.d.comb += self.group.eq(group)
        return m
