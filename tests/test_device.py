"""wire.host_link helpers and the host driver's link logic (wire.host_driver.HostDriver,
which nibble.device.Device is) against a scripted board (no simulator): identity
checks, retries, give-up, refused commands; and the links Device opens."""

import pytest

from wire import host_link as P
from golden.params import NibbleParams
from nibble.device import Device, SerialLink
from wire.host_driver import DeviceError, HostDriver, LinkError


# ----------------------------------------------------------------------------- protocol

def test_crc_is_ccitt_false():
    assert P.crc16(b"123456789") == 0x29B1
    assert P.crc16(b"") == 0xFFFF


def test_frame_round_trip_and_residue():
    frame = P.encode_frame(P.Command.WRITE + 2, 200, bytes(range(20)))
    assert frame[0] == P.SYNC and len(frame) == P.OVERHEAD + 20
    assert P.crc16(frame[1:]) == 0                 # what the gateware checks
    assert P.parse_frame(frame) == P.Frame(0x12, 200, bytes(range(20)))


def test_find_frame_skips_noise_and_waits_for_more():
    frame = P.encode_frame(P.Reply.ACK, 3, b"xy")
    assert P.find_frame(b"\x00\x13" + frame[:6]) == (None, 2)
    found = P.find_frame(b"\x00\x13" + frame + b"\xa5")
    assert found == (P.Frame(P.Reply.ACK, 3, b"xy"), 2 + len(frame))
    damaged = bytearray(frame)
    damaged[5] ^= 4
    with pytest.raises(P.FrameError, match="CRC"):
        P.find_frame(bytes(damaged))
    with pytest.raises(P.FrameError, match="LEN"):
        P.find_frame(bytes([P.SYNC, 6, 0, 0xFF, 0xFF]))


def test_beats_pack_little_endian_two_complement():
    assert P.pack_beats([0x1234, 5], 16) == b"\x34\x12\x05\x00"
    assert P.pack_beats([-3], 8) == b"\xfd"
    assert P.pack_beats([0x3FF], 10) == b"\xff\x03"
    assert P.unpack_beats(b"\x34\x12\x05\x00", 16) == [0x1234, 5]
    with pytest.raises(ValueError):
        P.pack_beats([1 << 10], 10)
    with pytest.raises(P.FrameError):
        P.unpack_beats(b"\x00\x01\x02", 16)


def test_beat_widths_follow_the_layouts():
    bits = P.port_beat_bits(NibbleParams(tile=4))
    assert bits == {"cmd": 98, "a_codes": 16, "a_exps": 8, "b_codes": 16, "b_exps": 8, "mask": 8}
    assert P.result_beat_bits(NibbleParams(tile=4, acc_bits=32)) == 4 * 32 + 10 + 2


# ----------------------------------------------------------------------------- Device

class ScriptedBoard:
    """A link whose board answers each request frame with ``answer(frame, attempt)``:
    a reply frame's bytes, or b"" for silence."""

    baud, latency_s, interbyte_timeout_s = 1_000_000, 0.0, 0.001

    def __init__(self, answer, params=NibbleParams(tile=4), version=P.PROTOCOL_VERSION, flags=0):
        self.answer, self.params, self.version, self.flags = answer, params, version, flags
        self.requests, self.inbox = [], bytearray()

    def status_reply(self, frame):
        payload = bytes([self.version, self.params.tile, self.params.acc_bits, self.flags, 0, 0])
        return P.encode_frame(P.Reply.ACK, frame.seq, payload)

    def write(self, data):
        frame = P.parse_frame(data)
        attempt = sum(f == frame for f in self.requests)
        self.requests.append(frame)
        if frame.code == P.Command.STATUS:
            self.inbox += self.status_reply(frame)
        elif frame.code == P.Command.RESET:
            self.inbox += P.encode_frame(P.Reply.ACK, frame.seq)
        else:
            self.inbox += self.answer(frame, attempt)

    def read(self, n, timeout_s):
        out = bytes(self.inbox[:n])
        del self.inbox[:n]
        return out


def ack(frame, attempt=0):
    return P.encode_frame(P.Reply.ACK, frame.seq)


def test_open_checks_identity_and_resets():
    board = ScriptedBoard(ack)
    device = Device(board, NibbleParams(tile=4))
    assert device.params == NibbleParams(tile=4)
    assert [f.code for f in board.requests] == [P.Command.STATUS, P.Command.RESET]
    with pytest.raises(DeviceError, match="T=4"):
        Device(ScriptedBoard(ack), NibbleParams(tile=8))
    with pytest.raises(DeviceError, match="version"):
        Device(ScriptedBoard(ack, version=99))


def test_retries_with_the_same_sequence_number():
    """Silence, a damaged reply and a NAK are each retried with the same SEQ."""
    def answer(frame, attempt):
        good = ack(frame)
        if attempt == 0:
            return b""
        if attempt == 1:
            return good[:-1] + bytes([good[-1] ^ 1])
        if attempt == 2:
            return P.encode_frame(P.Reply.NAK, frame.seq, bytes([P.Error.BAD_CRC]))
        return good

    board = ScriptedBoard(answer)
    device = Device(board)
    assert device.write("a_codes", [1, 2])
    writes = [f for f in board.requests if f.code == P.Command.WRITE + 1]
    assert len(writes) == 4 and len({f.seq for f in writes}) == 1
    assert device.stats.retries == 3 and device.stats.resent["WRITE"] == 3
    assert device.stats.no_reply == 1 and device.stats.bad_replies == 1
    assert device.stats.naks["BAD_CRC"] == 1


