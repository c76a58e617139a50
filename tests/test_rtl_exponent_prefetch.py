"""Tests of ``rtl.exponent_prefetch.ExponentPrefetch`` in the Amaranth simulator.

The testbench sends a GEMM's tile exponents as the host does (:mod:`wire.streams`: for
every output tile (i, j), i outer, j inner, and reduction tile t, Ea[i, t] on
``a_exps`` and Eb[t, j] on ``b_exps``; two streams that keep the stream rules, each
with its own random gaps) and reads the two queues at random (``en`` only while
``rdy``, the head on ``data``, as ``rtl.queue.QueueRead`` says).

Reference, for operands ``a`` (Mt x Kt tiles) and ``b`` (Kt x Nt tiles) as golden
QTensors:

* ``s``: s_t = Ea[i, t] + Eb[t, j] + a.phase + b.phase for every (i, j, t), in that
  order (the module docstring's definition);
* ``out_exp``: ``golden.gemm.out_exponents(a, b, acc_bits)[i, j]`` for every (i, j).

And the handshakes: a pair is taken from both streams in the same cycle and only when
both are valid; nothing is taken before the bound is ready (three cycles after
``start``) or after the GEMM's last pair; with the queues emptied promptly one pair is
taken per cycle; with a consumer that stops reading, the prefetch stops taking pairs
before its queues overflow: ``fault`` never rises in legal use, and does rise when the
testbench pops an empty queue.
"""

import random
from collections import Counter, deque

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal

from golden.formats import QTensor
from golden.gemm import out_exponents
from golden.params import NibbleParams, psum_bits
from rtl.exponent_prefetch import OE_DEPTH, ExponentPrefetch
from rtl.layouts import command_layout
from wire.streams import KIND_CODES
from rtl.queue import RegisterSlice
from verif.amaranth_streams import simulate

#: Cycles from ``start`` to the first pair that may be taken (the bound's registers).
BOUND_CYCLES = ExponentPrefetch.BOUND_CYCLES

KIND_PAIRS = [("int4", "int4"), ("uint4", "int4"), ("fp4", "int4"), ("uint4", "fp4"),
              ("int4", "fp4"), ("uint4", "uint4"), ("int4", "uint4"), ("fp4", "uint4")]


class PrefetchJob:
    """Operands with random tile exponents (codes do not matter here), the command,
    the two exponent streams and the reference queues."""

    def __init__(self, T, acc_bits, tiles, kinds, rng, *, phases=None, exps=None):
        mt, kt, nt = tiles
        a_kind, b_kind = kinds
        if phases is None:
            phases = tuple(rng.randrange(2) if k == "fp4" else 0 for k in kinds)
        gen = np.random.default_rng(rng.getrandbits(32))
        # sizes that are not multiples of T where possible (partial edge tiles)
        size = lambda n: n * T - (rng.randrange(T) if n > 0 else 0)
        M, K, N = size(mt), size(kt), size(nt)
        if exps is None:
            draw = lambda shape: np.where(gen.random(shape) < 0.15,
                                          gen.choice([-128, 127], shape),
                                          gen.integers(-128, 128, shape))
            ea, eb = draw((mt, kt)), draw((kt, nt))
        else:
            ea, eb = exps
        self.a = QTensor(np.zeros((M, K), np.int64), ea, a_kind, T, phases[0])
        self.b = QTensor(np.zeros((K, N), np.int64), eb, b_kind, T, phases[1])
        self.tiles = tiles
        self.cmd = command_layout().const({
            "m_last": mt - 1, "k_last": kt - 1, "n_last": nt - 1,
            "a_kind": KIND_CODES[a_kind], "b_kind": KIND_CODES[b_kind],
            "a_phase": phases[0], "b_phase": phases[1],
            "a_trans": rng.randrange(2), "b_trans": rng.randrange(2),
            "out_mode": rng.randrange(3),
        }).as_value().value
        self.a_stream, self.b_stream, self.s = [], [], []
        for i in range(mt):
            for j in range(nt):
                for t in range(kt):
                    self.a_stream.append(int(ea[i, t]))
                    self.b_stream.append(int(eb[t, j]))
                    self.s.append(int(ea[i, t]) + int(eb[t, j]) + phases[0] + phases[1])
        oe = out_exponents(self.a, self.b, acc_bits)
        self.out_exp = [int(oe[i, j]) for i in range(mt) for j in range(nt)]

    def __repr__(self):
        return (f"{self.a.kind} x {self.b.kind} phases {self.a.phase}{self.b.phase} "
                f"tiles {self.tiles}")


