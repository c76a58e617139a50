"""Tests of ``rtl.loop_counter.LoopCounter`` in the Amaranth simulator.

The model of a nest with last values (l_0 innermost, ..., l_n outermost) is the list of
index tuples ``itertools.product(range(l_n + 1), ..., range(l_0 + 1))`` (the innermost
index varies fastest), read innermost first. After k steps since a restart the counter
shows entry ``k mod len``; ``<name>_wrap`` is "this digit and every inner one are at
their last value"; ``done`` is set by the step that leaves the last entry (the wrap of
the outermost digit) and stays set until a restart. Every test drives ``_last`` only in
the cycle of a restart and holds it from there, as the docstring requires.
"""

import itertools
import random

import pytest
from amaranth.sim import Simulator

from rtl.loop_counter import LoopCounter


def walk(lasts):
    """Index tuples (innermost first) of a nest with these last values, in step order."""
    outer_first = itertools.product(*(range(last + 1) for last in reversed(lasts)))
    return [tuple(reversed(indices)) for indices in outer_first]


class Checker:
    """Drives a LoopCounter cycle by cycle and checks every output in every cycle
    against the model: position ``k`` in ``walk(lasts)`` and the sticky ``done``."""

    def __init__(self, dut, digits):
        self.dut, self.names = dut, list(digits)
        self.lasts, self.seq, self.k, self.done, self.cycle = None, None, 0, False, 0

    def check(self, ctx):
        want = self.seq[self.k % len(self.seq)]
        got = tuple(ctx.get(getattr(self.dut, name)) for name in self.names)
        where = f"cycle {self.cycle}, step {self.k} of {len(self.seq)}, lasts {self.lasts}"
        assert got == want, f"{where}: indices {got}, expected {want}"
        for d, name in enumerate(self.names):
            wrap = all(want[e] == self.lasts[e] for e in range(d + 1))
            assert ctx.get(getattr(self.dut, f"{name}_wrap")) == wrap, f"{where}: {name}_wrap"
        assert ctx.get(self.dut.done) == self.done, f"{where}: done"

    async def cycle_with(self, ctx, *, step=0, restart=0, lasts=None):
        """Check the outputs, then run one cycle with these inputs; ``lasts`` (applied
        only together with a restart) are the new last values."""
        if self.seq is not None:
            self.check(ctx)
        assert lasts is None or restart
        if lasts is not None:
            for name, last in zip(self.names, lasts):
                ctx.set(getattr(self.dut, f"{name}_last"), last)
        ctx.set(self.dut.step, step)
        ctx.set(self.dut.restart, restart)
        await ctx.tick()
        self.cycle += 1
        if restart:
            if lasts is not None:
                self.lasts, self.seq = tuple(lasts), walk(lasts)
            self.k, self.done = 0, False
        elif step:
            self.done |= self.k % len(self.seq) == len(self.seq) - 1
            self.k += 1

    async def steps(self, ctx, rng, n, p_gap=0.4):
        """``n`` steps with random gaps (cycles with ``step`` 0) between them."""
        for _ in range(n):
            while rng.random() < p_gap:
                await self.cycle_with(ctx)
            await self.cycle_with(ctx, step=1)


def run(digits, bench):
    dut = LoopCounter(digits)
    checker = Checker(dut, digits)

    async def testbench(ctx):
        await bench(ctx, checker)
        checker.check(ctx)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return checker


