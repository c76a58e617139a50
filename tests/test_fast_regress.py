"""``nibble regress`` on the fast harness (verif/fast_regress.py): shards, coverage, the
failure report and its replay line, and the command line."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

import verif.scoreboard
from verif.coverage import all_bins
from verif.fast_regress import FastShard, plan_fast, run_fast_shard


def test_plan_splits_each_size_into_seeded_shards():
    shards = plan_fast([4, 8], acc_bits=24, seed=10, gemms=5001, shard_gemms=2000)
    assert [(s.tile, s.seed, s.gemms, s.directed) for s in shards] == [
        (4, 10, 1667, True), (4, 11, 1667, False), (4, 12, 1667, False),
        (8, 10, 1667, True), (8, 11, 1667, False), (8, 12, 1667, False)]
    assert all(s.acc_bits == 24 for s in shards)
    with pytest.raises(ValueError, match="shard_gemms"):
        plan_fast([4], acc_bits=32, seed=1, gemms=10, shard_gemms=0)


def test_a_shard_visits_every_coverage_bin_and_checks_every_gemm():
    bins = len(all_bins())
    out = run_fast_shard(FastShard(4, 32, 3, bins + 20, True))
    assert out["failed"] == 0 and out["results"] == "", out["results"]
    stats = out["stats"]
    # the edge shapes come on top of the random GEMMs; every bin at least once
    assert stats["gemms"] > bins + 20
    assert set(stats["coverage"]) == set(all_bins()), set(all_bins()) - set(stats["coverage"])
    assert sum(stats["coverage"].values()) == stats["gemms"] and stats["cycles"] > 0


def test_a_shard_draws_the_same_random_gemms_with_or_without_the_edge_shapes(monkeypatch):
    """The replay line runs a shard alone (with the edge shapes): its random GEMMs must be
    the ones the campaign's shard drew."""
    seen = {True: [], False: []}
    real = verif.scoreboard.Scoreboard.check

    for directed in (True, False):
        def spy(self, job, got, index, stalled=True, directed=directed):
            seen[directed].append((job.shape, job.a_op.codes.tobytes(), stalled))
            return real(self, job, got, index, stalled)
        monkeypatch.setattr(verif.scoreboard.Scoreboard, "check", spy)
        run_fast_shard(FastShard(4, 32, 5, 6, directed))
    assert len(seen[True]) > len(seen[False]) == 6
    assert seen[True][-6:] == seen[False]


def test_shards_on_a_local_dask_cluster_give_the_serial_results():
    """The campaign executor with 2 worker processes: the same outcomes as in process
    (GEMMs, MACs, simulated cycles with the seeded stalls, coverage), in task order."""
    from verif.campaign import run_tasks

    shards = plan_fast([4], acc_bits=32, seed=21, gemms=60, shard_gemms=20)
    keys = ("gemms", "macs", "cycles", "coverage")
    serial = [{k: o["stats"][k] for k in keys} for o in map(run_fast_shard, shards)]
    parallel = [{k: o["stats"][k] for k in keys}
                for o in run_tasks(run_fast_shard, shards, workers=2)]
    assert serial == parallel and len(serial) == 3 and serial[0]["gemms"] > 20


def test_a_mismatch_fails_the_shard_with_a_replay_line(monkeypatch):
    """A golden that disagrees from the 4th random GEMM on (as a broken design would):
    the shard stops there and names the GEMM and the command that reproduces it."""
    real = verif.scoreboard.expected
    calls = []

    def wrong(job, params):
        out = real(job, params)
        calls.append(job)
        return replace(out, saturated=not out.saturated) if len(calls) >= 4 else out
    monkeypatch.setattr(verif.scoreboard, "expected", wrong)
    shard = FastShard(4, 32, 9, 50, False)
    out = run_fast_shard(shard)
    assert out["failed"] == 1 and out["stats"]["gemms"] == 3
    assert "random GEMM 3" in out["results"]
    assert "reproduce: nibble regress --size 4 --acc-bits 32 --seed 9 --gemms 4" in out["results"]


