"""Stochastic FP4 rounding of one element: the exponent field from its binade, its bits
below the leading one, and a random integer.

Builds ``golden.formats``' ``rounding="stochastic"`` rule (module docstring there, and
``_stochastic_k``) for radix-4 FP4, in the integers the log4 unit has for an element of
magnitude a = |acc| > 0 with bit length n, in a tile of weight 2**out_exp and exponent
E, at TPR phase p:

* r = n - 1 + out_exp - p - E, the log4 unit's r (floor(log2 v) - p - E of golden);
* frac, :data:`FRAC_BITS` = R + 1 = 17 bits: the bits of a right below its leading one,
  first the highest, zero-filled past a's last bit:
  frac = floor(a * 2**(17 - (n - 1))) - 2**17;
* u, R = 16 bits: the element's random integer (its phase's half of its
  :class:`rtl.column_random.ColumnRandom` word).

With k0 = floor(r / 2), golden's x = floor(v * 2**R / G_k0) is 2**16 + (frac >> 1) for
even r and 2**17 + frac for odd r, so d = x - 2**R is frac >> 1 or 2**16 + frac: the
carry of the + 2**16 is two bits of logic, no adder. Below G_0 (r < 0), golden's
x = floor(v * 2**R / G_0) is (2**17 + frac) >> (1 - r): 0 for r < -16, since a 17-bit
fraction's 2**17 + frac has 18 bits. Golden's code exponent is then

* e = 0 for a = 0;
* e = 7 for r >= 12 (k0 >= 6 saturates);
* for 0 <= r < 12: e = k0 + 2 if 3u < d (round up), else k0 + 1;
* for r < 0: e = 1 (G_0) if u < x, else 0 (flushed).

The log4 unit (:class:`rtl.log4_quantizer.Log4Quantizer`) uses it for each code (both
phases' in dual mode).
"""

from amaranth.hdl import C, Cat, Mux, Signal

from golden.formats import FP4_TOP_K
from golden.xorshift import RAND_BITS

__all__ = ["FRAC_BITS", "LATENCY", "stochastic_exponent"]

#: Bits of the fraction below the leading one that the rule uses (R + 1).
FRAC_BITS = RAND_BITS + 1
#: Register stages from the inputs to the exponent field.
LATENCY = 2

#: r at and above which the code saturates at the top (k0 >= 6).
_R_SAT = 2 * FP4_TOP_K
#: r below which x = 0 below G_0: the element always flushes.
_R_FLUSH = -FRAC_BITS + 1


def stochastic_exponent(m, zero, r, frac, u, name: str) -> Signal:
    """The FP4 exponent field e (0..7) of stochastic rounding, in a register that holds
    it :data:`LATENCY` = 2 cycles after ``zero``, ``r``, ``frac`` and ``u`` (module
    docstring) were presented; one element per cycle. The caller adds the sign:
    code = [neg & (e != 0) | e].

    Inputs: ``zero`` (the magnitude is 0; ``r`` and ``frac`` are then ignored), ``r``
    (signed, any width that holds it), ``frac`` (:data:`FRAC_BITS` bits), ``u``
    (RAND_BITS bits). All should come from registers: the first stage is, per element,
    an 18-bit adder (3u = u + 2u), a 16-bit shifter by 0..15 (two 4:1 multiplexer
    levels), a two-bit carry and r's range compares; the second, two comparators (18
    and 16 bits, side by side) and a four-way choice of e.
    """
    assert len(frac) == FRAC_BITS and len(u) == RAND_BITS
    # (1) 3u, d, x below G_0, and where r lies
    u1 = Signal(RAND_BITS, name=f"{name}_u", reset_less=True)
    u3 = Signal(RAND_BITS + 2, name=f"{name}_u3", reset_less=True)
    d = Signal(RAND_BITS + 2, name=f"{name}_d", reset_less=True)
    x_below = Signal(RAND_BITS, name=f"{name}_x_below", reset_less=True)
    zero1 = Signal(name=f"{name}_zero", reset_less=True)
    sat = Signal(name=f"{name}_sat", reset_less=True)
    below = Signal(name=f"{name}_below", reset_less=True)
    k_down = Signal(3, name=f"{name}_k_down", reset_less=True)   # k0 + 1: e rounded down
    k_up = Signal(3, name=f"{name}_k_up", reset_less=True)       # k0 + 2: e rounded up
    k0 = r[1:4]                                  # floor(r / 2) for 0 <= r < 12
    odd_d = Cat(frac[:RAND_BITS], Mux(frac[RAND_BITS], C(0b10, 2), C(0b01, 2)))
    shift = (~r)[:4]                             # -r - 1 = 0..15 for -16 <= r <= -1
    m.d.sync += [
        u1.eq(u),
        u3.eq(u + (u << 1)),
        d.eq(Mux(r[0], odd_d, frac >> 1)),
        x_below.eq(Mux(r < _R_FLUSH, 0, Cat(frac[2:], C(1, 1)) >> shift)),
        zero1.eq(zero), sat.eq(r >= _R_SAT), below.eq(r < 0),
        k_down.eq(k0 + 1), k_up.eq(k0 + 2),
    ]
    # (2) the decision and the exponent field
    up_in_range = Signal(name=f"{name}_up_in_range")
    up_below = Signal(name=f"{name}_up_below")
    m.d.comb += [up_in_range.eq(u3 < d), up_below.eq(u1 < x_below)]
    e = Signal(3, name=f"{name}_e", reset_less=True)
    with m.If(zero1):
        m.d.sync += e.eq(0)
    with m.Elif(sat):
        m.d.sync += e.eq(FP4_TOP_K + 1)
    with m.Elif(below):
        m.d.sync += e.eq(up_below)
    with m.Else():
        m.d.sync += e.eq(Mux(up_in_range, k_up, k_down))
    return e
