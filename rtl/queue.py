"""Queues and credit counters: how nibble's units hand data on without a ready chain.

Inside the accelerator no unit stops another through a combinational ``ready``. A unit
whose output cannot wait (the systolic array, the rescaler, the read sides of the output
units) sends a beat only while it holds a *credit* for a free slot in the buffer it
writes into, and takes the credit when it commits to the beat; the buffer gives the
credit back when the beat leaves it. The credit counter is a register, so the decision
to send looks only at registers of its own unit, and the buffer can never overflow.

* :class:`Queue`: a first-word-fall-through FIFO in block RAM (or flip-flops when
  small). Its memory is read every cycle, at the address of the next head, so a read
  enable never fans out to the memory's wide output: popping moves an address.
* :class:`StreamQueue`: a :class:`Queue` behind a ring of registers, as a stream
  whose ``valid`` and payload come from flip-flops. For the accelerator's ports, whose
  consumers have a ``ready``.
* :class:`Credits`: the producer's count of free slots.
* :class:`RegisterSlice`: a stream through two registers (a skid buffer), for a stream
  that crosses the die: ``valid``, payload and ``ready`` all leave from flip-flops on
  both sides, at one beat per cycle.

Each queue and counter raises a sticky ``fault`` output if it is written while full,
read while empty, or given more credits than it has slots: in a correct design that
never happens, and the testbenches check that it did not.
"""

from amaranth.hdl import Array, Module, Mux, Shape, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .pipeline import REPLICA_SUFFIX

__all__ = ["Queue", "StreamQueue", "Credits", "RegisterSlice", "QueueRead", "BLOCK_RAM_BITS",
           "ram_attrs"]

#: Memories of at least this many bits (width x depth) are asked to map to block RAM;
#: smaller ones are left to the tools (distributed RAM on ECP5).
BLOCK_RAM_BITS = 256
#: Bits per slice of a LUT-RAM queue (each slice has its own address registers).
LUT_RAM_SLICE = 32


def QueueRead(shape) -> wiring.Signature:
    """The read side of a :class:`Queue`, as the queue drives it: ``rdy`` (not empty, a
    register), ``data`` (the oldest entry, while ``rdy``), ``en`` (pop it; only while
    ``rdy``). A consumer takes it as ``In(QueueRead(shape))``."""
    return wiring.Signature({"rdy": Out(1), "en": In(1), "data": Out(shape)})


def ram_attrs(width: int, depth: int, platform=None, *, lut_ram: bool = False,
              registers: bool = False) -> dict:
    """Memory attributes for a ``width`` x ``depth`` memory elaborated for ``platform``:
    block RAM from :data:`BLOCK_RAM_BITS` up (LUT RAM instead with ``lut_ram``), and
    always on an iCE40, which has no distributed RAM (a small memory would become
    flip-flops and multiplexers, the logic cells an iCE40 UP5K is shortest of), unless
    ``registers`` asks for flip-flops (a memory of a few bits where the die's block RAMs
    are all spoken for)."""
    if registers:
        return {"ram_style": "logic"}
    if getattr(platform, "family", None) == "iCE40":
        return {"ram_style": "block"}
    if lut_ram:
        return {"ram_style": "distributed"}
    return {"ram_style": "block"} if width * depth >= BLOCK_RAM_BITS else {}


def _next(ptr: Signal, depth: int):
    """A ring pointer (0..depth-1) plus one, wrapping."""
    return Mux(ptr == depth - 1, 0, ptr + 1)


def _init_next(depth: int) -> int:
    return 1 % depth


def _select_count(count: Signal, up, down):
    """``count + up - down`` with the late ``up``/``down`` only selecting among sums of
    the register (no adder after them)."""
    return Mux(up, Mux(down, count, count + 1), Mux(down, count - 1, count))


