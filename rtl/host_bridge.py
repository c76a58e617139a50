"""The UART host bridge: the board's link between a host and the :class:`Accelerator`.

Data path (the frame format and its rules are in :mod:`wire.host_link`)::

    rx -> UARTRx -> frame receiver --WRITE bytes--> StreamInlet x 6 -> Accelerator inputs
                         | check length, CRC, command; commit or roll back the inlet
                         v
    tx <- UARTTx <- reply sender <--READ bytes-- StreamOutlet <- Accelerator result

A frame's payload bytes go straight into the target stream's inlet buffer, but only
tentatively: the inlet hands them on to the accelerator after the whole frame has
checked out (commit), and forgets them otherwise (roll back). So no separate frame
buffer is needed, and a damaged frame never reaches the accelerator. Result beats wait
in the outlet buffer until a READ asks for them, and stay there until the next new
frame shows that the host has the reply, so a repeated READ gets the same beats.
"""

import math

from amaranth.hdl import Cat, DomainRenamer, Module, Mux, ResetInserter, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams
from rtl.accelerator import Accelerator
from rtl.pipeline import delays, register_copy
from rtl.uart import UARTRx, UARTTx

from wire import host_link as P

__all__ = ["HostBridge", "ByteFifo", "StreamInlet", "StreamOutlet", "crc16_next",
           "SIM_CLK_HZ", "SIM_BAUD", "SIM_TIMEOUT_S"]

#: Clock and line of the simulated board (``host_bridge`` unit, cocotb bench): 4 clocks
#: per bit, and no USB-adapter allowance in the inter-byte timeout (40 bit times), so
#: a simulated millisecond, which costs about 0.2 s of Verilator time, carries 200 bytes.
SIM_CLK_HZ, SIM_BAUD = 8_000_000, 2_000_000
SIM_TIMEOUT_S = P.interbyte_timeout(SIM_BAUD, min_s=0)


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


