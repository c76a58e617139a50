"""Tests of ``rtl.result_gather.ResultGather`` in the Amaranth simulator.

The testbench drives the output path's beats (a stream that keeps the stream rules:
a beat stays valid and unchanged until taken, with random gaps) and takes result rows
with a random ``ready``. The reference, from the docstrings of ``ResultGather``,
``out_beat_layout`` and ``rtl.layouts.result_layout``, for a GEMM of Mt x Nt output
tiles:

* every T / L consecutive beats make one result row: in raw mode the beats' L
  accumulators side by side (beat 0 in the lowest bits); in int and fp4 mode the low
  4 L bits (the codes) of each beat side by side in the low 4 T bits, the rest zero
  (the beats' bits above their codes are garbage here, and must not leak); in dual
  fp4 mode T + 2 rows per tile: T rows of the beats' low 4 L bits side by side in the
  low 4 T bits and their next 4 L bits side by side in the next 4 T (the rest zero),
  then two rows of whole beats as in raw mode;
* ``exp`` is the tile's exponent (every beat of a tile carries it);
* ``last`` is set on row Mt Nt T - 1 only, and ``done`` exactly when that row is taken;
* ``saturated`` is the ``saturated`` input as it was when the row first became valid,
  held while the row waits (the input is a sticky flag that may rise at any time).

The result stream must keep the stream rules itself (checked by a background
testbench).
"""

import random
from collections import Counter, deque

import pytest
from amaranth.hdl import ResetInserter, Signal

from golden.params import NibbleParams
from rtl.layouts import command_layout, result_layout
from wire.streams import CODE_BITS, OUT_MODES
from rtl.result_gather import ResultGather, out_beat_layout
from verif.amaranth_streams import simulate, stream_rules


