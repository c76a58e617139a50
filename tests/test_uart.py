"""rtl.uart in Amaranth's simulator: loopback, exact bit timing, baud-rate error,
framing errors and glitches."""

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from rtl.uart import UARTRx, UARTTx
from verif.amaranth_streams import stream_get, stream_put
from verif.amaranth_uart import UartListener, uart_send


def _run(dut, *benches, background=()):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        sim.add_testbench(bench)
    for bench in background:
        sim.add_testbench(bench, background=True)
    sim.run()


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_loopback(divisor):
    """TX into RX: every byte arrives, in order, with gaps and back to back."""
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(40)]
    got = []

    async def producer(ctx):
        for byte in data:
            if rng.random() < 0.3:
                await ctx.tick().repeat(rng.randint(1, 3 * divisor))
            await stream_put(ctx, tx.data, byte)

    async def consumer(ctx):
        for _ in data:
            got.append(await stream_get(ctx, rx.data))

    _run(m, producer, consumer)
    assert got == data


def test_tx_bit_timing():
    """Start bit, 8 data bits LSB first, stop bit, each exactly ``divisor`` cycles."""
    divisor = 5
    dut = UARTTx(divisor)
    levels = []

    async def bench(ctx):
        await stream_put(ctx, dut.data, 0b1011_0010)
        for _ in range(12 * divisor):
            levels.append(ctx.get(dut.tx))
            await ctx.tick()

    _run(dut, bench)
    start = levels.index(0)
    bits = [levels[start + i * divisor: start + (i + 1) * divisor] for i in range(10)]
    assert all(len(set(b)) == 1 for b in bits), "a bit changed inside its period"
    assert [b[0] for b in bits] == [0, 0, 1, 0, 0, 1, 1, 0, 1, 1]
    assert set(levels[start + 10 * divisor:]) == {1}


@pytest.mark.parametrize("error", [-0.03, 0.03])
def test_rx_tolerates_baud_error(error):
    """A sender 3 % slow or fast is still read correctly (mid-bit sampling)."""
    divisor = 16
    dut = UARTRx(divisor)
    rng = random.Random(3)
    data = [rng.randrange(256) for _ in range(16)]
    got = []

    async def sender(ctx):
        await uart_send(ctx, dut.rx, data, divisor * (1 + error))

    async def consumer(ctx):
        for _ in data:
            got.append(await stream_get(ctx, dut.data))

    _run(dut, sender, consumer)
    assert got == data


def test_rx_drops_framing_errors_and_glitches():
    """A byte whose stop bit is 0 is dropped with a framing_error pulse; a low pulse
    shorter than half a bit is no start bit; the next good byte arrives."""
    divisor = 8
    dut = UARTRx(divisor)
    got, errors = [], [0]

    async def sender(ctx):
        await uart_send(ctx, dut.rx, [0x12], divisor, stop_bits=[0])
        await ctx.tick().repeat(3 * divisor)          # line back to idle after the break
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(divisor // 2 - 2)     # glitch
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await uart_send(ctx, dut.rx, [0x34, 0x56], divisor)
        await ctx.tick().repeat(4 * divisor)

    async def consumer(ctx):
        async for _, _, valid, payload, error in ctx.tick().sample(
                dut.data.valid, dut.data.payload, dut.framing_error):
            errors[0] += error
            if valid:
                got.append(payload)

    async def ready(ctx):
        ctx.set(dut.data.ready, 1)

    _run(dut, sender, ready, background=[consumer])
    assert got == [0x34, 0x56]
    assert errors[0] == 1


def test_listener_reads_tx():
    """The testbench receiver used by the bridge tests agrees with UARTTx."""
    divisor = 4
    dut = UARTTx(divisor)
    listener = UartListener(dut.tx, divisor)
    data = list(range(0, 256, 17))

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, dut.data, byte)
        # the last byte was taken into the holding register: it waits for the one
        # before it, then takes its own 10 bits
        await ctx.tick().repeat(22 * divisor)

    _run(dut, producer, background=[listener.run])
    assert list(listener.bytes) == data and listener.errors == 0