class Queue(wiring.Component):
    """First in, first out; the head is always on ``r.data``.

    The memory's read port has no enable: every cycle it reads the address of the next
    cycle's head. A written entry becomes visible (``r.rdy``) two cycles after its write,
    when a read of its address has gone through the memory.

    Parameters
    ----------
    shape : shape-castable
        Of one entry.
    depth : int
        Entries (any number >= 1).
    lut_ram : bool
        Ask for LUT RAM whatever the size (not on an iCE40, which has none): a read
        whose data is in the register behind it in a LUT delay, where a block RAM's
        clock-to-out takes most of a cycle. For shallow, wide queues. ``r.data`` is then
        an asynchronous read of the head (the same cycles as the registered read).
    registers : bool
        The memory in flip-flops on every family (:func:`ram_attrs`), the same cycles.

    Attributes
    ----------
    w : In(stream.Signature(shape, always_ready=True))
        Entries in; there is no ready: the producer counts credits or watches ``level``.
    r : Out(QueueRead(shape))
        The head: ``r.data`` while ``r.rdy``; ``r.en`` pops it.
    level : Out(range(depth + 1))
        Entries stored, counting the ones written in the last cycle (a register).
    fault : Out(1)
        Sticky: a write while full or a pop while empty (the access was ignored).
    """

    def __init__(self, shape, depth: int, *, lut_ram: bool = False, registers: bool = False):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._shape, self._depth, self._lut_ram = shape, depth, lut_ram
        self._registers = registers
        super().__init__({
            "w": In(stream.Signature(shape, always_ready=True)),
            "r": Out(QueueRead(shape)),
            "level": Out(range(depth + 1)), "fault": Out(1),
        })

    def elaborate(self, platform):
        depth = self._depth
        m = Module()
        width = Shape.cast(self._shape).width
        produce = Signal(range(depth))
        consume = Signal(range(depth))
        consume1 = Signal(range(depth), init=_init_next(depth))   # _next(consume)
        write, pop = Signal(name="write"), Signal()
        visible = Signal(range(depth + 1))       # entries readable at the head
        written = Signal()                       # an entry was written last cycle
        m.d.comb += [
            write.eq(self.w.valid & (self.level != depth)),
            pop.eq(self.r.en & self.r.rdy),
        ]
        if self._lut_ram and getattr(platform, "family", None) != "iCE40":
            self._lut_ram_memory(m, platform, write, pop, consume1)
        else:
            m.submodules.mem = mem = Memory(shape=self._shape, depth=depth, init=[],
                                            attrs=ram_attrs(width, depth, platform,
                                                            registers=self._registers))
            wp = mem.write_port()
            # Never the slot being written: a write to the head's slot happens only when
            # the queue is empty, and the entry is not visible until a later read.
            rp = mem.read_port(transparent_for=())
            m.d.comb += [
                wp.addr.eq(produce), wp.data.eq(self.w.payload), wp.en.eq(write),
                # ``pop`` (the consumer's late decision) only selects between registers
                rp.addr.eq(Mux(pop, consume1, consume)),
                self.r.data.eq(rp.data),
            ]
        with m.If(write):
            m.d.sync += produce.eq(_next(produce, depth))
        with m.If(pop):
            m.d.sync += [consume.eq(consume1), consume1.eq(_next(consume1, depth))]
        # Counts: both outcomes computed from registers, ``pop``/``write`` pick one.
        kept, popped = Signal.like(visible), Signal.like(visible)
        m.d.comb += [kept.eq(visible + written), popped.eq(visible + written - 1)]
        m.d.sync += [written.eq(write), visible.eq(Mux(pop, popped, kept)),
                     self.r.rdy.eq(Mux(pop, popped != 0, kept != 0)),
                     self.level.eq(_select_count(self.level, write, pop))]
        with m.If((self.w.valid & (self.level == depth)) | (self.r.en & ~self.r.rdy)):
            m.d.sync += self.fault.eq(1)
        return m

    def _lut_ram_memory(self, m, platform, write, pop, consume1):
        """The memory as LUT RAM with an asynchronous read, in slices of
        :data:`LUT_RAM_SLICE` bits, each with flip-flop copies of the write and read
        addresses: one address register read by every LUT RAM of a 520-bit queue was an
        11.6 ns path (ULX3S 16x16 at 40440bf). The read address is the head itself (a
        register moved by ``pop``), so ``r.data`` is in the same cycle as with a
        registered read of the next head: a read a LUT delay after its register."""
        depth = self._depth
        data = Value.cast(self.r.data)
        payload = Value.cast(self.w.payload)
        for lo in range(0, len(data), LUT_RAM_SLICE):
            hi = min(lo + LUT_RAM_SLICE, len(data))
            waddr = Signal(range(depth), name=f"produce_{lo}{REPLICA_SUFFIX}")
            raddr = Signal(range(depth), name=f"consume_{lo}{REPLICA_SUFFIX}")
            with m.If(write):
                m.d.sync += waddr.eq(_next(waddr, depth))
            with m.If(pop):
                m.d.sync += raddr.eq(consume1)
            m.submodules[f"mem_{lo}"] = mem = Memory(
                shape=hi - lo, depth=depth, init=[],
                attrs=ram_attrs(hi - lo, depth, platform, lut_ram=True))
            wp = mem.write_port()
            rp = mem.read_port(domain="comb")
            m.d.comb += [wp.addr.eq(waddr), wp.data.eq(payload[lo:hi]), wp.en.eq(write),
                         rp.addr.eq(raddr), data[lo:hi].eq(rp.data)]


