"""rtl.host_frames alone in Amaranth's simulator: the FrameReceiver given byte streams
(verdicts, aborts, and the inlet strobes it drives), and the ReplySender given replies
(the bytes it sends, checked against wire.host_link's encoder).

The whole bridge over its UART pins is tests/test_bridge.py; these benches drive the
components' own ports, so a failure names the half that broke.
"""

import random

import pytest
from amaranth.sim import Simulator

from golden.params import NibbleParams
from rtl.host_frames import FrameReceiver, ReplyKind, ReplySender, Verdict
from wire import host_link as P

PARAMS = NibbleParams(tile=4)
#: Bytes per beat of each inlet, in WRITE port order (cmd is 13 bytes, a_codes 2, ...).
BEAT_BYTES = [P.beat_bytes(b) for b in P.port_beat_bits(PARAMS).values()]
TIMEOUT = 120          # cycles of quiet that end a frame
GAP = 10               # cycles from one received byte to the next (a UART's are tens)
REPLY_CYCLES = 25      # cycles from execute/abort to ``replied`` (the stand-in reply)
WRITE = {port: P.Command.WRITE + i for i, port in enumerate(P.PORTS)}


# --------------------------------------------------------------------------- receiver

class ReceiverBench:
    """A FrameReceiver with inlet models, a stand-in reply after every verdict, and a
    record of what came out."""

    def __init__(self):
        self.dut = FrameReceiver(BEAT_BYTES, TIMEOUT)
        n = len(BEAT_BYTES)
        self.tentative = [[] for _ in range(n)]
        self.committed = [[] for _ in range(n)]
        self.written = [0] * n        # w_en strobes seen per inlet
        self.commits = [0] * n        # w_commit strobes seen per inlet
        self.events = []              # ("execute", {...}) or ("abort", error)
        self.event_cycles = []        # the cycle of each event
        self.last_byte = None         # the cycle of the last byte sent
        self.cycle = 0

    async def send(self, ctx, data, gap=GAP):
        for byte in data:
            ctx.set(self.dut.data.payload, byte)
            ctx.set(self.dut.data.valid, 1)
            await ctx.tick()
            ctx.set(self.dut.data.valid, 0)
            await ctx.tick().repeat(gap - 1)

    async def frame(self, ctx, data, gap=GAP):
        """Send ``data`` and wait until its verdict has been replied to; return it."""
        seen = len(self.events)
        await self.send(ctx, data, gap)
        for _ in range(TIMEOUT + REPLY_CYCLES + 10):
            if len(self.events) > seen:
                break
            await ctx.tick()
        assert len(self.events) == seen + 1, f"{len(self.events) - seen} verdicts, not 1"
        await ctx.tick().repeat(REPLY_CYCLES + 2)
        return self.events[-1]

    async def monitor(self, ctx):
        dut = self.dut
        inlets = [(i.w_data, i.w_en, i.w_commit, i.w_rollback) for i in dut.inlets]
        outs = (dut.execute, dut.abort, dut.abort_error, dut.verdict, dut.cmd_read,
                dut.cmd_status, dut.cmd_reset, dut.code, dut.seq, dut.req, dut.data.ready,
                dut.data.valid)
        reply_at = None
        async for _, _, *values in ctx.tick().sample(*outs, *(s for i in inlets for s in i)):
            self.cycle += 1
            (execute, abort, error, verdict, read, status, reset, code, seq, req,
             ready, valid) = values[:len(outs)]
            assert ready, "the receiver must always take bytes"
            if valid:
                self.last_byte = self.cycle
            strobes = values[len(outs):]
            for k in range(len(inlets)):
                data, en, commit, rollback = strobes[4 * k:4 * k + 4]
                assert not (commit and rollback)
                if en:
                    self.tentative[k].append(data)
                    self.written[k] += 1
                if commit:
                    self.commits[k] += 1
                    self.committed[k] += self.tentative[k]
                    self.tentative[k] = []
                if rollback:
                    self.tentative[k] = []
            assert not (execute and abort)
            if execute:
                self.events.append(("execute", {
                    "verdict": Verdict(verdict), "read": read, "status": status,
                    "reset": reset, "code": code, "seq": seq, "req": req}))
            if abort:
                self.events.append(("abort", P.Error(error)))
            if execute or abort:
                self.event_cycles.append(self.cycle)
                assert reply_at is None, "a verdict while the last one waits for its reply"
                reply_at = self.cycle + REPLY_CYCLES
            ctx.set(dut.replied, reply_at == self.cycle)
            if reply_at == self.cycle:
                reply_at = None