class PrefetchBench:
    def __init__(self, dut, rng, *, p_a=0.7, p_b=0.7, p_s=0.6, p_oe=0.6):
        self.dut, self.rng = dut, rng
        self.p_a, self.p_b, self.p_s, self.p_oe = p_a, p_b, p_s, p_oe
        self.stats = Counter()

    async def run(self, ctx, job, *, cut_after=None, hold_s=0,
                  hold_oe=0):
        """Run ``job`` to its last queue entry. ``hold_s``/``hold_oe``: cycles at the
        start of the job during which that queue is not read at all."""
        dut, rng = self.dut, self.rng
        a_todo, b_todo = deque(job.a_stream), deque(job.b_stream)
        s_want, oe_want = deque(job.s), deque(job.out_exp)
        ctx.set(dut.cmd.as_value(), job.cmd)
        ctx.set(dut.start, 1)
        ctx.set(dut.a_exps.valid, 0)
        ctx.set(dut.b_exps.valid, 0)
        ctx.set(dut.s.en, 0)
        ctx.set(dut.out_exp.en, 0)
        await ctx.tick()
        ctx.set(dut.start, 0)
        ctx.set(dut.cmd.as_value(), job.cmd)
        a_valid = b_valid = False
        n, taken_cycles = 0, []
        while s_want or oe_want or a_todo:
            n += 1
            if cut_after is not None and n > cut_after:
                return
            assert n < 40 * len(job.s) + 100, f"{job}: stuck, {len(a_todo)} pairs left"
            where = f"{job}, cycle {n}"
            # the streams: a beat stays valid until taken
            a_valid = a_valid or (bool(a_todo) and rng.random() < self.p_a)
            b_valid = b_valid or (bool(b_todo) and rng.random() < self.p_b)
            ctx.set(dut.a_exps.valid, a_valid)
            ctx.set(dut.b_exps.valid, b_valid)
            ctx.set(dut.a_exps.payload, a_todo[0] if a_valid else rng.randint(-128, 127))
            ctx.set(dut.b_exps.payload, b_todo[0] if b_valid else rng.randint(-128, 127))
            # the queues
            s_rdy, oe_rdy = ctx.get(dut.s.rdy), ctx.get(dut.out_exp.rdy)
            if s_rdy:
                assert s_want, f"{where}: s queue shows an entry too many"
                assert ctx.get(dut.s.data) == s_want[0], \
                    f"{where}: s {ctx.get(dut.s.data)}, expected {s_want[0]}"
            if oe_rdy:
                assert oe_want, f"{where}: out_exp queue shows an entry too many"
                assert ctx.get(dut.out_exp.data) == oe_want[0], \
                    f"{where}: out_exp {ctx.get(dut.out_exp.data)}, expected {oe_want[0]}"
            pop_s = s_rdy and n > hold_s and rng.random() < self.p_s
            pop_oe = oe_rdy and n > hold_oe and rng.random() < self.p_oe
            ctx.set(dut.s.en, pop_s)
            ctx.set(dut.out_exp.en, pop_oe)
            a_ready, b_ready = ctx.get(dut.a_exps.ready), ctx.get(dut.b_exps.ready)
            a_take, b_take = a_valid and a_ready, b_valid and b_ready
            assert a_take == b_take, f"{where}: a pair taken from one stream only"
            assert n >= BOUND_CYCLES or not a_take, f"{where}: pair taken before the bound"
            assert not ctx.get(dut.fault), f"{where}: fault"
            self.stats["both_valid_waiting"] += a_valid and b_valid and not a_take
            self.stats["one_valid"] += a_valid != b_valid
            await ctx.tick()
            if a_take:
                a_todo.popleft()
                b_todo.popleft()
                a_valid = b_valid = False
                taken_cycles.append(n)
            if pop_s:
                s_want.popleft()
            if pop_oe:
                oe_want.popleft()
        # nothing more: no pair is taken after the last one, the queues stay empty
        ctx.set(dut.a_exps.valid, 1)
        ctx.set(dut.b_exps.valid, 1)
        ctx.set(dut.s.en, 0)
        ctx.set(dut.out_exp.en, 0)
        for _ in range(5):
            assert not ctx.get(dut.a_exps.ready) and not ctx.get(dut.b_exps.ready)
            await ctx.tick()
            assert not ctx.get(dut.s.rdy) and not ctx.get(dut.out_exp.rdy)
            assert not ctx.get(dut.fault)
        ctx.set(dut.a_exps.valid, 0)
        ctx.set(dut.b_exps.valid, 0)
        self.stats["jobs"] += 1
        return taken_cycles