def test_stale_reply_is_skipped():
    def answer(frame, attempt):
        return P.encode_frame(P.Reply.ACK, (frame.seq - 1) & 0xFF) + ack(frame)

    device = Device(ScriptedBoard(answer))
    assert device.write("b_exps", [-1])
    assert device.stats.retries == 0


def test_busy_is_an_answer_not_a_failure():
    device = Device(ScriptedBoard(
        lambda f, a: P.encode_frame(P.Reply.NAK, f.seq, bytes([P.Error.BUSY]))))
    assert device.write("mask", [1]) is False
    assert device.stats.retries == 0 and device.stats.naks["BUSY"] == 1


def test_gives_up_after_the_retries():
    device = Device(ScriptedBoard(lambda f, a: b""), retries=3)
    with pytest.raises(LinkError, match="after 4 attempts"):
        device.read(2)


def test_unknown_command_is_a_device_error():
    device = Device(ScriptedBoard(
        lambda f, a: P.encode_frame(P.Reply.NAK, f.seq, bytes([P.Error.UNKNOWN_CMD]))))
    with pytest.raises(DeviceError, match="does not know"):
        device.read(1)


def test_status_flags_decode():
    payload = bytes([P.PROTOCOL_VERSION, 4, 32, P.STATUS_BUSY | P.STATUS_REFUSED, 5, 1])
    assert P.Status.decode(payload) == P.Status(P.PROTOCOL_VERSION, 4, 32, True, 261, True)
    assert not P.Status.decode(bytes([1, 4, 32, P.STATUS_BUSY, 0, 0])).refused


def test_gemm_with_an_illegal_kind_pair_is_refused_before_any_frame():
    """The issue's uint4 x uint4 (and fp4 x uint4): a one-line ValueError from the
    driver, and not one WRITE reaches the board."""
    from golden.formats import QTensor

    board = ScriptedBoard(ack)
    device = Device(board)
    for a_kind in ("uint4", "fp4"):
        a = QTensor([[1]], [[0]], a_kind, 4)
        b = QTensor([[8]], [[0]], "uint4", 4)
        with pytest.raises(ValueError, match=rf"cannot multiply {a_kind} \(A\) by uint4 \(B\)") as err:
            device.gemm(a, b)
        assert "\n" not in str(err.value)
    assert [f.code for f in board.requests] == [P.Command.STATUS, P.Command.RESET]


def test_a_stalled_gemm_names_a_refused_command():
    """A board whose STATUS flags a refused command (say, built from other RTL than
    this driver checks against): the stall error says so."""
    from golden.formats import QTensor

    def answer(frame, attempt):
        if frame.code == P.Command.READ:
            return ack(frame)
        return P.encode_frame(P.Reply.NAK, frame.seq, bytes([P.Error.BUSY]))

    device = Device(ScriptedBoard(answer, flags=P.STATUS_REFUSED), stall_rounds=3)
    a, b = QTensor([[1]], [[0]], "uint4", 4), QTensor([[1]], [[0]], "int4", 4)
    with pytest.raises(DeviceError, match="refused a command as illegal"):
        device.gemm(a, b)
    device = Device(ScriptedBoard(answer), stall_rounds=3)
    with pytest.raises(DeviceError, match=r"no progress in 3 rounds: 0 of 4 result beats, "
                                          r"streams left \[[^]]*\]$"):
        device.gemm(a, b)


def test_serial_backend_names_its_extra():
    try:
        import serial  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match=r"pip install nibble\[serial\]"):
            SerialLink("/dev/null")
    else:
        pytest.skip("pyserial is installed")


def test_device_opens_its_links(monkeypatch):
    """Device is the host driver with constructors for its links: sim opens the cocotb
    line model (nibble may import verif; verif imports the driver from wire)."""
    import verif.sim_link

    opened = []

    def fake_open(dut):
        opened.append(dut)
        return ScriptedBoard(ack)

    monkeypatch.setattr(verif.sim_link.SimLink, "open", staticmethod(fake_open))
    device = Device.sim("the dut", params=NibbleParams(tile=4), retries=2)
    assert isinstance(device, HostDriver) and opened == ["the dut"]
    assert device.retries == 2 and isinstance(device.link, ScriptedBoard)


def test_device_opens_the_axi_backend(monkeypatch):
    """Device.axi hands the top to verif.axi_device.AxiDevice.open, with the parameters
    and options (the cocotb side is tests/cocotb_axi_device.py)."""
    import verif.axi_device

    opened = []
    monkeypatch.setattr(verif.axi_device.AxiDevice, "open",
                        classmethod(lambda cls, dut, params, **kw: opened.append((dut, params, kw))))
    Device.axi("the dut", params=NibbleParams(tile=4), poll_cycles=50)
    assert opened == [("the dut", NibbleParams(tile=4), {"poll_cycles": 50})]
