"""rtl.host_bridge in Amaranth's simulator: the frame receiver's checks (CRC, length,
command, truncation, inlet room), retransmissions, and a small GEMM through frames.

Every test talks to the whole HostBridge over its rx/tx pins, and watches which beats
reach the accelerator's input streams: a rejected frame must deliver none.
"""

import pytest
import random

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from wire import host_link as P
from rtl.host_bridge import ByteFifo, HostBridge, StreamOutlet, crc16_next
from golden.formats import quantize
from golden.params import NibbleParams
from wire.gemm_protocol import GemmJob, decode, encode, expected
from verif.amaranth_uart import UartListener, uart_send

PARAMS = NibbleParams(tile=4)
#: 4 clocks per bit; the 5 ms inter-byte timeout is then 2000 cycles.
CLK_HZ, BAUD = 400_000, 100_000
DIVISOR = CLK_HZ // BAUD
BITS = P.port_beat_bits(PARAMS)


class Host:
    """The host end of the simulated line: sends frames, waits for replies, and records
    the beats that reach the accelerator's input streams."""

    def __init__(self, dut):
        self.dut = dut
        self.listener = UartListener(dut.tx, DIVISOR)
        self.delivered = {port: [] for port in P.PORTS}
        self.seen = 0

    async def watch(self, ctx):
        ports = [getattr(self.dut.core, port) for port in P.PORTS]
        signals = [s for port in ports for s in (port.valid, port.ready, port.payload)]
        async for _, _, *values in ctx.tick().sample(*signals):
            for i, port in enumerate(P.PORTS):
                valid, ready, payload = values[3 * i: 3 * i + 3]
                if valid and ready:
                    value = payload.as_value().value if hasattr(payload, "as_value") else payload
                    self.delivered[port].append(int(value))

    async def send(self, ctx, data):
        await uart_send(ctx, self.dut.rx, data, DIVISOR)

    async def reply(self, ctx, max_cycles=20_000):
        """The next whole reply frame (or None after ``max_cycles``)."""
        for _ in range(max_cycles // 16):
            frame, used = P.find_frame(bytes(self.listener.bytes[self.seen:]))
            if frame is not None:
                self.seen += used
                return frame
            await ctx.tick().repeat(16)
        return None

    async def request(self, ctx, code, seq, payload=b""):
        await self.send(ctx, P.encode_frame(code, seq, payload))
        return await self.reply(ctx)


def run(script, watch=True, **bridge_args):
    dut = HostBridge(PARAMS, clk_hz=CLK_HZ, baud=BAUD, **bridge_args)
    host = Host(dut)
    sim = Simulator(dut)
    sim.add_clock(1 / CLK_HZ)

    async def bench(ctx):
        await ctx.tick().repeat(8)
        await script(ctx, host)

    sim.add_testbench(bench)
    sim.add_testbench(host.listener.run, background=True)
    if watch:
        sim.add_testbench(host.watch, background=True)
    sim.run()
    return host


def nak(error, seq):
    return P.Frame(P.Reply.NAK, seq, bytes([error]))


def test_crc_network_matches_protocol():
    m = Module()
    crc, byte, out = Signal(16), Signal(8), Signal(16)
    m.d.comb += out.eq(crc16_next(crc, byte))
    rng = random.Random(1)
    cases = [(rng.randrange(1 << 16), rng.randrange(256)) for _ in range(200)]

    async def bench(ctx):
        for c, b in cases:
            ctx.set(crc, c)
            ctx.set(byte, b)
            assert ctx.get(out) == P.crc16_update(c, b)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def test_byte_fifo_commit_rollback_rewind():
    """Tentative writes become readable only on commit and vanish on rollback; a rewind
    rereads what was not committed as read."""
    dut = ByteFifo(8)

    async def write(ctx, data, end):
        for b in data:
            ctx.set(dut.w_data, b)
            ctx.set(dut.w_en, 1)
            await ctx.tick()
        ctx.set(dut.w_en, 0)
        ctx.set(getattr(dut, end), 1)
        await ctx.tick()
        ctx.set(getattr(dut, end), 0)

    async def read(ctx, n):
        """n bytes, as fast as ``r_rdy`` allows: every other cycle, after the first
        byte's three cycles of latency."""
        out = []
        for k in range(n):
            for _ in range(3):
                if ctx.get(dut.r_rdy):
                    break
                await ctx.tick()
            assert ctx.get(dut.r_rdy), f"byte {k} not readable"
            out.append(ctx.get(dut.r_data))
            ctx.set(dut.r_en, 1)
            await ctx.tick()
            ctx.set(dut.r_en, 0)
            assert not ctx.get(dut.r_rdy)      # masked in the cycle after a read
        return out

    async def settle(ctx):
        for _ in range(3):
            await ctx.tick()

    async def bench(ctx):
        await write(ctx, [1, 2, 3], "w_rollback")
        await settle(ctx)
        assert not ctx.get(dut.r_rdy)
        await write(ctx, [4, 5, 6], "w_commit")
        assert await read(ctx, 2) == [4, 5]
        ctx.set(dut.r_rewind, 1)
        await ctx.tick()
        ctx.set(dut.r_rewind, 0)
        assert await read(ctx, 3) == [4, 5, 6]
        await settle(ctx)
        assert not ctx.get(dut.r_rdy)
        ctx.set(dut.r_commit, 1)
        await ctx.tick()
        ctx.set(dut.r_commit, 0)
        await write(ctx, list(range(10, 20)), "w_commit")      # 8 fit, 2 dropped
        assert ctx.get(dut.w_full)
        assert await read(ctx, 8) == list(range(10, 18))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("depth", [4, 8])
def test_byte_fifo_full_counts_tentative_and_unfreed_bytes(depth):
    """``w_full`` (a register) rises in the cycle after the write that fills the FIFO,
    counting tentative bytes; writes while full are dropped; reading k committed bytes
    frees nothing until ``r_commit``, and from the second cycle after it exactly k more
    bytes fit; a rollback of tentative bytes frees their room too, as late."""
    dut = ByteFifo(depth)

    async def tick(ctx, **inputs):
        for name, value in inputs.items():
            ctx.set(getattr(dut, name), value)
        await ctx.tick()
        for name in inputs:
            ctx.set(getattr(dut, name), 0)

    async def fill(ctx, first):
        """Write bytes first, first + 1, ... until w_full; returns how many went in."""
        n = 0
        while not ctx.get(dut.w_full):
            await tick(ctx, w_data=(first + n) & 0xFF, w_en=1)
            n += 1
            assert n <= depth, "w_full did not rise"
        await tick(ctx, w_data=0xEE, w_en=1)          # dropped
        assert ctx.get(dut.w_full)
        return n

    async def read(ctx, n):
        out = []
        for _ in range(n):
            while not ctx.get(dut.r_rdy):
                await tick(ctx)
            out.append(ctx.get(dut.r_data))
            await tick(ctx, r_en=1)
        return out

    async def bench(ctx):
        assert await fill(ctx, 0) == depth              # tentative bytes count
        await tick(ctx, w_rollback=1)
        assert ctx.get(dut.w_full), "a rollback acted in its own cycle"
        await tick(ctx)
        assert not ctx.get(dut.w_full), "a rollback did not free the room"
        assert await fill(ctx, 0x40) == depth
        await tick(ctx, w_commit=1)
        for _ in range(3):
            await tick(ctx)
        k = depth // 2
        assert await read(ctx, k) == [0x40 + i for i in range(k)]
        for _ in range(3):
            await tick(ctx)
            assert ctx.get(dut.w_full), "read bytes freed before r_commit"
        await tick(ctx, r_commit=1)
        assert ctx.get(dut.w_full), "r_commit freed room in its own cycle"
        await tick(ctx)
        assert not ctx.get(dut.w_full), "w_full still up two cycles after r_commit"
        assert await fill(ctx, 0x80) == k
        await tick(ctx, w_commit=1)
        for _ in range(3):
            await tick(ctx)
        assert await read(ctx, depth - k + k) == (
            [0x40 + i for i in range(k, depth)] + [0x80 + i for i in range(k)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("width", [8, 20, 36])
def test_stream_outlet_waits_for_room_and_keeps_every_beat(width):
    """Random beats offered with random gaps into an outlet that holds two of them, read
    out by a slow reader that releases what it read at random: every beat comes out
    once, in order, its bytes least significant first; the producer's beat is taken
    only after its bytes are in (never one more than the buffer holds); ``level``
    never exceeds the beats the buffer holds."""
    nbytes = P.beat_bytes(width)
    depth = 1 << (2 * nbytes - 1).bit_length()            # room for 2 (or 3) beats
    dut = StreamOutlet(width, depth)
    rng = random.Random(width)
    beats = [rng.getrandbits(width) for _ in range(12)] + [0, (1 << width) - 1]
    got = []

    async def producer(ctx):
        for beat in beats:
            ctx.set(dut.beats.payload, beat)
            ctx.set(dut.beats.valid, 1)
            await ctx.tick().until(dut.beats.ready)
            ctx.set(dut.beats.valid, 0)
            await ctx.tick().repeat(rng.choice([0, 0, 1, 7]) + 1)

    async def reader(ctx):
        pending = b""
        read = 0
        while len(got) < len(beats):
            assert ctx.get(dut.level) <= dut.max_beats
            if ctx.get(dut.level) > read and rng.random() < 0.3:
                pending += bytes([ctx.get(dut.r_data)])
                ctx.set(dut.r_en, 1)
                await ctx.tick()
                ctx.set(dut.r_en, 0)
                await ctx.tick()       # the read cursor takes a byte every other cycle
                if len(pending) == nbytes:
                    got.append(int.from_bytes(pending, "little"))
                    pending, read = b"", read + 1
                continue
            if read and not pending and rng.random() < 0.1:
                ctx.set(dut.release, read)
                ctx.set(dut.r_commit, 1)
                await ctx.tick()
                ctx.set(dut.r_commit, 0)
                read = 0
                continue
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(reader)
    sim.run_until(1e-6 * 20_000)
    assert got == beats


def test_status_and_write():
    beats = [0x1234, 0xBEEF, 0x0007]

    async def script(ctx, host):
        status = await host.request(ctx, P.Command.STATUS, 1)
        assert status.code == P.Reply.ACK and status.seq == 1
        assert P.Status.decode(status.payload) == P.Status(P.PROTOCOL_VERSION, 4, 32, False, 0)
        reply = await host.request(ctx, P.Command.WRITE + P.PORTS.index("a_codes"), 2,
                                   P.pack_beats(beats, BITS["a_codes"]))
        assert reply == P.Frame(P.Reply.ACK, 2, b"")

    host = run(script)
    assert host.delivered["a_codes"] == beats
    assert not any(host.delivered[p] for p in P.PORTS if p != "a_codes")


def test_status_reports_a_refused_command_until_reset():
    """An illegal command (B uint4) reaches the accelerator, which refuses it; STATUS
    flags it (bit 1), RESET clears it."""
    from rtl.layouts import command_layout
    from wire.streams import KIND_CODES
    illegal = command_layout().const({"a_kind": KIND_CODES["uint4"],
                                      "b_kind": KIND_CODES["uint4"]}).as_value().value

    async def script(ctx, host):
        status = P.Status.decode((await host.request(ctx, P.Command.STATUS, 1)).payload)
        assert not status.refused
        reply = await host.request(ctx, P.Command.WRITE + P.PORTS.index("cmd"), 2,
                                   P.pack_beats([illegal], BITS["cmd"]))
        assert reply == P.Frame(P.Reply.ACK, 2, b"")
        await ctx.tick().repeat(20)
        status = P.Status.decode((await host.request(ctx, P.Command.STATUS, 3)).payload)
        assert status.refused and not status.busy and status.results == 0
        assert await host.request(ctx, P.Command.RESET, 4) == P.Frame(P.Reply.ACK, 4)
        status = P.Status.decode((await host.request(ctx, P.Command.STATUS, 5)).payload)
        assert not status.refused

    host = run(script)
    assert host.delivered["cmd"] == [illegal]


def test_damaged_frames_are_refused_and_the_receiver_resyncs():
    """Bad CRC, bad length, unknown command, LEN above the maximum and a truncated
    frame each get their NAK, deliver nothing, and the next good frame is executed."""
    port = P.Command.WRITE + P.PORTS.index("b_codes")   # taken without a GEMM command
    payload = P.pack_beats([1, 2, 3], BITS["b_codes"])
    good = P.encode_frame(port, 9, payload)

    async def script(ctx, host):
        bad_crc = bytearray(good)
        bad_crc[6] ^= 0x10
        assert await host.request(ctx, port, 0, b"") == nak(P.Error.BAD_LENGTH, 0)   # no beats
        await host.send(ctx, bytes(bad_crc))
        assert await host.reply(ctx) == nak(P.Error.BAD_CRC, 9)
        # a codes beat is 2 bytes: 3 bytes are no whole number of beats
        assert (await host.request(ctx, port, 3, bytes(3))
                == nak(P.Error.BAD_LENGTH, 3))
        assert await host.request(ctx, 0x17, 4, bytes(1)) == nak(P.Error.UNKNOWN_CMD, 4)
        assert await host.request(ctx, P.Command.STATUS, 5, bytes(1)) == nak(P.Error.BAD_LENGTH, 5)
        # LEN 0x1FF: the end is unknown, so the frame ends at the first quiet gap
        await host.send(ctx, bytes([P.SYNC, port, 6, 0xFF, 0x01]) + bytes(40))
        assert await host.reply(ctx) == nak(P.Error.BAD_LENGTH, 6)
        await host.send(ctx, good[:-3])                      # truncated
        assert await host.reply(ctx) == nak(P.Error.TIMEOUT, 9)
        await host.send(ctx, bytes([0x00, 0x13]))            # line noise before a frame
        assert await host.request(ctx, port, 9, payload) == P.Frame(P.Reply.ACK, 9)

    host = run(script)
    assert host.delivered["b_codes"] == [1, 2, 3]
    assert sum(len(v) for v in host.delivered.values()) == 3


def test_retransmission_is_not_executed_twice():
    a_codes, b_codes = (P.Command.WRITE + P.PORTS.index(p) for p in ("a_codes", "b_codes"))
    pack = lambda *beats: P.pack_beats(beats, BITS["a_codes"])

    async def script(ctx, host):
        for seq, payload in [(7, pack(1, 2)), (7, pack(1, 2)), (8, pack(3))]:
            assert await host.request(ctx, a_codes, seq, payload) == P.Frame(P.Reply.ACK, seq)
        # same SEQ, other command: a new request
        assert await host.request(ctx, b_codes, 8, pack(4)) == P.Frame(P.Reply.ACK, 8)

    host = run(script)
    assert host.delivered["a_codes"] == [1, 2, 3]
    assert host.delivered["b_codes"] == [4]


def test_busy_when_the_inlet_is_full_then_reset():
    """A full inlet answers BUSY and takes none of the frame; RESET empties it. (Without
    a GEMM the mask stream holds the inlet's 256 bytes, the one-byte beat it presents and
    what the accelerator's mask queue holds while nobody reads it.)"""
    from rtl.accelerator import MASK_QUEUE_DEPTH
    from rtl.queue import StreamQueue
    port = P.Command.WRITE + P.PORTS.index("mask")
    extra = 1 + StreamQueue(4, MASK_QUEUE_DEPTH, credited=False).held

    async def script(ctx, host):
        assert await host.request(ctx, port, 1, bytes(256)) == P.Frame(P.Reply.ACK, 1)
        assert await host.request(ctx, port, 2, bytes(extra + 1)) == nak(P.Error.BUSY, 2)
        assert await host.request(ctx, port, 2, bytes(extra)) == P.Frame(P.Reply.ACK, 2)
        assert await host.request(ctx, port, 3, bytes(1)) == nak(P.Error.BUSY, 3)
        assert await host.request(ctx, P.Command.RESET, 3) == P.Frame(P.Reply.ACK, 3)
        assert await host.request(ctx, port, 4, bytes(2)) == P.Frame(P.Reply.ACK, 4)

    run(script, watch=False, inlet_bytes=256)


def test_gemm_through_frames_and_repeated_read():
    rng = np.random.default_rng(5)
    job = GemmJob(quantize(rng.normal(size=(4, 4)), "uint4", tile=4),
                  quantize(rng.normal(size=(4, 3)), "int4", tile=4))
    beats = encode(job, PARAMS)
    result_bytes = P.beat_bytes(P.result_beat_bits(PARAMS))
    got = []

    async def script(ctx, host):
        seq = 0
        for port, words in beats.inputs().items():
            if words:
                seq += 1
                reply = await host.request(ctx, P.Command.WRITE + P.PORTS.index(port), seq,
                                           P.pack_beats(words, BITS[port]))
                assert reply == P.Frame(P.Reply.ACK, seq)
        await ctx.tick().repeat(200)
        status = P.Status.decode((await host.request(ctx, P.Command.STATUS, 10)).payload)
        assert status.results == 4 and not status.busy
        first = await host.request(ctx, P.Command.READ, 11, bytes([3]))
        assert len(first.payload) == 3 * result_bytes
        again = await host.request(ctx, P.Command.READ, 11, bytes([3]))    # reply lost
        assert again == first
        # a frame that fails after a READ neither releases nor rewinds its beats
        await host.send(ctx, P.encode_frame(P.Command.READ, 12, bytes([3]))[:4])
        assert await host.reply(ctx) == nak(P.Error.TIMEOUT, 12)
        rest = await host.request(ctx, P.Command.READ, 12, bytes([3]))
        assert len(rest.payload) == result_bytes
        empty = await host.request(ctx, P.Command.READ, 13, bytes([3]))
        assert empty == P.Frame(P.Reply.ACK, 13, b"")
        got.extend(P.unpack_beats(first.payload + rest.payload, P.result_beat_bits(PARAMS)))

    run(script)
    out, want = decode(job, PARAMS, got), expected(job, PARAMS)
    assert np.array_equal(out.raw.acc, want.raw.acc)
    assert np.array_equal(out.raw.out_exps, want.raw.out_exps)