def run_receiver(script):
    bench = ReceiverBench()
    sim = Simulator(bench.dut)
    sim.add_clock(1e-6)

    async def main(ctx):
        await ctx.tick().repeat(3)
        await script(ctx, bench)

    sim.add_testbench(main)
    sim.add_testbench(bench.monitor, background=True)
    sim.run()
    return bench


def verdict(event):
    kind, info = event
    assert kind == "execute", f"no verdict: {event}"
    return info["verdict"]


def test_receiver_good_write_commits_its_bytes_to_the_target_inlet_only():
    port = P.PORTS.index("a_codes")
    payload = bytes([0x12, 0x34, 0x56, 0x78])          # two 2-byte beats

    async def script(ctx, bench):
        kind, info = await bench.frame(ctx, P.encode_frame(WRITE["a_codes"], 0x5A, payload))
        assert kind == "execute"
        assert info == {"verdict": Verdict.OK, "read": 0, "status": 0, "reset": 0,
                        "code": WRITE["a_codes"], "seq": 0x5A, "req": 0x12}

    bench = run_receiver(script)
    assert bench.committed[port] == list(payload)
    assert bench.written == [len(payload) if k == port else 0 for k in range(len(P.PORTS))]
    assert bench.commits == [k == port for k in range(len(P.PORTS))]
    assert not any(bench.committed[k] for k in range(len(P.PORTS)) if k != port)


