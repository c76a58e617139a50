"""``nibble_axi``: the Accelerator behind AXI4-Stream data ports and an AXI4-Lite
register file, for a SoC with a CPU and a DMA engine (``nibble generate --bus axi``).

::

    s_axis_cmd, s_axis_a_codes, s_axis_a_exps,   --> Accelerator --> m_axis_result (TLAST)
    s_axis_b_codes, s_axis_b_exps, s_axis_mask          ^  busy, refused, fault
                                                        |  soft reset
    s_axil (AxiLiteRegisters: wire.axi.REGISTERS) ------+  counters, STATUS, PARAMS

One AXI4-Stream slave per input stream, not one stream with headers
    The Accelerator takes its six inputs at rates of their own and needs them
    concurrently (:mod:`wire.streams`, "Stream timing": its operand buffers hold two
    tiles, the exponents are taken only while a GEMM runs, the mask rows as the output
    tiles drain). One multiplexed stream would make the DMA side interleave the beats in
    the order the accelerator happens to consume them, or need a demultiplexer with
    buffers deep enough that a header for one port never blocks the beats another port
    waits for (a deadlock otherwise). With one port per stream, the host lays out each
    stream's beats in a buffer of its own (exactly the lists
    :func:`wire.gemm_protocol.encode` makes) and points one DMA channel at each, with
    no ordering rule between them; the widths differ too (8 bits for an exponent,
    98 for a command). A SoC with a single DMA channel can put an AXI4-Stream switch
    (TDEST) in front.

Thin adapters
    The Accelerator's ports already are valid/ready streams, so each AXI4-Stream port is
    wires: ``tdata`` is the beat (:func:`wire.axi.axis_tdata_bits`: zero-padded to
    whole bytes), ``tvalid``/``tready`` are ``valid``/``ready``. No register, no
    buffer: the throughput is the bare Accelerator's. The only gates are the soft reset
    (ready and valid low while it lasts, so no beat is taken or offered then).

Reset
    ``aresetn`` (active low, synchronous to ``aclk``) resets everything. CONTROL.soft_reset
    resets the Accelerator and the counters (two cycles after the write is taken,
    before its response); the AXI4-Lite slave and SCRATCH stay. Beats the DMA side
    offered for the aborted GEMM are dropped from then on only: the host stops its
    DMA channels (and empties its result buffer) around a soft reset.
"""

from __future__ import annotations

from amaranth.hdl import (Cat, ClockDomain, ClockSignal, Const, DomainRenamer, Module,
                          ResetSignal, Signal)
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from wire.axi import axis_tdata_bits
from wire.gemm_protocol import GemmBeats

from .accelerator import Accelerator
from .axi_lite import AXIL_MEMBERS, AxiLiteRegisters
from .pipeline import register_copy

__all__ = ["NibbleAxi", "AXIS_INPUTS"]

#: The input streams, each an ``s_axis_<name>`` port (the Accelerator's port names).
AXIS_INPUTS = GemmBeats.INPUTS


