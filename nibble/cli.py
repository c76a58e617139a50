"""The ``nibble`` command line: train, generate, bench, synth, regress and mutate.

Each subcommand is a module of :mod:`nibble.commands` that owns its arguments
(``add_arguments``) and its work and report (``run``); this module only builds the
parser from them and dispatches. Each takes its numbers through the one
:class:`golden.params.NibbleParams` object; ``bench report`` writes ``docs/results.md``
from the other commands' JSON.
"""

from __future__ import annotations

import argparse
import sys

from .commands import COMMANDS

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="nibble", description="nibble: an open 4-bit training accelerator")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        cmd = sub.add_parser(command.NAME, help=command.HELP, description=command.DESCRIPTION)
        command.add_arguments(cmd)
        cmd.set_defaults(func=command.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .results import measurement_stamp
    measurement_stamp()             # the checkout as the command starts (see there)
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
