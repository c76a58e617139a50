"""bit_length as hardware: the position of the leading one, shared by the units that
need a magnitude's binade (exponent prefetch, log4 quantizer, requantizer).

Built flat, not as a priority chain: the value is smeared (every bit below the leading
one set, in log2 steps), the leading one isolated, and each bit of the position is an
OR of leading-one candidates. A priority-encoder chain came out 15+ LUTs deep."""

from amaranth.hdl import Cat, Module, Signal, Value

__all__ = ["bit_length", "smear", "bit_length_of_smear"]


def smear(m: Module, x: Value, name: str, *, start: int = 1, stop: int | None = None) -> Value:
    """x with every bit below its leading one set: 2**bit_length(x) - 1, in log2 steps.
    smear(max(a, b)) = smear(a | b), so a tile's smear can be accumulated row by row.

    Only the doubling steps k = ``start``, 2 ``start``, ... below ``stop`` (default: all)
    are made, so a register can sit between them:
    ``smear(smear(x, stop=s), start=s) == smear(x)`` for a power of two ``s``."""
    z, k = x, start
    stop = len(x) if stop is None else stop
    while k < min(stop, len(x)):
        step = Signal(len(x), name=f"{name}{k}")
        m.d.comb += step.eq(z | (z >> k))
        z, k = step, 2 * k
    return z


def bit_length_of_smear(m: Module, z: Value, name: str) -> Signal:
    """bit_length(x) given z = smear(x)."""
    lead = Signal(len(z), name=f"{name}_lead")
    n = Signal(range(len(z) + 1), name=name)
    m.d.comb += lead.eq(z & ~(z >> 1))
    for k in range(len(n)):
        m.d.comb += n[k].eq(Cat(*(lead[i] for i in range(len(z)) if (i + 1) >> k & 1)).any())
    return n


def bit_length(m: Module, value: Value, name: str) -> Signal:
    """A signal equal to ``value.bit_length()`` for an unsigned ``value`` (0 for 0)."""
    return bit_length_of_smear(m, smear(m, value, f"{name}_smear"), name)