class NibbleAxi(wiring.Component):
    """The :class:`rtl.accelerator.Accelerator` with AXI ports (module docstring).

    Parameters
    ----------
    params : NibbleParams
        The accelerator's parameters.
    reset_buffer : callable(Module, Value) -> Value, or None
        Where the Accelerator's reset (``aresetn`` low or the soft reset) goes through on
        its way to every resettable flip-flop, e.g. a global buffer of the FPGA's clock
        network (``fpga.boards.global_buffer``); None: a plain net (the generated
        ``nibble_axi.v``, where the user's tools buffer it).

    Attributes
    ----------
    aclk : In(1)
        The clock of everything.
    aresetn : In(1)
        Reset, active low, synchronous.
    s_axis_<name>_tdata, _tvalid, _tready, _tlast, for each name of :data:`AXIS_INPUTS`
        AXI4-Stream slaves: ``tdata`` (:func:`wire.axi.axis_tdata_bits` bits) carries one
        beat of that Accelerator input stream in its low bits (:mod:`wire.streams`), the
        pad bits are ignored; ``tlast`` is ignored.
    m_axis_result_tdata, _tvalid, _tready, _tlast
        AXI4-Stream master: one :func:`wire.streams.result` beat per transfer, its
        fields below ``last`` (data, exp, saturated) in ``tdata`` at the same offsets,
        zero-padded to whole bytes; ``tlast`` on the last beat of each GEMM.
    s_axil_<signal>, for each signal of :data:`rtl.axi_lite.AXIL_MEMBERS`
        The AXI4-Lite slave of the register file (:data:`wire.axi.REGISTERS`).
    """

    def __init__(self, params: NibbleParams, *, reset_buffer=None):
        self._params = params
        self._reset_buffer = reset_buffer
        widths = axis_tdata_bits(params)
        members = {"aclk": In(1), "aresetn": In(1)}
        for name in AXIS_INPUTS:
            members.update({f"s_axis_{name}_tdata": In(widths[name]),
                            f"s_axis_{name}_tvalid": In(1), f"s_axis_{name}_tready": Out(1),
                            f"s_axis_{name}_tlast": In(1)})
        members.update({"m_axis_result_tdata": Out(widths["result"]),
                        "m_axis_result_tvalid": Out(1), "m_axis_result_tready": In(1),
                        "m_axis_result_tlast": Out(1)})
        members.update({f"s_axil_{name}": direction(width)
                        for name, direction, width in AXIL_MEMBERS})
        super().__init__(members)

    def elaborate(self, platform):
        p = self._params
        m = Module()
        m.domains.sync = ClockDomain("sync", local=True)
        m.d.comb += [ClockSignal("sync").eq(self.aclk), ResetSignal("sync").eq(~self.aresetn)]

        m.submodules.regs = regs = AxiLiteRegisters()
        for name, direction, _ in AXIL_MEMBERS:
            ours, theirs = getattr(self, f"s_axil_{name}"), getattr(regs, name)
            m.d.comb += (theirs.eq(ours) if direction is In else ours.eq(theirs))

        # The soft reset: the pulse through one more register, so the decode of the
        # write does not sit in front of every resettable flip-flop of the accelerator.
        soft = Signal(name="soft_reset")
        m.d.sync += soft.eq(regs.control_soft_reset)
        # The Accelerator runs in a domain of its own on aclk, reset by aresetn or the soft
        # reset: one net to thousands of flip-flops, which ``reset_buffer`` may put on a
        # clock network (the board flow's global buffer; a routed net takes 13 ns).
        core_rst = Signal(name="core_rst")
        m.d.comb += core_rst.eq(ResetSignal("sync") | soft)
        m.domains.core = ClockDomain("core", local=True)
        m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")),
                     ResetSignal("core").eq(core_rst if self._reset_buffer is None
                                            else self._reset_buffer(m, core_rst))]
        core = Accelerator(p)
        m.submodules.core = DomainRenamer({"sync": "core"})(core)

        # Each port's gate takes its own copy of the soft reset (the same pulse, in a
        # flip-flop the placer can put beside that port's logic: one shared flop in front
        # of every handshake was the out-of-context build's worst path, 9.5 ns of routing).
        for name in AXIS_INPUTS:
            port = getattr(core, name)
            gate = register_copy(m, regs.control_soft_reset, f"soft_reset_{name}")
            m.d.comb += [
                port.payload.eq(getattr(self, f"s_axis_{name}_tdata")),
                port.valid.eq(getattr(self, f"s_axis_{name}_tvalid") & ~gate),
                getattr(self, f"s_axis_{name}_tready").eq(port.ready & ~gate),
            ]
        result = core.result.payload
        gate = register_copy(m, regs.control_soft_reset, "soft_reset_result")
        m.d.comb += [
            self.m_axis_result_tdata.eq(Cat(result.data, result.exp, result.saturated)),
            self.m_axis_result_tlast.eq(result.last),
            self.m_axis_result_tvalid.eq(core.result.valid & ~gate),
            core.result.ready.eq(self.m_axis_result_tready & ~gate),
        ]
        self._status(m, regs, core, soft)
        return m

    def _status(self, m, regs, core, soft):
        """PARAMS, STATUS and the counters."""
        p = self._params
        taken = self.m_axis_result_tvalid & self.m_axis_result_tready
        saturated = Signal(name="last_saturated")
        with m.If(taken & self.m_axis_result_tlast):
            m.d.sync += saturated.eq(core.result.payload.saturated)
        counters = {
            "gemms_count": taken & self.m_axis_result_tlast,
            "busy_cycles_count": core.busy,
            "stall_cycles_count": self.m_axis_result_tvalid & ~self.m_axis_result_tready,
        }
        clear = soft | regs.control_clear_counters
        for port, event in counters.items():
            count = Signal(len(getattr(regs, port)), name=port)      # (wire.axi's width)
            m.d.sync += count.eq(count + event)
            with m.If(clear):
                m.d.sync += count.eq(0)
            m.d.comb += getattr(regs, port).eq(count)
        with m.If(soft):
            m.d.sync += saturated.eq(0)
        m.d.comb += [
            regs.params_tile.eq(p.tile), regs.params_lanes.eq(p.lanes),
            regs.params_out_lanes.eq(p.out_lanes), regs.params_acc_bits.eq(p.acc_bits),
            regs.params_stochastic.eq(Const(int(p.stochastic))),
            regs.status_busy.eq(core.busy), regs.status_saturated.eq(saturated),
            regs.status_refused.eq(core.refused), regs.status_fault.eq(core.fault),
        ]
