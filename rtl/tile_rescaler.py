"""Per-tile radix rescaler: tile partial sums in, saturating wide accumulators out.

Implements the accumulation of ``golden.gemm.tiled_gemm``: for every reduction tile t,
term = P_t * 2**(s_t - out_exp) (a right shift rounds half to even), acc = sat(acc + term)
after each addition, and a sticky flag records any saturation. The shift is one number
for the whole T x T tile, so the array needs one shifter per column at its edge, not a
barrel shifter in every PE.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams

from .layouts import acc_row_layout, rescale_row_layout

__all__ = ["TileRescaler", "shift_round_half_even"]


def shift_round_half_even(m: Module, x, shift, out_width: int, name: str):
    """x * 2**shift as a signed ``out_width`` value (x signed; a right shift rounds half to
    even). Left shifts must keep the result inside ``out_width``; right shifts are clamped
    to len(x), past which every x rounds to 0 anyway."""
    width = len(x)
    left = Signal(range(out_width), name=f"{name}_left")
    right = Signal(range(width + 1), name=f"{name}_right")
    with m.If(shift >= 0):
        m.d.comb += left.eq(Mux(shift < out_width, shift, out_width - 1))
    with m.Else():
        m.d.comb += right.eq(Mux(-shift < width, -shift, width))
    q = Signal(signed(width), name=f"{name}_q")              # floor(x / 2**right)
    rem = Signal(width, name=f"{name}_rem")                  # x mod 2**right
    half = Signal(width + 1, name=f"{name}_half")            # 2**(right - 1)
    up = Signal(name=f"{name}_up")
    m.d.comb += [
        q.eq(x >> right),
        rem.eq(x.as_unsigned() & ((Const(1, width + 1) << right) - 1)),
        half.eq((Const(1, width + 1) << right) >> 1),
        up.eq((right != 0) & ((rem > half) | ((rem == half) & q[0]))),
    ]
    out = Signal(signed(out_width), name=name)
    m.d.comb += out.eq(Mux(shift >= 0, x << left, q + up))
    return out


class TileRescaler(wiring.Component):
    """Adds shifted tile partial sums into T x T saturating accumulators.

    The accumulators of one output tile are T rows kept in a circular shift register:
    rows arrive in the order 0..T-1 for every reduction tile, so the head of the register
    is always the row the next beat updates (no address multiplexer). One row per cycle.

    Parameters
    ----------
    params : NibbleParams
        ``tile`` (T) and ``acc_bits``.

    Attributes
    ----------
    psum_in : In(stream.Signature(rescale_row_layout(params)))
        Tile partial-sum rows, row 0 first, T beats per reduction tile, with the tile's
        shift s_t - out_exp and the ``first``/``last`` reduction-tile flags.
    acc_out : Out(stream.Signature(acc_row_layout(params)))
        Finished accumulator rows (on ``last`` beats), T per output tile, with out_exp.
    saturated : Out(1)
        Sticky: some accumulation saturated since the last ``clear``.
    clear : In(1)
        Clears ``saturated`` (the controller pulses it at the start of a GEMM).
    """

    def __init__(self, params: NibbleParams):
        self._params = params
        super().__init__({
            "psum_in": In(stream.Signature(rescale_row_layout(params))),
            "acc_out": Out(stream.Signature(acc_row_layout(params))),
            "saturated": Out(1),
            "clear": In(1),
        })

    def elaborate(self, platform):
        T, acc_bits = self._params.tile, self._params.acc_bits
        m = Module()
        beat = self.psum_in.payload
        lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1

        rows = [Signal(unsigned(T * acc_bits), name=f"acc_row{i}") for i in range(T)]
        take = self.psum_in.valid & self.psum_in.ready
        m.d.comb += self.psum_in.ready.eq(~self.acc_out.valid | self.acc_out.ready)

        new_row = []
        row_saturated = []
        for n in range(T):
            term = shift_round_half_even(m, beat.psums[n], beat.shift, acc_bits + 1, f"term{n}")
            old = Signal(signed(acc_bits), name=f"old{n}")
            m.d.comb += old.eq(Mux(beat.first, 0, rows[0][n * acc_bits:(n + 1) * acc_bits]))
            total = Signal(signed(acc_bits + 2), name=f"sum{n}")
            m.d.comb += total.eq(old + term)
            clipped = Signal(signed(acc_bits), name=f"acc{n}")
            m.d.comb += clipped.eq(Mux(total > hi, hi, Mux(total < lo, lo, total)))
            new_row.append(clipped)
            row_saturated.append((total > hi) | (total < lo))

        with m.If(take):
            m.d.sync += [rows[i].eq(rows[i + 1]) for i in range(T - 1)]
            m.d.sync += rows[T - 1].eq(Cat(*new_row))
        with m.If(self.clear):
            m.d.sync += self.saturated.eq(0)
        with m.Elif(take & Cat(*row_saturated).any()):
            m.d.sync += self.saturated.eq(1)

        with m.If(self.acc_out.ready):
            m.d.sync += self.acc_out.valid.eq(0)
        with m.If(take & beat.last):
            m.d.sync += [
                self.acc_out.valid.eq(1),
                self.acc_out.payload.out_exp.eq(beat.out_exp),
            ]
            m.d.sync += [self.acc_out.payload.acc[n].eq(new_row[n]) for n in range(T)]
        return m
