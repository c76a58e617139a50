"""``nibble regress``'s default engine: random GEMMs on the fast C++ harness.

The same stimulus as the cocotb bench (:func:`verif.stimulus.random_job`, coverage-driven
first: every bin of :mod:`verif.coverage` once, then random), the same checks
(:class:`verif.scoreboard.Scoreboard` against golden), on the Verilated ``nibble_top``
through :class:`verif.fast_sim.FastAccelerator`, two orders of magnitude faster than
cocotb. The protocol-level benches (reset in the middle of a GEMM, stream drivers that
follow the handshake rules cycle by cycle) stay on cocotb (``nibble regress --cocotb``).

A shard is ``gemms`` random GEMMs at one seed and size; the first shard of a size also
runs directed GEMMs first, from a stimulus stream of their own: the edge shapes
(:func:`verif.stimulus.edge_jobs`, with random stalls), GEMMs that outrun a slow
consumer (:func:`verif.stimulus.backpressure_jobs`, the result's ready 90 % low, so every
queue and credit pool behind the array fills) and GEMMs on largest-magnitude operands in
every role and output variant (:func:`verif.stimulus.extreme_jobs`) and large GEMMs in
every stochastic-rounding variant (:func:`verif.stimulus.stochastic_jobs`), and
stochastic GEMMs whose seeds put rounding decisions on their thresholds
(:func:`verif.stimulus.threshold_jobs`), GEMMs whose queued commands wait behind each
other (:func:`verif.stimulus.queued_jobs`), tiles of near-equal elements with one maximum
on the requantizer's exponent boundary at every shift (:func:`verif.stimulus.plateau_jobs`)
and stochastic GEMMs whose elements are built to decisions on a threshold of every
operand bit, below G_0 and in range (:func:`verif.stimulus.planted_jobs`) and GEMMs whose
result a burst consumer drains from full (:func:`verif.stimulus.burst_jobs`), so shard ``s`` of a campaign and a lone run with ``--seed s`` draw
the same random GEMMs: a failure's replay line is exact. Shards are independent and
picklable: :func:`verif.campaign.run_tasks` runs them in this process, on a local dask
cluster or on a remote one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from golden.params import NibbleParams

from .stimulus import (GEMM_ROLES, OUTPUT_VARIANTS, backpressure_jobs, burst_jobs, edge_jobs,
                       extreme_jobs, planted_jobs, plateau_jobs, queued_jobs, random_job,
                       stochastic_jobs, threshold_jobs)

__all__ = ["FastShard", "plan_fast", "run_fast_shard", "STALL_PROBABILITY", "STALL_MODES",
           "directed_jobs", "set_stalls", "batches", "QUEUED"]

#: Probability of a valid gap / ready stall per beat on every stream in a stalled GEMM
#: (the cocotb bench's).
STALL_PROBABILITY = 0.3
#: Stall settings of the harness by name: (p_stall, p_result_stall, result_burst).
#: "backpressure" is a slow consumer: inputs at full rate, the result's ready low 90 % of
#: the cycles; "burst" a burst consumer (:attr:`verif.fast_sim.FastAccelerator.result_burst`):
#: ready low 30 cycles, long enough for every queue and credit behind the result to fill,
#: then high 13 (odd: each fill ends 13 beats further on, so over 16 bursts at every slot
#: of the result queue); "queued" runs without stalls, back to back (:data:`QUEUED`).
STALL_MODES = {"none": (0.0, None, None), "random": (STALL_PROBABILITY, None, None),
               "backpressure": (0.0, 0.9, None), "burst": (0.0, None, (30, 13)),
               "queued": (0.0, None, None)}
#: The stall mode of GEMMs that run back to back: consecutive "queued" GEMMs go to the
#: harness in one call (:meth:`verif.fast_sim.FastAccelerator.run_many`), so each next
#: command waits at the command port while the GEMM before it runs.
QUEUED = "queued"
#: Random GEMMs that are stalled once every bin has been visited (the cocotb bench's).
STALLED_SHARE = 0.7


@dataclass(frozen=True)
class FastShard:
    """``gemms`` random GEMMs at ``seed`` on a ``tile``-sized array; ``directed``: the
    edge shapes first; ``board``: at that board's profile (its lanes, output lanes,
    stochastic rounding and pipelining, :meth:`fpga.boards.Board.params`), else the
    defaults of :class:`golden.params.NibbleParams`."""

    tile: int
    acc_bits: int
    seed: int
    gemms: int
    directed: bool
    board: str | None = None

    @property
    def params(self) -> NibbleParams:
        if self.board is None:
            return NibbleParams(tile=self.tile, acc_bits=self.acc_bits)
        from fpga.boards import get_board
        return get_board(self.board).params(self.tile, self.acc_bits)

    def replay(self, gemms: int | None = None) -> str:
        """The command that runs this shard's first ``gemms`` GEMMs again, alone."""
        board = "" if self.board is None else f" --board {self.board}"
        return (f"nibble regress --size {self.tile} --acc-bits {self.acc_bits}{board} --seed "
                f"{self.seed} --gemms {self.gemms if gemms is None else gemms}")


