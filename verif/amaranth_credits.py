"""Credit-counting neighbours for the accelerator's never-stalling units, in the Amaranth
simulator.

The requantizer and the log4 unit take valid-only beats from a producer that holds a
credit for each (given back on ``freed``), and send valid-only beats to a buffer only
with a credit from it (``credit`` in, ``take_credit`` out). :func:`run_credited` plays
both neighbours: a producer with the unit's ``capacity`` credits and random gaps, and a
consumer buffer of a few slots that it empties at random moments, so the unit sees every
mix of starvation and backpressure. It fails if the unit ever sends a beat without a
credit (the buffer would overflow) or a beat is lost.
"""

from __future__ import annotations

import random

from amaranth.sim import Simulator

__all__ = ["run_credited"]


def run_credited(dut, beats, *, setup=None, sideband=None, seed=0, busy=0.6,
                 out_slots=8, out_busy=None, out_hold=0, convert=lambda p: p, trace=None,
                 max_cycles=None, out_count=None):
    """Send ``beats`` (payloads of ``dut.acc_in``) through ``dut``; return its output
    payloads (``convert``-ed), in order.

    Parameters
    ----------
    setup : callable(ctx) or None
        Sets the configuration ports before the first beat (then 4 idle cycles).
    sideband : list of (Signal, list) or None
        Values driven beside each beat (e.g. the mask), one per beat.
    busy : float
        Probability that the producer sends in a cycle it could (1.0: no gaps).
    out_slots : int
        Slots of the consumer's buffer (its credits).
    out_busy : float or None
        Probability that the consumer takes a beat out of its buffer in a cycle
        (default ``busy``).
    out_hold : int
        Cycles at the start in which the consumer gives no credit at all.
    trace : dict or None
        Receives the cycles of the input beats (``"in"``) and of the output beats
        arriving (``"out"``).
    out_count : int or None
        Output beats to wait for (default: one per input beat).
    """
    out_busy = busy if out_busy is None else out_busy
    got = []
    state = {"cycle": 0, "in_credits": dut.capacity, "sent": 0}
    out_count = len(beats) if out_count is None else out_count
    max_cycles = max_cycles or 40 * max(len(beats), out_count) + 200 + out_hold
    producer = _producer(dut, beats, state, random.Random(seed), busy, setup, sideband)
    consumer = _consumer(dut, out_count, got, state, random.Random(seed + 1), out_slots,
                         out_busy, out_hold, convert, trace, max_cycles)

    async def monitor(ctx):
        cycle = 0
        async for _, _, valid in ctx.tick().sample(dut.acc_in.valid):
            if valid and trace is not None:
                trace.setdefault("in", []).append(cycle)
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.add_testbench(monitor, background=True)
    sim.run()
    assert state["in_credits"] == dut.capacity, "the unit did not give back every input credit"
    return got


def _producer(dut, beats, state, rng, busy, setup, sideband):
    """The testbench that sends ``beats`` on ``dut.acc_in`` with a credit each (counted
    in ``state``), then keeps taking back freed credits."""

    async def producer(ctx):
        if setup is not None:
            setup(ctx)
        await ctx.tick().repeat(4)  # the configuration settles before the first beat
        while state["sent"] < len(beats):
            go = state["in_credits"] > 0 and rng.random() < busy
            ctx.set(dut.acc_in.valid, go)
            if go:
                ctx.set(dut.acc_in.payload, beats[state["sent"]])
                for signal, values in sideband or ():
                    ctx.set(signal, values[state["sent"]])
                state["in_credits"] -= 1
                state["sent"] += 1
            _, _, freed = await ctx.tick().sample(dut.freed)
            state["in_credits"] += freed
        ctx.set(dut.acc_in.valid, 0)
        while True:
            _, _, freed = await ctx.tick().sample(dut.freed)
            state["in_credits"] += freed

    return producer


def _consumer(dut, count, got, state, rng, out_slots, out_busy, out_hold, convert, trace,
              max_cycles):
    """The testbench that plays the ``out_slots`` buffer behind ``dut.codes_out`` until
    ``count`` beats are out (into ``got``), checking the unit's use of its credits."""

    async def consumer(ctx):
        credits, slots = out_slots, []
        while len(got) < count:
            ctx.set(dut.credit, credits > 0 and state["cycle"] >= out_hold)
            _, _, take, valid, payload = await ctx.tick().sample(
                dut.take_credit, dut.codes_out.valid, dut.codes_out.payload)
            state["cycle"] += 1
            assert state["cycle"] < max_cycles, \
                f"deadlock: {len(got)} of {count} beats out after {max_cycles} cycles"
            assert not take or credits > 0, "the unit took a credit it did not have"
            credits -= take
            if valid:
                slots.append(convert(payload))
                if trace is not None:
                    trace.setdefault("out", []).append(state["cycle"] - 1)
                assert len(slots) <= out_slots, "a beat arrived with no room for it"
            if slots and rng.random() < out_busy:
                got.append(slots.pop(0))
                credits += 1

    return consumer
