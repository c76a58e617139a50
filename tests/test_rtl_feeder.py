"""Tests of ``rtl.feeder.Feeder`` in the Amaranth simulator.

The testbench plays everything around the feeder:

* two operand tile buffers, modelled after ``TileBuffer``'s docstring: tiles arrive in
  the stream order of :mod:`wire.streams` (for every output tile (i, j), i outer, j
  inner, and reduction tile t: A tile (i, t) and B tile (t, j), each as the host
  stores it: the stored tile (t, i) / (j, t) for a transposed operand), row by row at
  random speed into two banks; ``full`` is "the read bank holds a complete tile" (a
  register); ``release`` frees the read bank; a ``read`` takes the read bank's next
  k-step (``read_col``: column or row), whose vector appears with the feeder's
  registered ``valid``;
* the psum queue's credits: ``capacity`` credits, one taken per ``take_credit``, each
  given back some random time later (when the drain would have read the tile); the
  ``credit`` input is "count != 0" as the earlier cycles left it, and the testbench
  also withholds it at random.

Reference: the vectors the array must see, computed straight from the operand matrices
(A = stored A or its transpose, the same for B), zero-padded to whole tiles, in the
order (i, j, t, k): column k of A tile (i, t) and row k of B tile (t, j), ``last`` on
k = T - 1. The testbench also checks the feeder's cycle-level contract: a tile starts
(``take_credit`` and the read of step 0) in the first cycle where both buffers are full
and a credit is there, and never otherwise; its T reads follow on consecutive cycles;
``release`` comes with step T - 1; ``valid``/``last`` are the issue ``READ_LATENCY``
cycles later;
``done`` rises after the last step of the last tile and nothing is issued after it; the
kind flags and read directions follow the command.
"""

import random
from collections import Counter, deque

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal

from golden.params import NibbleParams
from rtl.accelerator import psum_queue_tiles
from rtl.feeder import Feeder
from rtl.layouts import command_layout
from wire.streams import KIND_CODES
from verif.stimulus import ROLES
from rtl.tile_buffer import TileBuffer
from verif.amaranth_streams import simulate


