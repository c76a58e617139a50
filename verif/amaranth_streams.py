"""Stream drivers and monitors for Amaranth-simulator testbenches (``lib.stream``).

Producer and consumer run as separate async testbenches; ``idle`` inserts seeded random
bubbles, and ``check_stream_rules`` fails if a stalled beat is dropped or changes.
Valid-only streams (``always_ready=True``, inside the accelerator) have their own pair:
``send_beat`` drives one beat for one cycle, ``ValidOnlyMonitor`` records every beat with
the cycle it was in.
"""

__all__ = ["stream_put", "stream_get", "put_bits", "idle", "check_stream_rules",
           "send_beat", "ValidOnlyMonitor"]


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


async def check_stream_rules(ctx, stream, name="stream"):
    """Background testbench: once valid, a beat stays valid and unchanged until taken."""
    held = None
    async for _, _, valid, ready, payload in ctx.tick().sample(
            stream.valid, stream.ready, stream.payload.as_value()):
        if held is not None:
            assert valid and payload == held, f"{name} dropped or changed a stalled beat"
        held = payload if valid and not ready else None


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
