"""Verilog generation (``nibble generate``) and its Verilator lint.

All files go through :func:`convert`: Amaranth's RTLIL with ``emit_src=False``, so the
output is reproducible byte for byte for a given parameter set, written out by yosys's
``write_verilog -sv``.

Why ``-sv``: the output is SystemVerilog (IEEE 1800)
    Without ``-sv``, yosys writes combinational logic as ``always @*`` blocks that
    start with a dummy trigger, ``reg $auto$...dump_module$1 = 0;``, so that they run
    once at time 0 (yosys PR #2273). That trick relies on Verilog-2005 semantics, where
    a declaration initializer is an ``initial`` assignment and makes an event. Under
    SystemVerilog semantics (Icarus ``-g2012``, cocotb's default for Icarus) it
    makes none: blocks whose inputs never change stay X, and ``nibble_top`` never
    leaves reset. With ``-sv`` yosys writes ``always_comb`` (which runs at time 0 by
    definition, no trigger needed) and ``always_ff``; nothing else changes. The files
    keep the ``.v`` name; a tool that needs telling reads them as SystemVerilog
    (``read_verilog -sv``, ``iverilog -g2012``; Verilator always does).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from amaranth.back import rtlil, verilog
from amaranth.hdl import Signal, Value

from edatools import verilator_bin, verilator_env
from golden.params import NibbleParams

__all__ = ["UNITS", "BUSES", "generate", "write_register_map", "verilog_text", "convert", "unit_factory", "lint",
           "WAIVER_FILE", "WRITE_VERILOG_OPTS"]

#: The checked-in Verilator waiver file for generated Verilog.
WAIVER_FILE = Path(__file__).with_name("nibble.vlt")


def _units():
    from .host_bridge import SIM_BAUD, SIM_CLK_HZ, SIM_TIMEOUT_S, HostBridge

    from .accelerator import Accelerator
    from .log4_quantizer import Log4Quantizer
    from .nibble_axi import NibbleAxi
    from .pe import PE
    from .requantizer import Requantizer
    from .systolic_array import SystolicArray
    from .tile_rescaler import TileRescaler
    return {
        "nibble_top": Accelerator,
        "pe": PE,
        "systolic_array": SystolicArray,
        "tile_rescaler": TileRescaler,
        "log4_quantizer": Log4Quantizer,
        "requantizer": Requantizer,
        # The Accelerator behind AXI4-Stream and AXI4-Lite ports (``--bus axi``).
        "nibble_axi": NibbleAxi,
        # The Accelerator behind the UART host bridge, clocked as the cocotb bench
        # simulates it; board tops build their own HostBridge with the board's clock.
        "host_bridge": lambda params: HostBridge(params, clk_hz=SIM_CLK_HZ, baud=SIM_BAUD,
                                                 timeout_s=SIM_TIMEOUT_S),
    }


#: File stems ``nibble generate`` writes; ``nibble_top`` is the whole Accelerator.
#: ``host_bridge`` is generated on request (``verif.runner.build(top="host_bridge")``).
UNITS = ("nibble_top", "pe", "systolic_array", "tile_rescaler", "log4_quantizer", "requantizer")


#: What ``nibble generate --bus`` writes: ``native``, the Accelerator's own streams
#: (:data:`UNITS`); ``axi``, ``nibble_axi`` (:class:`rtl.nibble_axi.NibbleAxi`) and its
#: register map (:func:`write_register_map`).
BUSES = {"native": UNITS, "axi": ("nibble_axi",)}


def write_register_map(out_dir) -> list[Path]:
    """Write ``nibble_axi_regs.h`` and ``nibble_axi_regs.md``, the C header and the
    Markdown table of :data:`wire.axi.REGISTERS`, into ``out_dir``; return the paths."""
    from wire.axi import c_header, markdown_table
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "nibble_axi_regs.h", out / "nibble_axi_regs.md"]
    paths[0].write_text(c_header())
    paths[1].write_text("# nibble_axi registers\n\n" + markdown_table())
    return paths


def unit_factory(unit: str):
    """The constructor (``params -> component``) of one of :data:`UNITS` or ``host_bridge``."""
    return _units()[unit]


#: Options of yosys's ``write_verilog`` (besides Amaranth's ``-norename``); see above.
WRITE_VERILOG_OPTS = ("-sv",)


def convert(component, name: str) -> str:
    """(System)Verilog of a ``wiring.Component`` with module name ``name``, reproducible
    byte for byte. Members that are constants by their signature (the ``ready`` of a
    valid-only ``stream.Signature(..., always_ready=True)``) are not ports."""
    ports = [Value.cast(value) for _, _, value in component.signature.flatten(component)]
    il_text = rtlil.convert(component, name=name, emit_src=False,
                            ports=[p for p in ports if isinstance(p, Signal)])
    # amaranth.back.verilog.convert is this plus the same yosys script, but has no way to
    # pass write_verilog options; its helper does (amaranth is pinned to 0.5.x).
    return verilog._convert_rtlil_text(il_text, write_verilog_opts=WRITE_VERILOG_OPTS)


def verilog_text(unit: str, params: NibbleParams, **options) -> str:
    """Verilog of one unit (module name = ``unit``). ``options`` go to the unit's
    constructor after ``params``: ``ring="registers"`` builds ``tile_rescaler`` with the
    flip-flop accumulator ring the Accelerator uses on iCE40 (the default is LUT RAM)."""
    return convert(_units()[unit](params, **options), unit)


def generate(params: NibbleParams, out_dir, units=UNITS, progress=None) -> list[Path]:
    """Write ``<unit>.v`` for each unit into ``out_dir``; return the paths.
    ``progress(path)`` is called after each file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for unit in units:
        path = out / f"{unit}.v"
        path.write_text(verilog_text(unit, params))
        paths.append(path)
        if progress:
            progress(path)
    return paths


def lint(path, top: str) -> subprocess.CompletedProcess:
    """``verilator --lint-only -Wall`` with the checked-in waiver file."""
    cmd = [str(verilator_bin()), "--lint-only", "-Wall", "--top-module", top,
           str(WAIVER_FILE), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, env=verilator_env())
