"""Host-link fuzzing: timed byte streams for :class:`rtl.host_frames.FrameReceiver`, a
reference of what the receiver must do with them, and an Amaranth-simulator bench that
runs a stream and records what the receiver did.

The reference (:func:`predict`) takes its decisions from :mod:`wire.host_link`: a frame
is complete, valid, damaged or too long when :func:`wire.host_link.find_frame` says so;
its CODE, SEQ and payload are what the decoder returns. It adds only the receiver's
documented timing (``FrameReceiver``'s docstring): ``execute`` two cycles after a
frame's last byte, the line ignored until the cycle after ``replied``, a frame given up
(``abort``) ``timeout + 1`` cycles after its last byte when no byte comes by then (a LEN
above the maximum: whatever comes), and the inlet's ``w_full`` making a WRITE BUSY.

Nothing here draws random numbers: the test (``tests/test_host_fuzz.py``) draws the
streams with hypothesis and builds them with :class:`StreamBuilder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.sim import Simulator

from rtl.host_frames import FrameReceiver, Verdict
from wire import host_link as P

__all__ = ["KNOWN_CODES", "MIN_GAP", "Stream", "StreamBuilder", "Event", "Prediction",
           "Observation", "predict", "length_ok", "frames_in", "run_receiver",
           "flip_bit", "drop_byte", "insert_byte", "truncate", "splice"]

#: Cycles from one byte to the next at least (FrameReceiver's input rule).
MIN_GAP = 2

#: CODE values that are commands, for a receiver with len(PORTS) inlets.
KNOWN_CODES = frozenset([P.Command.READ, P.Command.STATUS, P.Command.RESET,
                         *(P.Command.WRITE + i for i in range(len(P.PORTS)))])


# ------------------------------------------------------------------------ mutations
# Byte-level damage to frames; the frames themselves come from P.encode_frame.

def flip_bit(data: bytes, bit: int) -> bytes:
    """``data`` with bit ``bit`` (modulo its length in bits) inverted."""
    bit %= 8 * len(data)
    out = bytearray(data)
    out[bit // 8] ^= 1 << bit % 8
    return bytes(out)


def drop_byte(data: bytes, index: int) -> bytes:
    index %= len(data)
    return data[:index] + data[index + 1:]


def insert_byte(data: bytes, index: int, byte: int) -> bytes:
    index %= len(data) + 1
    return data[:index] + bytes([byte]) + data[index:]


def truncate(data: bytes, keep: int) -> bytes:
    """The first ``keep`` bytes (modulo the length: never the whole frame)."""
    return data[:keep % len(data)]


def splice(head: bytes, tail: bytes) -> bytes:
    """The header of one encoded frame with the rest of another: a frame whose LEN
    (or CODE, SEQ) does not match its payload and CRC."""
    return head[:P.HEADER_LEN] + tail[P.HEADER_LEN:]


# -------------------------------------------------------------------------- streams

@dataclass
class Stream:
    """Bytes on the receiver's input and the cycles they come in."""

    bytes_at: list = field(default_factory=list)    # (cycle, byte), cycles increasing
    #: RESET frames sent after a quiet line long enough to resynchronise from anything:
    #: (cycle of the last byte, SEQ). Each must execute with verdict OK.
    probes: list = field(default_factory=list)
    frames: int = 0                                 # frame-like pieces (valid or damaged)
    kinds: dict = field(default_factory=dict)       # piece kind -> count

    @property
    def data(self) -> bytes:
        return bytes(b for _, b in self.bytes_at)

    @property
    def end(self) -> int:
        return self.bytes_at[-1][0] if self.bytes_at else 0


