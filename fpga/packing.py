"""Where the logic cells go: nextpnr's packed netlist, counted per unit.

``nibble synth --pack-only`` runs yosys and nextpnr's packer (``--pack-only --write
packed.json``) and counts the packed cells per unit of the design. It works on a design
too big for its device, which is the point: on the iCE40UP5K nothing of nibble fits yet
(issue 16), and the yosys LUT and flip-flop counts per unit do not say how many logic
cells the packer makes of them.

Units
    A packed cell is named after the netlist cell it came from, with its hierarchy
    (``bridge.core.requant.rd_beat[8]_SB_DFF_Q_DFFLC``). Its unit is the first level below
    the accelerator (``bridge.core.<unit>``: ``array``, ``requant``, ``log4``, ...) or
    below the host bridge (``bridge.<unit>``: ``receiver``, ``inlet_a_codes``, ...), the
    submodule names of :class:`rtl.accelerator.Accelerator` and
    :class:`rtl.host_bridge.HostBridge`. Cells of the accelerator's and the bridge's own
    logic are ``accelerator`` and ``host bridge``; of the board top (PLL, reset, pins)
    ``board``; cells nextpnr or yosys named without a hierarchy (carry-chain feed cells,
    ``$auto$...`` nets) ``unnamed``. A unit probe (``--unit``) has its unit under
    ``unit.``, counted the same way.

iCE40 logic cells (``ICESTORM_LC``: one LUT4, its carry, one flip-flop) by what they use
    ``paired`` a LUT and the flip-flop it feeds; ``lut_only`` a LUT (and maybe its carry),
    no flip-flop; ``ff_only`` a flip-flop behind a pass-through LUT (its D comes from
    another flip-flop, or from a LUT that also drives other cells, which nextpnr does not
    pair); ``carry_only`` a carry with an unused LUT (comparators, chain ends).

ECP5
    nextpnr-ecp5 packs into ``TRELLIS_COMB`` (a LUT4 or half a carry), ``TRELLIS_FF``,
    ``TRELLIS_RAMW`` (LUT RAM write ports); each is counted per unit.
"""

from __future__ import annotations

from collections import Counter, defaultdict

__all__ = ["unit_of", "cells_by_unit", "format_cells_by_unit", "UNIT_COLUMNS"]

#: Per family: the report keys of a unit's row, in table order, with their column titles.
UNIT_COLUMNS = {
    "ice40": (("cells", "logic cells"), ("paired", "LUT+FF"), ("lut_only", "LUT only"),
              ("ff_only", "FF only"), ("carry_only", "carry only"), ("brams", "BRAMs"),
              ("dsps", "DSPs")),
    "ecp5": (("cells", "logic cells"), ("ffs", "FFs"), ("lutram", "LUT RAM write ports"),
             ("brams", "BRAMs"), ("dsps", "DSPs")),
}

#: Nets with more users than this (clocks, resets, enables) do not place a cell in a unit.
_LOCAL_NET_USERS = 16
_ICE40_LUT_BUFFER = 0b10          # LUT_INIT of nextpnr's pass-through LUT (I0 -> O)
_BLOCKS = {
    "ice40": {"ICESTORM_RAM": "brams", "ICESTORM_DSP": "dsps", "ICESTORM_SPRAM": "brams"},
    "ecp5": {"DP16KD": "brams", "MULT18X18D": "dsps", "TRELLIS_FF": "ffs",
             "TRELLIS_RAMW": "lutram", "TRELLIS_COMB": "cells"},
}


def unit_of(name: str) -> str:
    """The unit a packed cell called ``name`` belongs to (see the module docstring)."""
    parts = name.split(".")
    if len(parts) == 1:
        return "unnamed"
    container = "board"
    if parts[0] == "bridge":
        parts, container = parts[1:], "host bridge"
        if parts[0] == "core" and len(parts) > 1:
            parts, container = parts[1:], "accelerator"
    elif parts[0] == "unit" and len(parts) > 1:
        parts, container = parts[1:], "unit"
    return parts[0] if len(parts) > 1 else container


