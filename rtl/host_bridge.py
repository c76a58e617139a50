"""The UART host bridge: the board's link between a host and the :class:`Accelerator`.

Data path (the frame format and its rules are in :mod:`wire.host_link`)::

    rx -> UARTRx -> frame receiver --WRITE bytes--> StreamInlet x 6 -> Accelerator inputs
                         | check length, CRC, command; commit or roll back the inlet
                         v
    tx <- UARTTx <- reply sender <--READ bytes-- StreamOutlet <- Accelerator result

The frame receiver and the reply sender are :class:`rtl.host_frames.FrameReceiver` and
:class:`rtl.host_frames.ReplySender`; :class:`HostBridge` connects them and decides what
a checked frame does besides its inlet write (READ beats released or sent again, RESET).

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
from rtl.host_frames import FrameReceiver, ReplyKind, ReplySender, Verdict, crc16_next
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
        m = Module()
        m.submodules.uart_rx = urx = UARTRx(self.divisor)
        m.submodules.uart_tx = utx = UARTTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        flush = self._core_and_buffers(m)

        outlet = self.outlet
        m.submodules.receiver = receiver = FrameReceiver(
            [P.beat_bytes(b) for b in P.port_beat_bits(self._params).values()],
            self.timeout_cycles)
        m.submodules.sender = sender = ReplySender(
            P.beat_bytes(P.result_beat_bits(self._params)), outlet.max_beats)
        wiring.connect(m, urx.data, receiver.data)
        wiring.connect(m, sender.tx, utx.data)
        for inlet, write in zip(self.inlets.values(), receiver.inlets):
            m.d.comb += [inlet.w_data.eq(write.w_data), inlet.w_en.eq(write.w_en),
                         inlet.w_commit.eq(write.w_commit),
                         inlet.w_rollback.eq(write.w_rollback), write.w_full.eq(inlet.w_full)]
        status = [P.PROTOCOL_VERSION, self._params.tile, self._params.acc_bits,
                  Cat(self.core.busy, self.core.refused), outlet.level[:8], outlet.level >> 8]
        m.d.comb += [sender.status[i].eq(value) for i, value in enumerate(status)]
        m.d.comb += [sender.start.eq(receiver.execute | receiver.abort),
                     sender.seq.eq(receiver.seq), receiver.replied.eq(sender.done),
                     sender.r_data.eq(outlet.r_data), outlet.r_en.eq(sender.r_en)]
        self._execute(m, receiver, sender, flush)
        return m

    def _core_and_buffers(self, m):
        """The accelerator and its stream buffers, and their reset; returns the net that
        asks for that reset (RESET executes)."""
        # RESET: the accelerator and the buffers start afresh (memories keep stale bytes,
        # which the reset pointers make unreachable).
        # The reset is registered (one cycle late), so the frame receiver's decode does
        # not sit in front of every resettable flip-flop of the accelerator; the register
        # is set by the bridge's own reset too, so in a core domain of its own it is the
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
        wiring.connect(m, self.core.result, self.outlet.beats)
        m.d.comb += self.busy.eq(self.core.busy)
        return flush

    def _execute(self, m, receiver, sender, flush):
        """What a checked frame does beyond its inlet (which the receiver commits), and
        the reply it gets: READ beats released or sent again, RESET (``flush``), the
        reply's kind."""
        outlet = self.outlet
        kind, err = Signal(ReplyKind, name="kind"), Signal(8, name="err")
        # READ beats sent and not yet released (the host may ask for them again).
        pending = Signal.like(outlet.level, name="pending")
        fresh_read = Signal(name="fresh_read")       # a new READ executed last cycle
        m.d.comb += [sender.kind.eq(kind), sender.error.eq(err), sender.beats.eq(pending)]
        m.d.sync += fresh_read.eq(0)

        def nak(error):
            m.d.sync += [kind.eq(ReplyKind.NAK), err.eq(error)]

        with m.If(receiver.abort):
            nak(receiver.abort_error)
        with m.If(receiver.execute):
            ack_kind = Mux(receiver.cmd_read, ReplyKind.ACK_READ,
                           Mux(receiver.cmd_status, ReplyKind.ACK_STATUS, ReplyKind.ACK_EMPTY))
            with m.Switch(receiver.verdict):
                with m.Case(Verdict.BAD_CRC):
                    nak(P.Error.BAD_CRC)
                with m.Case(Verdict.REPLAY):
                    # A repeated READ sends the same beats again, from the first one
                    # not released. (Only here: a frame that fails must leave the
                    # cursor where the last reply ended, for the next new frame
                    # releases up to it.)
                    m.d.comb += outlet.r_rewind.eq(receiver.cmd_read)
                    m.d.sync += kind.eq(ack_kind)
                with m.Default():
                    # A new request: the host has the previous reply, so free its beats.
                    m.d.comb += [outlet.r_commit.eq(1), outlet.release.eq(pending)]
                    m.d.sync += pending.eq(0)
                    with m.Switch(receiver.verdict):
                        with m.Case(Verdict.UNKNOWN):
                            nak(P.Error.UNKNOWN_CMD)
                        with m.Case(Verdict.BAD_LENGTH):
                            nak(P.Error.BAD_LENGTH)
                        with m.Case(Verdict.BUSY):
                            nak(P.Error.BUSY)
                        with m.Default():
                            m.d.comb += flush.eq(receiver.cmd_reset)
                            m.d.sync += [fresh_read.eq(receiver.cmd_read), kind.eq(ack_kind)]
        # The cycle after a new READ executed (the sender's PREPARE), its beats: as many
        # as asked for and buffered.
        with m.If(fresh_read):
            m.d.sync += pending.eq(Mux(receiver.req < outlet.level, receiver.req, outlet.level))