class StreamQueue(wiring.Component):
    """A :class:`Queue` as a stream whose outputs come from registers.

    The queue's head is popped into a register every cycle it can be (two in a row with
    ``read_stages=2``), and from there into a ring of :attr:`slots` registers; the
    decision to pop looks only at registers (how full the ring is), and every wide
    register loads on an enable that is itself a register, so the consumer's ``ready``
    moves a pointer and nothing else. ``r.valid`` is a register,
    ``r.payload`` a multiplexer of the ring (whose select, the head pointer, has a
    flip-flop copy per :attr:`HEAD_CHUNK` bits); a consumer that is always ready gets
    one beat per cycle.

    A producer keeps one beat per cycle flowing only if the memory covers the loop its
    flow control takes to come back: a credit returns 4 + ``read_stages`` cycles after
    the write that spent it (write, memory, pop, the read stages, :class:`Credits`
    register), so a credited queue needs ``depth >= 4 + read_stages`` for full rate, and
    an uncredited one ``depth >= 3`` (``w.ready`` is a register). Shallower queues work,
    at a lower rate.

    Parameters
    ----------
    shape : shape-castable
        Payload of one beat.
    depth : int
        Beats in the memory (the ring holds four more).
    credited : bool
        True: the producer counts credits (``capacity`` of them) and ``w`` has no ready;
        False: ``w.ready`` (room in the memory, from a register) is the flow control.
    lut_ram : bool
        The memory in LUT RAM (see :class:`Queue`).
    registers : bool
        The memory in flip-flops (see :class:`Queue`).
    read_stages : int
        Registers between the memory and the ring, 1 or 2. A block RAM's clock-to-out
        takes most of a cycle; a second register lets the first sit by the RAM. Each
        one more adds a cycle to the credit loop (a credited queue needs
        ``depth >= 4 + read_stages`` for full rate) and a slot to the ring.
        0: no ring at all, the queue's head is the stream (``r.valid`` is ``rdy``,
        ``r.payload`` the memory's read data, ``r.ready`` pops it through the read
        address's multiplexer): for a slow clock, where the ring's registers would cost
        more than the path they cut (``NibbleParams.pipelined`` off). A credit then
        returns 3 cycles after the write that spent it.

    Attributes
    ----------
    w : In(stream.Signature(shape, always_ready=credited))
        Beats in.
    r : Out(stream.Signature(shape))
        Beats out, oldest first.
    capacity : int
        Credits for a producer that counts them: ``depth`` (a beat stays counted in the
        memory for a cycle after it moved on).
    slots : int
        Registers in the ring: :attr:`SLOTS` + ``read_stages`` - 1 (0 without a ring).
    held : int
        Beats it holds when the consumer stops taking them: ``depth`` in the memory and
        ``slots - 1`` in the ring (none without one).
    fault : Out(1)
        Sticky: a credited write found the memory full (the beat was lost).
    """

    SLOTS = 4
    #: Payload bits per copy of the head pointer.
    HEAD_CHUNK = 32

    def __init__(self, shape, depth: int, *, credited: bool, lut_ram: bool = False,
                 read_stages: int = 1, registers: bool = False):
        if read_stages not in (0, 1, 2):
            raise ValueError(f"read_stages must be 0, 1 or 2, got {read_stages!r}")
        self._shape, self._depth, self._credited = shape, depth, credited
        self._lut_ram, self._read_stages, self._registers = lut_ram, read_stages, registers
        self.capacity = depth
        self.slots = self.SLOTS + read_stages - 1 if read_stages else 0
        self.held = depth + max(self.slots - 1, 0)
        super().__init__({
            "w": In(stream.Signature(shape, always_ready=credited)),
            "r": Out(stream.Signature(shape)),
            "fault": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.queue = queue = Queue(self._shape, self._depth, lut_ram=self._lut_ram,
                                           registers=self._registers)
        if self._credited:
            m.d.comb += queue.w.valid.eq(self.w.valid)
        else:
            m.d.comb += [self.w.ready.eq(queue.level != self._depth),
                         queue.w.valid.eq(self.w.valid & self.w.ready)]
        m.d.comb += [queue.w.payload.eq(self.w.payload), self.fault.eq(queue.fault)]
        if not self._read_stages:
            m.d.comb += [self.r.valid.eq(queue.r.rdy), self.r.payload.eq(queue.r.data),
                         queue.r.en.eq(self.r.ready & queue.r.rdy)]
            return m

        # The head, popped into ``moved`` (no enable: it loads every cycle; with two read
        # stages, through a second such register) and, one cycle later, into the ring
        # slot that ``load`` (a register) names.
        stages, n_slots = self._read_stages, self.slots
        moved = []
        for k in range(stages):
            moved.append(Signal(self._shape, name=f"moved{k}" if k else "moved",
                                reset_less=True))
            m.d.sync += moved[k].eq(moved[k - 1] if k else queue.r.data)
        slots = [Signal(self._shape, name=f"slot{i}", reset_less=True)
                 for i in range(n_slots)]
        tail = Signal(range(n_slots), name="tail")
        count = Signal(range(n_slots + 1))        # beats in the ring
        arriving = [Signal(name=f"arriving{k}" if k else "arriving") for k in range(stages)]
        take, pop = Signal(name="take"), Signal()
        m.d.comb += [
            # (every beat between the memory and the ring counts against the ring)
            take.eq(queue.r.rdy & (count + sum(arriving) <= n_slots - 2)),
            queue.r.en.eq(take),
            pop.eq(self.r.valid & self.r.ready),
        ]
        # ``r.valid`` (count != 0) a register of its own: both outcomes of the next
        # count computed from registers, ``pop`` picks one.
        landed, landed_popped = Signal.like(count), Signal.like(count)
        m.d.comb += [landed.eq(count + arriving[-1]), landed_popped.eq(count + arriving[-1] - 1)]
        m.d.sync += self.r.valid.eq(Mux(pop, landed_popped != 0, landed != 0))
        # The head pointer selects every payload bit: one flip-flop copy of it per
        # HEAD_CHUNK bits, so no select net reaches the whole (often 100s of bits wide)
        # payload.
        width = Shape.cast(self._shape).width
        payload = Value.cast(self.r.payload)
        for lo in range(0, width, self.HEAD_CHUNK):
            hi = min(lo + self.HEAD_CHUNK, width)
            copy = Signal(range(n_slots), name=f"head_{lo}{REPLICA_SUFFIX}")
            with m.If(pop):
                m.d.sync += copy.eq(_next(copy, n_slots))
            m.d.comb += payload[lo:hi].eq(
                Array(Value.cast(slot)[lo:hi] for slot in slots)[copy])
        m.d.sync += [arriving[k].eq(arriving[k - 1] if k else take) for k in range(stages)]
        m.d.sync += count.eq(count + arriving[-1] - pop)
        # (``landing``: the beat that reaches the last ``moved`` register next cycle)
        landing = arriving[-2] if stages > 1 else take
        # (the ring's load enables, like the head pointer, have a flip-flop copy per
        # HEAD_CHUNK bits: one enable register for a 520-bit slot was a 10.3 ns route)
        for lo in range(0, width, self.HEAD_CHUNK):
            hi = min(lo + self.HEAD_CHUNK, width)
            for i in range(n_slots):
                load = Signal(name=f"load{i}_{lo}{REPLICA_SUFFIX}")
                m.d.sync += load.eq(landing & (tail == i))
                with m.If(load):
                    m.d.sync += Value.cast(slots[i])[lo:hi].eq(Value.cast(moved[-1])[lo:hi])
        with m.If(landing):
            m.d.sync += tail.eq(_next(tail, n_slots))
        return m


class Credits(wiring.Component):
    """Free slots of a downstream buffer, counted by its producer.

    Parameters
    ----------
    capacity : int
        Slots of the buffer; the count starts (and resets) full.

    Attributes
    ----------
    ok : Out(1)
        At least one credit: the producer may commit to one beat this cycle. A register
        (computed from the next count), so a producer's decision starts at a flip-flop.
    take : In(1)
        The producer committed to a beat (only while ``ok``).
    give : In(1)
        A beat left the buffer: its slot is free again.
    fault : Out(1)
        Sticky: a take without a credit, or a give beyond the capacity.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        super().__init__({"ok": Out(1, init=1), "take": In(1), "give": In(1), "fault": Out(1)})

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(self.capacity + 1), init=self.capacity)
        # ``take`` and ``give`` come late in the cycle: they only select among flags
        # computed from the count register.
        m.d.sync += [count.eq(_select_count(count, self.give, self.take)),
                     self.ok.eq(Mux(self.take & ~self.give, count >= 2,
                                    self.give | (count != 0)))]
        with m.If((self.take & (count == 0)) |
                  (self.give & ~self.take & (count == self.capacity))):
            m.d.sync += self.fault.eq(1)
        return m


class RegisterSlice(wiring.Component):
    """A stream through registers: ``r.valid`` and ``r.payload`` come from a flip-flop
    (the main register), and ``w.ready`` is a flip-flop too (the skid register is empty),
    so neither side's logic reaches the other's. A beat is taken whenever the skid
    register is empty; if the main register cannot pass its beat on in that cycle, the
    new beat waits in the skid register. One beat per cycle with an always-ready
    consumer; a beat leaves one cycle after it is taken at the earliest.

    Parameters
    ----------
    shape : shape-castable
        Payload of one beat.

    Attributes
    ----------
    w : In(stream.Signature(shape))
        Beats in.
    r : Out(stream.Signature(shape))
        The same beats, in order.
    HELD : int
        Beats it holds when the consumer stops taking them: 2.
    """

    HELD = 2

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"w": In(stream.Signature(shape)), "r": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        main = Signal(self._shape, reset_less=True)
        skid = Signal(self._shape, reset_less=True)
        main_valid, skid_valid = Signal(name="main_valid"), Signal()
        m.d.comb += [self.w.ready.eq(~skid_valid), self.r.valid.eq(main_valid),
                     self.r.payload.eq(main)]
        # The valid bits' next values: the main register moves on when it is empty or
        # its beat is taken; a beat that cannot follow it waits in the skid register.
        advance = ~main_valid | self.r.ready
        main_next, skid_next = Signal(), Signal()
        m.d.comb += [
            main_next.eq(Mux(advance, skid_valid | self.w.valid, main_valid)),
            skid_next.eq(~advance & (skid_valid | self.w.valid)),
        ]
        m.d.sync += [main_valid.eq(main_next), skid_valid.eq(skid_next)]
        # The data registers load per slice of HEAD_CHUNK bits, each slice on enables
        # from flip-flop copies of the valid bits of its own, so ``r.ready`` reaches a
        # LUT per slice, not the enable of every bit (one enable for 520 bits was a
        # 10.0 ns route on the ULX3S 16x16 at df084b0). The skid register samples the
        # payload in every cycle it is empty, so its enable is a flip-flop.
        width = Shape.cast(self._shape).width
        main_v, skid_v, payload = Value.cast(main), Value.cast(skid), Value.cast(self.w.payload)
        for lo in range(0, width, StreamQueue.HEAD_CHUNK):
            hi = min(lo + StreamQueue.HEAD_CHUNK, width)
            if width <= StreamQueue.HEAD_CHUNK:
                mv, sv = main_valid, skid_valid
            else:
                mv = Signal(name=f"main_valid_{lo}{REPLICA_SUFFIX}")
                sv = Signal(name=f"skid_valid_{lo}{REPLICA_SUFFIX}")
                m.d.sync += [mv.eq(main_next), sv.eq(skid_next)]
            with m.If(~mv | self.r.ready):
                m.d.sync += main_v[lo:hi].eq(Mux(sv, skid_v[lo:hi], payload[lo:hi]))
            with m.If(~sv):
                m.d.sync += skid_v[lo:hi].eq(payload[lo:hi])
        return m