def plan_fast(sizes, *, acc_bits: int, seed: int, gemms: int,
              shard_gemms: int = 2000, board: str | None = None) -> list[FastShard]:
    """``gemms`` random GEMMs per size in shards of at most ``shard_gemms``, with seeds
    ``seed``, ``seed + 1``, ... (the same seeds at every size); ``board``: at its
    profile (:class:`FastShard`)."""
    if shard_gemms < 1:
        raise ValueError(f"shard_gemms must be at least 1, got {shard_gemms}")
    count = -(-gemms // shard_gemms)
    per = [gemms // count + (s < gemms % count) for s in range(count)]
    return [FastShard(tile, acc_bits, seed + s, n, s == 0, board)
            for tile in sizes for s, n in enumerate(per)]


def _bins():
    return [(role, variant, stalled, partial) for role in range(len(GEMM_ROLES))
            for variant in range(len(OUTPUT_VARIANTS)) for stalled in (False, True)
            for partial in (False, True)]


def run_fast_shard(shard: FastShard) -> dict:
    """Run one shard; return its outcome (the layout of :func:`verif.regress.run_shard`:
    ``shard``, ``tests``, ``failed``, ``results`` (the failure, or ""), ``wall_seconds``,
    ``stats`` (the scoreboard's counts))."""
    from .fast_sim import FastAccelerator, SimHang
    from .scoreboard import Scoreboard

    start = time.perf_counter()
    params = shard.params
    sim = FastAccelerator(params, seed=shard.seed)
    board = Scoreboard(params)
    rng = np.random.default_rng(shard.seed)
    work = []
    if shard.directed:
        work += [("directed", i, job, stalls)
                 for i, (job, stalls) in enumerate(directed_jobs(params, shard.seed))]
    bins = _bins()
    for i in range(shard.gemms):
        job, stalled = _random_gemm(rng, params, bins, i)
        work.append(("random", i, job, "random" if stalled else "none"))
    failure = ""
    for batch in batches([stalls for *_, stalls in work]):
        test, index, job, stalls = work[batch[0]]
        set_stalls(sim, stalls)
        stalled = stalls != "none"
        before, t0 = sim.cycles, time.perf_counter()
        try:
            gots = sim.run_many([work[i][2] for i in batch])
            board.add_time(sim.cycles - before, time.perf_counter() - t0)
            for i, got in zip(batch, gots):
                test, index, job, _ = work[i]
                board.check(job, got, index, stalled)
        except (AssertionError, SimHang, RuntimeError, ValueError) as exc:
            again = (f"nibble regress --size {params.tile} --acc-bits {params.acc_bits} "
                     f"--seed {shard.seed} --gemms 1 (the directed GEMMs run first)"
                     if test == "directed" else shard.replay(index + 1))
            failure = (f"T={params.tile} seed {shard.seed}, {test} GEMM {index} (shape "
                       f"{job.shape}, {stalls} stalls): {exc}; reproduce: {again}")
            break
    return {"shard": asdict(shard), "tests": 1 + shard.directed, "failed": int(bool(failure)),
            "results": failure, "wall_seconds": time.perf_counter() - start,
            "stats": board.counts}


def directed_jobs(params: NibbleParams, seed: int) -> list:
    """[(job, stall mode)]: the edge shapes with random stalls, the backpressure GEMMs
    with a slow consumer, the largest-magnitude operands in every role and output
    variant, large stochastic-rounding GEMMs, stochastic GEMMs with decisions on their
    thresholds, GEMMs whose commands queue behind each other, plateau tiles (near-ties
    at every shift, maxima on the exponent boundary) and stochastic GEMMs with decisions
    planted on every operand bit's threshold, GEMMs drained by a burst consumer, from a stimulus stream of their own (the
    later families after the earlier ones, so adding one leaves those as they were)."""
    rng = np.random.default_rng([seed, 1])
    return ([(job, "random") for job in edge_jobs(rng, params.tile)]
            + [(job, "backpressure") for job in backpressure_jobs(rng, params)]
            + [(job, "none") for job in extreme_jobs(rng, params)]
            + [(job, "none") for job in stochastic_jobs(rng, params)]
            + [(job, "none") for job in threshold_jobs(rng, params)]
            + [(job, QUEUED) for job in queued_jobs(rng, params)]
            + [(job, "none") for job in plateau_jobs(rng, params)]
            + [(job, "none") for job in planted_jobs(rng, params)]
            + [(job, "burst") for job in burst_jobs(rng, params)])


def batches(modes) -> list:
    """Indices of a list of stall modes grouped into the harness calls that run them:
    each run of consecutive :data:`QUEUED` GEMMs in one call, every other GEMM alone."""
    groups = []
    for i, mode in enumerate(modes):
        if mode == QUEUED and groups and modes[groups[-1][-1]] == QUEUED:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def set_stalls(sim, mode: str) -> None:
    """Set the harness's stall settings to :data:`STALL_MODES` ``mode``."""
    sim.p_stall, sim.p_result_stall, sim.result_burst = STALL_MODES[mode]


def _random_gemm(rng, params, bins, i):
    """The ``i``-th random GEMM of a shard and whether it is stalled: coverage-driven
    (the first ``len(bins)`` visit every bin the parameters allow), then random."""
    if i < len(bins):
        role, variant, stalled, partial = bins[i]
        if not params.stochastic and OUTPUT_VARIANTS[variant][1] == "stochastic":
            variant = 0                             # no such variant on this build
        return random_job(rng, params, (role, variant, partial)), stalled
    return random_job(rng, params), bool(rng.random() < STALLED_SHARE)