class StreamBuilder:
    """Appends pieces of a :class:`Stream`, keeping bytes at least :data:`MIN_GAP`
    cycles apart."""

    def __init__(self, start: int = 4):
        self.stream = Stream()
        self.cycle = start - MIN_GAP        # cycle of the last byte (or before the first)
        self._wait = MIN_GAP                # cycles from the last byte to the next

    def quiet(self, cycles: int):
        """The next byte comes at least ``cycles`` cycles after the last one."""
        self._wait = max(self._wait, cycles)

    def send(self, data: bytes, gap: int = MIN_GAP, stall=None, kind=None, frame=False):
        """``data`` a byte every ``gap`` cycles; ``stall`` = (index, cycles): byte
        ``index`` comes that many cycles after the one before it instead."""
        if gap < MIN_GAP:
            raise ValueError(f"bytes come {MIN_GAP} cycles apart at least, not {gap}")
        for i, byte in enumerate(data):
            wait = gap if i else max(gap, self._wait)
            if stall is not None and i == stall[0]:
                wait = max(wait, stall[1])
            self.cycle += wait
            self.stream.bytes_at.append((self.cycle, byte))
        if data:
            self._wait = MIN_GAP
        if kind is not None:
            self.stream.kinds[kind] = self.stream.kinds.get(kind, 0) + 1
        self.stream.frames += bool(frame)

    def probe(self, seq: int, resync_cycles: int, gap: int = MIN_GAP):
        """A RESET frame after ``resync_cycles`` of quiet line."""
        self.quiet(resync_cycles)
        self.send(P.encode_frame(P.Command.RESET, seq), gap, kind="probe", frame=True)
        self.stream.probes.append((self.cycle, seq))


# ------------------------------------------------------------------------ reference

@dataclass(frozen=True)
class Event:
    """What the receiver signals in one cycle: ``execute`` (with ``verdict``, CODE, SEQ,
    and ``req`` for a READ that executes) or ``abort`` (with ``error`` and SEQ)."""

    cycle: int
    kind: str
    seq: int
    code: int | None = None
    verdict: Verdict | None = None
    error: P.Error | None = None
    req: int | None = None


@dataclass
class Prediction:
    events: list
    committed: list             # per inlet: bytes the OK WRITE frames put into it
    ok_frames: list             # P.Frame of each frame executed with verdict OK


def length_ok(frame: P.Frame, beat_bytes) -> bool:
    """LEN is what the (known) command takes (wire.host_link "Commands"; a WRITE of no
    beats is refused)."""
    n = len(frame.payload)
    if frame.code == P.Command.READ:
        return n == 1
    if frame.code in (P.Command.STATUS, P.Command.RESET):
        return n == 0
    return n > 0 and n % beat_bytes[frame.code - P.Command.WRITE] == 0


def _too_long(frame: bytes) -> bool:
    """The header's LEN is above MAX_PAYLOAD (the decoder refuses the header alone)."""
    try:
        P.find_frame(frame[:P.HEADER_LEN], P.MAX_PAYLOAD)
    except P.FrameError:
        return True
    return False


def _complete(frame: bytes):
    """(done, decoded): ``done`` when ``frame`` (starting at SYNC, LEN within the
    maximum) is whole; ``decoded`` its P.Frame, or None when its CRC fails."""
    try:
        decoded, used = P.find_frame(frame, P.MAX_PAYLOAD)
    except P.FrameError:
        return True, None
    if decoded is not None:
        assert used == len(frame)
        return True, decoded
    return False, None


