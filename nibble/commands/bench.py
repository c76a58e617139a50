"""``nibble bench``: utilization and cell-count benchmarks."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import positive_int

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run"]

NAME = "bench"
HELP = "utilization and cell-count benchmarks"
DESCRIPTION = ("Measure array utilization on large GEMMs (Amaranth simulation), yosys cell "
               "counts, the area against an FP16 MAC and the RTL training harness; tabulate "
               "synth reports (boards); write docs/results.md from the JSON files in docs/ "
               "(report).")


def add_arguments(parser) -> None:
    parser.add_argument("what", choices=["utilization", "cells", "area", "summary", "boards",
                                         "axi", "report", "all"],
                        nargs="?", default="all",
                        help="utilization, cells (generic yosys), area (FP16 MAC vs nibble on "
                             "ECP5/iCE40), summary (training utilization, harness speed, area "
                             "ratio at one T), boards (a table of `nibble synth` reports, "
                             "--reports), axi (nibble_axi against nibble_top: cycles without "
                             "back-pressure and out-of-context ECP5 LUTs/FFs), report (docs/results.md from the JSON files in "
                             "docs/; measures nothing), all (utilization and cells; default)")
    parser.add_argument("--reports", metavar="REPORT", nargs="+",
                        help="boards: report.json files (or their build directories) of "
                             "`nibble synth`")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="T",
                        help="array sizes (default 4 8 16; area and summary: 8)")
    parser.add_argument("--lanes", type=positive_int, metavar="L",
                        help="utilization: elements per cycle of the output path (default T; "
                             "capped at T)")
    parser.add_argument("--out-lanes", type=positive_int, metavar="Q",
                        help="utilization: elements per cycle of the output stages behind "
                             "the rescaler (default: the lanes; capped at them)")
    parser.add_argument("--tiles", type=positive_int, default=8,
                        help="utilization GEMM edge in tiles (default 8: (8T)^3)")
    parser.add_argument("--pnr", metavar="DIR",
                        help="axi: also place and route both tops on the ULX3S, each alone "
                             "between probe registers (nibble synth --unit), in DIR/<top>_t<T>")
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    parser.add_argument("--area-json", metavar="PATH",
                        help="summary: take the area ratios from an earlier `bench area --json`")
    parser.add_argument("--docs", metavar="DIR",
                        help="report: the directory of the JSON files (default: this "
                             "checkout's docs/)")
    parser.add_argument("--out", metavar="PATH",
                        help="report: the page to write (default DIR/results.md)")
    parser.add_argument("--check", action="store_true",
                        help="report: write nothing; exit 1 if the page differs from what "
                             "report would write")


def run(args) -> int:
    import json

    from golden.params import check_tile

    from .. import bench

    args.sizes_given = args.sizes is not None
    sizes = [check_tile(t) for t in (args.sizes or [4, 8, 16])]
    report = {}
    if args.what in ("utilization", "all"):
        print(f"utilization: (M, K, N) = ({args.tiles}T)^3 GEMMs, operands always available, "
              f"results always taken (Amaranth simulation)", flush=True)
        rows = [r for t in sizes for r in bench.utilization(
            t, tiles=args.tiles, lanes=args.lanes and min(args.lanes, t),
            out_lanes=args.out_lanes and min(args.out_lanes, args.lanes or t, t))]
        report["utilization"] = rows
        print("\n" + bench.format_utilization(rows))
    if args.what in ("cells", "all"):
        print("\ncells: yosys generic `synth -flatten`", flush=True)
        rows = [r for t in sizes for r in bench.cell_counts(t)]
        report["cells"] = rows
        print("\n" + bench.format_cells(rows))
    if args.what == "area":
        from fpga.area import area_study, format_table
        area_sizes = sizes if args.sizes_given else [8]
        print(f"area: FP16 MAC against nibble's PE and array + rescaler, T = {area_sizes} "
              f"(yosys, no DSPs; about 10 minutes per size at T = 8, an hour at T = 16)", flush=True)
        report["area"] = area_study(sizes=area_sizes)
        print("\n" + format_table(report["area"]))
    if args.what == "axi":
        from fpga.area import AXI_SYNTH_COMMAND
        axi_sizes = sizes if args.sizes_given else [8]
        print(f"axi: nibble_axi against nibble_top, T = {axi_sizes}: cycles of 4T-cube GEMMs "
              f"without back-pressure (fast harness) and yosys {AXI_SYNTH_COMMAND} out of "
              f"context (minutes per size)", flush=True)
        if args.pnr:
            print(f"  and placed and routed on the ULX3S alone between probe registers, into "
                  f"{args.pnr}/<top>_t<T> (tens of minutes per top)", flush=True)
        report["axi"] = [bench.axi_bench(t, pnr_dir=args.pnr) for t in axi_sizes]
        print("\n" + bench.format_axi(report["axi"]))
    if args.what == "summary":
        tile = sizes[0] if args.sizes_given else 8
        print(f"summary at T={tile}: RTL training harness, utilization per GEMM role, area "
              f"ratio (minutes)", flush=True)
        area = None
        if args.area_json:
            with open(args.area_json) as f:
                area = json.load(f)
            area = area.get("area", area)          # a bench --json file or a bare report
            if "per_mac" not in area:
                raise ValueError(f"{args.area_json} holds no area study (no 'per_mac')")
        report["summary"] = bench.summary(tile, area=area)
        print("\n" + bench.format_summary(report["summary"]))
    if args.what == "report":
        from .. import results
        docs = Path(args.docs) if args.docs else results.default_docs_dir()
        out = Path(args.out) if args.out else docs / "results.md"
        if args.check:
            if results.check(docs, out):
                print(f"{out} is up to date with the files in {docs}")
                return 0
            print(f"nibble bench: {out} differs from what `nibble bench report` writes from "
                  f"{docs}: run it and commit the result", file=sys.stderr)
            return 1
        print(f"wrote {results.write(docs, out)} from the files in {docs}")
        return 0
    if args.what == "boards":
        from fpga.synth import board_table
        if not args.reports:
            raise ValueError("bench boards needs --reports REPORT.json ... (from nibble synth)")
        builds = []
        for given in args.reports:
            path = Path(given)
            path = path / "report.json" if path.is_dir() else path
            if not path.is_file():
                raise ValueError(f"no synth report at {path}")
            builds.append(json.loads(path.read_text()))
        report["boards"] = builds
        print(board_table(builds))
    if args.json:
        if args.what != "boards":              # boards only tabulates earlier measurements
            from ..results import measurement_stamp
            report["measured"] = measurement_stamp()
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 0
