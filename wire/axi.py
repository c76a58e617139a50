"""The AXI side of ``nibble_axi``, in pure Python: its AXI4-Lite register map, defined
once, and the data widths of its AXI4-Stream ports.

Every copy of the map is generated from :data:`REGISTERS`: the gateware's decoder
(:class:`rtl.axi_lite.AxiLiteRegisters` builds its ports and its address decode from
it), the C header (:func:`c_header`) and the Markdown table (:func:`markdown_table`,
in ``docs/axi.md``); ``nibble generate --bus axi`` writes the last two beside
``nibble_axi.v``. ``tests/test_rtl_axi_lite.py`` reads the header and the table back
and checks them against the decoder in simulation.

Bus
    32-bit data, byte addresses, registers 4-byte aligned (the two low address bits are
    ignored), :data:`ADDR_BITS` address bits. Every access is one whole register:
    ``wstrb`` selects the bytes a write changes in a ``rw`` register; a ``pulse`` field
    acts when its byte's strobe is set. A read or write of an address with no register
    answers SLVERR (a read returns 0) and changes nothing; a write to a read-only
    register is ignored and answers OKAY.

Access types of a field
    ``const``  read-only, the same in every build (:attr:`RegField.reset`).
    ``ro``     read-only, the hardware's value (a parameter of the build, a status
               bit, a counter).
    ``rw``     read-write storage, :attr:`RegField.reset` after reset.
    ``pulse``  write 1 to act; reads 0.

AXI4-Stream ports (:func:`axis_tdata_bits`)
    One slave port per input stream of the Accelerator, ``s_axis_<port>`` for each port
    of :func:`wire.streams.port_beat_bits`; each beat's ``tdata`` is that stream's beat
    (:mod:`wire.streams`) in its low bits, zero-padded to whole bytes (the pad bits
    are ignored); ``tlast`` is accepted and ignored. The master port ``m_axis_result``
    carries a :func:`wire.streams.result` beat: ``tdata`` holds its fields below
    ``last`` at the same offsets (data, exp, saturated), zero-padded to whole bytes,
    and ``tlast`` is its ``last`` bit, set on the last beat of each GEMM.
"""

from __future__ import annotations

from dataclasses import dataclass

from golden.params import NibbleParams

from . import streams

__all__ = ["axis_tdata_bits", "DATA_BITS", "ADDR_BITS", "ID_MAGIC", "MAP_VERSION", "ACCESS", "RESP", "RegField",
           "Register", "REGISTERS", "register", "decode_params", "c_header", "markdown_table", "C_PREFIX"]

#: Width of a register and of the AXI4-Lite data bus.
DATA_BITS = 32
#: Width of the AXI4-Lite byte address (a 256-byte window).
ADDR_BITS = 8
#: The ID register's value: "NIBL" in ASCII, N in the top byte.
ID_MAGIC = 0x4E49424C
#: The VERSION register's value; bump on any change of this map.
MAP_VERSION = 1
#: Field access types (module docstring).
ACCESS = ("const", "ro", "rw", "pulse")
#: AXI response codes.
RESP = {"OKAY": 0, "SLVERR": 2}
#: Prefix of every name in the C header.
C_PREFIX = "NIBBLE_AXI"


@dataclass(frozen=True)
class RegField:
    """Bits ``lsb`` .. ``lsb + width - 1`` of a register."""

    name: str
    lsb: int
    width: int
    access: str
    description: str
    reset: int = 0

    @property
    def mask(self) -> int:
        """The field's bits in the register word."""
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    """One 32-bit register at byte ``offset``."""

    name: str
    offset: int
    description: str
    fields: tuple

    @property
    def reset(self) -> int:
        """The word a read returns after reset, for its const and rw fields (ro fields
        are the hardware's and counted as 0)."""
        return sum(f.reset << f.lsb for f in self.fields if f.access in ("const", "rw"))

    def field(self, name: str) -> RegField:
        return next(f for f in self.fields if f.name == name)

    def pack(self, **values) -> int:
        """The word that holds ``values`` (by field name) in their fields, 0 elsewhere."""
        word = 0
        for name, value in values.items():
            f = self.field(name)
            if not 0 <= value < 1 << f.width:
                raise ValueError(f"{self.name}.{name} is {f.width} bits wide, got {value}")
            word |= value << f.lsb
        return word

    def unpack(self, word: int) -> dict:
        """Every field's value in a word read from this register, by field name."""
        return {f.name: (word & f.mask) >> f.lsb for f in self.fields}