def predict(stream: Stream, *, timeout: int, reply_delay: int, beat_bytes,
            capacity: int) -> Prediction:
    """What a FrameReceiver must do with ``stream``, when ``replied`` comes
    ``reply_delay`` cycles after each execute/abort and each inlet reports ``w_full``
    once it holds ``capacity`` bytes (committed since the last RESET, plus tentative)."""
    n = len(beat_bytes)
    events, ok_frames = [], []
    committed = [bytearray() for _ in range(n)]
    level = [0] * n
    last = None                  # (CODE, SEQ) of the last frame executed OK
    listen = 0                   # first cycle the receiver looks for SYNC
    frame = None                 # the frame being received
    prev = None                  # the cycle of its last byte
    discard = False              # its LEN is above the maximum

    def give_up(cycle):
        nonlocal frame, listen
        # SEQ is the third byte of the frame (SYNC CODE SEQ ...), 0 until it came
        seq = frame[2] if len(frame) > 2 else 0
        events.append(Event(cycle, "abort", seq,
                            error=P.Error.BAD_LENGTH if discard else P.Error.TIMEOUT))
        frame, listen = None, cycle + reply_delay + 1

    def check(cycle, data, decoded):
        nonlocal last, listen
        code, seq = data[1], data[2]        # SYNC CODE SEQ ...: the registers' bytes
        req = None
        if decoded is None:
            verdict = Verdict.BAD_CRC
        elif last == (decoded.code, decoded.seq) and decoded.code != P.Command.RESET:
            verdict = Verdict.REPLAY
        elif decoded.code not in KNOWN_CODES:
            verdict = Verdict.UNKNOWN
        elif not length_ok(decoded, beat_bytes):
            verdict = Verdict.BAD_LENGTH
        elif (decoded.code & 0xF0) == P.Command.WRITE and (
                level[decoded.code - P.Command.WRITE] + len(decoded.payload) > capacity):
            verdict = Verdict.BUSY
        else:
            verdict = Verdict.OK
            last = (decoded.code, decoded.seq)
            ok_frames.append(decoded)
            if decoded.code == P.Command.READ:
                req = decoded.payload[0]
            elif decoded.code == P.Command.RESET:
                level[:] = [0] * n
            elif decoded.code not in (P.Command.STATUS,):
                port = decoded.code - P.Command.WRITE
                committed[port] += decoded.payload
                level[port] += len(decoded.payload)
        execute = cycle + 2
        events.append(Event(execute, "execute", seq, code, verdict, req=req))
        listen = execute + reply_delay + 1

    for cycle, byte in stream.bytes_at:
        if frame is not None and cycle > prev + timeout + 1:
            give_up(prev + timeout + 1)
        elif frame is not None and discard and cycle == prev + timeout + 1:
            give_up(cycle)                  # waiting out a long frame: the byte is lost
            continue
        if frame is None:
            if cycle >= listen and byte == P.SYNC:
                frame, prev, discard = bytearray([byte]), cycle, False
            continue
        frame.append(byte)
        prev = cycle
        if discard:
            continue
        if len(frame) == P.HEADER_LEN and _too_long(frame):
            discard = True
            continue
        if len(frame) >= P.HEADER_LEN:
            done, decoded = _complete(bytes(frame))
            if done:
                check(cycle, bytes(frame), decoded)
                frame = None
    if frame is not None:
        give_up(prev + timeout + 1)
    return Prediction(events, [bytes(c) for c in committed], ok_frames)


def frames_in(data: bytes) -> set:
    """Every valid frame (P.Frame) found at any SYNC in ``data``, timing aside: what an
    OK execute may have come from."""
    found = set()
    for start in range(len(data)):
        if data[start] != P.SYNC:
            continue
        try:
            frame, _ = P.find_frame(data[start:], 0xFFFF)
        except P.FrameError:
            continue
        if frame is not None:
            found.add(frame)
    return found


# ---------------------------------------------------------------------------- bench

_FLAGS = {"execute": 1, "abort": 2, "w_en": 4, "w_commit": 8, "w_rollback": 16, "broken": 32}

@dataclass
class Observation:
    events: list = field(default_factory=list)       # Event, as the receiver signalled
    commits: list = field(default_factory=list)      # (cycle, inlet, bytes) per w_commit
    committed: list = field(default_factory=list)    # per inlet: all committed bytes
    written: int = 0                                 # w_en strobes, all inlets
    cycles: int = 0