@pytest.mark.parametrize("T,acc_bits", [(2, 18), (8, 32), (64, 53)])
def test_out_exp_matches_golden_for_every_kind_and_kt(T, acc_bits):
    """out_exp of one output tile for every legal pair of kinds (one fp4 at most, each
    fp4 with a random phase) and Kt from 1 to 256 (the bound's bit length changes at
    powers of two), T from 2 to 64, acc_bits from the smallest allowed to 53: each
    equals ``golden.gemm.out_exponents``; every s_t is right too. Jobs run back to back
    with no gaps on the streams."""
    assert acc_bits >= psum_bits(T)
    rng = random.Random(T * 1000 + acc_bits)
    dut = ExponentPrefetch(NibbleParams(tile=T, acc_bits=acc_bits))
    pb = PrefetchBench(dut, rng, p_a=1.0, p_b=1.0, p_s=1.0, p_oe=1.0)
    kts = [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 255, 256]

    async def bench(ctx):
        for kt in kts:
            for kinds in KIND_PAIRS:
                await pb.run(ctx, PrefetchJob(T, acc_bits, (1, kt, 1), kinds, rng))

    simulate(dut, bench)
    assert pb.stats["jobs"] == len(kts) * len(KIND_PAIRS)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("T", [2, 4])
def test_random_jobs_with_stalls(T, seed):
    """Back-to-back jobs of random kinds, phases and tile counts (1 x 1 x 1 included),
    both streams and both queue readers stalling at random: the queues give exactly the
    reference s_t and out_exp, pairs are taken together, ``fault`` stays 0."""
    rng = random.Random(f"{T}-{seed}")
    dut = ExponentPrefetch(NibbleParams(tile=T))
    pb = PrefetchBench(dut, rng, p_a=[0.6, 0.9][seed], p_b=[0.5, 0.3][seed],
                       p_s=[0.5, 0.2][seed], p_oe=[0.3, 0.05][seed])
    shapes = [(1, 1, 1), (2, 3, 2), (3, 1, 4), (1, 5, 1), (4, 2, 3), (2, 2, 2)]

    async def bench(ctx):
        for tiles in shapes:
            await pb.run(ctx, PrefetchJob(T, 32, tiles, rng.choice(KIND_PAIRS), rng))

    simulate(dut, bench)
    assert pb.stats["jobs"] == len(shapes)
    assert pb.stats["one_valid"] > 20


def test_full_rate():
    """Streams always valid, queues read as soon as they show an entry: the first pair
    is taken ``BOUND_CYCLES`` cycles after ``start`` and then one pair every cycle."""
    rng = random.Random(1)
    dut = ExponentPrefetch(NibbleParams(tile=4))
    pb = PrefetchBench(dut, rng, p_a=1.0, p_b=1.0, p_s=1.0, p_oe=1.0)
    result = {}

    async def bench(ctx):
        job = PrefetchJob(4, 32, (3, 2, 4), ("uint4", "fp4"), rng)
        result["cycles"] = await pb.run(ctx, job)
        result["pairs"] = len(job.s)

    simulate(dut, bench)
    cycles = result["cycles"]
    assert cycles[0] == BOUND_CYCLES
    assert cycles == list(range(BOUND_CYCLES, BOUND_CYCLES + result["pairs"]))


