"""``nibble regress``: the top-level cocotb regression, split into shards.

A shard is one cocotb run of :mod:`verif.tb_accelerator` for one parameter set, seed and
number of random GEMMs, in its own run directory (its ``results.xml`` and
``stats.json`` never collide with another shard's). With ``jobs > 1`` each size's GEMMs
are split over ``jobs`` shards with seeds ``seed, seed + 1, ...`` and pytest-xdist runs
them (:mod:`verif.pytest_shards`), so a regression scales with cores and, through
xdist's own ``--dist``/``--tx`` options, onto more machines. A shard with seed S and G
GEMMs is exactly a serial run with ``--seed S --gemms G``, which is how a failure is
reproduced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from golden.params import NibbleParams

__all__ = ["Shard", "plan", "run_shard", "run_plan", "PLAN_ENV"]

#: Environment variable that hands the shard plan (a JSON file) to the pytest workers.
PLAN_ENV = "NIBBLE_REGRESS_PLAN"
TEST_MODULE = "verif.tb_accelerator"


@dataclass(frozen=True)
class Shard:
    """One cocotb run: ``gemms`` random GEMMs at ``seed``; the first shard of a size
    also runs the directed tests (edge shapes, reset mid-GEMM) unless ``testcase``
    names one test."""

    tile: int
    acc_bits: int
    seed: int
    gemms: int
    testcase: str | None
    waves: bool
    run_dir: str

    @property
    def params(self) -> NibbleParams:
        return NibbleParams(tile=self.tile, acc_bits=self.acc_bits)


def plan(sizes, *, acc_bits: int, seed: int, gemms: int, jobs: int = 1,
         testcase: str | None = None, waves: bool = False) -> list[Shard]:
    """Split ``gemms`` random GEMMs per size into ``jobs`` shards per size."""
    from verif.runner import build_dir

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    shards = []
    for tile in sizes:
        split = 1 if testcase not in (None, "random_gemms") else min(jobs, gemms)
        per = [gemms // split + (s < gemms % split) for s in range(split)]
        for s, count in enumerate(per):
            case = testcase if testcase or s == 0 else "random_gemms"
            # one directory per seed: concurrent regressions with other seeds never collide
            run_dir = (build_dir(NibbleParams(tile=tile, acc_bits=acc_bits)) / "nibble_top"
                       / "runs" / f"seed{seed + s}")
            shards.append(Shard(tile, acc_bits, seed + s, count, case, waves, str(run_dir)))
    return shards


def run_shard(shard: Shard) -> dict:
    """Build (once per parameter set, locked) and run one shard; return its outcome,
    which is also written to ``run_dir/outcome.json``."""
    from cocotb_tools.check_results import get_results

    from verif.runner import run
    from verif.scoreboard import STATS_FILE

    run_dir = Path(shard.run_dir)
    start = time.perf_counter()
    results = run(shard.params, TEST_MODULE, seed=shard.seed, waves=shard.waves,
                  testcase=shard.testcase, extra_env={"NIBBLE_GEMMS": str(shard.gemms)},
                  run_dir=run_dir)
    tests, failed = get_results(results)
    stats_file = run_dir / STATS_FILE      # run() removed the last run's before starting
    outcome = {"shard": asdict(shard), "tests": tests, "failed": failed,
               "results": str(results), "wall_seconds": time.perf_counter() - start,
               "stats": json.loads(stats_file.read_text()) if stats_file.exists() else {}}
    (run_dir / "outcome.json").write_text(json.dumps(outcome))
    return outcome


def run_plan(shards: list[Shard], jobs: int = 1, progress=print) -> list[dict]:
    """Run every shard: in this process if ``jobs == 1``, else through pytest-xdist with
    ``jobs`` workers. Returns the outcomes in plan order."""
    from verif.runner import build

    for params in dict.fromkeys(s.params for s in shards):
        progress(f"building T={params.tile} acc_bits={params.acc_bits} (if needed)...")
        build(params, waves=any(s.waves for s in shards))
    if jobs == 1:
        outcomes = []
        for shard in shards:
            progress(f"T={shard.tile}: seed {shard.seed}, {shard.gemms} random GEMMs...")
            outcomes.append(run_shard(shard))
        return outcomes
    for shard in shards:
        Path(shard.run_dir, "outcome.json").unlink(missing_ok=True)
    plan_file = Path(shards[0].run_dir).parent / f"plan_seed{shards[0].seed}.json"
    plan_file.write_text(json.dumps([asdict(s) for s in shards]))
    progress(f"{len(shards)} shards on {jobs} pytest-xdist workers...")
    env = {**os.environ, PLAN_ENV: str(plan_file)}
    subprocess.run([sys.executable, "-m", "pytest", "-p", "xdist", "-n", str(jobs), "-q",
                    "-p", "no:cacheprovider", "--rootdir", str(Path(__file__).parent),
                    str(Path(__file__).with_name("pytest_shards.py"))], env=env)
    outcomes = []
    for shard in shards:
        done = Path(shard.run_dir, "outcome.json")
        if done.exists():
            outcomes.append(json.loads(done.read_text()))
        else:    # the worker died before writing an outcome: count it as a failure
            outcomes.append({"shard": asdict(shard), "tests": 0, "failed": 1, "results": "",
                             "wall_seconds": 0.0, "stats": {}})
    return outcomes
