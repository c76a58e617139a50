"""Arguments that several ``nibble`` commands share."""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "add_params"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_params(parser) -> None:
    """The array parameters (``--size``, ``--acc-bits``, ``--lanes``, ...) of the one
    :class:`golden.params.NibbleParams` a command builds."""
    parser.add_argument("--size", "--tile", dest="tile", type=int, default=8, metavar="T",
                        help="tile edge T = array size, a power of two 2..64 (default 8)")
    parser.add_argument("--acc-bits", type=int, default=32, metavar="N",
                        help="accumulator width in bits (default 32)")
    parser.add_argument("--lanes", type=int, metavar="L",
                        help="elements per cycle of the output path, a power of two 1..T "
                             "(default T; synth: the board's default). Fewer lanes make "
                             "the design smaller and T/L times slower; results are the same")
    parser.add_argument("--out-lanes", type=int, metavar="Q",
                        help="elements per cycle of the output stages behind the rescaler "
                             "(requantizer, log4 unit), a power of two 1..L (default L; "
                             "synth: the board's default for the size). They keep pace "
                             "with the array for reductions K >= T * L / Q; results are "
                             "the same")
    parser.add_argument("--stochastic", action=argparse.BooleanOptionalAction, default=None,
                        help="build the log4 unit's stochastic rounding (default: yes; "
                             "synth: the board's default). --no-stochastic saves its "
                             "rounders and generators; stochastic jobs are then refused")
    parser.add_argument("--pipelined", action=argparse.BooleanOptionalAction, default=None,
                        help="build the register stages that only a fast clock needs "
                             "(default: yes; synth: the board's default, no on the "
                             "iCE40). --no-pipelined saves their logic cells; results "
                             "are the same")
