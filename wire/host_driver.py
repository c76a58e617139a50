"""The host's half of the host link: GEMMs on a nibble board, or on its simulation.

:class:`HostDriver` speaks :mod:`wire.host_link` over any link: its :meth:`HostDriver.run`
takes a :class:`wire.gemm_protocol.GemmJob` and returns the same
:class:`wire.gemm_protocol.GemmOutput` as :func:`wire.gemm_protocol.expected`. The links
live with what they need: :class:`nibble.device.SerialLink` (a board, through pyserial)
and ``verif.sim_link.SimLink`` (the Verilated ``host_bridge``, through cocotb); the
user's API, :class:`nibble.device.Device`, opens either.

A link is anything with ``baud``, ``latency_s`` (time to allow for the link itself),
``interbyte_timeout_s`` (the board's), ``write(data)`` and ``read(n, timeout_s)`` (up
to ``n`` bytes; fewer when the time is up, like pyserial's).

Every request is retried, with the same sequence number, when its reply is damaged,
missing, or a NAK other than BUSY; the board executes a request once however often it
is resent (see :mod:`wire.host_link`). ``HostDriver.stats`` counts what happened.

Why here, below the gateware: it is pure Python like the formats it speaks, and both
the board driver (:mod:`nibble.device`) and the bridge's testbench
(:mod:`verif.tb_bridge`) run it; the testbench may not import :mod:`nibble`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from golden.params import NibbleParams

from . import host_link as P
from .gemm_protocol import GemmJob, OutputSpec, decode, encode

__all__ = ["GemmDevice", "HostDriver", "LinkStats", "LinkError", "DeviceError"]


class LinkError(RuntimeError):
    """No valid reply after every retry."""


class DeviceError(RuntimeError):
    """The board is not what the host expects, refused a request, or stopped making
    progress."""


@dataclass
class LinkStats:
    """What the link did: requests, resent attempts, and why attempts failed."""

    requests: int = 0
    retries: int = 0
    resent: Counter = field(default_factory=Counter)   #: retries by command (WRITE, READ, ...)
    naks: Counter = field(default_factory=Counter)     #: by :class:`wire.host_link.Error` name
    no_reply: int = 0        #: no whole reply frame in time
    bad_replies: int = 0     #: a reply frame with a bad CRC or LEN

    def __str__(self):
        naks = ", ".join(f"{k} {v}" for k, v in sorted(self.naks.items())) or "none"
        resent = ", ".join(f"{k} {v}" for k, v in sorted(self.resent.items())) or "none"
        return (f"{self.requests} requests, {self.retries} retries ({resent}); NAKs: {naks}; "
                f"{self.no_reply} without reply, {self.bad_replies} damaged replies")


class GemmDevice:
    """What every nibble device offers: :meth:`run` of a
    :class:`~wire.gemm_protocol.GemmJob`, and :meth:`gemm` on operands. Subclasses:
    :class:`HostDriver` (the UART host link) and ``verif.axi_device.AxiDevice``
    (``nibble_axi``'s AXI ports); both have ``params``, the build's
    :class:`~golden.params.NibbleParams`."""

    def gemm(self, a, b, out="raw", *, a_trans: bool = False, b_trans: bool = False):
        """C = A . B on the board, with A = ``a`` (``a.T`` if ``a_trans``) and B = ``b``
        (``b.T`` if ``b_trans``), golden ``QTensor`` operands. ``out`` is an
        :class:`~wire.gemm_protocol.OutputSpec` or a mode name ("raw", "int", "fp4").
        Returns the :class:`~wire.gemm_protocol.GemmOutput` that ``expected`` gives."""
        spec = OutputSpec(out) if isinstance(out, str) else out
        return self.run(GemmJob(a, b, a_trans, b_trans, spec))

    def run(self, job):
        """Run one :class:`~wire.gemm_protocol.GemmJob`; return its ``GemmOutput``."""
        raise NotImplementedError


class HostDriver(GemmDevice):
    """A nibble accelerator behind the host link.

    Parameters
    ----------
    link
        ``nibble.device.SerialLink``, ``verif.sim_link.SimLink``, or anything alike.
    params : NibbleParams or None
        Expected parameters; None takes the board's (from STATUS). A board with other
        ones raises :class:`DeviceError`.
    retries : int
        Resends of one request before :class:`LinkError`.
    stall_rounds : int
        Rounds of requests without progress before :class:`DeviceError`.

    Opening the device asks for STATUS, checks it, and resets the board.
    """

    def __init__(self, link, params=None, *, retries: int = 8, stall_rounds: int = 200):
        self.link = link
        self.retries, self.stall_rounds = retries, stall_rounds
        self.stats = LinkStats()
        self._seq = 0
        status = self.status()
        if status.version != P.PROTOCOL_VERSION:
            raise DeviceError(f"board speaks protocol version {status.version}, "
                              f"this driver {P.PROTOCOL_VERSION}")
        board = NibbleParams(tile=status.tile, acc_bits=status.acc_bits)
        # lanes is invisible on the link (the accelerator's ports are T wide either way)
        if params is not None and (params.tile, params.acc_bits) != (board.tile, board.acc_bits):
            raise DeviceError(f"board has T={board.tile}, acc_bits={board.acc_bits}; "
                              f"expected T={params.tile}, acc_bits={params.acc_bits}")
        self.params = board if params is None else params   # keeps the caller's lanes
        bits = P.port_beat_bits(board)
        self._bits = bits
        self._result_bits = P.result_beat_bits(board)
        self._chunk = {port: P.MAX_PAYLOAD // P.beat_bytes(b) for port, b in bits.items()}
        # Replies no longer than a request's payload: a damaged reply costs little to resend.
        self._read_max = max(1, min(255, P.MAX_PAYLOAD // P.beat_bytes(self._result_bits),
                                    P.RESULT_BYTES // P.beat_bytes(self._result_bits)))
        self.reset()

    # ------------------------------------------------------------------ requests
    def status(self) -> P.Status:
        return P.Status.decode(self._request(P.Command.STATUS, reply_bytes=P.STATUS_LEN).payload)

    def reset(self) -> None:
        """Reset the accelerator and empty the board's buffers."""
        self._request(P.Command.RESET)

    def write(self, port: str, words) -> bool:
        """Send beats to input stream ``port``; False if they do not fit now (BUSY)."""
        reply = self._request(P.Command.WRITE + P.PORTS.index(port),
                              P.pack_beats(words, self._bits[port]))
        return reply.code == P.Reply.ACK

    def read(self, max_beats: int) -> list:
        """Up to ``max_beats`` (<= 255) result beats, as many as the board holds."""
        reply_bytes = max_beats * P.beat_bytes(self._result_bits)
        reply = self._request(P.Command.READ, bytes([max_beats]), reply_bytes=reply_bytes)
        return P.unpack_beats(reply.payload, self._result_bits)

    # ------------------------------------------------------------------ GEMM
    def run(self, job):
        """Run one :class:`~wire.gemm_protocol.GemmJob`; return its ``GemmOutput``.

        A job the hardware cannot run (an operand kind pair outside
        ``golden.gemm.KIND_PAIRS``, e.g. a uint4 B) raises ``ValueError`` before any
        frame is sent (:func:`wire.gemm_protocol.check_job`).

        The streams are sent round robin, a frame of whole beats at a time. A BUSY inlet
        is skipped for that round (the accelerator is still busy with what it holds)
        and results are collected, so neither side waits for the other forever.
        """
        beats = encode(job, self.params)
        todo = {port: list(words) for port, words in beats.inputs().items() if words}
        results, idle = [], 0
        while todo or len(results) < beats.result_beats:
            progress = blocked = False
            for port in P.PORTS:
                if port not in todo:
                    continue
                chunk = todo[port][:self._chunk[port]]
                if self.write(port, chunk):
                    del todo[port][:len(chunk)]
                    if not todo[port]:
                        del todo[port]
                    progress = True
                else:
                    blocked = True
            if (blocked or not todo) and len(results) < beats.result_beats:
                got = self.read(min(self._read_max, beats.result_beats - len(results)))
                results += got
                progress |= bool(got)
            idle = 0 if progress else idle + 1
            if idle > self.stall_rounds:
                why = ("; the board refused a command as illegal (STATUS), reset it"
                       if self.status().refused else "")
                raise DeviceError(f"no progress in {self.stall_rounds} rounds: {len(results)} of "
                                  f"{beats.result_beats} result beats, streams left "
                                  f"{sorted(todo)}{why}")
        return decode(job, self.params, results)

    # ------------------------------------------------------------------ link
    def _request(self, code: int, payload: bytes = b"", *, reply_bytes: int = 1) -> P.Frame:
        """Send one request until it gets an ACK or a BUSY NAK (returned)."""
        seq = self._seq
        self._seq = (seq + 1) & 0xFF
        frame = P.encode_frame(code, seq, payload)
        self.stats.requests += 1
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats.retries += 1
                self.stats.resent[P.Command(code & 0xF0).name] += 1
                self._settle()
            self.link.write(frame)
            reply = self._reply(seq, len(frame), reply_bytes)
            if reply is None:
                continue
            if reply.code == P.Reply.ACK:
                return reply
            nak = reply.code == P.Reply.NAK and len(reply.payload) == 1
            error = reply.payload[0] if nak else None
            known = error in {e.value for e in P.Error}
            self.stats.naks[P.Error(error).name if known else f"reply {reply.code:#x}"] += 1
            if error == P.Error.BUSY:
                return reply
            if error == P.Error.UNKNOWN_CMD:
                raise DeviceError(f"board does not know command {code:#04x}")
        raise LinkError(f"no valid reply to command {code:#04x} (seq {seq}) after "
                        f"{self.retries + 1} attempts; {self.stats}")

    def _reply(self, seq: int, request_len: int, reply_bytes: int):
        """The reply to ``seq``, or None if none comes whole and intact in time."""
        link = self.link
        byte = P.byte_time(link.baud)
        # The board answers right after the request's last byte, or, if that got lost,
        # when its inter-byte timeout ends the frame.
        first = ((request_len + P.HEADER_LEN + 4) * byte + link.interbyte_timeout_s
                 + link.latency_s)
        for _ in range(4):                       # skip a few stale replies
            buf = bytearray(link.read(P.HEADER_LEN, first))
            while True:
                start = buf.find(P.SYNC)
                buf = buf[start:] if start >= 0 else bytearray()
                if len(buf) >= P.HEADER_LEN:
                    break
                more = link.read(P.HEADER_LEN - len(buf), 2 * P.HEADER_LEN * byte + link.latency_s)
                if not more:
                    self.stats.no_reply += 1
                    return None
                buf += more
            length = buf[3] | buf[4] << 8
            if length > max(reply_bytes, 1, P.STATUS_LEN):
                self.stats.bad_replies += 1
                return None
            body = link.read(length + 2, (length + 4) * byte + link.latency_s)
            try:
                frame = P.parse_frame(bytes(buf[:P.HEADER_LEN]) + body)
            except P.FrameError:
                self.stats.bad_replies += 1
                return None
            if frame.seq == seq:
                return frame
            first = 2 * P.OVERHEAD * byte + link.latency_s
        self.stats.no_reply += 1
        return None

    def _settle(self) -> None:
        """Wait until the line has been quiet long enough for the board to have ended
        and answered any frame it was receiving, and drop what arrived."""
        link = self.link
        quiet = link.interbyte_timeout_s + 2 * P.OVERHEAD * P.byte_time(link.baud) + link.latency_s
        while link.read(1 << 16, quiet):
            pass