def _bytes(bits: int) -> int:
    return -(-bits // 8) * 8


def axis_tdata_bits(params: NibbleParams) -> dict:
    """``tdata`` width of every AXI4-Stream port, by port name (input ports by their
    :func:`wire.streams.port_beat_bits` name, and ``result``)."""
    widths = {port: _bytes(bits) for port, bits in streams.port_beat_bits(params).items()}
    widths["result"] = _bytes(streams.result(params)["last"].offset)
    return widths


def _whole(name, access, description, reset=0):
    return (RegField(name, 0, DATA_BITS, access, description, reset),)


#: The register map, by offset.
REGISTERS = (
    Register("ID", 0x00, "Identifies a nibble_axi.",
             _whole("magic", "const", 'always 0x4E49424C ("NIBL")', ID_MAGIC)),
    Register("VERSION", 0x04, "Version of this register map.",
             _whole("version", "const", "bumped on any change of the map", MAP_VERSION)),
    Register("PARAMS", 0x08, "The build's parameters (NibbleParams).", (
        RegField("tile", 0, 8, "ro", "T, the array edge"),
        RegField("lanes", 8, 8, "ro", "L, elements per cycle of the output path"),
        RegField("out_lanes", 16, 8, "ro", "Q, elements per cycle of the output stages"),
        RegField("acc_bits", 24, 7, "ro", "accumulator width in bits"),
        RegField("stochastic", 31, 1, "ro", "1: built with stochastic rounding"),
    )),
    Register("STATUS", 0x0C, "What the accelerator is doing; the sticky bits clear on "
             "reset only.", (
        RegField("busy", 0, 1, "ro", "a GEMM is in progress"),
        RegField("saturated", 1, 1, "ro",
                 "the last GEMM whose last result beat left saturated an accumulator"),
        RegField("refused", 2, 1, "ro",
                 "sticky: an illegal command was refused; soft-reset before going on"),
        RegField("fault", 3, 1, "ro",
                 "sticky: an internal queue was misused (never set in a correct design)"),
    )),
    Register("CONTROL", 0x10, "Actions.", (
        RegField("soft_reset", 0, 1, "pulse",
                 "reset the accelerator and the counters (the register file keeps SCRATCH); "
                 "beats in flight are dropped"),
        RegField("clear_counters", 1, 1, "pulse", "set GEMMS, BUSY_CYCLES and STALL_CYCLES to 0"),
    )),
    Register("GEMMS", 0x14, "Counter (wraps).",
             _whole("count", "ro", "GEMMs finished: result beats with TLAST taken")),
    Register("BUSY_CYCLES", 0x18, "Counter (wraps).",
             _whole("count", "ro", "clock cycles with STATUS.busy set")),
    Register("STALL_CYCLES", 0x1C, "Counter (wraps).",
             _whole("count", "ro", "clock cycles the result port offered a beat that "
                                   "was not taken (m_axis_result_tvalid and not tready)")),
    Register("SCRATCH", 0x20, "Free for software (a bus check).",
             _whole("value", "rw", "whatever was written last")),
)


def _check(registers) -> None:
    offsets = [r.offset for r in registers]
    assert len(set(offsets)) == len(offsets) and all(o % 4 == 0 and o < 1 << ADDR_BITS
                                                     for o in offsets), offsets
    for reg in registers:
        used = 0
        for f in reg.fields:
            assert f.access in ACCESS and f.lsb + f.width <= DATA_BITS, (reg.name, f)
            assert not used & f.mask, f"{reg.name}.{f.name} overlaps another field"
            assert f.reset < 1 << f.width, (reg.name, f)
            used |= f.mask


_check(REGISTERS)


def register(name: str) -> Register:
    """The register called ``name``."""
    return next(r for r in REGISTERS if r.name == name)


def decode_params(word: int) -> NibbleParams:
    """The build's parameters from a word read from PARAMS."""
    fields = register("PARAMS").unpack(word)
    return NibbleParams(tile=fields["tile"], acc_bits=fields["acc_bits"], lanes=fields["lanes"],
                        out_lanes=fields["out_lanes"], stochastic=bool(fields["stochastic"]))


def c_header() -> str:
    """The map as a C header: for register R at offset O, ``NIBBLE_AXI_R_OFFSET O``; for
    each field F, ``NIBBLE_AXI_R_F_SHIFT`` and ``NIBBLE_AXI_R_F_MASK`` (in place); for a
    const field, its value ``NIBBLE_AXI_R_F_VALUE``."""
    guard = f"{C_PREFIX}_REGS_H"
    lines = [f"/* nibble_axi AXI4-Lite register map, version {MAP_VERSION}.",
             " * Generated by wire/axi.py (nibble generate --bus axi); do not edit. */",
             f"#ifndef {guard}", f"#define {guard}", "",
             f"#define {C_PREFIX}_MAP_VERSION {MAP_VERSION}u", ""]
    for reg in REGISTERS:
        base = f"{C_PREFIX}_{reg.name}"
        lines.append(f"/* {reg.name}: {reg.description} */")
        lines.append(f"#define {base}_OFFSET 0x{reg.offset:02X}u")
        for f in reg.fields:
            name = f"{base}_{f.name.upper()}"
            lines.append(f"#define {name}_SHIFT {f.lsb}u  /* {f.access}: {f.description} */")
            lines.append(f"#define {name}_MASK 0x{f.mask:08X}u")
            if f.access == "const":
                lines.append(f"#define {name}_VALUE 0x{f.reset:08X}u")
        lines.append("")
    lines.append(f"#endif /* {guard} */")
    return "\n".join(lines) + "\n"


def _bits(f: RegField) -> str:
    return f"[{f.lsb}]" if f.width == 1 else f"[{f.lsb + f.width - 1}:{f.lsb}]"


def markdown_table() -> str:
    """The map as a Markdown table: one row per field (offset and register on its
    register's first row)."""
    rows = ["| offset | register | field | bits | access | reset | description |",
            "|---|---|---|---|---|---|---|"]
    for reg in REGISTERS:
        for i, f in enumerate(reg.fields):
            head = (f"0x{reg.offset:02X}", reg.name) if i == 0 else ("", "")
            reset = f"0x{f.reset:X}" if f.access in ("const", "rw") else "-"
            rows.append(f"| {head[0]} | {head[1]} | {f.name} | {_bits(f)} | {f.access} | "
                        f"{reset} | {f.description} |")
    return "\n".join(rows) + "\n"