def run_receiver(stream: Stream, *, beat_bytes, timeout: int, reply_delay: int,
                 capacity: int, tail: int | None = None, dut=None) -> Observation:
    """Drive ``stream`` into a FrameReceiver (byte strobes in the given cycles), pulse
    ``replied`` ``reply_delay`` cycles after every execute/abort, model each inlet's
    fullness (``capacity`` bytes, emptied by a RESET that executes OK, as the bridge's
    flush does), and record events and inlet strobes. The receiver's interface rules
    are asserted every cycle."""
    if reply_delay < 1:
        raise ValueError("replied comes in a cycle after execute/abort")
    dut = dut if dut is not None else FrameReceiver(beat_bytes, timeout)
    n = len(beat_bytes)
    obs = Observation(committed=[bytearray() for _ in range(n)])
    tentative = [bytearray() for _ in range(n)]
    level = [0] * n
    byte_at = dict(stream.bytes_at)
    end = stream.end + timeout + reply_delay + 8 if tail is None else stream.end + tail
    # One signal sampled per cycle (sampling costs more than the receiver's logic): what
    # happened, and whether a rule broke; the details are read only when something did.
    top = Module()
    top.submodules.dut = dut
    flags = Signal(len(_FLAGS), name="flags")
    inlets = list(dut.inlets)
    top.d.comb += flags.eq(Cat(
        dut.execute, dut.abort,
        Cat(i.w_en for i in inlets).any(), Cat(i.w_commit for i in inlets).any(),
        Cat(i.w_rollback for i in inlets).any(),
        ~dut.data.ready | (dut.execute & dut.abort)
        | Cat(i.w_commit & i.w_rollback for i in inlets).any()))
    # ... in one more wide signal, sampled with it (ctx.get after the tick would read
    # the next cycle's values), and unpacked by bit fields
    fields = [("error", dut.abort_error), ("verdict", dut.verdict), ("code", dut.code),
              ("seq", dut.seq), ("req", dut.req)]
    for k, i in enumerate(inlets):
        fields += [((k, "w_en"), i.w_en), ((k, "w_data"), i.w_data),
                   ((k, "w_commit"), i.w_commit), ((k, "w_rollback"), i.w_rollback)]
    detail = Signal(sum(len(Value.cast(v)) for _, v in fields), name="detail")
    top.d.comb += detail.eq(Cat(v for _, v in fields))
    slices, lsb = {}, 0
    for name, v in fields:
        slices[name] = (lsb, (1 << len(Value.cast(v))) - 1)
        lsb += len(Value.cast(v))

    def unpack(value):
        return {name: value >> at & mask for name, (at, mask) in slices.items()}

    async def bench(ctx):
        reply_at = None
        valid = replied = 0
        full = [0] * n
        for cycle in range(end + 1):
            byte = byte_at.get(cycle)
            if (byte is not None) != valid:
                valid = int(byte is not None)
                ctx.set(dut.data.valid, valid)
            if byte is not None:
                ctx.set(dut.data.payload, byte)
            if (reply_at == cycle) != replied:
                replied = int(reply_at == cycle)
                ctx.set(dut.replied, replied)
            _, _, now, value = await ctx.tick().sample(flags, detail)
            if reply_at == cycle:
                reply_at = None
            if not now or (now == _FLAGS["w_rollback"] and not any(tentative)):
                continue
            got = unpack(value)
            if now & _FLAGS["broken"]:
                raise AssertionError(
                    f"cycle {cycle}: data.ready low, execute with abort, or an inlet's "
                    f"commit with its rollback")
            if now & (_FLAGS["execute"] | _FLAGS["abort"]):
                assert reply_at is None, f"cycle {cycle}: a verdict while one waits for replied"
                reply_at = cycle + reply_delay
                error, code, seq, req = got["error"], got["code"], got["seq"], got["req"]
                verdict = Verdict(got["verdict"])
                if now & _FLAGS["execute"]:
                    obs.events.append(Event(cycle, "execute", seq, code, verdict,
                                            req=req if verdict == Verdict.OK
                                            and code == P.Command.READ else None))
                    if verdict == Verdict.OK and code == P.Command.RESET:
                        level[:] = [0] * n          # the bridge flushes every buffer
                else:
                    obs.events.append(Event(cycle, "abort", seq, error=P.Error(error)))
            if not now & (_FLAGS["w_en"] | _FLAGS["w_commit"] | _FLAGS["w_rollback"]):
                continue
            for k, inlet in enumerate(inlets):
                if got[k, "w_en"]:
                    obs.written += 1
                    if level[k] + len(tentative[k]) < capacity:   # a full FIFO drops it
                        tentative[k].append(got[k, "w_data"])
                if got[k, "w_commit"]:
                    obs.commits.append((cycle, k, bytes(tentative[k])))
                    obs.committed[k] += tentative[k]
                    level[k] += len(tentative[k])
                    tentative[k].clear()
                if got[k, "w_rollback"]:
                    tentative[k].clear()
                now_full = int(level[k] + len(tentative[k]) >= capacity)
                if now_full != full[k]:
                    full[k] = now_full
                    ctx.set(inlet.w_full, now_full)
        assert reply_at is None, "the stream ended with a verdict waiting for replied"
        obs.cycles = end + 1

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    obs.committed = [bytes(c) for c in obs.committed]
    return obs
