"""Tests of ``rtl.drain.PsumDrain`` in the Amaranth simulator.

The testbench plays the drain's surroundings from their docstrings:

* three queue read sides: the exponent prefetch's s_t and out_exp
  (``rtl.queue.QueueRead``: ``rdy`` is "an entry was put in an earlier cycle and not
  popped", ``data`` the oldest entry, ``en`` pops it) and the psum queue's rows (the
  same, or as a stream from a ``StreamQueue``: ``valid``, ``payload``, ``ready``);
  entries arrive at random times, each queue on its own;
* the output unit's credits: ``capacity`` of them, one taken per ``take_credit``, each
  given back some random time later; ``credit`` is "count != 0" as the earlier cycles
  left it, and is also withheld at random;
* the mask stream (``mask_en`` jobs): rows of T bits that keep the stream rules (a
  valid row stays until taken); in jobs without ``mask_en`` a stray valid row is
  offered now and then, and must never be taken.

Reference, for a GEMM of Mt x Nt output tiles of Kt reduction tiles (in the tile order
of :mod:`wire.streams`): for every reduction tile (i, j, t), for every row m of its
T x T partial sums, T / L beats of L elements (row m's elements pL .. pL + L - 1, part
p = 0 first), each with shift = s_t - out_exp(i, j), out_exp(i, j), first = (t == 0),
last = (t == Kt - 1), and on ``last`` beats with ``mask_en`` the mask bits pL .. pL + L
- 1 of mask row m of output tile (i, j). The drain must emit exactly these beats in
order, pop each psum row with its last beat, signal ``tile_read`` with a tile's last
row, take a credit with (and only with) every ``last`` beat and only while ``credit``,
take a mask row with the last beat of each row of a ``last`` tile, and never pop an
empty queue.
"""

import random
from collections import Counter, deque

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal

from golden.formats import QTensor
from golden.gemm import out_exponents
from golden.params import NibbleParams, psum_bits
from rtl.drain import PsumDrain
from rtl.layouts import psum_row_layout, rescale_row_layout
from verif.amaranth_streams import simulate, stream_rules


S_RANGE = (-512, 511)          # signed(S_BITS)
OE_RANGE = (-512, 511)         # signed(OUT_EXP_BITS)