def tiles_of(n, T):
    return -(-n // T)


class Job:
    """One GEMM C = A . B with A (M x K), B (K x N): the stored operands (random 4-bit
    codes; a transposed operand is stored as its transpose), the command, the tile
    streams the host sends and the reference vectors."""

    def __init__(self, T, M, K, N, a_kind, b_kind, a_trans, b_trans, rng):
        self.T, self.shape = T, (M, K, N)
        self.a_kind, self.b_kind, self.a_trans, self.b_trans = a_kind, b_kind, a_trans, b_trans
        gen = np.random.default_rng(rng.getrandbits(32))
        a_op = gen.integers(0, 16, (M, K))
        b_op = gen.integers(0, 16, (K, N))
        self.mt, self.kt, self.nt = tiles_of(M, T), tiles_of(K, T), tiles_of(N, T)
        pad = lambda x, r, c: np.pad(x, ((0, r * T - x.shape[0]), (0, c * T - x.shape[1])))
        a_pad = pad(a_op, self.mt, self.kt)          # (Mt T, Kt T), A as the GEMM uses it
        b_pad = pad(b_op, self.kt, self.nt)
        # What the host stores and streams: S = A^T if A is transposed.
        a_store = a_pad.T if a_trans else a_pad
        b_store = b_pad.T if b_trans else b_pad
        tile = lambda s, r, c: s[r * T:(r + 1) * T, c * T:(c + 1) * T]
        self.a_tiles, self.b_tiles, self.vectors = [], [], []
        for i in range(self.mt):
            for j in range(self.nt):
                for t in range(self.kt):
                    self.a_tiles.append(tile(a_store, t, i) if a_trans else tile(a_store, i, t))
                    self.b_tiles.append(tile(b_store, j, t) if b_trans else tile(b_store, t, j))
                    for k in range(T):
                        self.vectors.append((tuple(a_pad[i * T:(i + 1) * T, t * T + k]),
                                             tuple(b_pad[t * T + k, j * T:(j + 1) * T]),
                                             int(k == T - 1)))
        self.cmd = command_layout().const({
            "m_last": self.mt - 1, "k_last": self.kt - 1, "n_last": self.nt - 1,
            "a_kind": KIND_CODES[a_kind], "b_kind": KIND_CODES[b_kind],
            "a_phase": int(a_kind == "fp4"), "b_phase": int(b_kind == "fp4"),
            "a_trans": a_trans, "b_trans": b_trans,
            "out_mode": rng.randrange(3), "mask_en": rng.randrange(2),
        }).as_value().value

    @property
    def n_tiles(self):
        return self.mt * self.nt * self.kt

    def __repr__(self):
        return (f"Job(T={self.T}, MKN={self.shape}, {self.a_kind}{'^T' * self.a_trans} x "
                f"{self.b_kind}{'^T' * self.b_trans})")


class BufferModel:
    """A TileBuffer as its docstring describes it: two banks, tiles loaded row by row
    (one row in a cycle with probability ``p_load``), ``full`` a register."""

    def __init__(self, T, tiles, rng, p_load, preload=0):
        self.T, self.rng, self.p_load = T, rng, p_load
        self.pending = deque(tiles)
        self.loaded = deque()         # complete tiles, the head is the read bank
        self.rows = 0                 # rows of the tile being loaded
        for _ in range(min(preload, 2, len(self.pending))):   # loaded before the start
            self.loaded.append(self.pending.popleft())

    @property
    def full(self):
        return bool(self.loaded)

    def read(self, step, col):
        if not self.loaded:
            return None
        t = self.loaded[0]
        return tuple(t[:, step]) if col else tuple(t[step, :])

    def after_tick(self, release):
        if release:
            assert self.loaded, "release of an empty buffer"
            self.loaded.popleft()
        # a bank is free for loading unless both hold complete tiles
        if self.pending and len(self.loaded) < 2 and self.rng.random() < self.p_load:
            self.rows += 1
            if self.rows == self.T:
                self.loaded.append(self.pending.popleft())
                self.rows = 0


ROW_NAMES = ("a_kind", "b_kind", "a_trans", "b_trans")


class FeederBench:
    """Runs jobs on the feeder with the buffer and credit models, checking each cycle."""

    def __init__(self, dut, T, rng, *, capacity, p_load=0.6, p_withhold=0.2,
                 give_delay=None):
        self.dut, self.T, self.rng = dut, T, rng
        self.capacity, self.p_load, self.p_withhold = capacity, p_load, p_withhold
        self.give_delay = give_delay or (1, 3 * T + 10)
        self.stats = Counter()
        self.cycle = 0
        self.reset_credits()

    def reset_credits(self):
        self.credits = self.capacity
        self.gives = []                # cycles at which a credit comes back

    async def tick(self, ctx):
        await ctx.tick()
        self.cycle += 1
        back = [c for c in self.gives if c <= self.cycle]
        self.gives = [c for c in self.gives if c > self.cycle]
        self.credits += len(back)
        assert self.credits <= self.capacity

    async def run(self, ctx, job, *, cut_after=None, preload=0):
        """Run ``job``: start pulse (with the command in that cycle), then cycles until
        a few after ``done``. ``cut_after``:
        return after that many cycles, mid-job. ``preload``: tiles (up to 2) in each
        buffer before the start."""
        dut, T, rng = self.dut, self.T, self.rng
        a_buf = BufferModel(T, job.a_tiles, rng, self.p_load, preload)
        b_buf = BufferModel(T, job.b_tiles, rng, self.p_load, preload)
        ctx.set(dut.cmd.as_value(), job.cmd)
        ctx.set(dut.start, 1)
        ctx.set(dut.a_full, 1)            # even so, nothing starts in the start cycle
        ctx.set(dut.b_full, 1)
        ctx.set(dut.credit, self.credits > 0)
        assert not ctx.get(dut.take_credit), "tile started in the start cycle"
        assert not ctx.get(dut.release), "release in the start cycle"
        await self.tick(ctx)
        ctx.set(dut.start, 0)
        ctx.set(dut.cmd.as_value(), job.cmd)
        k, issued = 0, 0
        # the issues of the last READ_LATENCY cycles (None: no issue), oldest first:
        # the oldest is what ``valid``/``last`` show now
        inflight = deque([None] * TileBuffer.READ_LATENCY)
        got, after_done, n = [], 0, 0
        while after_done < 4:
            n += 1
            if cut_after is not None and n > cut_after:
                return
            assert n < 50 * (job.n_tiles * T + 20), f"{job}: stuck after {issued} tiles"
            where = f"{job}, cycle {n}: tile {issued}, step {k}"
            finished = issued == job.n_tiles
            withheld = rng.random() < self.p_withhold
            credit = self.credits > 0 and not withheld
            ctx.set(dut.a_full, a_buf.full)
            ctx.set(dut.b_full, b_buf.full)
            ctx.set(dut.credit, credit)
            take, release = ctx.get(dut.take_credit), ctx.get(dut.release)
            read = ctx.get(dut.read)
            valid, last, done = ctx.get(dut.valid), ctx.get(dut.last), ctx.get(dut.done)
            # registered outputs: the issue of READ_LATENCY cycles ago
            prev = inflight.popleft()
            assert valid == (prev is not None), f"{where}: valid {valid}"
            if prev is not None:
                assert last == prev[2], f"{where}: last"
                got.append(prev)
                assert ctx.get(dut.a_signed) == (job.a_kind == "int4"), where
                assert ctx.get(dut.a_fp4) == (job.a_kind == "fp4"), where
                assert ctx.get(dut.b_fp4) == (job.b_kind == "fp4"), where
            else:
                assert not last, f"{where}: last without valid"
            assert done == finished, f"{where}: done {done}"
            assert ctx.get(dut.a_read_col) == (not job.a_trans), where
            assert ctx.get(dut.b_read_col) == job.b_trans, where
            # this cycle's issue: steps 1..T-1 always, step 0 as soon as it may
            if finished:
                issue = False
            elif k:
                issue = True
            else:
                issue = a_buf.full and b_buf.full and credit
                self.stats["wait_operands"] += not (a_buf.full and b_buf.full)
                self.stats["wait_credit"] += a_buf.full and b_buf.full and not credit
            assert take == (issue and k == 0), \
                f"{where}: take_credit {take}, expected {issue and k == 0}"
            assert release == (issue and k == T - 1), f"{where}: release {release}"
            assert read == issue, f"{where}: read {read}, expected {issue}"
            if issue:
                inflight.append((a_buf.read(k, ctx.get(dut.a_read_col)),
                                 b_buf.read(k, ctx.get(dut.b_read_col)), int(k == T - 1)))
            else:
                inflight.append(None)
            await self.tick(ctx)
            a_buf.after_tick(release)
            b_buf.after_tick(release)
            if take:
                assert self.credits > 0
                self.credits -= 1
                lo, hi = self.give_delay
                self.gives.append(self.cycle + rng.randint(lo, hi))
            if issue:
                k = (k + 1) % T
                issued += k == 0
            after_done += finished
        if got != job.vectors:
            first = next(i for i, (x, y) in enumerate(zip(got + [None] * len(job.vectors),
                                                           job.vectors)) if x != y)
            raise AssertionError(f"{job}: {len(got)} vectors for {len(job.vectors)}, "
                                 f"first difference at {first}")
        self.stats["jobs"] += 1
        self.stats["tiles"] += job.n_tiles


#: name: (a kinds, b kind, a_trans, b_trans). The training roles as verif.stimulus.ROLES
#: defines them, a uint4 A also as int4 (the PE's signed mode); and both transposed.
GEMMS = {
    **{role.name: ((role.a_kind, "int4") if role.a_kind == "uint4" else (role.a_kind,),
                   role.b_kind, int(role.a_trans), int(role.b_trans)) for role in ROLES.values()},
    "both_transposed": (("int4",), "int4", 1, 1),   # (B is never uint4: golden.gemm.KIND_PAIRS)
}


def random_job(T, rng, gemm=None, shape=None):
    gemm = gemm or rng.choice(list(GEMMS))
    a_kinds, b_kind, a_trans, b_trans = GEMMS[gemm]
    if shape is None:
        shape = tuple(rng.choice([1, T - 1, T, T + 1, rng.randint(1, 3 * T + 1)])
                      for _ in range(3))
        shape = tuple(max(1, s) for s in shape)
    return Job(T, *shape, rng.choice(a_kinds), b_kind, a_trans, b_trans, rng)


@pytest.mark.parametrize("gemm", list(GEMMS))
@pytest.mark.parametrize("T", [2, 4])
def test_gemm_kinds_random_stalls(T, gemm):
    """Each training GEMM (and both operands transposed), several shapes (1 x 1 x 1,
    non-multiples of T, several tiles in every dimension) back to back in one run, with
    operand tiles arriving at random speed and psum credits scarce and withheld at
    random: the array sees exactly the reference vectors, and the cycle contract holds."""
    rng = random.Random(f"{T}-{gemm}")
    dut = Feeder(NibbleParams(tile=T))
    fb = FeederBench(dut, T, rng, capacity=2)
    shapes = [(1, 1, 1), (T + 1, 2 * T - 1, T - 1 or 1), (2 * T, T, 3 * T),
              (3 * T - 1, 3 * T + 1, 2)]

    async def bench(ctx):
        for shape in shapes:
            await fb.run(ctx, random_job(T, rng, gemm, shape))

    simulate(dut, bench)
    assert fb.stats["jobs"] == len(shapes)
    assert fb.stats["wait_operands"] > 20 and fb.stats["wait_credit"] > 5


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("T,capacity", [(2, 1), (4, psum_queue_tiles(4)), (8, 2)])
def test_back_to_back_random_jobs(T, capacity, seed):
    """Random jobs (any GEMM kind, random shapes) back to back, each started right
    after the previous one's ``done``, with different credit capacities and random
    operand and credit timing."""
    rng = random.Random(f"{T}-{capacity}-{seed}")
    dut = Feeder(NibbleParams(tile=T))
    fb = FeederBench(dut, T, rng, capacity=capacity, p_load=[0.5, 0.9][seed],
                     p_withhold=[0.3, 0.6][seed])
    jobs = 12 if T < 8 else 5

    async def bench(ctx):
        for _ in range(jobs):
            await fb.run(ctx, random_job(T, rng))

    simulate(dut, bench)
    assert fb.stats["jobs"] == jobs


@pytest.mark.parametrize("preload", [0, 1, 2])
@pytest.mark.parametrize("T", [2, 4])
def test_full_rate_without_stalls(T, preload):
    """Operand rows arriving one per cycle and credits plenty: after the first tiles'
    rows have come in (T cycles; none if the buffers were loaded before ``start``),
    every k-step of every tile is issued on consecutive cycles from the cycle after
    ``start`` on (100 % array utilization)."""
    rng = random.Random(T)
    dut = Feeder(NibbleParams(tile=T))
    fb = FeederBench(dut, T, rng, capacity=64, p_load=1.0, p_withhold=0.0,
                     give_delay=(1, 1))

    async def bench(ctx):
        for _ in range(2):
            await fb.run(ctx, Job(T, 2 * T, 3 * T, 2 * T - 1, "uint4", "int4", 0, 0, rng),
                         preload=preload)

    simulate(dut, bench)
    assert fb.stats["wait_credit"] == 0
    assert fb.stats["wait_operands"] == (2 * T if preload == 0 else 0), fb.stats


@pytest.mark.parametrize("T", [2, 4])
def test_reset_mid_job_then_clean_job(T):
    """A one-cycle reset in the middle of a job (tiles started, credits out, buffers
    loaded) followed by a fresh start of another job with other settings: the new job's
    vectors are exactly its reference ones and ``done`` comes after its own tiles."""
    rng = random.Random(100 + T)
    dut = Feeder(NibbleParams(tile=T))
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    fb = FeederBench(dut, T, rng, capacity=2)

    async def bench(ctx):
        for cut in (7, 3 * T + 5):
            await fb.run(ctx, random_job(T, rng, "forward", (3 * T, 2 * T, 2 * T)),
                         cut_after=cut)
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            fb.reset_credits()
            assert not ctx.get(dut.valid) and not ctx.get(dut.done)
            await fb.run(ctx, random_job(T, rng, "weight_grad", (T + 1, 1, 2 * T)))

    simulate(top, bench)
    assert fb.stats["jobs"] == 2


def test_idle_feeder_issues_nothing():
    """Before any start, and after ``done``, the feeder issues nothing even with both
    buffers full and credits there."""
    T = 2
    dut = Feeder(NibbleParams(tile=T))
    rng = random.Random(5)
    fb = FeederBench(dut, T, rng, capacity=2)

    async def bench(ctx):
        ctx.set(dut.a_full, 1)
        ctx.set(dut.b_full, 1)
        ctx.set(dut.credit, 1)
        ctx.set(dut.cmd.as_value(), Job(T, 3, 3, 3, "int4", "int4", 0, 0, rng).cmd)
        for _ in range(5):
            assert not ctx.get(dut.take_credit) and not ctx.get(dut.release)
            await ctx.tick()
            assert not ctx.get(dut.valid)
        await fb.run(ctx, Job(T, 1, 1, 1, "int4", "int4", 0, 0, rng))
        ctx.set(dut.a_full, 1)
        ctx.set(dut.b_full, 1)
        ctx.set(dut.credit, 1)
        for _ in range(5):
            assert not ctx.get(dut.take_credit) and ctx.get(dut.done)
            await ctx.tick()
            assert not ctx.get(dut.valid)

    simulate(dut, bench)
