"""UART line models for Amaranth-simulator testbenches: bytes to bits on a pin, and a
background receiver that collects the bytes a design sends (8N1, LSB first)."""

__all__ = ["uart_send", "UartListener"]


async def uart_send(ctx, pin, data, period, *, stop_bits=None):
    """Drive ``data`` onto ``pin`` at ``period`` clock cycles per bit (a float is spread
    over whole cycles, for baud-rate error). ``stop_bits`` overrides each byte's stop bit
    (0 makes a framing error)."""
    owed = 0.0
    for i, byte in enumerate(data):
        stop = 1 if stop_bits is None else stop_bits[i]
        for bit in [0, *((byte >> n) & 1 for n in range(8)), stop]:
            ctx.set(pin, bit)
            owed += period
            cycles = int(owed)
            owed -= cycles
            await ctx.tick().repeat(cycles)
    ctx.set(pin, 1)


class UartListener:
    """Background testbench: samples ``pin`` in the middle of every bit and appends the
    received bytes to ``bytes``; ``errors`` counts stop bits read as 0."""

    def __init__(self, pin, period: int):
        self.pin, self.period = pin, period
        self.bytes = bytearray()
        self.errors = 0

    async def run(self, ctx):
        # A per-cycle state machine over sampled values (a background testbench must not
        # be suspended inside ``until`` when the simulation ends).
        wait, n, value = None, 0, 0        # wait: cycles to the next sample; None: idle
        async for _, _, level in ctx.tick().sample(self.pin):
            if wait is None:
                if not level:
                    wait, n, value = self.period // 2, 0, 0
                continue
            wait -= 1
            if wait:
                continue
            wait = self.period
            if n == 0 and level:
                wait = None                   # a glitch, not a start bit
            elif 1 <= n <= 8:
                value |= level << (n - 1)
            elif n == 9:
                if level:
                    self.bytes.append(value)
                else:
                    self.errors += 1
                wait = None
            n += 1
