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


def test_plateau_jobs_put_one_maximum_per_tile_on_the_exponent_boundary_at_every_shift():
    """Every output tile's largest magnitude is in one element only and is qmax * 2**j
    (15 for uint4 and dual, 7 for int4: the requantizer's exponent boundary), the others
    within a few hundred (times the shift) of it; each mode visits every shift from 0 to
    the largest with its maximum in every lane (T = 4), and T = 2 builds too."""
    import numpy as np

    from golden.gemm import tiled_gemm
    from golden.params import NibbleParams
    from verif.stimulus import PLATEAU_OUTPUTS, plateau_jobs

    for t in (2, 4):
        params = NibbleParams(tile=t)
        jobs = plateau_jobs(np.random.default_rng(1), params)
        per_mode = len(jobs) // len(PLATEAU_OUTPUTS)
        for index, job in enumerate(jobs):
            mode, kind, peak = PLATEAU_OUTPUTS[index // per_mode]
            assert job.out.mode == ("fp4" if mode == "dual" else "int")
            assert job.out.dual == (mode == "dual") and job.out.mask is None
            acc = np.abs(tiled_gemm(job.a_op, job.b_op, acc_bits=params.acc_bits).acc)
            seen = set()
            for i in range(0, acc.shape[0], t):
                for j in range(0, acc.shape[1], t):
                    tile = acc[i:i + t, j:j + t]
                    top = int(tile.max())
                    shift = top.bit_length() - peak.bit_length()
                    assert top == peak << shift and (tile == top).sum() == 1
                    assert tile.min() >= (peak - 400) << shift
                    seen.add((shift, int(np.argmax(tile)) % t))
            if t == 4 and index % per_mode == 0:
                shifts = {s for s, _ in seen}
                assert min(shifts) == 0
        if t == 4:
            lanes = {}
            for job in jobs[:per_mode]:
                acc = np.abs(tiled_gemm(job.a_op, job.b_op, acc_bits=params.acc_bits).acc)
                for i in range(0, acc.shape[0], t):
                    for j in range(0, acc.shape[1], t):
                        tile = acc[i:i + t, j:j + t]
                        shift = int(tile.max()).bit_length() - 8
                        lanes.setdefault(shift, set()).add(int(np.argmax(tile)) % t)
            assert sorted(lanes) == list(range(len(lanes))) and len(lanes) >= 20
            assert all(v == set(range(t)) for v in lanes.values())


def test_planted_jobs_put_decisions_on_every_low_bit_threshold_in_every_lane():
    """Over the GEMMs of each planted setting (dual or not, phase), every lane has, at
    the planted phase, decisions within 2**b of their threshold on both sides for
    b = 0..3, below G_0 (x < 2**16) and in range, and some exactly on it; a random seed
    gives one within 2 of its threshold about once in 10**5 elements."""
    import numpy as np

    from golden.formats import stochastic_margins
    from golden.gemm import tiled_gemm
    from golden.params import NibbleParams
    from golden.xorshift import element_words, phase_bits
    from verif.stimulus import PLANT_SETTINGS, planted_jobs

    params = NibbleParams(tile=4)
    jobs = planted_jobs(np.random.default_rng(1), params)
    rounds = len(jobs) // len(PLANT_SETTINGS)
    assert len(jobs) == 4 * len(PLANT_SETTINGS)
    for setting, (dual, phase) in enumerate(PLANT_SETTINGS):
        margins, belows = [], []
        for job in jobs[setting * rounds:(setting + 1) * rounds]:
            out = job.out
            assert out.rounding == "stochastic" and out.dual == dual and out.ext_exp is not None
            assert out.phase == (0 if dual else phase)
            result = tiled_gemm(job.a_op, job.b_op, acc_bits=params.acc_bits)
            rand = phase_bits(element_words(out.seed, result.acc.shape, 4), phase)
            margins.append(stochastic_margins(result.value(), 4, phase, rand, out.ext_exp)[:2])
            # the planted rows' accumulators are X * 2**8: X < 2**16 below G_0
            belows.append(np.abs(result.acc[:2]) < 1 << 24)
            assert (np.abs(result.acc[:2]) < 1 << 26).all() and not result.acc[2:].any()
        margin, below = np.hstack(margins), np.hstack(belows)
        for lane in range(4):
            m, b = margin[:, lane::4], below[:, lane::4]
            for region in (b, ~b):
                for bit in range(4):
                    width = 1 << bit
                    assert ((m > 0) & (m <= width) & region).any(), (setting, lane, bit)
                    assert ((m > -width) & (m <= 0) & region).any(), (setting, lane, bit)
    assert planted_jobs(np.random.default_rng(1), NibbleParams(tile=4, stochastic=False)) == []


def test_burst_jobs_run_last_with_the_burst_consumer_in_every_output_mode():
    import numpy as np

    from golden.params import NibbleParams
    from verif.fast_regress import STALL_MODES, directed_jobs
    from verif.stimulus import burst_jobs

    params = NibbleParams(tile=4)
    jobs = burst_jobs(np.random.default_rng(1), params)
    assert {(j.out.mode, j.out.dual) for j in jobs} == {("raw", False), ("int", False),
                                                       ("fp4", False), ("fp4", True)}
    assert all(j.shape == (32, 4, 32) for j in jobs)
    low, high = STALL_MODES["burst"][2]
    assert high % 2 and low > 16               # every slot; a fill longer than the queue
    directed = directed_jobs(params, seed=1)
    assert [mode for _, mode in directed[-len(jobs):]] == ["burst"] * len(jobs)
    assert "burst" not in [mode for _, mode in directed[:-len(jobs)]]