class ByteFifo(wiring.Component):
    """A byte FIFO in block RAM whose writes and reads are both tentative until committed.

    The read port is not write-through (an iCE40 block RAM is not), so a byte must be
    written at least one cycle before the commit that makes it readable.

    Parameters
    ----------
    depth : int
        Bytes; a power of two.
    room : int
        Bytes that ``w_room`` asks for (default 1).

    Attributes
    ----------
    w_data : In(8)
        Byte to write.
    w_en : In(1)
        Write ``w_data`` tentatively (ignored while ``w_full``).
    w_full : Out(1)
        No room, counting tentative bytes (a register). It rises in the cycle after the
        write that fills the FIFO; room freed by ``r_commit`` or a rollback shows from the
        second cycle after it.
    w_room : Out(1)
        At least ``room`` bytes free, counting tentative bytes (a register, a cycle
        behind: exact for a writer whose last write is two cycles old).
    w_commit : In(1)
        The tentative bytes (with this cycle's) become committed, from the next cycle
        on (a byte written in that next cycle stays tentative).
    w_rollback : In(1)
        Forget the tentative bytes, a cycle later (a byte written in that next cycle is
        forgotten too); not in the same cycle as ``w_commit``.
    r_data : Out(8)
        The byte at the read cursor (valid while ``r_rdy``).
    r_rdy : Out(1)
        A committed byte is at the read cursor (from registers: it rises three cycles
        after the commit, and is low in the cycle after each read or rewind).
    r_en : In(1)
        Advance the read cursor.
    r_commit : In(1)
        Free the bytes read so far (with this cycle's).
    r_rewind : In(1)
        Move the read cursor back to the first byte not freed.
    """

    def __init__(self, depth: int, *, room: int = 1):
        if depth < 2 or depth & (depth - 1):
            raise ValueError(f"depth must be a power of two >= 2, got {depth}")
        if not 1 <= room <= depth:
            raise ValueError(f"room must be 1 to {depth} bytes, got {room}")
        self._depth, self._room = depth, room
        super().__init__({
            "w_data": In(8), "w_en": In(1), "w_full": Out(1), "w_room": Out(1, init=1),
            "w_commit": In(1), "w_rollback": In(1),
            "r_data": Out(8), "r_rdy": Out(1), "r_en": In(1),
            "r_commit": In(1), "r_rewind": In(1),
        })

    def elaborate(self, platform):
        depth = self._depth
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=8, depth=depth, init=[])
        wport = mem.write_port()
        rport = mem.read_port()
        n = depth.bit_length()       # one wrap bit above the address
        w_spec, w_done = Signal(n, name="w_spec"), Signal(n)
        r_cur, r_done = Signal(n, name="r_cur"), Signal(n)

        # ``full`` is a register (w_spec and r_done one wrap apart, as they will be),
        # since the writer's enables (a wide shift register in the outlet) hang off it.
        full = Signal()
        write = self.w_en & ~full
        # A commit and a rollback act a cycle late, from registers (the frame parser
        # decides them at the end of a long path): the bytes up to the commit's cycle
        # become committed; a rollback goes back to the committed bytes (including those
        # of a commit given the cycle before it).
        commit, rollback = Signal(name="commit"), Signal()
        w_spec1 = Signal(n, init=1)  # w_spec + 1, a register: ``write`` only selects
        back = Mux(commit, w_spec, w_done)
        m.d.comb += [self.w_full.eq(full),
                     wport.addr.eq(w_spec[:n - 1]), wport.data.eq(self.w_data),
                     wport.en.eq(write)]
        m.d.sync += [w_spec.eq(Mux(rollback, back, Mux(write, w_spec1, w_spec))),
                     w_spec1.eq(Mux(rollback, back + 1, Mux(write, w_spec1 + 1, w_spec1))),
                     commit.eq(self.w_commit), rollback.eq(self.w_rollback)]
        with m.If(commit):
            m.d.sync += w_done.eq(w_spec)

        # The read cursor: the cursor plus one is a register computed from the cursor
        # register (a cycle late), so the next address (the block RAM's read address) is
        # two multiplexers from registers. ``rdy`` is computed from registers only
        # (cursor != committed end, one cycle late) and masked in the cycle after the
        # cursor moves (a read or a rewind), when it and the cursor plus one are stale:
        # a byte every other cycle at most, which a UART never comes near.
        behind = Signal()            # r_cur != w_done, as of the last cycle
        just_moved = Signal()
        rdy = Signal()
        r_cur1 = Signal(n, init=1)
        r_next = Signal(n)
        # The byte goes through a register after the block RAM (whose output is slow):
        # it is the byte at the cursor of the cycle before, which is the cursor's byte
        # whenever ``rdy`` is high.
        data = Signal(8, reset_less=True)
        m.d.sync += data.eq(rport.data)
        m.d.comb += [rdy.eq(behind & ~just_moved),
                     self.r_rdy.eq(rdy), self.r_data.eq(data),
                     r_next.eq(Mux(self.r_rewind, r_done, Mux(self.r_en & rdy, r_cur1, r_cur))),
                     rport.addr.eq(r_next[:n - 1])]
        m.d.sync += [r_cur.eq(r_next), r_cur1.eq(r_cur + 1),
                     behind.eq(r_cur != w_done),
                     just_moved.eq((self.r_en & rdy) | self.r_rewind)]
        with m.If(self.r_commit):
            m.d.sync += r_done.eq(r_next)
        # (the late ``write`` and ``rollback`` only pick among comparisons of registers;
        # the room a read commit frees counts from the cycle after it, once ``r_done``
        # holds it, so the reader's late decisions do not reach this comparison)
        m.d.sync += full.eq(Mux(rollback, (Mux(commit, w_spec, w_done) ^ r_done) == depth,
                                Mux(write, (w_spec1 ^ r_done) == depth,
                                    (w_spec ^ r_done) == depth)))
        m.d.sync += self.w_room.eq((w_spec - r_done)[:n] <= depth - self._room)
        return m


