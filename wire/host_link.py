"""The host link protocol: the one definition that the bridge gateware
(:mod:`rtl.host_bridge`) and the host driver (:mod:`wire.host_driver`) both import.

Wire format
    UART, 8 data bits, no parity, 1 stop bit. Both directions carry the same frame::

        SYNC  CODE  SEQ  LEN_LO LEN_HI  PAYLOAD (LEN bytes)  CRC_HI CRC_LO

    ``SYNC`` is :data:`SYNC`. ``CODE`` is a :class:`Command` (host to board) or a
    :class:`Reply` (board to host). ``SEQ`` numbers the request; a reply repeats it.
    ``LEN`` is the payload length, little-endian. ``CRC`` is CRC-16/CCITT-FALSE
    (polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR; check value
    0x29B1 for ``b"123456789"``) over ``CODE`` .. the last payload byte, sent most
    significant byte first: the CRC run over the whole frame after ``SYNC`` then ends
    at 0, which is all the receiver has to check.

Exchanges
    Stop and wait: the host sends one frame and waits for its reply. The board answers
    every frame it saw start, with :attr:`Reply.ACK` or with :attr:`Reply.NAK` and one
    :class:`Error` byte. A frame is checked whole (length, CRC, command) before any of
    it reaches the accelerator, so a damaged frame has no effect.

    A frame cut short is dropped when the line stays quiet for
    :func:`interbyte_timeout` (the board replies ``NAK TIMEOUT``); the receiver then
    waits for the next ``SYNC``. A frame whose ``LEN`` exceeds :data:`MAX_PAYLOAD` is
    skipped the same way (``NAK BAD_LENGTH``), since its end cannot be known.

Retries are safe
    The host resends a request with the same ``SEQ`` when the reply is a NAK other
    than BUSY, is damaged, or does not come. The board remembers the ``SEQ`` and
    ``CODE`` of the last request it executed: a frame that repeats both is a
    retransmission, answered again without executing it twice (a repeated ``READ``
    returns the same result beats). Any other valid frame is new, and it tells the board
    that the host got the previous reply: the beats a previous ``READ`` returned are
    released only then. ``RESET`` is always executed, so a session starts with it.

Commands
    ``WRITE + port`` (:data:`PORTS` index): the payload is whole beats for that input
    stream of the accelerator (see :func:`pack_beats`). All of them enter the stream's
    inlet buffer (:data:`INLET_BYTES`), or none does: ``NAK BUSY`` if they do not fit
    now. ``READ``: payload one byte, the most result beats wanted; the reply carries
    ``min(wanted, buffered)`` whole result beats (possibly none). ``STATUS``: the reply
    carries :data:`STATUS_LEN` bytes, see :class:`Status`. ``RESET``: the accelerator
    and every buffer start afresh.

Beats on the wire
    A beat of W bits travels as ``ceil(W / 8)`` bytes, least significant byte first;
    the pad bits of the last byte are zero. W per stream: :func:`port_beat_bits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from . import streams

__all__ = ["SYNC", "DEFAULT_BAUD", "PROTOCOL_VERSION", "MAX_PAYLOAD", "INLET_BYTES",
           "RESULT_BYTES", "STATUS_LEN", "STATUS_BUSY", "STATUS_REFUSED", "HEADER_LEN", "OVERHEAD", "PORTS",
           "Command", "Reply", "Error", "Frame", "FrameError", "Status", "crc16",
           "crc16_update", "encode_frame", "parse_frame", "find_frame", "beat_bytes", "pack_beats", "unpack_beats",
           "port_beat_bits", "result_beat_bits", "interbyte_timeout", "byte_time",
           "INTERBYTE_TIMEOUT_BITS", "INTERBYTE_TIMEOUT_MIN_S"]

#: First byte of every frame.
SYNC = 0xA5
#: Line rate the board tops and the serial driver default to.
DEFAULT_BAUD = 115_200
#: Reported by STATUS; bump on any change of this module's wire format.
PROTOCOL_VERSION = 1
#: Longest payload of a host-to-board frame.
MAX_PAYLOAD = 256
#: Bytes of each input stream's inlet buffer on the board (one iCE40 block RAM).
INLET_BYTES = 512
#: Bytes of the board's result buffer; a READ reply is at most this long.
RESULT_BYTES = 1024
#: SYNC, CODE, SEQ, LEN_LO, LEN_HI.
HEADER_LEN = 5
#: Bytes of a frame besides its payload.
OVERHEAD = HEADER_LEN + 2
#: A quiet line for this many bit times ends a frame ...
INTERBYTE_TIMEOUT_BITS = 40
#: ... but never less than this: USB serial adapters pause between packets.
INTERBYTE_TIMEOUT_MIN_S = 0.005

#: The accelerator's input streams (``wire.gemm_protocol.GemmBeats.INPUTS``), in the
#: order of their WRITE codes.
PORTS = ("cmd", "a_codes", "a_exps", "b_codes", "b_exps", "mask")


class Command(IntEnum):
    """Request codes (host to board)."""

    WRITE = 0x10      #: + port index: beats for one input stream
    READ = 0x20       #: result beats
    STATUS = 0x30     #: identity and state, see :class:`Status`
    RESET = 0x40      #: reset the accelerator and empty every buffer


class Reply(IntEnum):
    """Reply codes (board to host)."""

    ACK = 0x06
    NAK = 0x15


class Error(IntEnum):
    """The payload byte of a NAK."""

    BAD_CRC = 1       #: the CRC did not match
    BAD_LENGTH = 2    #: LEN above MAX_PAYLOAD, or not what the command takes
    UNKNOWN_CMD = 3   #: CODE is no Command
    BUSY = 4          #: the beats do not fit the inlet buffer now; nothing was taken
    TIMEOUT = 5       #: the line went quiet inside a frame


#: STATUS reply: version, tile, acc_bits, flags, buffered result beats (16 bits LE;
#: beats a READ has sent count until the next new request releases them).
STATUS_LEN = 6
#: STATUS flags bit 0: a GEMM is in progress.
STATUS_BUSY = 0x01
#: STATUS flags bit 1: the accelerator refused an illegal command (``Accelerator.refused``,
#: see ``wire.streams.COMMAND``); sticky until RESET. (The bit read 0 before it
#: was defined, so the protocol version did not change.)
STATUS_REFUSED = 0x02


@dataclass(frozen=True)
class Status:
    """A decoded STATUS reply."""

    version: int
    tile: int
    acc_bits: int
    busy: bool
    results: int
    refused: bool = False

    @classmethod
    def decode(cls, payload: bytes) -> "Status":
        if len(payload) != STATUS_LEN:
            raise FrameError(f"STATUS reply has {len(payload)} bytes, not {STATUS_LEN}")
        return cls(payload[0], payload[1], payload[2], bool(payload[3] & STATUS_BUSY),
                   payload[4] | payload[5] << 8, bool(payload[3] & STATUS_REFUSED))


# ----------------------------------------------------------------------------- CRC

CRC_POLY, CRC_INIT = 0x1021, 0xFFFF


def crc16_update(crc: int, byte: int) -> int:
    """One byte of CRC-16/CCITT-FALSE. Linear in (crc, byte) over GF(2): the gateware
    builds its XOR network from this function (``rtl.host_bridge.crc16_next``)."""
    crc ^= byte << 8
    for _ in range(8):
        crc = ((crc << 1) ^ CRC_POLY) if crc & 0x8000 else crc << 1
    return crc & 0xFFFF


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``."""
    for byte in data:
        crc = crc16_update(crc, byte)
    return crc


