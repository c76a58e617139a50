"""rtl.pipeline: a stage is one cycle of delay without reset, a delay line is n cycles
with reset, a register copy keeps its ``_replica`` name for synthesis."""

import random

from amaranth.hdl import Module, ResetInserter, Signal

from rtl.pipeline import REPLICA_SUFFIX, delays, register_copy, stage
from verif.amaranth_streams import simulate


def test_stage_is_one_cycle_and_keeps_its_value_through_reset():
    m = Module()
    x, rst = Signal(8), Signal()
    y = stage(m, x + 1, "y", shape=9)
    assert y.name == "y" and len(y) == 9
    top = ResetInserter(rst)(m)
    rng = random.Random(1)
    seen = []

    async def bench(ctx):
        for _ in range(30):
            v = rng.randrange(256)
            ctx.set(x, v)
            await ctx.tick()
            seen.append((v, ctx.get(y)))
        ctx.set(rst, 1)              # a datapath register holds its value through reset
        await ctx.tick()
        ctx.set(rst, 0)
        seen.append((seen[-1][0], ctx.get(y)))

    simulate(top, bench)
    assert all(got == v + 1 for v, got in seen)


def test_delays_are_n_cycles_and_reset_clears_them():
    m = Module()
    x, rst = Signal(), Signal()
    line = delays(m, x, 3, "v")
    assert line[0] is x and [s.name for s in line[1:]] == ["v1", "v2", "v3"]
    top = ResetInserter(rst)(m)
    pattern = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0]

    async def bench(ctx):
        out = []
        for bit in pattern:
            ctx.set(x, bit)
            await ctx.tick()
            out.append([ctx.get(s) for s in line[1:]])
        for t in range(3, len(pattern)):
            assert out[t] == [pattern[t], pattern[t - 1], pattern[t - 2]]
        ctx.set(rst, 1)
        await ctx.tick()
        assert [ctx.get(s) for s in line[1:]] == [0, 0, 0]

    simulate(top, bench)


def test_register_copy_is_a_named_flip_flop_with_its_init():
    m = Module()
    x = Signal(4)
    copy = register_copy(m, x, "start_feeder", init=5)
    assert copy.name == "start_feeder" + REPLICA_SUFFIX and copy.init == 5

    async def bench(ctx):
        assert ctx.get(copy) == 5
        ctx.set(x, 9)
        assert ctx.get(copy) == 5
        await ctx.tick()
        assert ctx.get(copy) == 9

    simulate(m, bench)