def test_receiver_read_status_reset_and_their_lengths():
    async def script(ctx, bench):
        _, info = await bench.frame(ctx, P.encode_frame(P.Command.READ, 1, bytes([7])))
        assert (info["verdict"], info["read"], info["req"]) == (Verdict.OK, 1, 7)
        _, info = await bench.frame(ctx, P.encode_frame(P.Command.STATUS, 2))
        assert (info["verdict"], info["status"], info["read"]) == (Verdict.OK, 1, 0)
        _, info = await bench.frame(ctx, P.encode_frame(P.Command.RESET, 3))
        assert (info["verdict"], info["reset"]) == (Verdict.OK, 1)
        # READ takes one byte, STATUS and RESET none, a WRITE whole beats (and some)
        for seq, (code, payload) in enumerate([
                (P.Command.READ, b""), (P.Command.READ, bytes(2)), (P.Command.STATUS, bytes(1)),
                (P.Command.RESET, bytes(1)), (WRITE["cmd"], b""), (WRITE["cmd"], bytes(BEAT_BYTES[0] * 3 // 2)),
                (WRITE["a_codes"], bytes(3))], start=4):
            event = await bench.frame(ctx, P.encode_frame(code, seq, payload))
            assert verdict(event) == Verdict.BAD_LENGTH, (hex(code), len(payload))

    bench = run_receiver(script)
    assert not any(bench.committed), "a rejected frame committed bytes"


def test_receiver_rejects_a_bad_crc_and_rolls_its_bytes_back():
    port = P.PORTS.index("mask")
    good = P.encode_frame(WRITE["mask"], 9, bytes([1, 2, 3]))

    async def script(ctx, bench):
        for i in range(1, len(good)):                 # every byte after SYNC is covered
            bad = bytearray(good)
            bad[i] ^= 0x04
            event = await bench.frame(ctx, bytes(bad))
            if i == 3:                                # LEN 7: the frame seems cut short
                assert event == ("abort", P.Error.TIMEOUT)
            elif i == 4:                              # LEN 1027: above the maximum
                assert event == ("abort", P.Error.BAD_LENGTH)
            else:       # (CODE flipped: a WRITE of 3 bytes to a_codes, but CRC comes first)
                assert verdict(event) == Verdict.BAD_CRC, (i, event)
        assert not bench.committed[port]
        assert bench.written[port] > 0, "the bytes never reached the inlet tentatively"
        assert verdict(await bench.frame(ctx, good)) == Verdict.OK

    bench = run_receiver(script)
    assert bench.committed[port] == [1, 2, 3]


def test_receiver_unknown_commands():
    async def script(ctx, bench):
        for seq, code in enumerate([0x00, 0x16, 0x17, 0x1F, 0x21, 0x50, 0xFF]):
            event = await bench.frame(ctx, P.encode_frame(code, seq, bytes(1)))
            assert verdict(event) == Verdict.UNKNOWN, hex(code)

    run_receiver(script)


def test_receiver_gives_up_a_truncated_frame_after_the_timeout():
    frame = P.encode_frame(WRITE["b_codes"], 4, bytes([5, 6]))

    async def script(ctx, bench):
        for cut in (1, 2, 5, 6, len(frame) - 1):
            event = await bench.frame(ctx, frame[:cut])
            assert event == ("abort", P.Error.TIMEOUT), cut
            # TIMEOUT cycles of quiet after the last byte
            assert bench.event_cycles[-1] - bench.last_byte == TIMEOUT + 1
        assert verdict(await bench.frame(ctx, frame)) == Verdict.OK

    bench = run_receiver(script)
    assert bench.committed[P.PORTS.index("b_codes")] == [5, 6]


def test_receiver_waits_out_a_length_above_the_maximum():
    async def script(ctx, bench):
        header = bytes([P.SYNC, WRITE["cmd"], 1, 0xFF, 0x01])     # LEN 511
        event = await bench.frame(ctx, header + bytes(60))        # bytes keep coming...
        assert event == ("abort", P.Error.BAD_LENGTH)
        assert bench.event_cycles[-1] - bench.last_byte == TIMEOUT + 1   # ... then quiet
        assert verdict(await bench.frame(ctx, P.encode_frame(P.Command.STATUS, 2))) == Verdict.OK

    bench = run_receiver(script)
    assert not any(bench.written)


def test_receiver_tells_retransmissions_from_new_requests():
    frame = P.encode_frame(WRITE["a_exps"], 7, bytes([1]))

    async def script(ctx, bench):
        assert verdict(await bench.frame(ctx, frame)) == Verdict.OK
        assert verdict(await bench.frame(ctx, frame)) == Verdict.REPLAY
        bad = bytearray(P.encode_frame(WRITE["a_exps"], 8, bytes([2])))
        bad[-1] ^= 1
        assert verdict(await bench.frame(ctx, bytes(bad))) == Verdict.BAD_CRC
        assert verdict(await bench.frame(ctx, frame)) == Verdict.REPLAY      # still the last
        # same SEQ, other CODE: new
        assert verdict(await bench.frame(ctx, P.encode_frame(P.Command.STATUS, 7))) == Verdict.OK
        reset = P.encode_frame(P.Command.RESET, 9)
        assert verdict(await bench.frame(ctx, reset)) == Verdict.OK
        assert verdict(await bench.frame(ctx, reset)) == Verdict.OK          # always executed

    bench = run_receiver(script)
    assert bench.committed[P.PORTS.index("a_exps")] == [1]


def test_receiver_busy_when_the_target_inlet_fills():
    port = P.PORTS.index("b_exps")

    async def script(ctx, bench):
        frame = P.encode_frame(WRITE["b_exps"], 1, bytes([1, 2, 3, 4]))
        # full from the third payload byte on (SYNC CODE SEQ LEN LEN, payload)
        for i, byte in enumerate(frame):
            if i == 7:
                ctx.set(bench.dut.inlets[port].w_full, 1)
            await bench.send(ctx, bytes([byte]))
        ctx.set(bench.dut.inlets[port].w_full, 0)
        await ctx.tick().repeat(REPLY_CYCLES + 10)
        assert verdict(bench.events[-1]) == Verdict.BUSY
        # another inlet's fullness does not matter
        ctx.set(bench.dut.inlets[port - 1].w_full, 1)
        assert verdict(await bench.frame(ctx, frame)) == Verdict.OK

    bench = run_receiver(script)
    assert bench.committed[port] == [1, 2, 3, 4]


def test_receiver_ignores_the_line_until_replied_and_resyncs_on_sync():
    first = P.encode_frame(WRITE["cmd"], 1, bytes(range(BEAT_BYTES[0])))
    second = P.encode_frame(WRITE["mask"], 2, bytes([9]))

    async def script(ctx, bench):
        await bench.send(ctx, first)
        while not bench.events:
            await ctx.tick()
        # the whole second frame comes after the first's verdict, before ``replied``
        assert len(second) * 2 < REPLY_CYCLES
        await bench.send(ctx, second, gap=2)
        await ctx.tick().repeat(TIMEOUT + REPLY_CYCLES + 10)
        assert [verdict(e) for e in bench.events] == [Verdict.OK]
        # noise (no SYNC) before a frame is skipped
        assert verdict(await bench.frame(ctx, bytes([0x00, 0x13, 0xFF]) + second)) == Verdict.OK

    bench = run_receiver(script)
    assert bench.committed[0] == list(range(BEAT_BYTES[0]))
    assert bench.committed[P.PORTS.index("mask")] == [9]


def test_receiver_inlet_strobes_are_registers_a_cycle_after_the_byte():
    """A payload byte's ``w_en`` (with the byte on ``w_data``) comes in the cycle after
    the byte, and the commit in the cycle after ``execute``."""
    port = P.PORTS.index("mask")
    dut = FrameReceiver(BEAT_BYTES, TIMEOUT)
    frame = P.encode_frame(WRITE["mask"], 3, bytes([0xC3]))
    log = []

    async def bench(ctx):
        for byte in frame:
            ctx.set(dut.data.payload, byte)
            ctx.set(dut.data.valid, 1)
            _, _, en, data, execute, commit = await ctx.tick().sample(
                dut.inlets[port].w_en, dut.inlets[port].w_data, dut.execute,
                dut.inlets[port].w_commit)
            log.append((en, data, execute, commit))
            ctx.set(dut.data.valid, 0)
            for _ in range(3):
                _, _, en, data, execute, commit = await ctx.tick().sample(
                    dut.inlets[port].w_en, dut.inlets[port].w_data, dut.execute,
                    dut.inlets[port].w_commit)
                log.append((en, data, execute, commit))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    byte_at = 4 * 5                               # the payload byte is the frame's sixth
    assert [k for k, e in enumerate(log) if e[0]] == [byte_at + 1]
    assert log[byte_at + 1][1] == 0xC3
    execute_at = 4 * (len(frame) - 1) + 2         # CHECK, then EXECUTE
    assert [k for k, e in enumerate(log) if e[2]] == [execute_at]
    assert [k for k, e in enumerate(log) if e[3]] == [execute_at + 1]


# ----------------------------------------------------------------------------- sender

class SenderBench:
    """A ReplySender with a UART transmitter model (a holding register that empties
    after a random few cycles: ``ready`` is low the cycle after every byte) and an outlet
    model (``r_data`` is the byte at a cursor that ``r_en`` advances)."""

    def __init__(self, beat_bytes, max_beats, seed=0):
        self.dut = ReplySender(beat_bytes, max_beats)
        self.rng = random.Random(seed)
        # enough bytes for one READ of each size 0 .. max_beats
        self.outlet = bytes(self.rng.randrange(256)
                            for _ in range(beat_bytes * max_beats * (max_beats + 1)))
        self.cursor = 0
        self.sent = bytearray()
        self.done = []              # cycles of ``done``
        self.sent_at = []           # cycles of taken bytes
        self.starts = []            # cycles of ``start``
        self.offers = []            # cycles in which ``tx.valid`` rose
        self.cycle = 0

    async def uart_and_outlet(self, ctx):
        dut = self.dut
        busy = was_valid = 0
        ctx.set(dut.tx.ready, 1)
        ctx.set(dut.r_data, self.outlet[0])
        async for _, _, valid, byte, r_en, done, start in ctx.tick().sample(
                dut.tx.valid, dut.tx.payload, dut.r_en, dut.done, dut.start):
            self.cycle += 1
            if start:
                self.starts.append(self.cycle)
            if valid and not was_valid:
                self.offers.append(self.cycle)
            was_valid = valid
            taken = valid and busy == 0
            if taken:
                self.sent.append(byte)
                self.sent_at.append(self.cycle)
                busy = self.rng.randrange(1, 12)
            elif busy:
                busy -= 1
            assert r_en == 0 or taken, "r_en without a byte sent"
            if r_en:
                assert byte == self.outlet[self.cursor]
                self.cursor += 1
                ctx.set(dut.r_data, self.outlet[self.cursor % len(self.outlet)])
            if done:
                assert taken, "done without the last byte taken"
                self.done.append(self.cycle)
            ctx.set(dut.tx.ready, busy == 0)

    async def reply(self, ctx, kind, seq, *, error=0, beats=0, status=bytes(P.STATUS_LEN)):
        """Send one reply; return its bytes."""
        dut = self.dut
        ctx.set(dut.kind, kind)
        ctx.set(dut.seq, seq)
        ctx.set(dut.error, error)
        ctx.set(dut.beats, beats)
        for i, value in enumerate(status):
            ctx.set(dut.status[i], value)
        first, done = len(self.sent), len(self.done)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(20_000):
            if len(self.done) > done:
                break
            await ctx.tick()
        assert len(self.done) == done + 1, "no done"
        assert self.offers[-1] == self.starts[-1] + 2, "the header is not offered 2 cycles on"
        assert self.done[-1] == self.sent_at[-1], "done is not the last byte's cycle"
        await ctx.tick().repeat(self.rng.randrange(1, 5))
        return bytes(self.sent[first:])


def run_sender(beat_bytes, max_beats, script, seed=0):
    bench = SenderBench(beat_bytes, max_beats, seed)
    sim = Simulator(bench.dut)
    sim.add_clock(1e-6)

    async def main(ctx):
        await ctx.tick().repeat(3)
        await script(ctx, bench)
        end = len(bench.sent)
        await ctx.tick().repeat(30)
        assert len(bench.sent) == end, "bytes after the last reply's done"

    sim.add_testbench(main)
    sim.add_testbench(bench.uart_and_outlet, background=True)
    sim.run()
    return bench


@pytest.mark.parametrize("beat_bytes,max_beats",
                         [(1, 4), (3, 5), (P.beat_bytes(P.result_beat_bits(PARAMS)), 3)])
def test_sender_frames_match_the_protocol_encoder(beat_bytes, max_beats):
    """Every kind of reply, one after another: the bytes are wire.host_link's encoding of
    that reply (so the CRC is right), and a READ's payload is the outlet's next bytes,
    each read once."""
    status = bytes([P.PROTOCOL_VERSION, 4, 32, P.STATUS_BUSY, 0x34, 0x12])
    rng = random.Random(beat_bytes)

    async def script(ctx, bench):
        read = 0
        replies = [(ReplyKind.NAK, {"error": e}) for e in P.Error]
        replies += [(ReplyKind.ACK_EMPTY, {}), (ReplyKind.ACK_STATUS, {"status": status})]
        replies += [(ReplyKind.ACK_READ, {"beats": n}) for n in range(max_beats + 1)]
        rng.shuffle(replies)
        for kind, args in replies:
            seq = rng.randrange(256)
            got = await bench.reply(ctx, kind, seq, **args)
            if kind == ReplyKind.NAK:
                want = P.encode_frame(P.Reply.NAK, seq, bytes([args["error"]]))
            elif kind == ReplyKind.ACK_STATUS:
                want = P.encode_frame(P.Reply.ACK, seq, status)
            elif kind == ReplyKind.ACK_READ:
                n = args["beats"] * beat_bytes
                want = P.encode_frame(P.Reply.ACK, seq, bench.outlet[read:read + n])
                read += n
            else:
                want = P.encode_frame(P.Reply.ACK, seq)
            assert got == want, (kind, args)
            assert P.parse_frame(got).seq == seq
        assert bench.cursor == read, "the outlet cursor moved for bytes not sent"

    run_sender(beat_bytes, max_beats, script, seed=beat_bytes)


def test_sender_ignores_start_while_sending():
    async def script(ctx, bench):
        dut = bench.dut
        ctx.set(dut.kind, ReplyKind.NAK)
        ctx.set(dut.seq, 5)
        ctx.set(dut.error, P.Error.BUSY)
        ctx.set(dut.start, 1)
        await ctx.tick().repeat(12)            # ``start`` held into the header
        ctx.set(dut.start, 0)
        await ctx.tick().until(dut.done)
        await ctx.tick().repeat(20)
        assert bytes(bench.sent) == P.encode_frame(P.Reply.NAK, 5, bytes([P.Error.BUSY]))
        assert len(bench.done) == 1

    run_sender(2, 2, script)