def test_nibble_regress_fast_prints_table_and_json(tmp_path):
    from nibble.commands.regress import regress_table

    out = tmp_path / "regress.json"
    proc = subprocess.run([sys.executable, "-m", "nibble", "regress", "--size", "4",
                           "--gemms", "150", "--seed", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    r = doc["regress"]
    assert r["engine"] == "fast" and r["seed"] == 2 and r["empty_bins"] == []
    (row,) = r["rows"]
    assert row["failed"] == 0 and row["gemms"] > 150
    assert regress_table(r["rows"]) in proc.stdout


@pytest.mark.parametrize("extra, message", [(["--waves"], "--cocotb"), (["-k", "edge_shapes"], "--cocotb"),
                                            (["--cocotb", "--scheduler", "tcp://x:1"], "pytest-xdist"),
                                            (["--shard-gemms", "0"], "positive integer"),
                                            (["--board", "de0nano"], "unknown board 'de0nano'"),
                                            (["--cocotb", "--board", "icebreaker"], "fast harness")])
def test_nibble_regress_rejects_options_of_the_other_engine(extra, message):
    """(and an unknown --board)"""
    proc = subprocess.run([sys.executable, "-m", "nibble", "regress", "--size", "4", *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2      # usage line + error at most


def test_a_shard_at_a_boards_profile_runs_that_build_and_replays_it():
    """``board``: the shard's parameters are the board's profile (the iCEBreaker's: one
    lane, no stochastic rounding, not pipelined), its GEMMs match golden on that build,
    and the replay command names the board."""
    shard = FastShard(2, 18, 4, 30, True, "icebreaker")
    p = shard.params
    assert (p.tile, p.acc_bits, p.lanes, p.stochastic, p.pipelined) == (2, 18, 1, False, False)
    assert FastShard(2, 18, 4, 30, True).params.pipelined
    assert "--board icebreaker" in shard.replay()
    out = run_fast_shard(shard)
    assert out["failed"] == 0 and out["stats"]["gemms"] > 30


def test_extreme_jobs_reach_the_top_accumulator_bits_in_every_role_and_variant():
    """The largest-magnitude operands drive the accumulators to within a factor of four
    of the bound golden's out_exp rule leaves them (2**(acc_bits - 1)), in every role and
    output variant the build has; random operands rarely get there."""
    import numpy as np

    from golden.params import NibbleParams
    from verif.coverage import coverage_bin
    from verif.stimulus import extreme_jobs
    from wire.gemm_protocol import OutputSpec, expected

    params = NibbleParams(tile=4, acc_bits=24)
    jobs = extreme_jobs(np.random.default_rng(3), params)
    assert len(jobs) == 3 * 11 * 2
    assert {coverage_bin(job, 4, False) for job in jobs} == {
        key for key in all_bins() if key.endswith("| none | whole")}
    for job in jobs[::2]:                     # the one-sign half (the other mixes signs)
        acc = expected(replace(job, out=OutputSpec()), params).raw.acc
        assert int(np.abs(acc).max()) >= 2 ** (params.acc_bits - 3), job.shape


def test_stochastic_jobs_cover_every_stochastic_variant_and_need_the_hardware():
    import numpy as np

    from golden.params import NibbleParams
    from verif.stimulus import stochastic_jobs

    jobs = stochastic_jobs(np.random.default_rng(1), NibbleParams(tile=4), count=2)
    assert len(jobs) == 8 and all(j.out.rounding == "stochastic" for j in jobs)
    assert {(j.out.dual, j.out.phase, j.a_op.kind) for j in jobs} == {
        (False, 0, "uint4"), (False, 1, "uint4"), (True, 0, "fp4"), (False, 0, "fp4")}
    assert all(j.shape == (16, 8, 16) for j in jobs)
    assert stochastic_jobs(np.random.default_rng(1), NibbleParams(tile=4, stochastic=False)) == []


def test_threshold_jobs_put_rounding_decisions_on_their_thresholds():
    """Each GEMM's seed gives some element a margin within 8 of its threshold (a random
    seed does so for a few GEMMs in a hundred), most of them 0 or 1, in every
    stochastic variant of the family."""
    import numpy as np

    from golden.formats import stochastic_margins
    from golden.gemm import tiled_gemm
    from golden.params import NibbleParams
    from golden.xorshift import element_words, phase_bits
    from verif.stimulus import THRESHOLD_VARIANTS, threshold_jobs

    params = NibbleParams(tile=4)
    jobs = threshold_jobs(np.random.default_rng(1), params, count=2 * len(THRESHOLD_VARIANTS),
                          candidates=512)
    assert {(j.out.dual, j.out.phase, j.a_op.kind) for j in jobs} == {
        (True, 0, "fp4"), (True, 0, "uint4"), (False, 0, "uint4"), (False, 1, "fp4"),
        (False, 0, "uint4"), (False, 1, "uint4")}
    on_threshold = 0
    for job in jobs:
        y = tiled_gemm(job.a_op, job.b_op, acc_bits=params.acc_bits).value()
        words = element_words(job.out.seed, y.shape, 4)
        margins = [stochastic_margins(y, 4, p, phase_bits(words, p))
                   for p in ((0, 1) if job.out.dual else (job.out.phase,))]
        assert any(((m >= -7) & (m <= 8)).any() for m in margins), job.out
        on_threshold += sum(int(((m == 0) | (m == 1)).sum()) for m in margins)
    assert on_threshold >= len(jobs) // 2
    assert threshold_jobs(np.random.default_rng(1), NibbleParams(tile=4, stochastic=False)) == []


def test_queued_gemms_are_batched_back_to_back_and_the_rest_alone():
    import numpy as np

    from golden.params import NibbleParams
    from verif.fast_regress import QUEUED, batches, directed_jobs
    from verif.stimulus import queued_jobs

    assert batches(["none", QUEUED, QUEUED, "random", QUEUED]) == [[0], [1, 2], [3], [4]]
    assert batches([]) == []
    jobs = queued_jobs(np.random.default_rng(1), NibbleParams(tile=4), count=12)
    assert len(jobs) == 12 and len({j.out.mode for j in jobs}) == 3
    directed = directed_jobs(NibbleParams(tile=4), seed=1)
    runs = [len(b) for b in batches([mode for _, mode in directed])]
    assert max(runs) == 12 and runs.count(12) == 1    # the queued GEMMs in one call
