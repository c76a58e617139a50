"""Stream drivers and monitors for Amaranth-simulator testbenches (``lib.stream``).

Producer and consumer run as separate async testbenches; ``idle`` inserts seeded random
bubbles, and ``check_stream_rules`` fails if a stalled beat is dropped or changes.
Valid-only streams (``always_ready=True``, inside the accelerator) have their own pair:
``send_beat`` drives one beat for one cycle, ``ValidOnlyMonitor`` records every beat with
the cycle it was in.
"""

__all__ = ["simulate", "stream_put", "stream_get", "put_bits", "idle", "check_stream_rules",
           "stream_rules", "send_beat", "ValidOnlyMonitor"]


async def stream_put(ctx, stream, payload):
    """Offer one beat and wait until it is taken."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Accept one beat and return its payload."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def idle(ctx, rng, p_stall=0.3, max_len=4):
    """With probability ``p_stall``, wait 1..``max_len`` cycles (a bubble or a stall)."""
    if rng.random() < p_stall:
        await ctx.tick().repeat(rng.randint(1, max_len))


def simulate(top, bench, *background):
    """Run ``bench`` on ``top`` with a 1 MHz clock until it returns; ``background``
    testbenches run beside it."""
    from amaranth.sim import Simulator
    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    for other in background:
        sim.add_testbench(other, background=True)
    sim.run()


async def check_stream_rules(ctx, stream, name="stream", on=None):
    """Background testbench: once valid, a beat stays valid and unchanged until taken.
    The payload may be a layout view or a plain Signal. ``on`` (a dict): checks only
    while ``on["check"]`` is true (a testbench that resets the design mid-beat clears it)."""
    held = None
    payload = stream.payload.as_value() if hasattr(stream.payload, "as_value") else stream.payload
    async for _, _, valid, ready, value in ctx.tick().sample(stream.valid, stream.ready, payload):
        if on is not None and not on["check"]:
            held = None
            continue
        if held is not None:
            assert valid and value == held, f"{name} dropped or changed a stalled beat"
        held = value if valid and not ready else None


def stream_rules(stream, name="stream", on=None):
    """:func:`check_stream_rules` as a testbench for :func:`simulate`'s ``background``."""
    async def bench(ctx):
        await check_stream_rules(ctx, stream, name, on)
    return bench


async def put_bits(ctx, stream, word):
    """Offer one beat given as a packed integer and wait until it is taken."""
    payload = stream.payload
    ctx.set(stream.valid, 1)
    ctx.set(payload.as_value() if hasattr(payload, "as_value") else payload, word)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def send_beat(ctx, stream, payload):
    """Drive one beat of a valid-only stream for exactly one cycle."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick()
    ctx.set(stream.valid, 0)


class ValidOnlyMonitor:
    """Background testbench that records every beat of a valid-only stream as
    (cycle, payload value); cycles count clock edges from the start of the simulation."""

    def __init__(self, stream, convert=lambda payload: payload):
        self.stream, self.convert, self.beats = stream, convert, []

    async def run(self, ctx):
        cycle = 0
        async for _, _, valid, payload in ctx.tick().sample(self.stream.valid,
                                                           self.stream.payload):
            if valid:
                self.beats.append((cycle, self.convert(payload)))
            cycle += 1
