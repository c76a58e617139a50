"""Tests of ``rtl.narrower.Narrower`` in the Amaranth simulator.

One bench drives both sides cycle by cycle against a Python model of the docstring:

* writer: sends a beat (L accumulators, out_exp, L mask and L clip-mask bits) only with
  one of ``capacity`` credits, a credit coming back (usable from the next cycle, as a
  :class:`rtl.queue.Credits` register gives it) for every ``freed``;
* reader side: ``credit`` from a model of a downstream buffer with random room;
  every ``take_credit`` is checked to come with ``credit``, and the beat on ``r`` three
  cycles later must be the next group of the oldest input beat not yet sent: elements
  gQ..gQ+Q-1 with their mask bits and the beat's out_exp.

A read that overtakes a write, a slot overwritten before it is read, a group out of
order or a beat dropped or sent twice shows up as a wrong or missing beat.
"""

import random
from collections import Counter, deque

import pytest
from amaranth.hdl import ResetInserter, Signal

from golden.params import NibbleParams
from rtl.narrower import Narrower
from verif.amaranth_streams import simulate


def _split(word, width, n):
    return [word >> (width * i) & ((1 << width) - 1) for i in range(n)]


class NarrowerBench:
    """The writer and the downstream buffer of one Narrower, with the model."""

    def __init__(self, dut, params, rng, *, p_write=0.7, p_room=0.6):
        self.dut, self.p, self.rng = dut, params, rng
        self.L, self.Q, self.G = params.lanes, params.out_lanes, dut.groups
        self.p_write, self.p_room = p_write, p_room
        self.acc_bits = params.acc_bits
        self.cycle = 0
        self.stats = Counter()
        self.reset_model()

    def reset_model(self):
        self.credits = self.dut.capacity
        self.to_send = deque()        # (accs, out_exp, mask, clip) the writer still has
        self.pending = deque()        # groups written, not read yet, in order
        self.expected = deque()       # groups read, expected on r, in order
        self.in_flight = deque()      # cycles at which a read's beat must show on r
        self.got = []

    def send(self, n):
        rng = self.rng
        for _ in range(n):
            accs = [rng.choice([0, 1, -1, (1 << (self.acc_bits - 1)) - 1,
                                -(1 << (self.acc_bits - 1)),
                                rng.randrange(-(1 << (self.acc_bits - 1)),
                                              1 << (self.acc_bits - 1))])
                    for _ in range(self.L)]
            self.to_send.append((accs, rng.randrange(-512, 512), rng.getrandbits(self.L),
                                 rng.getrandbits(self.L)))

    @property
    def idle(self):
        return not (self.to_send or self.pending or self.expected or self.in_flight)

    async def cycle_once(self, ctx):
        dut, rng, Q = self.dut, self.rng, self.Q
        where = f"cycle {self.cycle}"
        # ---- the beat on r: exactly when a read made three cycles ago shows
        valid = ctx.get(dut.r.valid)
        due = bool(self.in_flight) and self.in_flight[0] == self.cycle
        assert valid == due, f"{where}: r.valid {valid}, expected {int(due)}"
        if due:
            self.in_flight.popleft()
            accs, exp, mask, clip = self.expected.popleft()
            got = ([ctx.get(dut.r.payload.acc[n]) for n in range(Q)],
                   ctx.get(dut.r.payload.out_exp), ctx.get(dut.r_mask), ctx.get(dut.r_clip_mask))
            assert got == (accs, exp, mask, clip), f"{where}: beat {got}, expected " \
                                                   f"{(accs, exp, mask, clip)}"
            self.got.append(got)
        # ---- inputs
        write = self.credits > 0 and bool(self.to_send) and rng.random() < self.p_write
        self.stats["no_credit"] += bool(self.to_send) and self.credits == 0
        room = rng.random() < self.p_room
        ctx.set(dut.w.valid, write)
        ctx.set(dut.credit, room)
        if write:
            accs, exp, mask, clip = self.to_send[0]
            for n in range(self.L):
                ctx.set(dut.w.payload.acc[n], accs[n])
            ctx.set(dut.w.payload.out_exp, exp)
            ctx.set(dut.w_mask, mask)
            ctx.set(dut.w_clip_mask, clip)
        take, freed = ctx.get(dut.take_credit), ctx.get(dut.freed)
        assert not take or room, f"{where}: a read without a credit"
        assert not ctx.get(dut.fault), f"{where}: fault"
        await ctx.tick()
        self.cycle += 1
        # ---- model update
        if write:
            accs, exp, mask, clip = self.to_send.popleft()
            self.credits -= 1
            for g in range(self.G):
                self.pending.append((accs[g * Q:(g + 1) * Q], exp,
                                     mask >> (g * Q) & ((1 << Q) - 1),
                                     clip >> (g * Q) & ((1 << Q) - 1)))
        if take:
            assert self.pending, f"{where}: a read with nothing written"
            self.expected.append(self.pending.popleft())
            self.in_flight.append(self.cycle - 1 + Narrower.latency)
            self.stats["reads"] += 1
            last_group = len(self.pending) % self.G == 0
            assert freed == last_group, f"{where}: freed {freed}, expected {int(last_group)}"
            self.credits += freed
        else:
            assert not freed, f"{where}: freed without a read"
        self.stats["room_idle"] += room and not take and bool(self.pending)

    async def run_until_idle(self, ctx, limit=20000):
        start = self.cycle
        while not self.idle:
            await self.cycle_once(ctx)
            assert self.cycle - start < limit, "narrower deadlocked"


