"""Tests of ``rtl.queue`` (Queue, StreamQueue, Credits, RegisterSlice) in the Amaranth
simulator.

Every test plays one testbench that drives the inputs and checks the outputs cycle by
cycle against a Python model built from the docstrings:

* Queue: a deque of (entry, write cycle); ``level`` is the deque's length, ``r.rdy`` is
  "the head was written at least 2 cycles ago", ``r.data`` the head's entry.
* StreamQueue: the beats sent and received in order; a credited producer counts
  ``capacity`` credits, a non-credited one watches ``w.ready``.
* Credits: an integer count; ``ok`` in a cycle is ``count != 0`` for the count that the
  takes and gives of all earlier cycles left.
"""

import random
from collections import Counter, deque

import pytest
from amaranth.hdl import ResetInserter, Signal

from rtl.queue import Credits, Queue, RegisterSlice, StreamQueue, ram_attrs
from verif.amaranth_streams import simulate, stream_rules

#: Cycles from a write into an empty Queue to ``r.rdy`` (Queue docstring).
VISIBLE_AFTER = 2


# ---------------------------------------------------------------------------------------
# Queue
# ---------------------------------------------------------------------------------------

async def queue_random_traffic(ctx, dut, depth, width, rng, cycles, stats):
    """Random writes (only while ``level != depth``, with phases that favour filling,
    draining or neither) and random pops (only while ``rdy``) on a Queue that is empty at
    the start; every cycle checks ``level``, ``rdy``, ``r.data`` and ``fault`` against a
    deque model. Returns the model's entries left in the queue."""
    model = deque()                         # (entry, cycle of its write)
    phases = [(0.85, 0.3), (0.3, 0.85), (0.6, 0.6), (1.0, 1.0)]
    for cycle in range(cycles):
        p_write, p_pop = phases[(cycle // (97 + 2 * depth)) % len(phases)]
        level, rdy, data, fault = (ctx.get(dut.level), ctx.get(dut.r.rdy),
                                   ctx.get(dut.r.data), ctx.get(dut.fault))
        visible = sum(1 for _, written in model if written <= cycle - VISIBLE_AFTER)
        assert level == len(model), f"cycle {cycle}: level {level}, model {len(model)}"
        assert rdy == (visible > 0), f"cycle {cycle}: rdy {rdy}, {visible} visible"
        if rdy:
            assert data == model[0][0], f"cycle {cycle}: head {data}, model {model[0][0]}"
        assert not fault, f"cycle {cycle}: fault"
        write = level != depth and rng.random() < p_write
        pop = rdy and rng.random() < p_pop
        entry = rng.getrandbits(width)      # also garbage on the ignored cycles
        ctx.set(dut.w.valid, write)
        ctx.set(dut.w.payload, entry)
        ctx.set(dut.r.en, pop)
        await ctx.tick()
        stats["full"] += level == depth
        stats["empty_write"] += write and not model
        stats["write_pop"] += write and pop
        stats["pops"] += pop
        if pop:
            model.popleft()
        if write:
            model.append((entry, cycle))
    ctx.set(dut.w.valid, 0)
    ctx.set(dut.r.en, 0)
    return model


def test_ram_attrs_follow_the_family():
    """Block RAM from BLOCK_RAM_BITS up unless LUT RAM is asked for; an iCE40, which
    has no LUT RAM, gets block RAM unless flip-flops are asked for."""
    class Ice40:
        family = "iCE40"

    class Ecp5:
        family = "ECP5"
    assert ram_attrs(520, 16, Ecp5()) == {"ram_style": "block"}
    assert ram_attrs(520, 16, Ecp5(), lut_ram=True) == {"ram_style": "distributed"}
    assert ram_attrs(8, 4, Ecp5()) == {}
    assert ram_attrs(8, 4, Ice40()) == {"ram_style": "block"}
    assert ram_attrs(520, 16, Ice40(), lut_ram=True) == {"ram_style": "block"}
    assert ram_attrs(8, 4, Ice40(), registers=True) == {"ram_style": "logic"}
    assert ram_attrs(8, 4, Ecp5(), registers=True) == {"ram_style": "logic"}


@pytest.mark.parametrize("lut_ram", [False, True], ids=["ram", "lut_ram"])
@pytest.mark.parametrize("depth", [1, 2, 3, 5, 16, 64])
def test_queue_random_traffic_matches_model(depth, lut_ram):
    """Thousands of cycles of random writes and pops: entries leave in order with no loss
    or duplication, ``level`` counts every entry from the cycle after its write, ``rdy``
    rises exactly 2 cycles after a write into an empty queue and covers just the entries
    written at least 2 cycles ago, ``fault`` stays 0. Depths include 1, non-powers of two
    and 64 x 8 bits, which asks for block RAM."""
    width = 8 if not lut_ram else 70       # (LUT RAM: three slices, the last one short)
    assert (ram_attrs(8, depth) == {"ram_style": "block"}) == (depth == 64)
    dut = Queue(width, depth, lut_ram=lut_ram)
    rng = random.Random(1000 + depth)
    stats = Counter()

    async def bench(ctx):
        await queue_random_traffic(ctx, dut, depth, width, rng, 3000, stats)

    simulate(dut, bench)
    # the run reached every corner it claims to check
    assert stats["full"] > 50 and stats["empty_write"] > 20
    assert stats["write_pop"] > 100 or depth == 1     # depth 1: never both at once
    assert stats["pops"] > 4 * depth          # both pointers wrapped several times


def test_queue_entry_visible_two_cycles_after_write():
    """A single write into an empty queue: ``level`` is 1 from the next cycle, ``rdy``
    and the entry appear exactly 2 cycles after the write; after the pop ``level`` and
    ``rdy`` are 0 from the next cycle."""
    dut = Queue(8, 4)

    async def bench(ctx):
        await ctx.tick().repeat(3)
        ctx.set(dut.w.valid, 1)
        ctx.set(dut.w.payload, 0xA5)
        await ctx.tick()
        ctx.set(dut.w.valid, 0)
        assert (ctx.get(dut.level), ctx.get(dut.r.rdy)) == (1, 0)
        await ctx.tick()
        assert (ctx.get(dut.level), ctx.get(dut.r.rdy), ctx.get(dut.r.data)) == (1, 1, 0xA5)
        ctx.set(dut.r.en, 1)
        await ctx.tick()
        ctx.set(dut.r.en, 0)
        assert (ctx.get(dut.level), ctx.get(dut.r.rdy), ctx.get(dut.fault)) == (0, 0, 0)

    simulate(dut, bench)


@pytest.mark.parametrize("depth", [1, 3, 16])
def test_queue_write_while_full_faults_and_is_dropped(depth):
    """Writing into a full queue sets the sticky ``fault`` in the next cycle; the extra
    entry is dropped: ``level`` stays ``depth`` and the queue gives back exactly the
    entries it held, in order, and then nothing."""
    dut = Queue(8, depth)
    entries = [(37 * i + 11) & 0xFF for i in range(depth)]

    async def bench(ctx):
        for entry in entries:
            ctx.set(dut.w.valid, 1)
            ctx.set(dut.w.payload, entry)
            await ctx.tick()
        ctx.set(dut.w.payload, 0xEE)          # w.valid stays 1: one write too many
        assert (ctx.get(dut.level), ctx.get(dut.fault)) == (depth, 0)
        await ctx.tick()
        ctx.set(dut.w.valid, 0)
        assert (ctx.get(dut.level), ctx.get(dut.fault)) == (depth, 1)
        got = []
        for _ in range(4 * depth + 10):
            assert ctx.get(dut.fault), "fault is not sticky"
            rdy = ctx.get(dut.r.rdy)
            if rdy:
                got.append(ctx.get(dut.r.data))
            ctx.set(dut.r.en, rdy)
            await ctx.tick()
        assert got == entries
        assert (ctx.get(dut.level), ctx.get(dut.r.rdy), ctx.get(dut.fault)) == (0, 0, 1)

    simulate(dut, bench)


def test_queue_pop_while_empty_faults():
    """A pop of an empty queue sets the sticky ``fault`` and changes nothing (level 0,
    and a later entry still comes out); so does a pop of an entry written last cycle,
    which is stored but not yet visible (``rdy`` 0): that entry is not lost."""
    async def pop_empty(ctx, dut):
        ctx.set(dut.r.en, 1)
        await ctx.tick()
        ctx.set(dut.r.en, 0)
        assert (ctx.get(dut.fault), ctx.get(dut.level), ctx.get(dut.r.rdy)) == (1, 0, 0)

    async def pop_invisible(ctx, dut):
        ctx.set(dut.w.valid, 1)
        ctx.set(dut.w.payload, 0x3C)
        await ctx.tick()
        ctx.set(dut.w.valid, 0)
        assert (ctx.get(dut.level), ctx.get(dut.r.rdy)) == (1, 0)
        ctx.set(dut.r.en, 1)
        await ctx.tick()
        ctx.set(dut.r.en, 0)
        assert (ctx.get(dut.fault), ctx.get(dut.level), ctx.get(dut.r.rdy)) == (1, 1, 1)

    for case in (pop_empty, pop_invisible):
        dut = Queue(8, 3)

        async def bench(ctx, dut=dut, case=case):
            await ctx.tick()
            await case(ctx, dut)
            for _ in range(5):
                await ctx.tick()
                assert ctx.get(dut.fault), "fault is not sticky"
            # still a working queue: the next entry comes out, nothing else does
            ctx.set(dut.w.valid, 1)
            ctx.set(dut.w.payload, 0x5A)
            await ctx.tick()
            ctx.set(dut.w.valid, 0)
            got = []
            for _ in range(6):
                rdy = ctx.get(dut.r.rdy)
                if rdy:
                    got.append(ctx.get(dut.r.data))
                ctx.set(dut.r.en, rdy)
                await ctx.tick()
            assert got == ([0x5A] if case is pop_empty else [0x3C, 0x5A])

        simulate(dut, bench)


def test_queue_reset_in_the_middle():
    """A one-cycle reset (ResetInserter) after random traffic, of a queue holding
    entries (full again through an entry written in the cycle before the reset, still on
    its way to ``rdy``) with a sticky fault set: the queue comes back empty (``rdy`` 0, ``level`` 0, ``fault`` 0), none of the old entries ever
    appears, and random traffic afterwards matches the model again."""
    depth, width = 5, 8
    dut = Queue(width, depth)
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    rng = random.Random(7)
    stats = Counter()

    async def bench(ctx):
        await queue_random_traffic(ctx, dut, depth, width, rng, 300, stats)
        ctx.set(dut.w.valid, 1)               # fill up, then one write too many
        ctx.set(dut.w.payload, 0x11)
        while ctx.get(dut.level) != depth:
            await ctx.tick()
        await ctx.tick()
        ctx.set(dut.w.valid, 0)
        assert ctx.get(dut.fault)
        while not ctx.get(dut.r.rdy):
            await ctx.tick()
        ctx.set(dut.r.en, 1)                  # make room for one
        await ctx.tick()
        ctx.set(dut.r.en, 0)
        ctx.set(dut.w.valid, 1)               # an entry on its way during the reset
        ctx.set(dut.w.payload, 0x33)
        await ctx.tick()
        ctx.set(dut.w.valid, 0)
        assert ctx.get(dut.level) == depth and ctx.get(dut.r.rdy)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        for _ in range(6):
            assert (ctx.get(dut.r.rdy), ctx.get(dut.level), ctx.get(dut.fault)) == (0, 0, 0)
            await ctx.tick()
        await queue_random_traffic(ctx, dut, depth, width, rng, 600, stats)

    simulate(top, bench)
    assert stats["full"] > 10 and stats["pops"] > 2 * depth


# ---------------------------------------------------------------------------------------
# StreamQueue
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stages,lut_ram", [(0, False), (1, False), (2, False), (1, True)])
@pytest.mark.parametrize("p_stall", [0.5, 0.9])
@pytest.mark.parametrize("depth", [1, 3, 8, 64])
def test_stream_queue_credited_random_stalls(depth, p_stall, stages, lut_ram):
    """A producer that sends only with one of ``capacity`` credits (one given back for
    each beat taken from ``r``) and a consumer whose ``ready`` is low with probability
    ``p_stall``: every beat comes out once, in order, ``fault`` stays 0, ``r`` keeps the
    stream rules, and the producer does run out of credits (the credits are the only
    thing that keeps the memory from overflowing)."""
    width, n = 12, 500
    dut = StreamQueue(width, depth, credited=True, read_stages=stages, lut_ram=lut_ram)
    assert dut.capacity == depth
    rng = random.Random(int(100 * p_stall) + depth)
    stats = Counter()

    async def bench(ctx):
        credits, sent, got, cycle = dut.capacity, [], [], 0
        while len(got) < n:
            send = credits > 0 and len(sent) < n and rng.random() < 0.8
            beat = rng.getrandbits(width)
            ready = rng.random() >= p_stall
            ctx.set(dut.w.valid, send)
            ctx.set(dut.w.payload, beat)
            ctx.set(dut.r.ready, ready)
            valid, payload = ctx.get(dut.r.valid), ctx.get(dut.r.payload)
            assert not ctx.get(dut.fault), f"cycle {cycle}: fault"
            await ctx.tick()
            stats["no_credit"] += credits == 0
            if send:
                credits -= 1
                sent.append(beat)
            if valid and ready:
                got.append(payload)
                assert payload == sent[len(got) - 1], f"beat {len(got) - 1} differs"
                credits += 1
            cycle += 1
            assert cycle < 40 * n, f"deadlock: {len(got)} of {n} beats out"
        ctx.set(dut.w.valid, 0)
        await ctx.tick().repeat(10)
        assert not ctx.get(dut.r.valid) and not ctx.get(dut.fault)
        assert got == sent and credits == dut.capacity

    simulate(dut, bench, stream_rules(dut.r))
    assert stats["no_credit"] > 20


@pytest.mark.parametrize("stages,depth,lut_ram", [(0, 3, False), (0, 16, False),
                                                 (1, 5, False), (1, 8, False), (1, 64, False),
                                                 (2, 6, False), (2, 64, False), (1, 16, True)])
def test_stream_queue_credited_full_rate(depth, stages, lut_ram):
    """Consumer always ready, producer sending whenever it holds a credit: after the fill
    latency the output is one beat per cycle with no gap.

    The bound: a beat written in cycle c is visible in the Queue in c + 2 (documented),
    popped into the ``moved`` register(s) (``stages`` of them) and from there into the
    ring, so on ``r`` in c + 3 + stages; its credit is back for the producer a cycle
    later. So a credit loop is 4 + stages cycles, ``capacity`` >= 4 + stages credits
    cover it, and the first beat leaves at cycle <= 3 + stages. Without a ring
    (``stages`` 0) the head is the stream: a beat is on ``r`` in c + 2 and its credit
    back in c + 3, so 3 credits cover the loop. For n = 2000 beats the rate from cycle
    0 is then >= 2000 / 2005 > 0.997."""
    n = 2000
    dut = StreamQueue(16, depth, credited=True, read_stages=stages, lut_ram=lut_ram)

    async def bench(ctx):
        credits, sent, out, cycle = dut.capacity, 0, [], 0
        ctx.set(dut.r.ready, 1)
        while len(out) < n:
            send = credits > 0 and sent < n
            ctx.set(dut.w.valid, send)
            ctx.set(dut.w.payload, sent & 0xFFFF)
            valid, payload = ctx.get(dut.r.valid), ctx.get(dut.r.payload)
            await ctx.tick()
            if send:
                credits -= 1
                sent += 1
            if valid:
                assert payload == len(out) & 0xFFFF
                out.append(cycle)
                credits += 1
            cycle += 1
            assert cycle < 10 * n
        assert not ctx.get(dut.fault)
        assert out[0] <= 3 + stages, f"first beat in cycle {out[0]}"
        assert out == list(range(out[0], out[0] + n)), "a gap in the output"
        rate = n / (out[-1] + 1)
        assert rate >= n / (n + 3 + stages) > 0.997, f"{rate:.4f} beats per cycle"

    simulate(dut, bench)


@pytest.mark.parametrize("stages", [0, 1, 2])
@pytest.mark.parametrize("p_stall", [0.5, 0.9])
@pytest.mark.parametrize("depth", [1, 2, 5, 16])
def test_stream_queue_ready_flow_control(depth, p_stall, stages):
    """Non-credited: a producer with random gaps that keeps each beat offered until
    ``w.ready`` takes it, a consumer with random stalls: every beat comes out once, in
    order; ``w`` and ``r`` keep the stream rules; the queue never holds more than
    ``held`` beats; ``fault`` stays 0."""
    width, n = 10, 500
    dut = StreamQueue(width, depth, credited=False, read_stages=stages)
    rng = random.Random(int(10 * p_stall) + 50 * depth)
    stats = Counter()

    async def bench(ctx):
        pending, sent, got, cycle = None, [], [], 0
        while len(got) < n:
            if pending is None and len(sent) < n and rng.random() < 0.7:
                pending = rng.getrandbits(width)
            ready = rng.random() >= p_stall
            ctx.set(dut.w.valid, pending is not None)
            ctx.set(dut.w.payload, pending if pending is not None else rng.getrandbits(width))
            ctx.set(dut.r.ready, ready)
            w_ready, valid, payload = (ctx.get(dut.w.ready), ctx.get(dut.r.valid),
                                       ctx.get(dut.r.payload))
            assert not ctx.get(dut.fault)
            await ctx.tick()
            stats["refused"] += pending is not None and not w_ready
            if pending is not None and w_ready:
                sent.append(pending)
                pending = None
            if valid and ready:
                got.append(payload)
                assert payload == sent[len(got) - 1], f"beat {len(got) - 1} differs"
            assert len(sent) - len(got) <= dut.held
            cycle += 1
            assert cycle < 40 * n, f"deadlock: {len(got)} of {n} beats out"
        assert got == sent

    simulate(dut, bench, stream_rules(dut.r))
    assert stats["refused"] > 20              # w.ready did push back


@pytest.mark.parametrize("stages", [0, 1, 2])
@pytest.mark.parametrize("depth", [1, 2, 5, 16])
def test_stream_queue_holds_exactly_held_beats(depth, stages):
    """Non-credited, consumer never ready, producer always valid: exactly
    ``depth + slots - 1`` beats are accepted (``depth`` in the memory, ``slots - 1`` in
    the ring, as documented for ``held``; slots = SLOTS + stages - 1; ``depth`` alone
    without a ring), then ``w.ready`` stays low. When the consumer starts taking, those
    beats come out in order and the stream goes on."""
    expected = depth + (StreamQueue.SLOTS + stages - 2 if stages else 0)
    dut = StreamQueue(8, depth, credited=False, read_stages=stages)
    assert dut.held == expected

    async def bench(ctx):
        accepted = 0
        ctx.set(dut.r.ready, 0)
        ctx.set(dut.w.valid, 1)
        for _ in range(expected + 30):
            ctx.set(dut.w.payload, accepted)
            w_ready = ctx.get(dut.w.ready)
            await ctx.tick()
            accepted += w_ready
        assert accepted == expected
        assert not ctx.get(dut.w.ready) and ctx.get(dut.r.valid)
        ctx.set(dut.r.ready, 1)
        got = []
        for _ in range(expected + 40):
            ctx.set(dut.w.payload, accepted)
            w_ready, valid = ctx.get(dut.w.ready), ctx.get(dut.r.valid)
            payload = ctx.get(dut.r.payload)
            await ctx.tick()
            accepted += w_ready
            if valid:
                got.append(payload)
        assert len(got) > expected + 10
        assert got == list(range(len(got)))
        assert not ctx.get(dut.fault)

    simulate(dut, bench)


def test_stream_queue_read_stages_checked():
    with pytest.raises(ValueError, match="read_stages must be 0, 1 or 2"):
        StreamQueue(8, 4, credited=True, read_stages=3)


@pytest.mark.parametrize("stages", [0, 1, 2])
@pytest.mark.parametrize("depth", [1, 3, 8])
def test_stream_queue_credited_overflow_faults(depth, stages):
    """Credited, consumer holding ``ready`` low. Beats written slowly (the ring fills
    between them): ``held`` of them fit with ``fault`` 0, the next one sets ``fault``
    (sticky) and is lost: when the consumer starts, exactly the first ``held`` come out.
    Beats written back to back: ``held + 1`` beats always set ``fault``."""
    dut = StreamQueue(8, depth, credited=True, read_stages=stages)

    async def slow(ctx):
        ctx.set(dut.r.ready, 0)
        for i in range(dut.held + 1):
            assert not ctx.get(dut.fault), f"fault before beat {i}"
            ctx.set(dut.w.valid, 1)
            ctx.set(dut.w.payload, i)
            await ctx.tick()
            ctx.set(dut.w.valid, 0)
            await ctx.tick().repeat(5)
        assert ctx.get(dut.fault)
        ctx.set(dut.r.ready, 1)
        got = []
        for _ in range(dut.held + 20):
            valid, payload = ctx.get(dut.r.valid), ctx.get(dut.r.payload)
            await ctx.tick()
            assert ctx.get(dut.fault), "fault is not sticky"
            if valid:
                got.append(payload)
        assert got == list(range(dut.held))

    simulate(dut, slow)

    dut = StreamQueue(8, depth, credited=True, read_stages=stages)

    async def fast(ctx):
        ctx.set(dut.r.ready, 0)
        ctx.set(dut.w.valid, 1)
        for i in range(dut.held + 1):
            ctx.set(dut.w.payload, i)
            await ctx.tick()
        ctx.set(dut.w.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.fault)
        await ctx.tick().repeat(10)
        assert ctx.get(dut.fault), "fault is not sticky"

    simulate(dut, fast)


# ---------------------------------------------------------------------------------------
# Credits
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("capacity", [1, 2, 3, 4, 7])
def test_credits_random_take_give(capacity):
    """Random takes (only while the model holds a credit) and gives (only for a slot in
    use), often in the same cycle, against an integer count that starts full. In every
    cycle ``ok`` equals ``count != 0`` for the count after all earlier cycles' takes and
    gives: it is a register, so it does not react to this cycle's take or give (checked
    after driving them) but shows their effect from the next cycle. ``fault`` stays 0."""
    dut = Credits(capacity)
    rng = random.Random(capacity)
    stats = Counter()

    async def bench(ctx):
        count = capacity
        for cycle in range(2500):
            p_take, p_give = [(0.7, 0.3), (0.3, 0.7), (0.6, 0.6)][(cycle // 61) % 3]
            ok = ctx.get(dut.ok)
            assert ok == (count != 0), f"cycle {cycle}: ok {ok}, count {count}"
            assert not ctx.get(dut.fault)
            take = count > 0 and rng.random() < p_take
            give = count < capacity and rng.random() < p_give
            ctx.set(dut.take, take)
            ctx.set(dut.give, give)
            assert ctx.get(dut.ok) == ok, "ok follows take/give combinationally"
            await ctx.tick()
            count += give - take
            stats["empty"] += count == 0
            stats["both"] += take and give
        ctx.set(dut.take, 0)
        ctx.set(dut.give, 0)
        await ctx.tick()
        assert not ctx.get(dut.fault)

    simulate(dut, bench)
    assert stats["empty"] > 20
    assert stats["both"] > 50 or capacity == 1        # 1: a take and a give never meet


def test_credits_ok_timing():
    """``ok`` drops in the cycle after the take of the last credit (not in the cycle of
    the take) and rises in the cycle after the give that frees one; a take and a give in
    the same cycle at one credit leave ``ok`` high."""
    dut = Credits(2)

    async def bench(ctx):
        seq = [  # (take, give, ok in this cycle)
            (1, 0, 1), (0, 0, 1), (1, 0, 1), (0, 0, 0), (0, 1, 0), (1, 1, 1),
            (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 1, 1), (0, 0, 1)]
        for cycle, (take, give, ok) in enumerate(seq):
            ctx.set(dut.take, take)
            ctx.set(dut.give, give)
            assert ctx.get(dut.ok) == ok, f"cycle {cycle}"
            await ctx.tick()
        assert not ctx.get(dut.fault)

    simulate(dut, bench)


@pytest.mark.parametrize("capacity", [1, 3, 4])
def test_credits_faults(capacity):
    """A take without a credit (``ok`` 0), and, on a fresh counter, a give while all
    credits are home, each set the sticky ``fault`` in the next cycle."""
    dut = Credits(capacity)

    async def take_without(ctx):
        ctx.set(dut.take, 1)
        for _ in range(capacity):
            assert ctx.get(dut.ok)
            await ctx.tick()
        assert not ctx.get(dut.ok) and not ctx.get(dut.fault)
        await ctx.tick()                      # take stays 1: one take too many
        ctx.set(dut.take, 0)
        assert ctx.get(dut.fault)
        await ctx.tick().repeat(5)
        assert ctx.get(dut.fault), "fault is not sticky"

    simulate(dut, take_without)
    dut = Credits(capacity)

    async def give_beyond(ctx):
        ctx.set(dut.take, 1)
        await ctx.tick()
        ctx.set(dut.take, 0)
        ctx.set(dut.give, 1)
        await ctx.tick()                      # gives the credit back: fine
        assert not ctx.get(dut.fault)
        await ctx.tick()                      # one give too many
        ctx.set(dut.give, 0)
        assert ctx.get(dut.fault)
        await ctx.tick().repeat(5)
        assert ctx.get(dut.fault), "fault is not sticky"

    simulate(dut, give_beyond)


# ---------------------------------------------------------------------------------------
# RegisterSlice
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("width", [16, 70], ids=["one_slice", "three_slices"])
@pytest.mark.parametrize("p_valid,p_ready", [(1.0, 1.0), (0.7, 0.4), (0.4, 0.9), (1.0, 0.5)])
def test_register_slice_random_stalls(p_valid, p_ready, width):
    """Random producer bubbles and consumer stalls: every beat arrives once, in order,
    unchanged (stream rules checked on the output); ``w.ready`` and ``r.valid`` depend on
    nothing of this cycle's inputs (flip-flops); with both sides always willing, one beat
    per cycle after a first cycle of latency. 70 bits load as three slices, each on
    copies of the valid bits."""
    rng = random.Random(f"slice-{p_valid}-{p_ready}-{width}")
    dut = RegisterSlice(width)
    beats = [rng.getrandbits(width) for _ in range(400)]
    got, stats = [], Counter()

    async def bench(ctx):
        sent, cycle, first_out = 0, 0, None
        while len(got) < len(beats):
            valid = sent < len(beats) and rng.random() < p_valid
            ready = rng.random() < p_ready
            # the outputs before this cycle's inputs are set ...
            w_ready, r_valid, r_payload = (ctx.get(dut.w.ready), ctx.get(dut.r.valid),
                                           ctx.get(dut.r.payload))
            ctx.set(dut.w.valid, valid)
            ctx.set(dut.w.payload, beats[sent] if valid else rng.getrandbits(16))
            ctx.set(dut.r.ready, ready)
            # ... and after: the same (registers only)
            assert (ctx.get(dut.w.ready), ctx.get(dut.r.valid), ctx.get(dut.r.payload)) \
                == (w_ready, r_valid, r_payload), f"cycle {cycle}: a combinational output"
            if r_valid and ready:
                got.append(r_payload)
                first_out = cycle if first_out is None else first_out
            stats["stalled_in"] += valid and not w_ready
            if valid and w_ready:
                sent += 1
            await ctx.tick()
            cycle += 1
            assert cycle < 20 * len(beats), "the slice stopped passing beats"
        stats["cycles"] = cycle
        stats["first_out"] = first_out

    simulate(dut, bench, stream_rules(dut.r, "r"))
    assert got == beats
    if p_valid == p_ready == 1.0:
        assert stats["first_out"] == 1 and stats["cycles"] == len(beats) + 1, stats
        assert stats["stalled_in"] == 0
    if p_ready < 1.0:
        assert stats["stalled_in"] > 0, "the skid register was never full"
