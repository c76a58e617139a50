"""The ``nibble`` subcommands, one module each (the way Glasgow's applets are built).

Each module has ``NAME``, ``HELP`` (the line in ``nibble --help``), ``DESCRIPTION``,
``add_arguments(parser)`` (every option of the command, with its default and help) and
``run(args) -> int`` (the work, the report it prints, the exit code).
:mod:`nibble.cli` only builds the parser from them and dispatches; what several
commands share (the array parameters, a positive-integer type) is in
:mod:`nibble.commands.common`.
"""

from __future__ import annotations

from . import bench, generate, mutate, regress, synth, train

__all__ = ["COMMANDS"]

#: In the order ``nibble --help`` lists them.
COMMANDS = (train, generate, bench, synth, regress, mutate)
