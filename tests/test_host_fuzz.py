"""Host-link fuzzing (issue 17): hypothesis draws byte streams -- frames from
wire.host_link's encoder, the same frames damaged (bit flips, dropped, inserted and
duplicated bytes, truncation, a header spliced onto another frame's body, LEN the
command does not take or above the maximum), retransmissions and replayed SEQs, garbage,
and quiet gaps on both sides of the inter-byte timeout -- and drives them byte by byte
into rtl.host_frames.FrameReceiver in Amaranth's simulator (verif.host_fuzz's bench).

What must happen comes from the protocol's decoder (verif.host_fuzz.predict, built on
wire.host_link.find_frame), and is checked three ways:

1. no frame executes with verdict OK unless its bytes are a valid frame of the stream
   (CRC included), with that CODE, SEQ and payload;
2. the bytes committed into each inlet are exactly the payloads of the WRITE frames that
   executed OK: nothing of a rejected, aborted or retransmitted frame;
3. the receiver never hangs and always resynchronises: a RESET frame sent after a quiet
   line of ``timeout + reply delay + 2`` cycles, whatever came before, executes OK two
   cycles after its last byte (every stream ends with one; some have more);

and, above those, every execute and abort the receiver signals (cycle, verdict, CODE,
SEQ, error) equals the reference's.

``pytest --long`` runs the long fuzz (at least 10,000 frames, seed from
``NIBBLE_FUZZ_SEED`` or random, printed); the default run is a short derandomized one.
"""

import math
import os
import random
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from golden.params import NibbleParams
from amaranth.sim import Simulator
from rtl.host_bridge import HostBridge
from rtl.host_frames import Verdict
from verif import host_fuzz as F
from verif.amaranth_uart import UartListener, uart_send
from wire import host_link as P

PARAMS = NibbleParams(tile=4)
#: Bytes per beat of each inlet, in WRITE port order.
BEAT_BYTES = [P.beat_bytes(b) for b in P.port_beat_bits(PARAMS).values()]
TIMEOUT = 24            # cycles of quiet that end a frame (short: the fuzz runs faster)
#: Gaps around the timeout: a byte after TIMEOUT + 1 cycles still belongs to the frame.
EDGE_GAPS = [TIMEOUT - 1, TIMEOUT, TIMEOUT + 1, TIMEOUT + 2, TIMEOUT + 3]
LONG_FRAMES = 10_000    # the --long run has the receiver check at least this many frames

#: Shrinking a failing stream takes minutes (every step is a simulation; hypothesis stops
#: after 5): only with NIBBLE_FUZZ_SHRINK=1. A failure then shows the stream as drawn.
PHASES = [Phase.explicit, Phase.generate] + (
    [Phase.shrink] if os.environ.get("NIBBLE_FUZZ_SHRINK") == "1" else [])