class GatherJob:
    def __init__(self, params, mt, nt, mode, rng):
        T, L, acc = params.tile, params.lanes, params.acc_bits
        self.params, self.mt, self.nt, self.mode = params, mt, nt, mode
        dual = mode == "dual"
        self.cmd = command_layout().const({
            "m_last": mt - 1, "n_last": nt - 1, "k_last": rng.randrange(256),
            "out_mode": OUT_MODES["fp4" if dual else mode], "a_kind": rng.randrange(3),
            # (out_dual set in raw and int mode too: ignored there)
            "out_dual": int(dual or (mode in ("raw", "int") and rng.random() < 0.5)),
        }).as_value().value
        beat_layout = out_beat_layout(params)
        self.beats, self.rows = [], []      # packed beats; (data, exp) per row
        edge = [0, (1 << (L * acc)) - 1, 1 << (L * acc - 1)]
        for tile in range(mt * nt):
            exp = rng.randint(-512, 511)
            codes = (1 << (CODE_BITS * L)) - 1
            for r in range(T + 2 if dual else T):
                row = 0
                for p in range(T // L):
                    d = rng.choice(edge) if rng.random() < 0.1 else rng.getrandbits(L * acc)
                    self.beats.append(beat_layout.const({"data": d, "exp": exp}).as_value().value)
                    if mode == "raw" or r >= T:
                        row |= d << (p * L * acc)
                    else:
                        row |= (d & codes) << (p * CODE_BITS * L)
                        if dual:
                            row |= (d >> (CODE_BITS * L) & codes) << (CODE_BITS * (T + p * L))
                self.rows.append((row, exp))


def decode_result(params, word):
    layout = result_layout(params)
    out = {}
    for name in ("data", "exp", "saturated", "last"):
        f = layout[name]
        v = (word >> f.offset) & ((1 << f.width) - 1)
        if name == "exp" and v >> (f.width - 1):
            v -= 1 << f.width
        out[name] = v
    return out


class GatherBench:
    def __init__(self, dut, params, rng, *, p_valid=0.7, p_ready=0.6, p_sat=0.02):
        self.dut, self.params, self.rng = dut, params, rng
        self.p_valid, self.p_ready, self.p_sat = p_valid, p_ready, p_sat
        self.stats = Counter()
        self.on = {"check": True}

    async def run(self, ctx, job, *, cut_after=None):
        dut, rng = self.dut, self.rng
        beats = deque(job.beats)
        rows = deque(job.rows)
        n_rows = len(job.rows)
        ctx.set(dut.cmd.as_value(), job.cmd)
        ctx.set(dut.start, 1)
        ctx.set(dut.beats.valid, 0)
        ctx.set(dut.saturated, 0)
        assert not ctx.get(dut.result.valid)
        await ctx.tick()
        ctx.set(dut.start, 0)
        self.on["check"] = True
        sat = False                  # the sticky flag (cleared with the job's start)
        valid = False                # the beat stream's current beat
        stalled = None               # expected 'saturated' of a row that waits
        taken, n = 0, 0
        while taken < n_rows:
            n += 1
            if cut_after is not None and n > cut_after:
                self.on["check"] = False
                return
            assert n < 30 * len(job.beats) + 50, f"stuck at row {taken} of {n_rows}"
            where = f"{job.mode} {job.mt}x{job.nt}, cycle {n}, row {taken}"
            if not valid and beats and rng.random() < self.p_valid:
                valid = True
            ctx.set(dut.beats.valid, valid)
            ctx.set(dut.beats.payload.as_value(),
                    beats[0] if valid else rng.getrandbits(len(dut.beats.payload.as_value())))
            if not sat and rng.random() < self.p_sat:
                sat = True
            ctx.set(dut.saturated, sat)
            ready = rng.random() < self.p_ready
            ctx.set(dut.result.ready, ready)
            r_valid = ctx.get(dut.result.valid)
            b_ready = ctx.get(dut.beats.ready)
            done = ctx.get(dut.done)
            if r_valid:
                got = decode_result(self.params, ctx.get(dut.result.payload.as_value()))
                want_data, want_exp = rows[0]
                assert got["data"] == want_data, \
                    f"{where}: data {got['data']:#x}, expected {want_data:#x}"
                assert got["exp"] == want_exp, f"{where}: exp"
                assert got["last"] == (taken == n_rows - 1), f"{where}: last {got['last']}"
                want_sat = sat if stalled is None else stalled
                assert got["saturated"] == want_sat, f"{where}: saturated {got['saturated']}"
                self.stats["sat_frozen"] += stalled is not None and stalled != sat
                if ready:
                    assert valid and b_ready, f"{where}: row taken without its last beat"
                    stalled = None
                else:
                    stalled = got["saturated"]
                    self.stats["stalled_rows"] += 1
            else:
                assert stalled is None, f"{where}: a waiting row was dropped"
            assert done == (r_valid and ready and taken == n_rows - 1), f"{where}: done {done}"
            await ctx.tick()
            if valid and b_ready:
                beats.popleft()
                valid = False
            if r_valid and ready:
                rows.popleft()
                taken += 1
        assert not beats
        ctx.set(dut.beats.valid, 0)
        for _ in range(3):
            assert not ctx.get(dut.result.valid) and not ctx.get(dut.done)
            await ctx.tick()
        self.stats["jobs"] += 1


PARAMS = [(2, 2, 18), (2, 1, 32), (4, 4, 53), (4, 2, 32), (4, 1, 20), (8, 2, 32)]


def pid(p):
    return f"T{p[0]}L{p[1]}acc{p[2]}"


@pytest.mark.parametrize("tl", PARAMS, ids=pid)
def test_back_to_back_jobs_with_stalls(tl):
    """Jobs of every output mode and several tile counts (1 x 1 up to 3 x 2 tiles)
    back to back, beats with random gaps, result ``ready`` random: every row is the
    reference row, with the tile's exp, ``last`` only on the final row, ``done`` with its
    taking, ``saturated`` frozen while a row waits."""
    T, L, acc = tl
    params = NibbleParams(tile=T, lanes=L, acc_bits=acc)
    rng = random.Random(pid(tl))
    dut = ResultGather(params)
    gb = GatherBench(dut, params, rng)
    jobs = [(1, 1, "raw"), (2, 1, "int"), (1, 3, "fp4"), (2, 2, "dual"), (3, 2, "raw"),
            (1, 1, "int"), (2, 2, "fp4"), (1, 3, "dual")]
    if T == 8:
        jobs = jobs[:5]

    async def bench(ctx):
        for mt, nt, mode in jobs:
            await gb.run(ctx, GatherJob(params, mt, nt, mode, rng))

    simulate(dut, bench, stream_rules(dut.result, "result row", gb.on))
    assert gb.stats["jobs"] == len(jobs)
    assert gb.stats["stalled_rows"] > 10


@pytest.mark.parametrize("tl", [(2, 1, 32), (4, 4, 32), (4, 2, 32)], ids=pid)
def test_saturated_rises_while_rows_wait(tl):
    """A consumer that stalls a lot and a flag that rises often (a new job clears it):
    rows that were waiting when the flag rose keep the value they showed first."""
    T, L, acc = tl
    params = NibbleParams(tile=T, lanes=L, acc_bits=acc)
    rng = random.Random(pid(tl) + "sat")
    dut = ResultGather(params)
    gb = GatherBench(dut, params, rng, p_ready=0.3, p_sat=0.08)

    async def bench(ctx):
        for _ in range(8):
            await gb.run(ctx, GatherJob(params, 1, 2, rng.choice(["raw", "int", "dual"]), rng))

    simulate(dut, bench, stream_rules(dut.result, "result row", gb.on))
    assert gb.stats["sat_frozen"] > 0


@pytest.mark.parametrize("tl", [(2, 2, 32), (4, 1, 32)], ids=pid)
def test_full_rate(tl):
    """Beats always valid, result always ready: every beat is taken in the cycle it is
    offered (one per cycle, a row every T / L cycles)."""
    T, L, acc = tl
    params = NibbleParams(tile=T, lanes=L, acc_bits=acc)
    rng = random.Random(3)
    dut = ResultGather(params)
    gb = GatherBench(dut, params, rng, p_valid=1.0, p_ready=1.0)
    job = GatherJob(params, 2, 2, "raw", rng)
    count = Counter()

    async def bench(ctx):
        await gb.run(ctx, job)

    async def beat_monitor(ctx):
        async for _, _, valid, ready in ctx.tick().sample(dut.beats.valid, dut.beats.ready):
            if valid:
                assert ready, "a beat waited with the result always ready"
                count["beats"] += 1

    simulate(dut, bench, beat_monitor)
    assert count["beats"] == len(job.beats)


@pytest.mark.parametrize("tl", [(2, 1, 32), (4, 2, 32), (4, 4, 32)], ids=pid)
def test_reset_mid_job_then_clean_job(tl):
    """A one-cycle reset in the middle of a job (part of a row gathered, rows counted)
    and then a new job with another mode and size: its rows are exact, ``last`` and
    ``done`` come with its own final row."""
    T, L, acc = tl
    params = NibbleParams(tile=T, lanes=L, acc_bits=acc)
    rng = random.Random(pid(tl) + "rst")
    dut = ResultGather(params)
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    gb = GatherBench(dut, params, rng)

    async def bench(ctx):
        for cut in (3, 2 * T + 1, 5 * T):
            await gb.run(ctx, GatherJob(params, 2, 2, "raw", rng), cut_after=cut)
            ctx.set(rst, 1)
            await ctx.tick()
            ctx.set(rst, 0)
            ctx.set(dut.beats.valid, 0)
            assert not ctx.get(dut.result.valid)
            await gb.run(ctx, GatherJob(params, 1, 2, rng.choice(["fp4", "dual"]), rng))

    simulate(top, bench, stream_rules(dut.result, "result row", gb.on))
    assert gb.stats["jobs"] == 3
