"""``fpga.packing``: a packed nextpnr netlist counted per unit (the real packer's output is
checked in tests/test_synth.py::test_ice40_pack_only_cli)."""

import pytest

from fpga.packing import UNIT_COLUMNS, cells_by_unit, format_cells_by_unit, unit_of

_LUT_XOR = "0110100110010110"
_LUT_BUFFER = "0000000000000010"     # nextpnr's pass-through LUT for a lone flip-flop


def _lc(dff, carry, lut, **connections):
    return {"type": "ICESTORM_LC", "connections": connections,
            "parameters": {"DFF_ENABLE": dff, "CARRY_ENABLE": carry, "LUT_INIT": lut}}


@pytest.mark.parametrize("name,unit", [
    ("bridge.core.array.pe_0_1.acc[3]_SB_DFF_Q_DFFLC", "array"),
    ("bridge.core.requant.rd_beat[8]_SB_DFF_Q", "requant"),
    ("bridge.core.busy_SB_DFF_Q", "accelerator"),
    ("bridge.inlet_a_codes.fifo.w_spec[2]_LC", "inlet_a_codes"),
    ("bridge.uart_rx.sync.stage0", "uart_rx"),
    ("bridge.cmd_valid_LC", "host bridge"),
    ("unit.log4.fin_z[0]", "log4"),
    ("pll.lock_SB_DFF", "pll"),
    ("led_SB_LUT4_O", "unnamed"),
    ("$nextpnr_ICESTORM_LC_7", "unnamed"),
])
def test_unit_of_a_cell_is_its_submodule_below_the_accelerator_or_bridge(name, unit):
    assert unit_of(name) == unit


def _netlist():
    """Two units and the cells the packer makes: every kind of iCE40 logic cell, a carry
    chain's two feed cells named without hierarchy, a block RAM, and a cell whose only
    net is a clock shared by 17 cells."""
    cells = {
        "bridge.core.array.pe.acc[0]_DFFLC": _lc("1", "0", _LUT_BUFFER, I0=[10], O=[11], CLK=[99]),
        "bridge.core.array.pe.sum[0]_LC": _lc("1", "1", _LUT_XOR, I1=[11], O=[12], CLK=[99]),
        "bridge.core.array.pe.dec_LC": _lc("0", "0", _LUT_XOR, I0=[12], O=[13]),
        "bridge.core.requant.cmp_LC": _lc("0", "1", _LUT_XOR, CIN=[20], O=[21]),
        "$nextpnr_ICESTORM_LC_1": _lc("0", "1", "0" * 16, COUT=[20], CIN=[22]),
        "$nextpnr_ICESTORM_LC_2": _lc("0", "1", "0" * 16, COUT=[22]),
        "bridge.core.requant.mem": {"type": "ICESTORM_RAM", "connections": {"RDATA_0": [21]},
                                    "parameters": {}},
        "$auto$lone_DFFLC": _lc("1", "0", _LUT_BUFFER, CLK=[99], I0=["0"]),
    }
    for i in range(15):          # the clock's other users, in one unit
        cells[f"bridge.core.log4.r{i}_DFFLC"] = _lc("1", "0", _LUT_BUFFER, CLK=[99], I0=[30 + i])
    return {"modules": {"top": {"cells": cells}}}


def test_cells_are_counted_by_unit_and_kind():
    rows = {row["unit"]: row for row in cells_by_unit(_netlist(), "ice40")}
    assert rows["array"] == {"unit": "array", "cells": 3, "paired": 1, "lut_only": 1,
                             "ff_only": 1, "carry_only": 0, "brams": 0, "dsps": 0}
    # the chain's feed cells join the unit of the chain they start, one through the other
    assert rows["requant"] == {"unit": "requant", "cells": 3, "paired": 0, "lut_only": 1,
                               "ff_only": 0, "carry_only": 2, "brams": 1, "dsps": 0}
    assert rows["log4"]["cells"] == rows["log4"]["ff_only"] == 15
    # a clock net (17 users) places nothing: the lone flip-flop stays unnamed
    assert rows["unnamed"]["cells"] == rows["unnamed"]["ff_only"] == 1
    total = rows["total"]
    assert total["cells"] == 22 and total["brams"] == 1
    assert total["paired"] + total["lut_only"] + total["ff_only"] + total["carry_only"] == 22
    assert [row["unit"] for row in cells_by_unit(_netlist(), "ice40")] == [
        "log4", "array", "requant", "unnamed", "total"]


def test_ecp5_cells_by_type():
    cells = {"bridge.core.array.a": {"type": "TRELLIS_COMB"},
             "bridge.core.array.b": {"type": "TRELLIS_FF"},
             "bridge.core.array.c": {"type": "TRELLIS_FF"},
             "bridge.core.rescaler.w": {"type": "TRELLIS_RAMW"},
             "bridge.core.rescaler.m": {"type": "DP16KD"},
             "bridge.core.rescaler.io": {"type": "TRELLIS_IO"}}
    rows = {row["unit"]: row for row in cells_by_unit({"modules": {"top": {"cells": cells}}},
                                                      "ecp5")}
    assert rows["array"] == {"unit": "array", "cells": 1, "ffs": 2, "lutram": 0, "brams": 0,
                             "dsps": 0}
    assert rows["rescaler"] == {"unit": "rescaler", "cells": 0, "ffs": 0, "lutram": 1,
                                "brams": 1, "dsps": 0}


def test_table_folds_units_under_one_percent():
    rows = cells_by_unit(_netlist(), "ice40")
    big = [dict(row) for row in rows]
    big[0]["cells"] = 10_000                   # log4 now dwarfs every other unit
    big[-1]["cells"] += 10_000 - 15
    text = format_cells_by_unit(big, "ice40")
    lines = text.splitlines()
    assert lines[0] == "| unit | " + " | ".join(t for _, t in UNIT_COLUMNS["ice40"]) + " |"
    assert lines[2].startswith("| log4 | 10,000 | ")
    assert lines[3].startswith("| 3 units under 1 % each | 7 | ")
    assert lines[4].startswith("| **total** | 10,007 | ")


@pytest.mark.parametrize("packed,family,message", [
    ({}, "ice40", "not a packed nextpnr netlist"),
    ({"modules": {"top": {"cells": {}}}}, "xilinx", "unknown FPGA family 'xilinx'"),
])
def test_bad_netlists_are_one_line_errors(packed, family, message):
    with pytest.raises(ValueError, match=message) as info:
        cells_by_unit(packed, family)
    assert "\n" not in str(info.value)
