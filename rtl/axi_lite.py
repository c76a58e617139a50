"""The AXI4-Lite register file of ``nibble_axi``, built from the one register map,
:data:`wire.axi.REGISTERS` (its ports, its address decode and its reset values).

Timing
    A write is taken when its address and data are both valid and no write is in flight
    (``awready`` and ``wready`` rise together, in the cycle of the handshake). Its
    response is valid :data:`WRITE_RESPONSE_CYCLES` cycles after the handshake: a
    ``pulse`` field is high in the cycle after it, and its owner may act one register
    later still (``nibble_axi``'s soft reset), so whatever a write does has happened
    before the master sees its response, and a read it issues after that sees the
    result. A read is taken while no read response is pending; ``rdata`` follows in the
    next cycle, from a register. So one write and one read are in flight at most: a
    control path, not a data path.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from wire.axi import ADDR_BITS, DATA_BITS, REGISTERS, RESP

__all__ = ["AXIL_MEMBERS", "AxiLiteRegisters", "field_port", "WRITE_RESPONSE_CYCLES"]

#: Cycles from a write's handshake to its response's ``bvalid``.
WRITE_RESPONSE_CYCLES = 3

#: The AXI4-Lite slave's signals: (name, direction seen from the slave, width).
AXIL_MEMBERS = (
    ("awaddr", In, ADDR_BITS), ("awvalid", In, 1), ("awready", Out, 1),
    ("wdata", In, DATA_BITS), ("wstrb", In, DATA_BITS // 8), ("wvalid", In, 1),
    ("wready", Out, 1),
    ("bresp", Out, 2), ("bvalid", Out, 1), ("bready", In, 1),
    ("araddr", In, ADDR_BITS), ("arvalid", In, 1), ("arready", Out, 1),
    ("rdata", Out, DATA_BITS), ("rresp", Out, 2), ("rvalid", Out, 1), ("rready", In, 1),
)


def field_port(reg, field) -> str:
    """The register file's port name of a field: ``<register>_<field>``, lower case."""
    return f"{reg.name.lower()}_{field.name}"


class AxiLiteRegisters(wiring.Component):
    """An AXI4-Lite slave over :data:`wire.axi.REGISTERS`.

    Attributes
    ----------
    awaddr ... rready
        The AXI4-Lite slave (:data:`AXIL_MEMBERS`): byte addresses of ``ADDR_BITS``,
        32-bit data, ``wstrb`` one bit per data byte, responses OKAY (0) or SLVERR (2,
        an address with no register).
    <register>_<field> (:func:`field_port`), one per field that is not ``const``:
        ``ro``: In(width), the value a read returns; ``rw``: Out(width), the stored
        value; ``pulse``: Out(1), high for one cycle, the cycle after a write that sets
        the field's bit (with its byte's strobe) is taken.
    """

    def __init__(self, registers=REGISTERS):
        self._registers = registers
        members = {name: direction(width) for name, direction, width in AXIL_MEMBERS}
        for reg in registers:
            for f in reg.fields:
                if f.access == "ro":
                    members[field_port(reg, f)] = In(f.width)
                elif f.access == "rw":
                    members[field_port(reg, f)] = Out(f.width, init=f.reset)
                elif f.access == "pulse":
                    members[field_port(reg, f)] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        # ---- writes: address and data together, one response outstanding at most
        take_w = Signal()
        # the write in flight, a bit per cycle until its response is valid
        flight = Signal(WRITE_RESPONSE_CYCLES - 1, name="write_in_flight")
        m.d.sync += flight.eq(Cat(take_w, flight[:-1]))
        with m.If(flight[-1]):
            m.d.sync += self.bvalid.eq(1)
        m.d.comb += [take_w.eq(self.awvalid & self.wvalid & ~self.bvalid & ~flight.any()),
                     self.awready.eq(take_w), self.wready.eq(take_w)]
        for reg in self._registers:
            for f in reg.fields:
                if f.access == "pulse":
                    m.d.sync += getattr(self, field_port(reg, f)).eq(0)
        with m.If(self.bvalid & self.bready):
            m.d.sync += self.bvalid.eq(0)
        with m.If(take_w):
            m.d.sync += self.bresp.eq(RESP["SLVERR"])
            with m.Switch(self.awaddr[2:]):
                for reg in self._registers:
                    with m.Case(reg.offset >> 2):
                        m.d.sync += self.bresp.eq(RESP["OKAY"])
                        for f in reg.fields:
                            self._write_field(m, reg, f)
        # ---- reads: rdata from a register, one response outstanding at most
        m.d.comb += self.arready.eq(~self.rvalid)
        with m.If(self.rvalid & self.rready):
            m.d.sync += self.rvalid.eq(0)
        with m.If(self.arvalid & self.arready):
            m.d.sync += [self.rvalid.eq(1), self.rdata.eq(0), self.rresp.eq(RESP["SLVERR"])]
            with m.Switch(self.araddr[2:]):
                for reg in self._registers:
                    with m.Case(reg.offset >> 2):
                        m.d.sync += [self.rresp.eq(RESP["OKAY"]),
                                     self.rdata.eq(self._read_word(reg))]
        return m

    def _write_field(self, m, reg, f):
        """A taken write to ``reg``: the field's bits whose byte strobe is set."""
        if f.access not in ("rw", "pulse"):
            return
        port = getattr(self, field_port(reg, f))
        # (strobe, written bit) of each of the field's bits
        bits = [(self.wstrb[pos // 8], self.wdata[pos]) for pos in range(f.lsb, f.lsb + f.width)]
        if f.access == "pulse":
            m.d.sync += port.eq(bits[0][0] & bits[0][1])
        else:
            m.d.sync += port.eq(Cat(*(Mux(strobe, bit, port[n])
                                      for n, (strobe, bit) in enumerate(bits))))

    def _read_word(self, reg):
        """The word a read of ``reg`` returns."""
        word, pos = [], 0
        for f in sorted(reg.fields, key=lambda f: f.lsb):
            if f.lsb > pos:
                word.append(Const(0, f.lsb - pos))
            if f.access == "const":
                word.append(Const(f.reset, f.width))
            elif f.access == "pulse":
                word.append(Const(0, f.width))
            else:
                word.append(getattr(self, field_port(reg, f)))
            pos = f.lsb + f.width
        return Cat(*word)