CASES = [  # (tile, lanes, out_lanes, acc_bits)
    (4, 4, 2, 32), (4, 4, 1, 19), (8, 8, 2, 20), (16, 16, 4, 32), (8, 4, 1, 24),
]


@pytest.mark.parametrize("tile,lanes,out_lanes,acc_bits", CASES)
@pytest.mark.parametrize("phase", ["balanced", "slow_reader", "fast"])
def test_random_traffic_matches_model(tile, lanes, out_lanes, acc_bits, phase):
    """Random writes (only with a credit) and random room behind: every beat comes out
    as its G groups, in order, with its mask bits and out_exp, three cycles after the
    read; ``freed`` exactly on a beat's last group; no read without a credit. The run
    fills the narrower (writer out of credits) and drains it many times."""
    p_write, p_room = {"balanced": (0.5, 0.7), "slow_reader": (0.9, 0.3),
                       "fast": (1.0, 1.0)}[phase]
    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes, out_lanes=out_lanes)
    dut = Narrower(params)
    assert dut.capacity == 2 * tile * tile // lanes and dut.groups == lanes // out_lanes
    tb = NarrowerBench(dut, params, random.Random(f"{tile}-{out_lanes}-{phase}"),
                       p_write=p_write, p_room=p_room)
    n = 6 * dut.capacity

    async def bench(ctx):
        tb.send(n)
        await tb.run_until_idle(ctx)
        for _ in range(6):                  # nothing more comes out
            await tb.cycle_once(ctx)

    simulate(dut, bench)
    assert len(tb.got) == n * dut.groups
    if phase == "slow_reader":
        assert tb.stats["no_credit"] > 0, "the narrower never filled up"
    if phase == "fast":                     # a read in every cycle with a group stored
        assert tb.stats["room_idle"] <= 2   # (but the first: the count is a register)


def test_reset_in_the_middle():
    """Reset with beats stored and reads in flight leaves nothing behind: afterwards
    the same model holds from an empty narrower with full credits."""
    params = NibbleParams(tile=8, acc_bits=32, lanes=8, out_lanes=2)
    dut = Narrower(params)
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    tb = NarrowerBench(dut, params, random.Random(5), p_write=0.9, p_room=0.5)

    async def bench(ctx):
        tb.send(3 * dut.capacity)
        for _ in range(40):
            await tb.cycle_once(ctx)
        assert tb.stats["reads"] > 0 and tb.pending
        ctx.set(rst, 1)
        ctx.set(dut.w.valid, 0)
        await ctx.tick()
        ctx.set(rst, 0)
        tb.reset_model()
        tb.send(2 * dut.capacity)
        await tb.run_until_idle(ctx)

    simulate(top, bench)
    assert len(tb.got) == 2 * dut.capacity * dut.groups


@pytest.mark.parametrize("groups_read", [0, 1, 3])
def test_write_into_a_full_narrower_faults(groups_read):
    """A writer that ignores its credits: the write into a full memory sets ``fault``,
    also when the oldest beat has some of its groups read (its slot is still taken
    until the last one)."""
    params = NibbleParams(tile=4, acc_bits=32, lanes=4, out_lanes=1)
    dut = Narrower(params, depth=2)

    async def bench(ctx):
        ctx.set(dut.credit, 0)
        ctx.set(dut.w.valid, 1)
        for _ in range(2):
            await ctx.tick()
        ctx.set(dut.w.valid, 0)
        for _ in range(2):                 # the count and its ready flag settle
            await ctx.tick()
        ctx.set(dut.credit, 1)
        for _ in range(groups_read):
            assert ctx.get(dut.take_credit)
            await ctx.tick()
        ctx.set(dut.credit, 0)
        assert not ctx.get(dut.fault)
        ctx.set(dut.w.valid, 1)
        await ctx.tick()
        await ctx.tick()
        assert ctx.get(dut.fault)

    simulate(dut, bench)


def test_refuses_bad_widths():
    with pytest.raises(ValueError, match="out_lanes < lanes"):
        Narrower(NibbleParams(tile=4, acc_bits=32))
    with pytest.raises(ValueError, match="out_lanes must be a power of two in 1..4"):
        NibbleParams(tile=8, acc_bits=32, lanes=4, out_lanes=8)
    with pytest.raises(ValueError, match="out_lanes must be a power of two"):
        NibbleParams(tile=8, acc_bits=32, out_lanes=3)