class StreamInlet(wiring.Component):
    """Bytes in, whole beats out: the buffer between the frame receiver and one of the
    accelerator's input streams.

    Parameters
    ----------
    width : int
        Bits per beat; a beat arrives as ``ceil(width / 8)`` bytes, least significant first.
    depth : int
        Buffer bytes (a power of two).

    Attributes
    ----------
    w_data, w_en, w_full, w_commit, w_rollback
        The tentative write side of a :class:`ByteFifo`.
    beats : Out(stream.Signature(width))
        Committed beats, in order.
    """

    def __init__(self, width: int, depth: int):
        self._width, self._depth = width, depth
        super().__init__({
            "w_data": In(8), "w_en": In(1), "w_full": Out(1),
            "w_commit": In(1), "w_rollback": In(1),
            "beats": Out(stream.Signature(width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = ByteFifo(self._depth)
        m.d.comb += [fifo.w_data.eq(self.w_data), fifo.w_en.eq(self.w_en),
                     self.w_full.eq(fifo.w_full), fifo.w_commit.eq(self.w_commit),
                     fifo.w_rollback.eq(self.w_rollback), fifo.r_commit.eq(1)]
        nbytes = P.beat_bytes(self._width)
        shreg = Signal(8 * nbytes, reset_less=True)
        count = Signal(range(max(nbytes, 2)))     # no zero-width signal for 1-byte beats
        take = fifo.r_rdy & ~self.beats.valid
        m.d.comb += [fifo.r_en.eq(take), self.beats.payload.eq(shreg[:self._width])]
        with m.If(self.beats.ready):
            m.d.sync += self.beats.valid.eq(0)
        with m.If(take):
            m.d.sync += [shreg.eq(Cat(shreg[8:], fifo.r_data)), count.eq(count + 1)]
            with m.If(count == nbytes - 1):
                m.d.sync += [count.eq(0), self.beats.valid.eq(1)]
        return m


class StreamOutlet(wiring.Component):
    """Whole beats in, bytes out on request: the buffer between the accelerator's result
    stream and the reply sender.

    A beat is loaded into a shift register only when the buffer has room for all of its
    bytes, and then written into the buffer a byte per cycle from its low end (no byte
    multiplexer in front of the block RAM, and no wait in the middle of a beat). The
    beat is taken from the stream when it is loaded; its bytes are committed the cycle
    after the last of them is written.
    The shift register's enables come from flip-flops, one copy per byte: the result
    beat is hundreds of bits wide.

    Parameters
    ----------
    width : int
        Bits per beat.
    depth : int
        Buffer bytes (a power of two, at least one beat).

    Attributes
    ----------
    beats : In(stream.Signature(width))
        Result beats.
    level : Out(range(depth // ceil(width / 8) + 1))
        Whole beats buffered and not yet released; their bytes are readable.
    r_data, r_en, r_rewind
        The read cursor of a :class:`ByteFifo`: bytes of the buffered beats, in order.
    r_commit : In(1)
        Release ``release`` beats (those read since the last release).
    release : In(range(level's range))
        Beats to release with ``r_commit``.
    """

    def __init__(self, width: int, depth: int):
        self._width, self._depth = width, depth
        self.max_beats = depth // P.beat_bytes(width)
        if self.max_beats < 1:
            raise ValueError(f"a {depth}-byte outlet cannot hold one {width}-bit beat")
        super().__init__({
            "beats": In(stream.Signature(width)),
            "level": Out(range(self.max_beats + 1)),
            "r_data": Out(8), "r_en": In(1), "r_rewind": In(1),
            "r_commit": In(1), "release": In(range(self.max_beats + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        nbytes = P.beat_bytes(self._width)
        m.submodules.fifo = fifo = ByteFifo(self._depth, room=nbytes)
        index = Signal(range(max(nbytes, 2)))    # byte of the loaded beat to write next
        last = Signal(init=nbytes == 1)          # ``index`` is the beat's last byte
        written = Signal()                       # the beat's last byte went in last cycle
        held = Signal()                          # the shift register holds a beat's rest
        # ``idle``: a cycle ago nothing was held or just written and the buffer had room
        # for a beat (its ``w_room`` is exact two cycles after the last write). It stays
        # true while no beat is loaded, so a load needs only ``~held`` besides.
        idle_now = ~held & ~written & fifo.w_room
        load = Signal()
        held_next = Mux(load, 1, held & ~last)
        m.d.comb += [self.beats.ready.eq(register_copy(m, idle_now, "idle") & ~held),
                     load.eq(self.beats.valid & self.beats.ready)]
        m.d.sync += [held.eq(held_next), written.eq(held & last)]
        if nbytes > 1:
            with m.If(held):
                m.d.sync += [index.eq(Mux(last, 0, index + 1)),
                             last.eq(~last & (index == nbytes - 2))]
        # The shift register, a byte at a time, each byte with its own flip-flop copies
        # of ``held`` and ``idle``: the beat is hundreds of bits wide, and no enable net
        # reaches all of it.
        payload = self.beats.payload
        shreg = [Signal(8, name=f"shreg{k}", reset_less=True) for k in range(nbytes)]
        for k, byte in enumerate(shreg):
            held_k = register_copy(m, held_next, f"held{k}")
            idle_k = register_copy(m, idle_now, f"idle{k}")
            with m.If(held_k):
                m.d.sync += byte.eq(shreg[k + 1] if k + 1 < nbytes else 0)
            with m.Elif(self.beats.valid & idle_k):
                m.d.sync += byte.eq(payload[8 * k:8 * (k + 1)])
        m.d.comb += fifo.w_data.eq(shreg[0])
        m.d.comb += [
            fifo.w_en.eq(held),
            # The beat is taken when it is loaded (``ready`` is two flip-flops, so the
            # producer's wide enables start at registers); its bytes are committed the
            # cycle after its last one is written (the block RAM is not write-through).
            fifo.w_commit.eq(written),
            self.r_data.eq(fifo.r_data), fifo.r_en.eq(self.r_en),
            fifo.r_rewind.eq(self.r_rewind), fifo.r_commit.eq(self.r_commit),
        ]
        # A beat counts once its bytes are readable: the commit's register, the
        # committed pointer and the FIFO's ``r_rdy`` take three cycles after ``written``.
        readable = delays(m, written, 3, "readable_d")[-1]
        m.d.sync += self.level.eq(self.level + readable - Mux(self.r_commit, self.release, 0))
        return m


class HostBridge(wiring.Component):
    """The accelerator behind a UART, speaking :mod:`wire.host_link`.

    Parameters
    ----------
    params : NibbleParams
        The accelerator's parameters.
    clk_hz : int
        Clock frequency of the ``sync`` domain.
    baud : int
        Line rate; ``clk_hz // baud`` (at least 4) clocks per bit, within 2 % of it.
    timeout_s : float or None
        Inter-byte timeout; None: :func:`wire.host_link.interbyte_timeout` of ``baud``.
    inlet_bytes, result_bytes : int
        Buffer sizes; the host driver assumes the defaults of :mod:`wire.host_link`.
    core_domain : str
        The clock domain of the accelerator and its stream buffers. ``"sync"`` (the
        default, for simulation): they share the bridge's domain and :attr:`core_rst` is
        inserted as an extra reset. Another name: they run in that domain, which the
        owner must clock from the ``sync`` clock and reset from :attr:`core_rst` alone
        (a board top puts it on a global buffer), so the core's flip-flops see one
        registered reset net and not the OR of two.

    Attributes
    ----------
    rx : In(1)
        Serial line from the host (idle high, asynchronous).
    tx : Out(1)
        Serial line to the host (idle high).
    busy : Out(1)
        A GEMM is in progress (for an LED).
    core_rst : Out(1)
        Reset of the accelerator and its buffers, from a register: 1 during the bridge's
        own reset and the cycle after, and for one cycle two cycles after a RESET frame
        is accepted (before its reply is sent).

    Examples
    --------
    In a board top (the UART resource of ``amaranth-boards``)::

        m.submodules.bridge = bridge = HostBridge(params, clk_hz=12_000_000, baud=115_200)
        uart = platform.request("uart", 0)
        m.d.comb += [bridge.rx.eq(uart.rx.i), uart.tx.o.eq(bridge.tx)]
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    core_rst: Out(1, init=1)

    def __init__(self, params: NibbleParams, *, clk_hz: int, baud: int, timeout_s=None,
                 inlet_bytes: int = P.INLET_BYTES, result_bytes: int = P.RESULT_BYTES,
                 core_domain: str = "sync"):
        self.divisor = clk_hz // baud
        if self.divisor < 4 or abs(clk_hz / self.divisor / baud - 1) > 0.02:
            raise ValueError(f"{clk_hz} Hz cannot make {baud} baud within 2 % "
                             f"at >= 4 clocks per bit")
        if inlet_bytes < P.MAX_PAYLOAD:
            raise ValueError(f"an inlet must hold a whole frame ({P.MAX_PAYLOAD} bytes)")
        self._params = params
        self.core_domain = core_domain
        if timeout_s is None:
            timeout_s = P.interbyte_timeout(baud)
        self.timeout_cycles = math.ceil(timeout_s * clk_hz)
        bits = P.port_beat_bits(params)
        self.core = Accelerator(params)
        self.inlets = {port: StreamInlet(bits[port], inlet_bytes) for port in P.PORTS}
        self.outlet = StreamOutlet(P.result_beat_bits(params), result_bytes)
        super().__init__()

    def elaborate(self, platform):
        p = self._params
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx), urx.data.ready.eq(1)]

        # RESET: the accelerator and the buffers start afresh (memories keep stale bytes,
        # which the reset pointers make unreachable).
        # The reset is registered (one cycle late), so the frame parser's decode does not
        # sit in front of every resettable flip-flop of the accelerator; the register is
        # set by the bridge's own reset too, so in a core domain of its own it is the
        # only reset the core needs.
        flush, core_rst = Signal(name="flush"), Signal(init=1)
        flush_r = Signal()           # a register on each side: core_rst sits by its buffer
        m.d.sync += [flush_r.eq(flush), core_rst.eq(flush_r)]
        m.d.comb += self.core_rst.eq(core_rst)
        if self.core_domain == "sync":
            flushed = ResetInserter({"sync": core_rst})
        else:
            flushed = DomainRenamer({"sync": self.core_domain})
        m.submodules.core = flushed(self.core)
        for port, inlet in self.inlets.items():
            m.submodules[f"inlet_{port}"] = flushed(inlet)
            wiring.connect(m, inlet.beats, getattr(self.core, port))
        m.submodules.outlet = flushed(self.outlet)
        outlet = self.outlet
        wiring.connect(m, self.core.result, outlet.beats)
        m.d.comb += self.busy.eq(self.core.busy)

        byte, got = urx.data.payload, urx.data.valid
        tx_byte = utx.data.payload
        sent = utx.data.valid & utx.data.ready

        # ---- The frame being received.
        code, seq, len_lo = Signal(8, name="code"), Signal(8), Signal(8)
        length = Signal(range(P.MAX_PAYLOAD + 1))
        left = Signal(range(max(P.MAX_PAYLOAD, outlet.max_beats * P.beat_bytes(
            P.result_beat_bits(p)), P.STATUS_LEN) + 1))      # payload bytes to go (rx or tx)
        crc = Signal(16)
        idx = Signal(range(P.STATUS_LEN + 1))                 # byte index in header/payload/CRC
        req = Signal(8)                                       # READ: beats wanted
        overflow = Signal()                                   # WRITE: the inlet ran full
        timer = Signal(range(self.timeout_cycles + 1))
        timeout = timer == self.timeout_cycles

        port_idx = code[:4]
        is_write = (code[4:] == P.Command.WRITE >> 4) & (port_idx < len(P.PORTS))
        is_read, is_status, is_reset = (code == P.Command.READ, code == P.Command.STATUS,
                                        code == P.Command.RESET)
        known = is_write | is_read | is_status | is_reset
        # The checks of a received frame, in registers (state CHECK) for EXECUTE.
        V_OK, V_BAD_CRC, V_REPLAY, V_UNKNOWN, V_BAD_LENGTH, V_BUSY = range(6)
        verdict = Signal(range(6))
        c_write, c_read, c_status, c_reset = Signal(name="c_write"), Signal(), Signal(), Signal()

        # WRITE: bytes into the target inlet; the length must be whole beats.
        beat_sizes = [P.beat_bytes(b) for b in P.port_beat_bits(p).values()]
        beat_pos = Signal(range(max(beat_sizes)))
        beat_last = Signal(range(max(beat_sizes)))
        with m.Switch(port_idx):
            for i, size in enumerate(beat_sizes):
                with m.Case(i):
                    m.d.comb += beat_last.eq(size - 1)
        write_byte = Signal()      # a payload byte goes to the target inlet
        commit = Signal()          # the frame executes: its bytes go on to the accelerator
        rollback = Signal()
        target_full = Signal()
        # An inlet takes its byte and its commit or rollback from registers of its own, a
        # cycle after the parser decides them (the parser's decisions are long paths, and
        # bytes arrive tens of cycles apart: ``w_full`` has long caught up with a write
        # when the next byte comes).
        for i, inlet in enumerate(self.inlets.values()):
            here = port_idx == i
            m.d.sync += [inlet.w_data.eq(byte), inlet.w_en.eq(write_byte & here),
                         inlet.w_commit.eq(commit & here), inlet.w_rollback.eq(rollback)]
            with m.If(here):
                m.d.comb += target_full.eq(inlet.w_full)

        # ---- Replay memory: the last request executed, and the READ beats not yet released.
        last_seq, last_code, last_valid = Signal(8, name="last_seq"), Signal(8), Signal()
        pending = Signal.like(outlet.level)

        # ---- The reply.
        NAK, ACK_EMPTY, ACK_STATUS, ACK_READ = range(4)
        kind = Signal(2)
        err = Signal(8)
        fresh_read = Signal()
        reply_len = Signal(16)
        with m.Switch(kind):
            with m.Case(NAK):
                m.d.comb += reply_len.eq(1)
            with m.Case(ACK_STATUS):
                m.d.comb += reply_len.eq(P.STATUS_LEN)
            with m.Case(ACK_READ):
                # A constant product as shifts and adds: yosys would put a bare ``*``
                # on an ECP5 multiplier block.
                beat_len = P.beat_bytes(P.result_beat_bits(p))
                m.d.comb += reply_len.eq(sum(pending << i for i in range(beat_len.bit_length())
                                             if beat_len >> i & 1))
        status = [P.PROTOCOL_VERSION, p.tile, p.acc_bits, Cat(self.core.busy, self.core.refused),
                  outlet.level[:8], outlet.level >> 8]
        # The receiver updates the CRC in the cycle a byte arrives (CHECK checks it
        # in the next); the sender's update follows a cycle after each byte it sends,
        # from registers, which the UART (ten bit times per byte) never notices.
        crc_next = Signal(16)
        m.d.comb += crc_next.eq(crc16_next(crc, byte))

        def nak(error):
            m.d.sync += [kind.eq(NAK), err.eq(error)]
            m.next = "PREPARE"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += rollback.eq(1)
                with m.If(got & (byte == P.SYNC)):
                    m.d.sync += [crc.eq(P.CRC_INIT), idx.eq(0), seq.eq(0), overflow.eq(0),
                                 beat_pos.eq(0)]
                    m.next = "HEADER"

            with m.State("HEADER"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc_next), idx.eq(idx + 1)]
                    with m.Switch(idx):
                        with m.Case(0):
                            m.d.sync += code.eq(byte)
                        with m.Case(1):
                            m.d.sync += seq.eq(byte)
                        with m.Case(2):
                            m.d.sync += len_lo.eq(byte)
                        with m.Case(3):
                            full_len = Cat(len_lo, byte)
                            m.d.sync += [length.eq(full_len), left.eq(full_len), idx.eq(0)]
                            with m.If(full_len > P.MAX_PAYLOAD):
                                m.next = "DISCARD"      # its end is unknown: wait for quiet
                            with m.Elif(full_len == 0):
                                m.next = "CRC"
                            with m.Else():
                                m.next = "PAYLOAD"
                with m.Elif(timeout):
                    nak(P.Error.TIMEOUT)

            with m.State("PAYLOAD"):
                with m.If(got):
                    m.d.comb += write_byte.eq(is_write)
                    m.d.sync += [crc.eq(crc_next), left.eq(left - 1),
                                 beat_pos.eq(Mux(beat_pos == beat_last, 0, beat_pos + 1))]
                    with m.If(is_write & target_full):
                        m.d.sync += overflow.eq(1)
                    with m.If(left == length):
                        m.d.sync += req.eq(byte)
                    with m.If(left == 1):
                        m.next = "CRC"
                with m.Elif(timeout):
                    nak(P.Error.TIMEOUT)

            with m.State("CRC"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc_next), idx.eq(idx + 1)]
                    with m.If(idx == 1):
                        m.next = "CHECK"
                with m.Elif(timeout):
                    nak(P.Error.TIMEOUT)

            with m.State("CHECK"):
                # The frame's verdict and its command's kind into registers, so that
                # EXECUTE's enables (commit, rollback, rewind, release, flush) start
                # at registers.
                # CRC over CODE..CRC ends at 0 for an intact frame.
                replay = last_valid & (seq == last_seq) & (code == last_code) & ~is_reset
                len_ok = Mux(is_write, (length != 0) & (beat_pos == 0),
                             length == Mux(is_read, 1, 0))
                m.d.sync += [
                    c_write.eq(is_write), c_read.eq(is_read), c_status.eq(is_status),
                    c_reset.eq(is_reset),
                    verdict.eq(Mux(crc != 0, V_BAD_CRC, Mux(replay, V_REPLAY, Mux(
                        ~known, V_UNKNOWN, Mux(~len_ok, V_BAD_LENGTH, Mux(
                            is_write & overflow, V_BUSY, V_OK)))))),
                ]
                m.next = "EXECUTE"

            with m.State("DISCARD"):
                with m.If(timeout):
                    nak(P.Error.BAD_LENGTH)

            with m.State("EXECUTE"):
                ack_kind = Mux(c_read, ACK_READ, Mux(c_status, ACK_STATUS, ACK_EMPTY))
                m.d.comb += rollback.eq(~commit)
                m.d.sync += fresh_read.eq(0)
                m.next = "PREPARE"
                with m.Switch(verdict):
                    with m.Case(V_BAD_CRC):
                        nak(P.Error.BAD_CRC)
                    with m.Case(V_REPLAY):
                        # A repeated READ sends the same beats again, from the first one
                        # not released. (Only here: a frame that fails must leave the
                        # cursor where the last reply ended, for the next new frame
                        # releases up to it.)
                        m.d.comb += outlet.r_rewind.eq(c_read)
                        m.d.sync += kind.eq(ack_kind)
                    with m.Default():
                        # A new request: the host has the previous reply, so free its beats.
                        m.d.comb += [outlet.r_commit.eq(1), outlet.release.eq(pending)]
                        m.d.sync += pending.eq(0)
                        with m.Switch(verdict):
                            with m.Case(V_UNKNOWN):
                                nak(P.Error.UNKNOWN_CMD)
                            with m.Case(V_BAD_LENGTH):
                                nak(P.Error.BAD_LENGTH)
                            with m.Case(V_BUSY):
                                nak(P.Error.BUSY)
                            with m.Default():
                                m.d.comb += [commit.eq(c_write), flush.eq(c_reset)]
                                m.d.sync += [last_seq.eq(seq), last_code.eq(code),
                                             last_valid.eq(1), fresh_read.eq(c_read),
                                             kind.eq(ack_kind)]

            with m.State("PREPARE"):
                with m.If(fresh_read):
                    m.d.sync += pending.eq(Mux(req < outlet.level, req, outlet.level))
                m.d.sync += idx.eq(0)
                m.next = "SEND_HEADER"

            with m.State("SEND_HEADER"):
                m.d.comb += utx.data.valid.eq(1)
                with m.Switch(idx):
                    with m.Case(0):
                        m.d.comb += tx_byte.eq(P.SYNC)
                    with m.Case(1):
                        m.d.comb += tx_byte.eq(Mux(kind == NAK, P.Reply.NAK, P.Reply.ACK))
                    with m.Case(2):
                        m.d.comb += tx_byte.eq(seq)
                    with m.Case(3):
                        m.d.comb += tx_byte.eq(reply_len[:8])
                    with m.Default():
                        m.d.comb += tx_byte.eq(reply_len[8:])
                with m.If(sent):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 4):
                        m.d.sync += [idx.eq(0), left.eq(reply_len)]
                        with m.If(reply_len == 0):
                            m.next = "SEND_CRC"
                        with m.Else():
                            m.next = "SEND_PAYLOAD"

            with m.State("SEND_PAYLOAD"):
                m.d.comb += utx.data.valid.eq(1)
                with m.Switch(kind):
                    with m.Case(NAK):
                        m.d.comb += tx_byte.eq(err)
                    with m.Case(ACK_STATUS):
                        with m.Switch(idx):
                            for i, value in enumerate(status):
                                with m.Case(i):
                                    m.d.comb += tx_byte.eq(value)
                    with m.Default():
                        m.d.comb += [tx_byte.eq(outlet.r_data), outlet.r_en.eq(sent)]
                with m.If(sent):
                    m.d.sync += [idx.eq(idx + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.d.sync += idx.eq(0)
                        m.next = "SEND_CRC"

            with m.State("SEND_CRC"):
                m.d.comb += [utx.data.valid.eq(1), tx_byte.eq(Mux(idx == 0, crc[8:], crc[:8]))]
                with m.If(sent):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.next = "IDLE"

        # Inter-byte timeout: a quiet line inside a frame ends it.
        receiving = Cat(fsm.ongoing(s) for s in ("HEADER", "PAYLOAD", "CRC", "DISCARD")).any()
        # The sender's CRC: SYNC (header byte 0) starts it, the other header and payload
        # bytes go in, one cycle after each was sent.
        tx_sent, tx_init, tx_step = Signal(8, name="tx_sent"), Signal(), Signal()
        header = fsm.ongoing("SEND_HEADER")
        m.d.sync += [tx_init.eq(sent & header & (idx == 0)),
                     tx_step.eq(sent & ((header & (idx != 0)) | fsm.ongoing("SEND_PAYLOAD")))]
        with m.If(sent):
            m.d.sync += tx_sent.eq(tx_byte)
        with m.If(tx_init):
            m.d.sync += crc.eq(P.CRC_INIT)
        with m.Elif(tx_step):
            m.d.sync += crc.eq(crc16_next(crc, tx_sent))
        with m.If(receiving & ~got & ~timeout):
            m.d.sync += timer.eq(timer + 1)
        with m.Else():
            m.d.sync += timer.eq(0)
        return m