# --------------------------------------------------------------------------- frames

class FrameError(ValueError):
    """Bytes that are not a valid frame."""


@dataclass(frozen=True)
class Frame:
    code: int
    seq: int
    payload: bytes = b""


def encode_frame(code: int, seq: int, payload: bytes = b"") -> bytes:
    """The bytes of one frame."""
    if not 0 <= seq <= 0xFF or not 0 <= code <= 0xFF:
        raise ValueError(f"code and seq are bytes, got {code}, {seq}")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit LEN")
    body = bytes([code, seq, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    return bytes([SYNC]) + body + crc16(body).to_bytes(2, "big")


def find_frame(data: bytes, max_payload: int = max(MAX_PAYLOAD, RESULT_BYTES)):
    """Scan ``data`` for the first frame.

    Returns ``(frame, consumed)``: ``frame`` is None if ``data`` holds no complete frame
    yet (``consumed`` bytes before the first SYNC can be dropped). Raises
    :class:`FrameError` for a frame that is complete but damaged, or whose LEN exceeds
    ``max_payload``.
    """
    start = data.find(bytes([SYNC]))
    if start < 0:
        return None, len(data)
    if len(data) < start + HEADER_LEN:
        return None, start
    length = data[start + 3] | data[start + 4] << 8
    if length > max_payload:
        raise FrameError(f"LEN {length} exceeds {max_payload}")
    end = start + OVERHEAD + length
    if len(data) < end:
        return None, start
    if crc16(data[start + 1:end]) != 0:
        raise FrameError("bad CRC")
    return Frame(data[start + 1], data[start + 2], bytes(data[start + HEADER_LEN:end - 2])), end


def parse_frame(data: bytes) -> Frame:
    """Decode exactly one frame; raise :class:`FrameError` if ``data`` is anything else."""
    frame, consumed = find_frame(data, 0xFFFF)
    if frame is None or consumed != len(data) or data[0] != SYNC:
        raise FrameError("not exactly one frame")
    return frame


# ---------------------------------------------------------------------------- beats

def beat_bytes(bits: int) -> int:
    """Bytes of one beat of ``bits`` bits on the wire."""
    return (bits + 7) // 8


def pack_beats(words, bits: int) -> bytes:
    """Beats (integers of ``bits`` bits; negative ones as two's complement) to wire
    bytes, little-endian each."""
    n = beat_bytes(bits)
    out = bytearray()
    for word in words:
        word = int(word)
        if not -(1 << (bits - 1)) <= word < 1 << bits:
            raise ValueError(f"beat {word:#x} does not fit {bits} bits")
        out += (word & ((1 << bits) - 1)).to_bytes(n, "little")
    return bytes(out)


def unpack_beats(data: bytes, bits: int) -> list:
    """Wire bytes to beats; ``len(data)`` must be a multiple of the beat size."""
    n = beat_bytes(bits)
    if len(data) % n:
        raise FrameError(f"{len(data)} bytes are no whole number of {n}-byte beats")
    return [int.from_bytes(data[i:i + n], "little") & ((1 << bits) - 1)
            for i in range(0, len(data), n)]


def port_beat_bits(params) -> dict:
    """Width in bits of one beat of each input stream in :data:`PORTS`."""
    return streams.port_beat_bits(params)


def result_beat_bits(params) -> int:
    """Width in bits of one result beat."""
    return streams.result(params).size


# --------------------------------------------------------------------------- timing

def byte_time(baud: int) -> float:
    """Seconds one byte takes on the wire (start, 8 data, stop)."""
    return 10 / baud


def interbyte_timeout(baud: int, min_s: float = INTERBYTE_TIMEOUT_MIN_S) -> float:
    """Seconds of quiet line after which the board drops a frame it is receiving. A
    simulated line, which has no USB adapter, may use ``min_s=0``; board and host must
    use the same value (``HostBridge(timeout_s=...)``, the link's
    ``interbyte_timeout_s``)."""
    return max(INTERBYTE_TIMEOUT_BITS / baud, min_s)
