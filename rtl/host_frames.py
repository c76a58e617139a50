"""Frames of the host link as logic: the two halves of :class:`rtl.host_bridge.HostBridge`'s
protocol engine, each testable on its own.

* :class:`FrameReceiver`: bytes from the UART receiver -> header, payload and CRC checks
  -> a verdict in registers; it writes the payload into the target inlet tentatively and
  commits or rolls it back.
* :class:`ReplySender`: a reply (kind, error, sequence number, beats) -> the bytes of its
  frame, CRC included, to the UART transmitter.

The frame format and its rules are :mod:`wire.host_link`; the CRC network is built from
its :func:`wire.host_link.crc16_update`.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from wire import host_link as P

__all__ = ["crc16_next", "Verdict", "ReplyKind", "INLET_WRITE", "FrameReceiver", "ReplySender"]


def crc16_next(crc, byte):
    """The CRC after one more byte, as logic: an XOR network derived from
    :func:`wire.host_link.crc16_update`, which is linear, so the two cannot disagree."""
    out = []
    for i in range(16):
        terms = [crc[j] for j in range(16) if P.crc16_update(1 << j, 0) >> i & 1]
        terms += [byte[k] for k in range(8) if P.crc16_update(0, 1 << k) >> i & 1]
        bit = terms[0]
        for term in terms[1:]:
            bit = bit ^ term
        out.append(bit)
    return Cat(*out)


class Verdict(enum.Enum, shape=3):
    """What the checks of a whole received frame found (:attr:`FrameReceiver.verdict`)."""

    OK = 0            #: execute it
    BAD_CRC = 1       #: the CRC over CODE .. CRC did not end at 0
    REPLAY = 2        #: SEQ and CODE of the last executed request again (not RESET)
    UNKNOWN = 3       #: CODE is no command
    BAD_LENGTH = 4    #: LEN is not what the command takes
    BUSY = 5          #: a WRITE whose bytes did not all fit the inlet


class ReplyKind(enum.Enum, shape=2):
    """The reply :class:`ReplySender` sends, and where its payload comes from."""

    NAK = 0           #: NAK with the ``error`` byte
    ACK_EMPTY = 1     #: ACK, no payload
    ACK_STATUS = 2    #: ACK with the ``status`` bytes
    ACK_READ = 3      #: ACK with ``beats`` result beats from the outlet


#: The tentative write side of a :class:`rtl.host_bridge.StreamInlet` (its ``w_*``
#: ports), as its writer sees it.
INLET_WRITE = wiring.Signature({
    "w_data": Out(8), "w_en": Out(1), "w_full": In(1), "w_commit": Out(1), "w_rollback": Out(1),
})


class FrameReceiver(wiring.Component):
    """Receives and checks host-to-board frames, writing WRITE payloads into the inlets.

    Bytes are taken in whatever cycle they come. After ``SYNC`` the header is read,
    then LEN payload bytes (up to :data:`wire.host_link.MAX_PAYLOAD`), then the CRC; the
    CRC is updated in the cycle each byte arrives. In the cycle after the last CRC byte
    (CHECK) the frame's verdict and its command's kind go into registers, and the cycle
    after that is ``execute``. The receiver then waits for ``replied`` and ignores the
    line until it comes; from the cycle after it, it looks for ``SYNC`` again.

    A frame that stops for ``timeout_cycles`` cycles is given up (``abort``, error
    TIMEOUT), and so is one whose LEN is above the maximum, after the line has been quiet
    that long (error BAD_LENGTH: its end is unknown).

    Every payload byte of a WRITE goes into the target inlet tentatively; the inlet's
    bytes are committed in ``execute`` if the verdict is OK, and rolled back otherwise and
    in every cycle the receiver waits for ``SYNC``. The inlets take these strobes from
    registers of the receiver: a cycle after the receiver decides them.

    Parameters
    ----------
    beat_bytes : sequence of int
        Bytes per beat of each inlet, in the order of the WRITE port numbers
        (:data:`wire.host_link.PORTS`); a WRITE's LEN must be whole beats.
    timeout_cycles : int
        Clock cycles of a quiet line that end a frame.

    Attributes
    ----------
    data : In(stream.Signature(8))
        Bytes from the UART receiver; ``ready`` is always 1. A byte comes at least two
        cycles after the one before (a UART's come ten bit times apart), so that an
        inlet's ``w_full`` has caught up with the write of the one before.
    inlets : Out(INLET_WRITE).array(len(beat_bytes))
        Per inlet, registers a cycle after the event: ``w_data`` the last byte on
        ``data`` (every cycle), ``w_en`` a payload byte of a WRITE to this inlet,
        ``w_commit`` the frame to this inlet executes, ``w_rollback`` forget tentative
        bytes (the same for every inlet); and in, ``w_full``: the inlet has no room (a
        byte written while it is high makes the frame BUSY).
    code, seq : Out(8)
        CODE and SEQ of the frame (registers; ``seq`` is 0 until SEQ arrives).
    req : Out(8)
        The first payload byte (a register): the beats a READ asks for.
    execute : Out(1)
        One cycle per checked frame, two after its last byte: ``verdict`` and ``cmd_*``
        hold its checks. The bytes arriving from here until ``replied`` are dropped.
    verdict : Out(Verdict)
        The checks of the frame (a register, valid in ``execute``).
    cmd_read, cmd_status, cmd_reset : Out(1)
        The frame is a READ, a STATUS, a RESET (registers, valid in ``execute``).
    abort : Out(1)
        One cycle: the frame was given up without a verdict (from registers and the
        byte strobe). As after ``execute``, the receiver waits for ``replied``.
    abort_error : Out(8)
        The :class:`wire.host_link.Error` of ``abort`` (TIMEOUT or BAD_LENGTH).
    replied : In(1)
        The reply to the frame is out: wait for ``SYNC`` from the next cycle on.
    """

    def __init__(self, beat_bytes, timeout_cycles: int):
        self._beat_bytes = tuple(beat_bytes)
        if not 1 <= len(self._beat_bytes) <= 16:
            raise ValueError(f"WRITE codes address 1 to 16 inlets, got {len(self._beat_bytes)}")
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "data": In(stream.Signature(8)),
            "inlets": Out(INLET_WRITE).array(len(self._beat_bytes)),
            "code": Out(8), "seq": Out(8), "req": Out(8),
            "execute": Out(1), "verdict": Out(Verdict),
            "cmd_read": Out(1), "cmd_status": Out(1), "cmd_reset": Out(1),
            "abort": Out(1), "abort_error": Out(8),
            "replied": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.data.ready.eq(1)
        byte, got = self.data.payload, self.data.valid
        f = _Frame(self)
        # The receiver updates the CRC in the cycle a byte arrives (CHECK checks it
        # in the next).
        m.d.comb += f.crc_next.eq(crc16_next(f.crc, byte))
        # WRITE: the length must be whole beats of the target inlet.
        with m.Switch(f.port):
            for i, size in enumerate(self._beat_bytes):
                with m.Case(i):
                    m.d.comb += f.beat_last.eq(size - 1)
        # An inlet takes its byte and its commit or rollback from registers of its own, a
        # cycle after the receiver decides them (the decisions are long paths, and
        # bytes arrive tens of cycles apart: ``w_full`` has long caught up with a write
        # when the next byte comes).
        for i, inlet in enumerate(self.inlets):
            here = f.port == i
            m.d.sync += [inlet.w_data.eq(byte), inlet.w_en.eq(f.write_byte & here),
                         inlet.w_commit.eq(f.commit & here), inlet.w_rollback.eq(f.rollback)]
            with m.If(here):
                m.d.comb += f.target_full.eq(inlet.w_full)

        with m.FSM() as fsm:
            self._receive(m, f, byte, got)
            self._check_and_execute(m, f)
        # Inter-byte timeout: a quiet line inside a frame ends it.
        receiving = Cat(fsm.ongoing(s) for s in ("HEADER", "PAYLOAD", "CRC", "DISCARD")).any()
        with m.If(receiving & ~got & ~f.timeout):
            m.d.sync += f.timer.eq(f.timer + 1)
        with m.Else():
            m.d.sync += f.timer.eq(0)
        return m

    def _give_up(self, m, error):
        m.d.comb += [self.abort.eq(1), self.abort_error.eq(error)]
        m.next = "REPLY"

    def _receive(self, m, f, byte, got):
        """The states IDLE (wait for SYNC), HEADER, PAYLOAD and CRC."""
        with m.State("IDLE"):
            m.d.comb += f.rollback.eq(1)
            with m.If(got & (byte == P.SYNC)):
                m.d.sync += [f.crc.eq(P.CRC_INIT), f.idx.eq(0), self.seq.eq(0),
                             f.overflow.eq(0), f.beat_pos.eq(0)]
                m.next = "HEADER"

        with m.State("HEADER"):
            with m.If(got):
                m.d.sync += [f.crc.eq(f.crc_next), f.idx.eq(f.idx + 1)]
                with m.Switch(f.idx):
                    with m.Case(0):
                        m.d.sync += self.code.eq(byte)
                    with m.Case(1):
                        m.d.sync += self.seq.eq(byte)
                    with m.Case(2):
                        m.d.sync += f.len_lo.eq(byte)
                    with m.Case(3):
                        full_len = Cat(f.len_lo, byte)
                        m.d.sync += [f.length.eq(full_len), f.left.eq(full_len), f.idx.eq(0)]
                        with m.If(full_len > P.MAX_PAYLOAD):
                            m.next = "DISCARD"      # its end is unknown: wait for quiet
                        with m.Elif(full_len == 0):
                            m.next = "CRC"
                        with m.Else():
                            m.next = "PAYLOAD"
            with m.Elif(f.timeout):
                self._give_up(m, P.Error.TIMEOUT)

        with m.State("PAYLOAD"):
            with m.If(got):
                m.d.comb += f.write_byte.eq(f.is_write)
                m.d.sync += [f.crc.eq(f.crc_next), f.left.eq(f.left - 1),
                             f.beat_pos.eq(Mux(f.beat_pos == f.beat_last, 0, f.beat_pos + 1))]
                with m.If(f.is_write & f.target_full):
                    m.d.sync += f.overflow.eq(1)
                with m.If(f.left == f.length):
                    m.d.sync += self.req.eq(byte)
                with m.If(f.left == 1):
                    m.next = "CRC"
            with m.Elif(f.timeout):
                self._give_up(m, P.Error.TIMEOUT)

        with m.State("CRC"):
            with m.If(got):
                m.d.sync += [f.crc.eq(f.crc_next), f.idx.eq(f.idx + 1)]
                with m.If(f.idx == 1):
                    m.next = "CHECK"
            with m.Elif(f.timeout):
                self._give_up(m, P.Error.TIMEOUT)

    def _check_and_execute(self, m, f):
        """The states CHECK, DISCARD (a LEN above the maximum), EXECUTE and REPLY."""
        with m.State("CHECK"):
            # The frame's verdict and its command's kind into registers, so that the
            # enables of ``execute`` (commit, rollback, and the bridge's rewind,
            # release, flush) start at registers.
            # CRC over CODE..CRC ends at 0 for an intact frame.
            replay = (f.last_valid & (self.seq == f.last_seq) & (self.code == f.last_code)
                      & ~f.is_reset)
            len_ok = Mux(f.is_write, (f.length != 0) & (f.beat_pos == 0),
                         f.length == Mux(f.is_read, 1, 0))
            m.d.sync += [
                f.c_write.eq(f.is_write), self.cmd_read.eq(f.is_read),
                self.cmd_status.eq(f.is_status), self.cmd_reset.eq(f.is_reset),
                self.verdict.eq(Mux(f.crc != 0, Verdict.BAD_CRC, Mux(
                    replay, Verdict.REPLAY, Mux(~f.known, Verdict.UNKNOWN, Mux(
                        ~len_ok, Verdict.BAD_LENGTH, Mux(
                            f.is_write & f.overflow, Verdict.BUSY, Verdict.OK)))))),
            ]
            m.next = "EXECUTE"

        with m.State("DISCARD"):
            with m.If(f.timeout):
                self._give_up(m, P.Error.BAD_LENGTH)

        with m.State("EXECUTE"):
            ok = self.verdict == Verdict.OK
            m.d.comb += [self.execute.eq(1), f.commit.eq(ok & f.c_write),
                         f.rollback.eq(~f.commit)]
            # The last request executed, to tell a retransmission.
            with m.If(ok):
                m.d.sync += [f.last_seq.eq(self.seq), f.last_code.eq(self.code),
                             f.last_valid.eq(1)]
            m.next = "REPLY"

        with m.State("REPLY"):
            with m.If(self.replied):
                m.next = "IDLE"


class _Frame:
    """The registers and nets of :class:`FrameReceiver`'s frame in progress."""

    def __init__(self, rx: FrameReceiver):
        self.len_lo = Signal(8, name="len_lo")
        self.length = Signal(range(P.MAX_PAYLOAD + 1), name="length")
        self.left = Signal(range(P.MAX_PAYLOAD + 1), name="left")  # payload bytes to go
        self.crc, self.crc_next = Signal(16, name="crc"), Signal(16, name="crc_next")
        self.idx = Signal(range(4), name="idx")             # byte of the header or CRC
        self.overflow = Signal(name="overflow")             # WRITE: the inlet ran full
        self.timer = Signal(range(rx.timeout_cycles + 1), name="timer")
        self.timeout = self.timer == rx.timeout_cycles
        # The command, decoded from CODE.
        code = rx.code
        self.port = code[:4]
        self.is_write = (code[4:] == P.Command.WRITE >> 4) & (self.port < len(rx.inlets))
        self.is_read, self.is_status, self.is_reset = (
            code == P.Command.READ, code == P.Command.STATUS, code == P.Command.RESET)
        self.known = self.is_write | self.is_read | self.is_status | self.is_reset
        self.c_write = Signal(name="c_write")               # CHECK's register of is_write
        # WRITE: the byte's place in its beat, and the target inlet's last place.
        self.beat_pos = Signal(range(max(rx._beat_bytes)), name="beat_pos")
        self.beat_last = Signal(range(max(rx._beat_bytes)), name="beat_last")
        self.write_byte = Signal(name="write_byte")  # a payload byte goes to the target inlet
        self.commit = Signal(name="commit")          # the frame's bytes go on to the accelerator
        self.rollback = Signal(name="rollback")
        self.target_full = Signal(name="target_full")
        # Replay memory: the last request executed.
        self.last_seq = Signal(8, name="last_seq")
        self.last_code = Signal(8, name="last_code")
        self.last_valid = Signal(name="last_valid")


class ReplySender(wiring.Component):
    """Sends one reply frame to the UART transmitter, computing its CRC on the way.

    ``start`` begins a reply; the header goes out from the second cycle after it (the
    cycle between is for the caller to settle ``beats``). ``kind``, ``error``, ``seq``,
    ``beats`` and ``status`` are read from then until ``done`` and must hold still. A
    byte is offered on ``tx`` until taken; the CRC takes in each sent byte in the cycle
    after it was sent, from registers.

    Parameters
    ----------
    beat_bytes : int
        Bytes per result beat (``ACK_READ``'s payload is ``beats`` of them).
    max_beats : int
        The most ``beats`` a reply carries.

    Attributes
    ----------
    start : In(1)
        Begin a reply (ignored while one is being sent).
    kind : In(ReplyKind)
        The reply's code and payload source.
    error : In(8)
        The NAK's :class:`wire.host_link.Error` byte.
    seq : In(8)
        The SEQ of the request answered.
    beats : In(range(max_beats + 1))
        ``ACK_READ``: result beats in the payload.
    status : In(data.ArrayLayout(8, STATUS_LEN))
        ``ACK_STATUS``: the payload bytes (:class:`wire.host_link.Status`).
    r_data : In(8)
        ``ACK_READ``: the next payload byte, from the outlet's read cursor.
    r_en : Out(1)
        ``ACK_READ``: ``r_data`` was sent; advance the read cursor.
    tx : Out(stream.Signature(8))
        The frame's bytes, to the UART transmitter. ``ready`` must be low in the cycle
        after a byte is taken (as the empty flag of :class:`rtl.uart.UARTTx`'s holding
        register is): the CRC takes in the last payload byte only in that cycle.
    done : Out(1)
        One cycle: the last byte of the frame was sent (taken by ``tx``).
    """

    def __init__(self, beat_bytes: int, max_beats: int):
        self._beat_bytes, self._max_beats = beat_bytes, max_beats
        super().__init__({
            "start": In(1), "kind": In(ReplyKind), "error": In(8), "seq": In(8),
            "beats": In(range(max_beats + 1)),
            "status": In(data.ArrayLayout(8, P.STATUS_LEN)),
            "r_data": In(8), "r_en": Out(1),
            "tx": Out(stream.Signature(8)),
            "done": Out(1),
        })

    def _length(self, m):
        """LEN of the reply, from ``kind`` and ``beats``."""
        length = Signal(16, name="reply_len")
        with m.Switch(self.kind):
            with m.Case(ReplyKind.NAK):
                m.d.comb += length.eq(1)
            with m.Case(ReplyKind.ACK_STATUS):
                m.d.comb += length.eq(P.STATUS_LEN)
            with m.Case(ReplyKind.ACK_READ):
                # A constant product as shifts and adds: yosys would put a bare ``*``
                # on an ECP5 multiplier block.
                size = self._beat_bytes
                m.d.comb += length.eq(sum(self.beats << i for i in range(size.bit_length())
                                          if size >> i & 1))
        return length

    def elaborate(self, platform):
        m = Module()
        byte, sent = self.tx.payload, self.tx.valid & self.tx.ready
        length = self._length(m)
        left = Signal(range(max(self._max_beats * self._beat_bytes, P.STATUS_LEN) + 1),
                      name="left")                   # payload bytes to go
        idx = Signal(range(P.STATUS_LEN + 1), name="idx")   # byte of header/payload/CRC
        crc = Signal(16, name="crc")

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.next = "PREPARE"

            with m.State("PREPARE"):
                m.d.sync += idx.eq(0)
                m.next = "SEND_HEADER"

            with m.State("SEND_HEADER"):
                m.d.comb += self.tx.valid.eq(1)
                with m.Switch(idx):
                    with m.Case(0):
                        m.d.comb += byte.eq(P.SYNC)
                    with m.Case(1):
                        m.d.comb += byte.eq(Mux(self.kind == ReplyKind.NAK,
                                                P.Reply.NAK, P.Reply.ACK))
                    with m.Case(2):
                        m.d.comb += byte.eq(self.seq)
                    with m.Case(3):
                        m.d.comb += byte.eq(length[:8])
                    with m.Default():
                        m.d.comb += byte.eq(length[8:])
                with m.If(sent):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 4):
                        m.d.sync += [idx.eq(0), left.eq(length)]
                        with m.If(length == 0):
                            m.next = "SEND_CRC"
                        with m.Else():
                            m.next = "SEND_PAYLOAD"

            with m.State("SEND_PAYLOAD"):
                m.d.comb += self.tx.valid.eq(1)
                with m.Switch(self.kind):
                    with m.Case(ReplyKind.NAK):
                        m.d.comb += byte.eq(self.error)
                    with m.Case(ReplyKind.ACK_STATUS):
                        with m.Switch(idx):
                            for i in range(P.STATUS_LEN):
                                with m.Case(i):
                                    m.d.comb += byte.eq(self.status[i])
                    with m.Default():
                        m.d.comb += [byte.eq(self.r_data), self.r_en.eq(sent)]
                with m.If(sent):
                    m.d.sync += [idx.eq(idx + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.d.sync += idx.eq(0)
                        m.next = "SEND_CRC"

            with m.State("SEND_CRC"):
                m.d.comb += [self.tx.valid.eq(1), byte.eq(Mux(idx == 0, crc[8:], crc[:8]))]
                with m.If(sent):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"

        self._crc(m, fsm, crc, idx)
        return m

    def _crc(self, m, fsm, crc, idx):
        """Updates ``crc`` with the bytes sent: SYNC (header byte 0) starts it, the other
        header and payload bytes go in, one cycle after each was sent, from registers,
        which the UART (ten bit times per byte) never notices."""
        sent = self.tx.valid & self.tx.ready
        tx_sent, tx_init, tx_step = Signal(8, name="tx_sent"), Signal(), Signal()
        header = fsm.ongoing("SEND_HEADER")
        m.d.sync += [tx_init.eq(sent & header & (idx == 0)),
                     tx_step.eq(sent & ((header & (idx != 0)) | fsm.ongoing("SEND_PAYLOAD")))]
        with m.If(sent):
            m.d.sync += tx_sent.eq(self.tx.payload)
        with m.If(tx_init):
            m.d.sync += crc.eq(P.CRC_INIT)
        with m.Elif(tx_step):
            m.d.sync += crc.eq(crc16_next(crc, tx_sent))