DIGIT_SETS = {
    "tji3": {"t": 3, "j": 3, "i": 3},
    "single": {"row": 5},
    "mixed": {"s": 1, "t": 4, "j": 2, "i": 3},
}


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("name", list(DIGIT_SETS))
def test_walk_with_random_gaps(name, seed):
    """Random last values, random gaps between steps: through the whole nest and a
    third of the way round again, the indices follow itertools.product (innermost
    fastest), each ``_wrap`` and ``done`` are right in every cycle, ``done`` rises in the
    cycle after the step that wraps the outermost digit and stays up while the walk goes
    on from all zeros."""
    digits = DIGIT_SETS[name]
    rng = random.Random(seed)
    lasts = [rng.randint(1, (1 << w) - 1) for w in digits.values()]

    async def bench(ctx, c):
        await c.cycle_with(ctx, restart=1, lasts=lasts)
        n = len(c.seq)
        await c.steps(ctx, rng, n - 1)
        assert not ctx.get(c.dut.done)
        await c.steps(ctx, rng, 1)
        assert ctx.get(c.dut.done)
        await c.steps(ctx, rng, n // 3 + 1)

    checker = run(digits, bench)
    assert checker.k == len(checker.seq) + len(checker.seq) // 3 + 1


@pytest.mark.parametrize("seed", [4, 5])
def test_restart_mid_walk_with_new_lasts(seed):
    """A restart partway through a walk (with ``step`` also high in that cycle) and new
    last values applied with it starts over from all zeros with ``done`` 0 and walks the
    new nest; a restart after the walk finished clears ``done``; a restart during a run
    of idle cycles, with the same lasts, also starts over."""
    digits = {"t": 3, "j": 3, "i": 3}
    rng = random.Random(seed)
    new_lasts = lambda: [rng.randint(1, 7) for _ in digits]

    async def bench(ctx, c):
        await c.cycle_with(ctx, restart=1, lasts=new_lasts())
        await c.steps(ctx, rng, rng.randrange(5, len(c.seq) - 1))
        assert any(ctx.get(getattr(c.dut, name)) for name in digits)
        await c.cycle_with(ctx, step=1, restart=1, lasts=new_lasts())
        assert all(ctx.get(getattr(c.dut, name)) == 0 for name in digits)
        await c.steps(ctx, rng, len(c.seq) + 3)
        assert ctx.get(c.dut.done)
        await c.cycle_with(ctx, restart=1, lasts=new_lasts())
        assert not ctx.get(c.dut.done)
        await c.steps(ctx, rng, len(c.seq) // 2)
        await c.cycle_with(ctx)
        await c.cycle_with(ctx, restart=1)        # same lasts, not stepping
        await c.steps(ctx, rng, len(c.seq))

    run(digits, bench)


def test_restart_beats_step_on_the_last_step():
    """restart and step in the same cycle, when every digit is at its last value (the
    step would wrap the outermost digit and set ``done``): the restart wins, indices are
    0 and ``done`` stays 0; the same after ``done`` was already set."""
    digits = {"t": 2, "j": 2}

    async def bench(ctx, c):
        rng = random.Random(0)
        await c.cycle_with(ctx, restart=1, lasts=[2, 3])
        await c.steps(ctx, rng, len(c.seq) - 1)
        assert ctx.get(c.dut.j_wrap) and not ctx.get(c.dut.done)
        await c.cycle_with(ctx, step=1, restart=1)
        assert not ctx.get(c.dut.done) and ctx.get(c.dut.t) == 0 and ctx.get(c.dut.j) == 0
        await c.steps(ctx, rng, len(c.seq) + 1)
        assert ctx.get(c.dut.done)
        await c.steps(ctx, rng, len(c.seq) - 2)
        assert ctx.get(c.dut.j_wrap)
        await c.cycle_with(ctx, step=1, restart=1)
        assert not ctx.get(c.dut.done)

    run(digits, bench)


@pytest.mark.parametrize("lasts", [
    (0, 5, 3), (4, 0, 2), (3, 6, 0), (0, 0, 5), (0, 4, 0), (0, 0, 0),   # degenerate
    (7, 7, 7), (7, 0, 7), (1, 7, 2),                                     # maximal
], ids=lambda lasts: "-".join(map(str, lasts)))
def test_degenerate_and_maximal_lasts(lasts):
    """A ``_last`` of 0 makes a one-value loop (the digit stays 0 and wraps on every
    step that reaches it; with all lasts 0 every step wraps the nest and ``done`` rises
    after the first step); a ``_last`` of all ones (7 in 3 bits) counts through every
    value of the digit and wraps from the top without overflow. Each nest is walked
    twice with random gaps, after a restart from a nest with other lasts."""
    digits = {"t": 3, "j": 3, "i": 3}
    rng = random.Random(sum(lasts))

    async def bench(ctx, c):
        await c.cycle_with(ctx, restart=1, lasts=[(last + 3) % 8 for last in lasts])
        await c.steps(ctx, rng, 7)
        await c.cycle_with(ctx, restart=1, lasts=lasts)
        await c.steps(ctx, rng, 2 * len(c.seq) + 1, p_gap=0.2)

    run(digits, bench)


@pytest.mark.parametrize("width,last", [(1, 0), (1, 1), (4, 15), (8, 255), (8, 0), (8, 77)])
def test_single_digit(width, last):
    """One digit: counts 0..last and wraps, ``_wrap`` exactly at ``last``, ``done``
    after the first wrap, for the extreme widths and lasts (0 and all ones)."""
    digits = {"n": width}
    rng = random.Random(width * 1000 + last)

    async def bench(ctx, c):
        await c.cycle_with(ctx, restart=1, lasts=[last])
        await c.steps(ctx, rng, 2 * len(c.seq) + 2, p_gap=0.3)

    run(digits, bench)
