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

import os
import random
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, Phase, example, given, seed, settings
from hypothesis import strategies as st

from golden.params import NibbleParams
from rtl.host_frames import Verdict
from verif import host_fuzz as F
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
def commands(draw):
    """(CODE, SEQ, payload) of a well-formed command."""
    kind = draw(st.sampled_from(["write", "write", "write", "read", "status", "reset"]))
    seq = draw(seqs)
    if kind == "write":
        port = draw(st.integers(0, len(BEAT_BYTES) - 1))
        size = BEAT_BYTES[port]
        beats = draw(st.one_of(st.integers(1, 4), st.integers(1, P.MAX_PAYLOAD // size)))
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
def mutated(draw, frame):
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
            out = F.splice(P.encode_frame(*draw(commands())), out)
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
            base = draw(st.one_of(st.builds(lambda c: P.encode_frame(*c), commands()),
                                  st.sampled_from(sent[-3:] or [P.encode_frame(P.Command.STATUS, 0)])))
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
    abort; a SYNC one cycle into the line's return after ``replied`` starts a frame."""
    frame = P.encode_frame(P.Command.READ, 9, bytes([3]))
    for stall in EDGE_GAPS:
        for delay in (1, 7):
            b = F.StreamBuilder()
            b.send(frame, 2, (3, stall), frame=True)
            b.send(bytes([P.SYNC, P.Command.WRITE, 1, 0x01, 0x01, 0, 0]), 2, (6, stall))
            b.probe(10, TIMEOUT + delay + 2)
            b.probe(11, delay + 3)                # right after the last reply
            fuzz_one(b.stream, delay, P.INLET_BYTES)


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
    @settings(max_examples=450, **SETTINGS)
    @given(fuzz_streams(min_pieces=20, max_pieces=60))
    def fuzz(case):
        fuzz_one(*case, totals=totals)

    start = time.monotonic()
    fuzz()
    with capsys.disabled():
        print(f"host link fuzz: {totals.report()}; {time.monotonic() - start:.0f} s")
    assert totals.seen >= LONG_FRAMES, totals.report()
