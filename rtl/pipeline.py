"""Pipeline registers: a stage, a delay line of valid bits, and replicas for fan-out.

Every edge unit splits its logic into register stages of one step each (shift, round,
compare or add). The helpers here are those registers, written once:

* :func:`stage`: a value one cycle later, in a datapath register (no reset: a datapath
  register's contents mean nothing until a valid bit says so);
* :func:`delays`: a control bit and its copies 1..n cycles later (with reset: valid
  bits are control state);
* :func:`register_copy`: a control bit that reaches hundreds of flip-flops (a start
  pulse, a mode flag) costs more in routing than in logic on an FPGA (one driver, sinks
  all over the die), so each consumer gets its own flip-flop copy, placed near it.
  Synthesis would merge identical flip-flops back into one; the copies are named
  ``<name>_replica`` and :mod:`fpga.synth` tells yosys to keep every flip-flop that
  drives such a name.
"""

from amaranth.hdl import Signal, Value

__all__ = ["REPLICA_SUFFIX", "delays", "register_copy", "stage"]

#: Names ending in this are flip-flop copies that synthesis must not merge.
REPLICA_SUFFIX = "_replica"


def stage(m, value, name: str, *, shape=None) -> Signal:
    """``value`` one cycle later in a reset-less register named ``name``, of ``shape``
    (default: the value's own)."""
    reg = Signal(value.shape() if shape is None else shape, name=name, reset_less=True)
    m.d.sync += reg.eq(value)
    return reg


def delays(m, first: Value, n: int, name: str) -> list:
    """``[first, first 1 cycle later, ..., n cycles later]``, the delayed copies in
    registers with reset, named ``name1`` .. ``name<n>``."""
    line = [first]
    for k in range(1, n + 1):
        line.append(Signal.like(first, name=f"{name}{k}"))
        m.d.sync += line[k].eq(line[k - 1])
    return line


def register_copy(m, value: Value, name: str, *, init: int = 0) -> Signal:
    """``value`` one cycle later, in a flip-flop of its own named ``name_replica``."""
    copy = Signal.like(value, name=f"{name}{REPLICA_SUFFIX}", init=init)
    m.d.sync += copy.eq(value)
    return copy
