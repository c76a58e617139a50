"""bit_length as hardware: the position of the leading one, shared by the units that
need a magnitude's binade (exponent prefetch, log4 quantizer, requantizer)."""

from amaranth.hdl import Module, Signal, Value

__all__ = ["bit_length"]


def bit_length(m: Module, value: Value, name: str) -> Signal:
    """A signal equal to ``value.bit_length()`` for an unsigned ``value`` (0 for 0),
    built as a priority encoder: the highest set bit wins."""
    n = Signal(range(len(value) + 1), name=name)
    for i in range(len(value)):
        with m.If(value[i]):
            m.d.comb += n.eq(i + 1)
    return n