class DrainJob:
    """One GEMM's drain traffic: psum rows, s_t, out_exp, mask rows and the beats."""

    def __init__(self, params, mt, kt, nt, rng, *, mask_en, s=None, oe=None):
        T, L = params.tile, params.lanes
        self.params, self.kt, self.mask_en = params, kt, mask_en
        self.n_out = mt * nt
        bits = psum_bits(T)
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        edge = [lo, hi, 0, -1, 1]
        n_tiles = self.n_out * kt
        # psums[tile][m][n]: random, with the extreme values mixed in
        self.psums = [[[rng.choice(edge) if rng.random() < 0.2 else rng.randint(lo, hi)
                        for _ in range(T)] for _ in range(T)] for _ in range(n_tiles)]
        self.s = s if s is not None else [rng.randint(*S_RANGE) for _ in range(n_tiles)]
        self.oe = oe if oe is not None else [rng.randint(*OE_RANGE) for _ in range(self.n_out)]
        self.mask_rows = ([rng.getrandbits(T) for _ in range(self.n_out * T)]
                          if mask_en else [])
        row_layout = psum_row_layout(params)
        self.psum_words = [row_layout.const(row).as_value().value
                           for tile in self.psums for row in tile]
        beat_layout = rescale_row_layout(params)
        self.beats = []        # (packed payload, mask bits or None, part, row)
        for tile, rows in enumerate(self.psums):
            o, t = divmod(tile, kt)
            last = t == kt - 1
            for m, row in enumerate(rows):
                for p in range(T // L):
                    word = beat_layout.const({
                        "psums": row[p * L:(p + 1) * L], "shift": self.s[tile] - self.oe[o],
                        "out_exp": self.oe[o], "first": int(t == 0), "last": int(last),
                    }).as_value().value
                    mask = ((self.mask_rows[o * T + m] >> (p * L)) & ((1 << L) - 1)
                            if last and mask_en else None)
                    self.beats.append((word, mask, p, m, int(last)))


def queue_ports(port):
    """(rdy, data, en) of a queue read side: a ``QueueRead`` (s and out_exp) or a stream
    from a ``StreamQueue`` (psum: valid, payload, ready), which behave alike here (the
    head stays until taken)."""
    if hasattr(port, "rdy"):
        return port.rdy, port.data, port.en
    return port.valid, port.payload, port.ready


class QueueModel:
    """A queue read side: entries put after a tick are visible from the next cycle."""

    def __init__(self, entries, rng, p_put):
        self.todo, self.rng, self.p_put = deque(entries), rng, p_put
        self.entries = deque()
        self.pops = 0

    @property
    def rdy(self):
        return bool(self.entries)

    def drive(self, ctx, port, garbage_bits):
        rdy, data, _ = queue_ports(port)
        ctx.set(rdy, self.rdy)
        word = self.entries[0] if self.entries else self.rng.getrandbits(garbage_bits)
        ctx.set(data.as_value() if hasattr(data, "as_value") else data, word)

    def after_tick(self, pop, burst=1):
        if pop:
            self.entries.popleft()
            self.pops += 1
        if self.todo and self.rng.random() < self.p_put:
            for _ in range(burst):
                if self.todo:
                    self.entries.append(self.todo.popleft())

    @property
    def empty(self):
        return not self.todo and not self.entries


class DrainBench:
    def __init__(self, dut, params, rng, *, capacity=3, p_psum=0.6, p_exp=0.5,
                 p_withhold=0.2, p_mask=0.5, give_delay=(1, 8)):
        self.dut, self.params, self.rng = dut, params, rng
        self.capacity, self.p_psum, self.p_exp = capacity, p_psum, p_exp
        self.p_withhold, self.p_mask, self.give_delay = p_withhold, p_mask, give_delay
        self.stats = Counter()
        self.checking = {"check": False}  # the mask stream checker: on in mask_en jobs
        self.reset_credits()

    def reset_credits(self):
        self.credits, self.gives, self.cycle = self.capacity, [], 0

    async def run(self, ctx, job, *, cut_after=None, psum_burst=1):
        dut, rng, T = self.dut, self.rng, self.params.tile
        psum_rdy, psum_data, psum_pop = queue_ports(dut.psum)
        psum_bits_row = len(psum_data.as_value())
        psum_q = QueueModel(job.psum_words, rng, self.p_psum)
        s_q = QueueModel(job.s, rng, self.p_exp)
        oe_q = QueueModel(job.oe, rng, self.p_exp)
        masks = deque(job.mask_rows)
        mask_valid, mask_payload = False, 0
        beats = deque(job.beats)
        emitted, tiles_read = [], 0
        self.checking["check"] = job.mask_en
        # start (k_last given with it, steady for the job)
        ctx.set(dut.start, 1)
        ctx.set(dut.k_last, job.kt - 1)
        ctx.set(dut.mask_en, job.mask_en)
        ctx.set(psum_rdy, 0)
        ctx.set(dut.s.rdy, 0)
        ctx.set(dut.out_exp.rdy, 0)
        ctx.set(dut.mask.valid, 0)
        await self.tick(ctx)
        ctx.set(dut.start, 0)
        n = 0
        while beats or not (psum_q.empty and s_q.empty and oe_q.empty):
            n += 1
            if cut_after is not None and n > cut_after:
                return
            assert n < 40 * len(job.beats) + 200, f"stuck: {len(beats)} beats left"
            where = f"cycle {n}, beat {len(job.beats) - len(beats)} of {len(job.beats)}"
            psum_q.drive(ctx, dut.psum, psum_bits_row)
            s_q.drive(ctx, dut.s, 10)
            oe_q.drive(ctx, dut.out_exp, 10)
            credit = self.credits > 0 and rng.random() >= self.p_withhold
            ctx.set(dut.credit, credit)
            # the mask stream: a row stays valid until taken
            if not mask_valid:
                if job.mask_en and masks and rng.random() < self.p_mask:
                    mask_valid, mask_payload = True, masks.popleft()
                elif not job.mask_en and rng.random() < 0.1:
                    mask_valid, mask_payload = True, rng.getrandbits(T)   # stray row
            ctx.set(dut.mask.valid, mask_valid)
            ctx.set(dut.mask.payload, mask_payload)

            psum_en, s_en, oe_en = (ctx.get(psum_pop), ctx.get(dut.s.en),
                                    ctx.get(dut.out_exp.en))
            valid = ctx.get(dut.beat.valid)
            take, tile_read = ctx.get(dut.take_credit), ctx.get(dut.tile_read)
            mask_ready = ctx.get(dut.mask.ready)
            assert not psum_en or psum_q.rdy, f"{where}: psum popped while empty"
            assert not s_en or s_q.rdy, f"{where}: s popped while empty"
            assert not oe_en or oe_q.rdy, f"{where}: out_exp popped while empty"
            if valid:
                assert beats, f"{where}: a beat too many"
                word, mask, part, row, last = beats.popleft()
                got = ctx.get(dut.beat.payload.as_value())
                assert got == word, f"{where}: beat {got:#x}, expected {word:#x}"
                if mask is not None:
                    assert ctx.get(dut.beat_mask) == mask, f"{where}: beat_mask"
                assert not last or credit, f"{where}: last beat without a credit"
                pop = part == T // self.params.lanes - 1
                self.stats["last_beats"] += last
            else:
                last, pop, row = 0, False, None
                self.stats["idle"] += 1
            assert take == last, f"{where}: take_credit {take}"
            assert psum_en == pop, f"{where}: psum.en {psum_en}, expected {pop}"
            assert tile_read == (pop and row == T - 1), f"{where}: tile_read"
            assert mask_ready == (pop and last and job.mask_en), f"{where}: mask.ready"
            assert not mask_ready or mask_valid, f"{where}: took a mask row that is not there"
            self.stats["credit_wait"] += (not credit and psum_q.rdy
                                          and bool(beats) and beats[0][4] == 1)
            await self.tick(ctx)
            emitted.append(valid)
            tiles_read += tile_read
            psum_q.after_tick(psum_en, psum_burst)
            s_q.after_tick(s_en)
            oe_q.after_tick(oe_en)
            if mask_ready:
                mask_valid = False
            if take:
                self.credits -= 1
                self.gives.append(self.cycle + rng.randint(*self.give_delay))
        # all entries were consumed: check the counts, then a few quiet cycles
        assert tiles_read == len(job.psums)
        assert s_q.pops == len(job.s) and oe_q.pops == len(job.oe)
        assert not masks and (not mask_valid or not job.mask_en)
        ctx.set(psum_rdy, 0)
        ctx.set(dut.s.rdy, 0)
        ctx.set(dut.out_exp.rdy, 0)
        ctx.set(dut.mask.valid, 0)
        self.checking["check"] = False
        for _ in range(4):
            assert not ctx.get(dut.beat.valid)
            await self.tick(ctx)
        self.stats["jobs"] += 1
        return emitted

    async def tick(self, ctx):
        await ctx.tick()
        self.cycle += 1
        back = [c for c in self.gives if c <= self.cycle]
        self.gives = [c for c in self.gives if c > self.cycle]
        self.credits += len(back)


PARAMS = [(2, 2), (2, 1), (4, 4), (4, 2), (4, 1), (8, 8), (8, 2)]


def params_id(p):
    return f"T{p[0]}L{p[1]}"


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("tl", PARAMS, ids=params_id)
def test_random_jobs_with_stalls(tl, seed):
    """Back-to-back jobs with different Kt, tile counts and mask_en (including 1 x 1 x 1
    tiles and Kt = 1), every input stalling at random and credits scarce: the beats are
    exactly the reference beats, and every handshake output is right in every cycle."""
    T, L = tl
    params = NibbleParams(tile=T, lanes=L)
    rng = random.Random(f"drain-{T}-{L}-{seed}")
    dut = PsumDrain(params)
    if seed == 0:
        db = DrainBench(dut, params, rng, capacity=rng.choice([1, 2, 4]))
        shapes = [(1, 1, 1), (2, 3, 1), (1, 1, 3), (2, 2, 2), (3, 1, 2)]
    else:    # exponents late and credits plentiful but withheld often
        db = DrainBench(dut, params, rng, capacity=16, p_psum=0.9, p_exp=0.15,
                        p_withhold=0.5, p_mask=0.3, give_delay=(5, 30))
        shapes = [(1, 4, 2), (2, 1, 1), (1, 2, 1), (1, 1, 1), (2, 2, 1)]
    if T == 8:
        shapes = shapes[:3]

    async def bench(ctx):
        for k, (mt, kt, nt) in enumerate(shapes):
            await db.run(ctx, DrainJob(params, mt, kt, nt, rng, mask_en=k % 2 == 0),
                         psum_burst=rng.choice([1, T]))

    # the testbench's own mask stream keeps the stream rules in mask_en jobs (the stray
    # rows of the other jobs come and go as they like)
    simulate(dut, bench, stream_rules(dut.mask, "mask row", db.checking))
    assert db.stats["jobs"] == len(shapes)
    assert db.stats["credit_wait"] > 0


@pytest.mark.parametrize("tl", [(2, 2), (2, 1), (4, 4), (4, 1), (8, 4)], ids=params_id)
def test_full_rate(tl):
    """Every queue entry there from the start, credits and mask rows never short: one
    beat per cycle from the first beat to the last when a tile has T T / L >= 4 beats;
    at least one tile every three cycles otherwise (the tag stage's pace)."""
    T, L = tl
    params = NibbleParams(tile=T, lanes=L)
    rng = random.Random(T * 7 + L)
    dut = PsumDrain(params)
    db = DrainBench(dut, params, rng, capacity=10 ** 6, p_psum=1.0, p_exp=1.0,
                    p_withhold=0.0, p_mask=1.0)
    job = DrainJob(params, 2, 3, 2, rng, mask_en=True)
    # the queues get everything at once: a put burst as long as the job
    result = {}

    async def bench(ctx):
        result["emitted"] = await db.run(ctx, job, psum_burst=len(job.psum_words))

    simulate(dut, bench)
    emitted = result["emitted"]
    first = emitted.index(1)
    last = len(emitted) - 1 - emitted[::-1].index(1)
    span = last - first + 1
    per_tile = T * T // L
    if per_tile >= 4:
        assert span == len(job.beats), f"{span} cycles for {len(job.beats)} beats"
    else:
        assert span <= 3 * len(job.psums), f"{span} cycles for {len(job.psums)} tiles"


def test_exponents_from_golden():
    """Shifts and out_exps of real tile exponents: s_t = Ea[i, t] + Eb[t, j] + phases
    (the exponent prefetch's output, in tile order) and out_exp from
    ``golden.gemm.out_exponents``; each beat's shift must be golden's
    Ea + Eb + phases - out_exp of its tile term."""
    T, L = 4, 2
    params = NibbleParams(tile=T, lanes=L)
    rng = random.Random(11)
    gen = np.random.default_rng(11)
    M, K, N = 2 * T + 1, 3 * T - 1, T + 2
    a = QTensor(gen.integers(0, 16, (M, K)), gen.integers(-128, 128, (3, 3)), "uint4", T)
    b = QTensor(gen.integers(0, 16, (K, N)), gen.integers(-128, 128, (3, 2)), "fp4", T, 1)
    oe_golden = out_exponents(a, b, params.acc_bits)
    mt, kt, nt = oe_golden.shape[0], a.exps.shape[1], oe_golden.shape[1]
    s = [int(a.exps[i, t]) + int(b.exps[t, j]) + a.phase + b.phase
         for i in range(mt) for j in range(nt) for t in range(kt)]
    oe = [int(oe_golden[i, j]) for i in range(mt) for j in range(nt)]
    job = DrainJob(params, mt, kt, nt, rng, mask_en=False, s=s, oe=oe)
    # golden's shift of each term (tiled_gemm: ea + eb - out_exps, phases in ea, eb)
    ea, eb = a.exps.astype(int) + a.phase, b.exps.astype(int) + b.phase
    want = [int(ea[i, t] + eb[t, j] - oe_golden[i, j])
            for i in range(mt) for j in range(nt) for t in range(kt)]
    layout = rescale_row_layout(params)
    per_tile = T * T // L
    dut = PsumDrain(params)
    db = DrainBench(dut, params, rng)

    async def bench(ctx):
        await db.run(ctx, job)

    simulate(dut, bench)
    # the reference beats the run was checked against carry golden's shifts
    shift_field = layout["shift"]
    width = shift_field.width
    for tile, shift in enumerate(want):
        word = job.beats[tile * per_tile][0]
        raw = (word >> shift_field.offset) & ((1 << width) - 1)
        assert raw - ((raw >> (width - 1)) << width) == shift


@pytest.mark.parametrize("tl", [(2, 1), (4, 4)], ids=params_id)
def test_reset_mid_job_then_clean_job(tl):
    """A one-cycle reset in the middle of a job (a tile partly drained, a tag fetched,
    credits out) followed by a fresh start with another Kt and mask setting: the new
    job's beats are exactly its reference beats."""
    T, L = tl
    params = NibbleParams(tile=T, lanes=L)
    rng = random.Random(T + 100 * L)
    dut = PsumDrain(params)
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    db = DrainBench(dut, params, rng, capacity=2)

    async def bench(ctx):
        for cut in (5, 2 * T * T // L + 3):
            await db.run(ctx, DrainJob(params, 2, 3, 1, rng, mask_en=True), cut_after=cut)
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            db.reset_credits()
            assert not ctx.get(dut.beat.valid)
            await db.run(ctx, DrainJob(params, 1, 2, 2, rng, mask_en=False))

    simulate(top, bench)
    assert db.stats["jobs"] == 2