SETTINGS = dict(deadline=None, database=None, print_blob=True, report_multiple_bugs=False,
                phases=PHASES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


# ------------------------------------------------------------------------ strategies

seqs = st.integers(0, 255)
#: Bytes of garbage, SYNC often among them (each one starts a frame).
noise_bytes = st.one_of(st.integers(0, 255), st.just(P.SYNC))


@st.composite
def commands(draw, ports=tuple(range(len(P.PORTS))), max_payload=P.MAX_PAYLOAD):
    """(CODE, SEQ, payload) of a well-formed command (a WRITE to one of ``ports``)."""
    kind = draw(st.sampled_from(["write", "write", "write", "read", "status", "reset"]))
    seq = draw(seqs)
    if kind == "write":
        port = draw(st.sampled_from(ports))
        size = BEAT_BYTES[port]
        beats = draw(st.one_of(st.integers(1, 4), st.integers(1, max_payload // size)))
        return P.Command.WRITE + port, seq, draw(st.binary(min_size=beats * size,
                                                           max_size=beats * size))
    if kind == "read":
        return P.Command.READ, seq, bytes([draw(st.integers(0, 255))])
    return (P.Command.STATUS if kind == "status" else P.Command.RESET), seq, b""


@st.composite
def wrong_frames(draw):
    """Frames the encoder makes whole but the receiver must refuse: an unknown CODE,
    or a LEN the command does not take (zero beats, part of a beat, above MAX_PAYLOAD)."""
    code, seq, payload = draw(commands())
    if draw(st.booleans()):
        code = draw(st.integers(0, 255).filter(lambda c: c not in F.KNOWN_CODES))
        return P.encode_frame(code, seq, payload), "unknown"
    size = draw(st.one_of(st.integers(0, 20),
                          st.integers(P.MAX_PAYLOAD + 1, P.MAX_PAYLOAD + 40)))
    return P.encode_frame(code, seq, draw(st.binary(min_size=size, max_size=size))), "length"


@st.composite
def mutated(draw, frame, commands=commands()):
    """``frame`` damaged one way (or two)."""
    out = frame
    for _ in range(draw(st.sampled_from([1, 1, 1, 2]))):
        how = draw(st.sampled_from(["flip", "flip", "drop", "insert", "truncate", "splice"]))
        if not out:
            break
        if how == "flip":
            out = F.flip_bit(out, draw(st.integers(0, 8 * len(out) - 1)))
        elif how == "drop":
            out = F.drop_byte(out, draw(st.integers(0, len(out) - 1)))
        elif how == "insert":        # (a byte equal to its neighbour: a duplicate)
            index = draw(st.integers(0, len(out)))
            byte = draw(st.one_of(noise_bytes, st.just(out[min(index, len(out) - 1)])))
            out = F.insert_byte(out, index, byte)
        elif how == "truncate":
            out = F.truncate(out, draw(st.integers(0, len(out) - 1)))
        else:                        # another frame's header: LEN, CODE, SEQ off
            out = F.splice(P.encode_frame(*draw(commands)), out)
    return out


@st.composite
def fuzz_streams(draw, min_pieces, max_pieces):
    """(stream, reply_delay, capacity): pieces of every kind, then a final probe."""
    reply_delay = draw(st.integers(1, 40))
    capacity = draw(st.sampled_from([P.INLET_BYTES, 24, 128]))
    resync = TIMEOUT + reply_delay + 2
    b = F.StreamBuilder()
    sent = []                             # the frames sent whole so far (encoded)
    for _ in range(draw(st.integers(min_pieces, max_pieces))):
        # mostly as a stop-and-wait host: after the reply to a whole frame
        quiet = draw(st.sampled_from(["reply"] * 6 + ["none", "none", "edge", "long"]))
        if quiet == "reply":
            b.quiet(reply_delay + 3 + draw(st.integers(0, 3)))
        elif quiet == "edge":
            b.quiet(draw(st.sampled_from(EDGE_GAPS)))
        elif quiet == "long":
            b.quiet(draw(st.integers(TIMEOUT + 2, resync + 40)))
        gap = draw(st.sampled_from([2, 2, 3, 4, 6, 9]))
        stall = None
        if draw(st.integers(0, 9)) == 0:   # one pause inside the piece
            stall = (draw(st.integers(0, 40)), draw(st.sampled_from(EDGE_GAPS + [resync])))
        kind = draw(st.sampled_from(["valid"] * 6 + ["retransmit"] * 2 + ["reuse_seq"]
                                    + ["mutated"] * 5 + ["wrong"] * 2 + ["garbage"] * 2
                                    + ["probe"]))
        if kind in ("retransmit", "reuse_seq") and not sent:
            kind = "valid"
        if kind == "valid":
            frame = P.encode_frame(*draw(commands()))
            sent.append(frame)
            b.send(frame, gap, stall, kind=kind, frame=True)
        elif kind == "retransmit":          # the same bytes again, as a host resends
            b.send(draw(st.sampled_from(sent[-3:])), gap, stall, kind=kind, frame=True)
        elif kind == "reuse_seq":           # a last frame's CODE and SEQ, new payload
            old = P.parse_frame(sent[-1])
            _, _, payload = draw(commands())
            frame = P.encode_frame(old.code, old.seq, payload)
            sent.append(frame)
            b.send(frame, gap, stall, kind=kind, frame=True)
        elif kind == "mutated":
            recent = sent[-3:] or [P.encode_frame(P.Command.STATUS, 0)]
            base = draw(st.one_of(st.builds(lambda c: P.encode_frame(*c), commands()),
                                  st.sampled_from(recent)))
            b.send(draw(mutated(base)), gap, stall, kind=kind, frame=True)
        elif kind == "wrong":
            frame, why = draw(wrong_frames())
            b.send(frame, gap, stall, kind=f"wrong_{why}", frame=True)
        elif kind == "garbage":
            b.send(bytes(draw(st.lists(noise_bytes, min_size=1, max_size=40))), gap, stall,
                   kind=kind)
        else:
            b.probe(draw(seqs), resync + draw(st.integers(0, 10)), gap)
    b.probe(draw(seqs), resync, draw(st.sampled_from([2, 3, 5])))
    return b.stream, reply_delay, capacity


# ----------------------------------------------------------------------------- checks

class Totals:
    def __init__(self):
        self.streams = self.frames = self.seen = self.bytes = self.cycles = self.probes = 0
        self.outcomes = Counter()
        self.kinds = Counter()

    def add(self, stream, obs):
        self.streams += 1
        self.frames += stream.frames
        self.seen += len(obs.events)
        self.bytes += len(stream.bytes_at)
        self.cycles += obs.cycles
        self.probes += len(stream.probes)
        self.kinds.update(stream.kinds)
        self.outcomes.update(e.verdict.name if e.kind == "execute" else f"abort_{e.error.name}"
                             for e in obs.events)

    def report(self):
        return (f"{self.streams} streams, {self.bytes} bytes, {self.cycles} cycles; "
                f"{self.frames} frame pieces sent {dict(self.kinds)}, {self.probes} of them "
                f"resync probes; {self.seen} frames checked by the receiver (the rest were "
                f"cut, merged or sent into a reply): {dict(self.outcomes)}")


def _first_difference(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            return f"event {i}: receiver {g}, reference {w}; before it {got[max(0, i - 2):i]}"
    return f"{len(got)} events from the receiver, {len(want)} from the reference"


def fuzz_one(stream, reply_delay, capacity, totals=None):
    """Run ``stream`` and check everything; returns the observation."""
    args = dict(beat_bytes=BEAT_BYTES, timeout=TIMEOUT, reply_delay=reply_delay,
                capacity=capacity)
    obs = F.run_receiver(stream, **args)
    want = F.predict(stream, **args)
    valid = F.frames_in(stream.data)
    by_cycle = {e.cycle: e for e in obs.events}

    # (1) an OK execute is a valid frame of the stream: CODE, SEQ and payload
    ok = [e for e in obs.events if e.kind == "execute" and e.verdict == Verdict.OK]
    for e in ok:
        assert any(f.code == e.code and f.seq == e.seq for f in valid), \
            f"cycle {e.cycle}: executed CODE {e.code:#x} SEQ {e.seq}, no such valid frame sent"
        if e.code == P.Command.READ:
            assert P.Frame(e.code, e.seq, bytes([e.req])) in valid, f"READ payload: {e}"
        if e.code in (P.Command.STATUS, P.Command.RESET):
            assert P.Frame(e.code, e.seq) in valid, f"{e}: no such frame without payload"
    # (2) a commit is the payload of the WRITE that executed OK in the cycle before;
    # each such WRITE commits once; all the inlets got is what the reference expects
    for cycle, port, chunk in obs.commits:
        e = by_cycle.get(cycle - 1)
        assert e is not None and e.kind == "execute" and e.verdict == Verdict.OK \
            and e.code == P.Command.WRITE + port, f"cycle {cycle}: a commit after {e}"
        assert P.Frame(e.code, e.seq, chunk) in valid, \
            f"cycle {cycle}: committed {chunk.hex()} to inlet {port}, not a frame's payload"
    writes = [e for e in ok if e.code & 0xF0 == P.Command.WRITE]
    assert len(obs.commits) == len(writes), "an OK WRITE without its commit"
    assert obs.committed == want.committed, "inlet contents differ from the OK WRITEs'"
    # (3) every probe executed OK, two cycles after its last byte
    for last, seq in stream.probes:
        e = by_cycle.get(last + 2)
        assert e is not None and (e.kind, e.verdict, e.code, e.seq) == (
            "execute", Verdict.OK, P.Command.RESET, seq), \
            f"no resync: RESET SEQ {seq} ending at cycle {last} got {e}"
    # and the exact sequence of verdicts and aborts
    assert obs.events == want.events, _first_difference(obs.events, want.events)
    if totals is not None:
        totals.add(stream, obs)
    return obs


# ------------------------------------------------------------------------------ tests

def _stream(*pieces):
    """A hand-made stream: (bytes, gap) pieces or an int (quiet cycles before the next)."""
    b = F.StreamBuilder()
    for piece in pieces:
        if isinstance(piece, int):
            b.quiet(piece)
        else:
            b.send(*piece, frame=True)
    return b


def test_reference_on_known_streams():
    """The reference itself, on streams whose outcome the unit tests pin down."""
    good = P.encode_frame(P.Command.WRITE + 2, 5, bytes([1]))
    b = _stream((good, 3), TIMEOUT + 10, (F.flip_bit(good, 8 * len(good) - 1), 3),
                TIMEOUT + 10, (good[:4], 3), TIMEOUT + 10, (good, 2), TIMEOUT + 10,
                (bytes([P.SYNC, P.Command.WRITE, 1, 0xFF, 0x01]) + bytes(9), 2))
    want = F.predict(b.stream, timeout=TIMEOUT, reply_delay=4, beat_bytes=BEAT_BYTES,
                     capacity=P.INLET_BYTES)
    assert [(e.kind, e.verdict, e.error) for e in want.events] == [
        ("execute", Verdict.OK, None), ("execute", Verdict.BAD_CRC, None),
        ("abort", None, P.Error.TIMEOUT), ("execute", Verdict.REPLAY, None),
        ("abort", None, P.Error.BAD_LENGTH)]
    assert want.committed[2] == b"\x01" and not any(want.committed[:2] + want.committed[3:])
    last_byte = b.stream.bytes_at[len(good) - 1][0]
    assert want.events[0].cycle == last_byte + 2
    cut_last = b.stream.bytes_at[2 * len(good) + 3][0]
    assert want.events[2].cycle == cut_last + TIMEOUT + 1
    fuzz_one(b.stream, 4, P.INLET_BYTES)


def test_edges_of_the_timeout_and_the_reply():
    """A byte TIMEOUT + 1 cycles after the last still belongs to the frame, one a cycle
    later does not; in a LEN above the maximum, a byte at TIMEOUT + 1 is lost to the
    abort; a SYNC in the first cycle after ``replied`` starts a frame."""
    frame = P.encode_frame(P.Command.READ, 9, bytes([3]))
    too_long = bytes([P.SYNC, P.Command.WRITE, 1, 0x01, 0x01, 0, 0])    # LEN 257
    for stall in EDGE_GAPS:
        for delay in (1, 7):
            b = F.StreamBuilder()
            b.send(frame, 2, (3, stall), frame=True)
            b.quiet(TIMEOUT + delay + 3)
            b.send(too_long, 2, (6, stall))
            b.probe(10, TIMEOUT + delay + 2)
            b.probe(11, delay + 3)                # SYNC in the cycle after replied
            obs = fuzz_one(b.stream, delay, P.INLET_BYTES)
            first = obs.events[0]
            if stall <= TIMEOUT + 1:
                assert (first.kind, first.verdict, first.req) == ("execute", Verdict.OK, 3)
            else:
                assert (first.kind, first.error) == ("abort", P.Error.TIMEOUT)
            fifth, sixth = (b.stream.bytes_at[len(frame) + i][0] for i in (5, 6))
            aborts = [e.cycle for e in obs.events if e.error == P.Error.BAD_LENGTH]
            assert aborts == [sixth + TIMEOUT + 1 if stall < TIMEOUT + 1
                              else fifth + TIMEOUT + 1], (stall, delay)


def test_fuzz_receiver(capsys):
    """The default run: a short derandomized fuzz (the same streams every run), all
    three properties and the exact events."""
    totals = Totals()

    @settings(max_examples=60, derandomize=True, **SETTINGS)
    @given(fuzz_streams(min_pieces=2, max_pieces=20))
    @example((_stream((P.encode_frame(P.Command.WRITE, 1, bytes(13)), 2)).stream, 1, 24))
    def fuzz(case):
        fuzz_one(*case, totals=totals)

    start = time.monotonic()
    fuzz()
    with capsys.disabled():
        print(f"\nhost link fuzz: {totals.report()}; {time.monotonic() - start:.0f} s")
    assert totals.probes > totals.streams, "too few resync probes: the streams shrank?"


@pytest.mark.long
def test_fuzz_receiver_long(capsys):
    """At least LONG_FRAMES frames (the long run of issue 17)."""
    totals = Totals()
    chosen = int(os.environ.get("NIBBLE_FUZZ_SEED", random.SystemRandom().randrange(1 << 32)))
    with capsys.disabled():
        print(f"\nhost link fuzz: seed {chosen} (NIBBLE_FUZZ_SEED={chosen} repeats this run)")

    @seed(chosen)
    @settings(max_examples=500, **SETTINGS)
    @given(fuzz_streams(min_pieces=20, max_pieces=60))
    def fuzz(case):
        fuzz_one(*case, totals=totals)

    start = time.monotonic()
    fuzz()
    with capsys.disabled():
        print(f"host link fuzz: {totals.report()}; {time.monotonic() - start:.0f} s")
    assert totals.seen >= LONG_FRAMES, totals.report()


# ------------------------------------------------------------------- the whole bridge
# The same kinds of pieces over the HostBridge's rx pin, from a stop-and-wait host (it
# waits for the reply, or for the line to stay quiet, before the next piece): every
# reply must be the one the reference's verdict calls for, as a valid frame, and the
# inlets (behind the receiver) must get exactly the OK WRITEs' payloads. The bridge
# simulates some 50 times slower per byte than the receiver alone (a UART byte is 40
# cycles, the accelerator ticks along), so this is a few short streams.

BRIDGE_CLK, BRIDGE_BAUD = 400_000, 100_000
BRIDGE_DIV = BRIDGE_CLK // BRIDGE_BAUD
BYTE_CYCLES = 10 * BRIDGE_DIV
BRIDGE_TIMEOUT_S = P.interbyte_timeout(BRIDGE_BAUD, min_s=0)     # 40 bit times
BRIDGE_TIMEOUT = math.ceil(BRIDGE_TIMEOUT_S * BRIDGE_CLK)
#: No WRITE to ``cmd``: the accelerator would run whatever it is sent, and its inlets'
#: room (BUSY) would depend on it. The others are never drained, and the pieces of a
#: stream put far less than an inlet's INLET_BYTES into any of them.
BRIDGE_PORTS = tuple(range(1, len(P.PORTS)))
BRIDGE_MAX_PAYLOAD = 32
#: Bytes a piece may carry after the end of a frame in it: they arrive while the reply
#: (7 bytes at least) is being sent, and are dropped.
BRIDGE_TAIL = 3
#: The reference's reply time: longer than a tail (with a short stall in it), shorter
#: than the shortest reply (7 bytes).
BRIDGE_REPLY = (BRIDGE_TAIL + 1) * BYTE_CYCLES + BRIDGE_TIMEOUT // 2
assert BRIDGE_REPLY < 7 * BYTE_CYCLES


def _cap_tail(data: bytes) -> bytes:
    """``data`` up to BRIDGE_TAIL bytes past the end of the first frame in it (as the
    reference sees it, bytes a UART apart)."""
    b = F.StreamBuilder()
    b.send(data, BYTE_CYCLES)
    events = F.predict(b.stream, timeout=BRIDGE_TIMEOUT, reply_delay=10 ** 9,
                       beat_bytes=BEAT_BYTES, capacity=P.INLET_BYTES).events
    if events and events[0].kind == "execute":
        last = [c for c, _ in b.stream.bytes_at].index(events[0].cycle - 2)
        return data[:last + 1 + BRIDGE_TAIL]
    return data


@st.composite
def bridge_pieces(draw, max_pieces):
    """[(bytes, stall)]: a stall (index, cycles) holds the line quiet before byte
    ``index``, well within the timeout or well beyond it."""
    cmds = commands(BRIDGE_PORTS, BRIDGE_MAX_PAYLOAD)
    pieces, sent = [], []
    for _ in range(draw(st.integers(1, max_pieces))):
        kind = draw(st.sampled_from(["valid"] * 3 + ["retransmit"] + ["mutated"] * 3
                                    + ["unknown", "long", "garbage"]))
        if kind == "retransmit" and sent:
            data = draw(st.sampled_from(sent[-2:]))
        elif kind == "mutated":
            data = draw(mutated(P.encode_frame(*draw(cmds)), cmds))
        elif kind == "unknown":
            code, seq, payload = draw(cmds)
            code = draw(st.integers(0, 255).filter(lambda c: c not in F.KNOWN_CODES))
            data = P.encode_frame(code, seq, payload)
        elif kind == "long":            # LEN above the maximum: the header and a few bytes
            code, seq, _ = draw(cmds)
            data = P.encode_frame(code, seq, bytes(P.MAX_PAYLOAD + draw(st.integers(1, 300))))
            data = data[:P.HEADER_LEN + draw(st.integers(0, 6))]
        elif kind == "garbage":
            data = bytes(draw(st.lists(noise_bytes, min_size=1, max_size=6)))
        else:
            data = P.encode_frame(*draw(cmds))
            sent.append(data)
        data = _cap_tail(data)
        stall = None
        if data and draw(st.integers(0, 5)) == 0:
            stall = (draw(st.integers(1, len(data))),
                     draw(st.sampled_from([BRIDGE_TIMEOUT // 2, 5 * BRIDGE_TIMEOUT])))
        pieces.append((data, stall))
    pieces.append((P.encode_frame(P.Command.STATUS, draw(seqs)), None))    # the probe
    return pieces


def _bridge_stream(pieces):
    """The pieces as the receiver sees them: bytes a UART apart, pieces far apart (the
    host waits for the reply or the timeout in between)."""
    b = F.StreamBuilder()
    spans = []
    for data, stall in pieces:
        b.quiet(2 * BRIDGE_TIMEOUT + 2 * BRIDGE_REPLY)
        first = len(b.stream.bytes_at)
        b.send(data, BYTE_CYCLES, (stall[0], BYTE_CYCLES + stall[1]) if stall else None,
               frame=True)
        if data:        # the cycles its events fall in
            spans.append((b.stream.bytes_at[first][0], b.cycle + BRIDGE_TIMEOUT + BRIDGE_REPLY + 2))
        else:
            spans.append((0, -1))
    return b.stream, spans


def _reply_for(event):
    """The reply frame (code, seq, payload) the bridge sends for a receiver event: the
    accelerator has no results, so a READ gets no beats."""
    if event.kind == "abort":
        return P.Frame(P.Reply.NAK, event.seq, bytes([event.error]))
    errors = {Verdict.BAD_CRC: P.Error.BAD_CRC, Verdict.UNKNOWN: P.Error.UNKNOWN_CMD,
              Verdict.BAD_LENGTH: P.Error.BAD_LENGTH, Verdict.BUSY: P.Error.BUSY}
    if event.verdict in errors:
        return P.Frame(P.Reply.NAK, event.seq, bytes([errors[event.verdict]]))
    if event.code == P.Command.STATUS:
        flags = 0
        return P.Frame(P.Reply.ACK, event.seq, bytes([P.PROTOCOL_VERSION, PARAMS.tile,
                                                      PARAMS.acc_bits, flags, 0, 0]))
    return P.Frame(P.Reply.ACK, event.seq)


def run_bridge(pieces, expected_per_piece):
    """Send the pieces as a stop-and-wait host; return (reply frames, inlet commits)."""
    dut = HostBridge(PARAMS, clk_hz=BRIDGE_CLK, baud=BRIDGE_BAUD, timeout_s=BRIDGE_TIMEOUT_S)
    assert dut.timeout_cycles == BRIDGE_TIMEOUT
    listener = UartListener(dut.tx, BRIDGE_DIV)
    replies, commits = [], []
    inlets = [dut.inlets[P.PORTS[k]] for k in range(len(P.PORTS))]
    strobes = [s for i in inlets for s in (i.w_en, i.w_data, i.w_commit, i.w_rollback)]

    def parse():
        while True:
            frame, used = P.find_frame(bytes(listener.bytes))   # raises on a bad reply
            if frame is None:
                return
            assert listener.bytes[0] == P.SYNC, f"bytes before a reply: {listener.bytes.hex()}"
            replies.append(frame)
            del listener.bytes[:used]

    async def host(ctx):
        await ctx.tick().repeat(8)
        want = 0
        for (data, stall), count in zip(pieces, expected_per_piece):
            split = stall[0] if stall else len(data)
            await uart_send(ctx, dut.rx, data[:split], BRIDGE_DIV)
            if stall:
                await ctx.tick().repeat(stall[1])
                await uart_send(ctx, dut.rx, data[split:], BRIDGE_DIV)
            want += count
            # (the longest reply, STATUS, is 13 bytes)
            for _ in range((BRIDGE_TIMEOUT + 16 * BYTE_CYCLES) // 16):
                parse()
                if len(replies) >= want:
                    break
                await ctx.tick().repeat(16)
            await ctx.tick().repeat(3 * BYTE_CYCLES)
        await ctx.tick().repeat(BRIDGE_TIMEOUT + 20 * BYTE_CYCLES)
        parse()
        assert not listener.bytes, f"bytes after the last reply: {bytes(listener.bytes).hex()}"
        assert not listener.errors, "a reply byte with a bad stop bit"

    async def watch(ctx):
        tentative = [bytearray() for _ in inlets]
        async for _, _, *values in ctx.tick().sample(*strobes):
            for k in range(len(inlets)):
                en, data, commit, rollback = values[4 * k:4 * k + 4]
                if en:
                    tentative[k].append(data)
                if commit:
                    commits.append((k, bytes(tentative[k])))
                    tentative[k].clear()
                if rollback:
                    tentative[k].clear()

    sim = Simulator(dut)
    sim.add_clock(1 / BRIDGE_CLK)
    sim.add_testbench(host)
    sim.add_testbench(listener.run, background=True)
    sim.add_testbench(watch, background=True)
    sim.run()
    return replies, commits


def bridge_one(pieces):
    stream, spans = _bridge_stream(pieces)
    want = F.predict(stream, timeout=BRIDGE_TIMEOUT, reply_delay=BRIDGE_REPLY,
                     beat_bytes=BEAT_BYTES, capacity=P.INLET_BYTES)
    per_piece = [sum(first <= e.cycle <= last for e in want.events) for first, last in spans]
    assert sum(per_piece) == len(want.events)
    replies, commits = run_bridge(pieces, per_piece)
    valid = F.frames_in(stream.data)
    # (1) and (2): what reached the inlets is the OK WRITEs' payloads, each a valid frame's
    for port, chunk in commits:
        assert any(f.code == P.Command.WRITE + port and f.payload == chunk for f in valid), \
            f"inlet {port} got {chunk.hex()}, no valid frame's payload"
    got = [bytearray() for _ in P.PORTS]
    for port, chunk in commits:
        got[port] += chunk
    assert [bytes(g) for g in got] == want.committed
    # every reply is the reference's, in order (and nothing else came: parse() raised
    # on a damaged reply, and the host checked the line after the last)
    assert replies == [_reply_for(e) for e in want.events]
    # (3) the final STATUS resynchronised
    assert replies[-1].code == P.Reply.ACK and len(replies[-1].payload) == P.STATUS_LEN
    return len(pieces), len(stream.bytes_at), len(want.events)


def test_fuzz_bridge():
    """The default run: a few short derandomized streams through the whole bridge."""

    write = P.encode_frame(P.Command.WRITE + 1, 7, bytes([1, 2, 3, 4]))

    @settings(max_examples=2, derandomize=True, **SETTINGS)
    @given(bridge_pieces(max_pieces=3))
    @example([(F.flip_bit(write, 8 * P.HEADER_LEN + 3), None),     # a payload bit: BAD_CRC
              (write[:-1], None),                                 # cut short: TIMEOUT
              (bytes([1, P.SYNC]) + write[1:], (4, 5 * BRIDGE_TIMEOUT)),   # noise, a pause
              (write, None), (write, None),                       # executed, then REPLAY
              (P.encode_frame(P.Command.STATUS, 8), None)])
    @example([(b"", None), (P.encode_frame(P.Command.STATUS, 1), None)])    # nothing sent
    def fuzz(pieces):
        bridge_one(pieces)

    fuzz()


@pytest.mark.long
def test_fuzz_bridge_long(capsys):
    """More and longer streams through the whole bridge."""
    totals = Counter()
    chosen = int(os.environ.get("NIBBLE_FUZZ_SEED", random.SystemRandom().randrange(1 << 32)))
    with capsys.disabled():
        print(f"\nhost bridge fuzz: seed {chosen} (NIBBLE_FUZZ_SEED={chosen} repeats this run)")

    @seed(chosen)
    @settings(max_examples=20, **SETTINGS)
    @given(bridge_pieces(max_pieces=10))
    def fuzz(pieces):
        totals.update(dict(zip(("frames", "bytes", "replies"), bridge_one(pieces))))

    start = time.monotonic()
    fuzz()
    with capsys.disabled():
        print(f"host bridge fuzz: {dict(totals)}; "
              f"{time.monotonic() - start:.0f} s")