@pytest.mark.parametrize("which", ["out_exp", "s", "both"])
def test_queue_room_when_readers_stop(which):
    """A reader that does not read for a long time (the drain waiting for psums): the
    prefetch fills its queue and then stops taking pairs instead of overflowing it
    (``fault`` 0); the out_exp queue (``OE_DEPTH``) with many output tiles of one
    reduction tile each, the s queue (two output tiles of 256 terms) with long
    reductions. When reading resumes, every entry comes out right."""
    T = 2
    rng = random.Random(which)
    dut = ExponentPrefetch(NibbleParams(tile=T))
    pb = PrefetchBench(dut, rng, p_a=1.0, p_b=1.0, p_s=0.9, p_oe=0.9)
    hold = 700
    jobs = {"out_exp": [(4, 1, 5)], "s": [(1, 200, 4)], "both": [(3, 90, 3)]}[which]

    early = {}

    async def bench(ctx):
        for tiles in jobs:
            job = PrefetchJob(T, 32, tiles, ("int4", "fp4"), rng)
            cycles = await pb.run(ctx, job, hold_s=hold if which != "out_exp" else 0,
                                  hold_oe=hold if which != "s" else 0)
            early[tiles] = sum(1 for c in cycles if c <= hold)

    simulate(dut, bench)
    # pairs taken while the reader held back: up to the held queue's room and its
    # output register slice, not beyond
    if which == "out_exp":     # Kt = 1: one pair per output tile
        assert OE_DEPTH - 4 <= early[jobs[0]] <= OE_DEPTH + RegisterSlice.HELD
    else:                      # one pair per s_t
        assert dut.s_depth - 4 <= early[jobs[0]] <= dut.s_depth + RegisterSlice.HELD
    # it stopped for a while: the s queue holds ~510 of the 800 / 810 terms, the out_exp
    # queue 4 of the 20 output tiles
    assert pb.stats["both_valid_waiting"] > 150, "the prefetch never had to wait"


def test_fault_on_pop_of_empty_queue():
    """``fault`` rises (and stays) when the testbench pops an empty s queue, and, on a
    fresh unit, an empty out_exp queue: the deliberate misuse it is there to catch."""
    for port in ("s", "out_exp"):
        dut = ExponentPrefetch(NibbleParams(tile=2))

        async def bench(ctx, dut=dut, port=port):
            await ctx.tick().repeat(2)
            assert not ctx.get(dut.fault)
            q = getattr(dut, port)
            assert not ctx.get(q.rdy)
            ctx.set(q.en, 1)
            await ctx.tick()
            ctx.set(q.en, 0)
            for _ in range(5):
                assert ctx.get(dut.fault), f"{port}: fault did not rise or is not sticky"
                await ctx.tick()

        simulate(dut, bench)


@pytest.mark.parametrize("T", [2, 4])
def test_reset_mid_job_then_clean_job(T):
    """A one-cycle reset in the middle of a job (pairs taken, entries in both queues,
    an out_exp in the pipeline) and a new job with other kinds and counts: the queues
    come back empty and give exactly the new job's entries; ``fault`` stays 0."""
    rng = random.Random(50 + T)
    dut = ExponentPrefetch(NibbleParams(tile=T))
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    pb = PrefetchBench(dut, rng, p_s=0.3, p_oe=0.3)

    async def bench(ctx):
        for cut in (2, 9, 25):
            await pb.run(ctx, PrefetchJob(T, 32, (3, 3, 2), ("uint4", "int4"), rng),
                         cut_after=cut)
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            assert not ctx.get(dut.s.rdy) and not ctx.get(dut.out_exp.rdy)
            assert not ctx.get(dut.fault)
            await pb.run(ctx, PrefetchJob(T, 32, (2, 2, 1), ("fp4", "uint4"), rng))

    simulate(top, bench)
    assert pb.stats["jobs"] == 3