def _ice40_kind(params: dict) -> str:
    dff = str(params.get("DFF_ENABLE", "0")) == "1"
    carry = str(params.get("CARRY_ENABLE", "0")) == "1"
    init = int(str(params.get("LUT_INIT", "0")), 2)
    if dff:
        return "ff_only" if init == _ICE40_LUT_BUFFER and not carry else "paired"
    return "carry_only" if carry and init == 0 else "lut_only"


def _unnamed_units(cells: dict) -> dict:
    """Name -> unit for the cells without a hierarchy in their names: the unit of a cell
    they share a net with, named or (a chain of feed cells) resolved before them;
    "unnamed" where no net leads to a named cell."""
    units = {name: unit_of(name) for name in cells}
    pending = [name for name, unit in units.items() if unit == "unnamed"]
    users = defaultdict(list)
    for name, cell in cells.items():
        for bits in cell.get("connections", {}).values():
            for bit in bits:
                if isinstance(bit, int):          # (not a constant "0", "1", "x")
                    users[bit].append(name)
    # (a clock, reset or enable net reaches many units: it says nothing of where a cell is)
    users = {bit: names for bit, names in users.items() if len(names) <= _LOCAL_NET_USERS}
    while pending:
        left = []
        for name in pending:
            near = (units[other] for bits in cells[name].get("connections", {}).values()
                    for bit in bits for other in users.get(bit, ()))
            unit = next((u for u in near if u != "unnamed"), None)
            if unit is None:
                left.append(name)
            else:
                units[name] = unit
        if len(left) == len(pending):
            break
        pending = left
    return {name: units[name] for name in cells if unit_of(name) == "unnamed"}


def cells_by_unit(packed: dict, family: str) -> list:
    """Rows ``{"unit": name, <the family's UNIT_COLUMNS keys>: count}`` of nextpnr's packed
    netlist (``--write`` JSON, parsed), largest first, and a last row ``unit == "total"``.

    Raises ValueError (one line) for a netlist without the top module's cells or an
    unknown family."""
    if family not in UNIT_COLUMNS:
        raise ValueError(f"unknown FPGA family {family!r}; choose from {', '.join(UNIT_COLUMNS)}")
    try:
        cells = packed["modules"]["top"]["cells"]
    except (KeyError, TypeError):
        raise ValueError("not a packed nextpnr netlist: it has no module 'top' with cells") from None
    rows = defaultdict(Counter)
    unnamed = _unnamed_units(cells)
    for name, cell in cells.items():
        unit, kind = unnamed.get(name) or unit_of(name), cell.get("type")
        if family == "ice40" and kind == "ICESTORM_LC":
            rows[unit]["cells"] += 1
            rows[unit][_ice40_kind(cell.get("parameters", {}))] += 1
        elif kind in _BLOCKS[family]:
            rows[unit][_BLOCKS[family][kind]] += 1
    keys = [key for key, _ in UNIT_COLUMNS[family]]
    table = [{"unit": unit, **{key: counts[key] for key in keys}} for unit, counts in rows.items()]
    table.sort(key=lambda row: (-row["cells"], row["unit"]))
    table.append({"unit": "total", **{key: sum(row[key] for row in table) for key in keys}})
    return table


def format_cells_by_unit(rows: list, family: str) -> str:
    """The rows of :func:`cells_by_unit` as a Markdown table; units under 1 % of the logic
    cells are summed into one row ("N units under 1 %")."""
    columns = UNIT_COLUMNS[family]
    total = rows[-1]
    head = "| unit | " + " | ".join(title for _, title in columns) + " |"
    lines = [head, "|---|" + "---:|" * len(columns)]
    small = [row for row in rows[:-1] if row["cells"] * 100 < total["cells"]]
    shown = [row for row in rows[:-1] if row not in small]
    if small:
        shown.append({"unit": f"{len(small)} units under 1 % each",
                      **{key: sum(row[key] for row in small) for key, _ in columns}})
    for row in shown + [total]:
        name = f"**{row['unit']}**" if row is total else row["unit"]
        lines.append(f"| {name} | " + " | ".join(f"{row[key]:,}" for key, _ in columns) + " |")
    return "\n".join(lines)
