"""Tests of ``rtl.tile_bank.TileBank`` in the Amaranth simulator.

Every test plays one testbench that drives the three sides of the bank cycle by cycle
and checks every output against a Python model of the docstring:

* writer: sends a beat on ``w`` only with one of ``capacity`` credits, a credit coming
  back (usable from the next cycle, as a :class:`rtl.queue.Credits` register gives it)
  for every ``freed``; ``w_last`` is "beats written so far mod R == R - 1";
* finalizer: pulses ``fin`` with a tile's meta some time after that tile's last beat
  was written, oldest tile first;
* reader: ``r_en`` only while ``r_rdy``; ``r_rdy`` in a cycle is "finalized beats minus
  beats read, as the earlier cycles left them, is nonzero"; ``r_data``, ``r_meta`` and
  ``r_last`` are, in the cycle after a read, the beat read, its tile's meta and
  whether it was the tile's last beat; ``freed`` equals ``r_en``.

The beats read are therefore checked against the beats written, in write order, with
the meta each tile was finalized with: a read that overtook a write or a finalize, or a
write that overwrote a beat not yet read, shows up as a wrong beat or meta.
"""

import gc
import random
import warnings
from collections import Counter, deque

import pytest
from amaranth.hdl import ResetInserter, Signal, signed
from amaranth.lib import data

from rtl.tile_bank import FINALIZE_MAX, TileBank, bank_tiles
from verif.amaranth_streams import simulate


#: A beat and a meta with several fields, as the requantizer and log4 unit store them.
BEAT = data.ArrayLayout(signed(7), 3)
META = data.StructLayout({"e": signed(8), "base": signed(10), "lim": 3})


class BankBench:
    """The writer, finalizer and reader of one TileBank with the model of the module
    docstring; :meth:`cycle` checks the outputs, drives one cycle and updates the model.

    ``p_write``, ``p_fin`` and ``p_read`` are the chances that each side acts in a
    cycle where it may; ``fin_delay`` (min, max) the cycles from a tile's last write to
    the earliest cycle its ``fin`` may be sent (at least 1: "after its last beat was
    written")."""

    def __init__(self, dut, beats, rng, *, p_write=0.7, p_fin=0.5, p_read=0.6,
                 fin_delay=(1, 6)):
        self.dut, self.rng = dut, rng
        self.R, self.cap = beats, dut.capacity
        self.p_write, self.p_fin, self.p_read, self.fin_delay = p_write, p_fin, p_read, fin_delay
        self.beat_bits = dut.w.payload.as_value().shape().width
        self.meta_bits = dut.fin.payload.as_value().shape().width
        self.cycle = 0
        self.stats = Counter()
        self.reset_model()

    def reset_model(self):
        self.credits = self.cap
        self.written = 0                  # beats written since reset
        self.unfinalized = deque()        # (tile's beats, meta, earliest fin cycle)
        self.fin_tiles = deque()          # finalized tiles with beats left: [beats, meta]
        self.readable = 0                 # finalized beats not read (model of the count)
        self.current = []                 # beats of the tile being written
        self.shown = None                 # (beat, meta, last) the last cycle's read shows
        self.to_send = deque()            # beats the writer still has, in order
        self.read_log = []                # (beat, meta, last) of every read

    def send(self, n):
        """Give the writer ``n`` more random beats to write."""
        for _ in range(n):
            self.to_send.append(self.rng.getrandbits(self.beat_bits))

    @property
    def idle(self):
        return not self.to_send and not self.current and not self.unfinalized \
            and not self.fin_tiles

    async def cycle_once(self, ctx, *, read_ok=True, write_ok=True, fin_ok=True):
        dut, rng, R = self.dut, self.rng, self.R
        where = f"cycle {self.cycle}"
        # ---- outputs that depend only on registers
        r_rdy = ctx.get(dut.r_rdy)
        assert r_rdy == (self.readable != 0), \
            f"{where}: r_rdy {r_rdy}, {self.readable} finalized beats unread"
        assert ctx.get(dut.w_last) == (self.written % R == R - 1), f"{where}: w_last"
        if self.shown is not None:
            got = (ctx.get(dut.r_data.as_value()), ctx.get(dut.r_meta.as_value()),
                   ctx.get(dut.r_last))
            assert got == self.shown, f"{where}: r_data/r_meta/r_last {got}, expected {self.shown}"
            self.shown = None             # shown in the cycle after the read only
        # ---- inputs
        write = write_ok and self.credits > 0 and bool(self.to_send) and rng.random() < self.p_write
        self.stats["no_credit"] += bool(self.to_send) and self.credits == 0
        beat = self.to_send[0] if write else rng.getrandbits(self.beat_bits)
        fin = (fin_ok and bool(self.unfinalized) and self.unfinalized[0][2] <= self.cycle
               and rng.random() < self.p_fin)
        meta = self.unfinalized[0][1] if fin else rng.getrandbits(self.meta_bits)
        read = read_ok and r_rdy and rng.random() < self.p_read
        ctx.set(dut.w.valid, write)
        ctx.set(dut.w.payload.as_value(), beat)
        ctx.set(dut.fin.valid, fin)
        ctx.set(dut.fin.payload.as_value(), meta)
        ctx.set(dut.r_en, read)
        assert ctx.get(dut.freed) == read, f"{where}: freed is not r_en"
        await ctx.tick()
        self.cycle += 1
        # ---- model update
        if write:
            self.to_send.popleft()
            self.credits -= 1
            self.current.append(beat)
            self.written += 1
            if len(self.current) == R:
                lo, hi = self.fin_delay
                self.unfinalized.append((self.current, rng.getrandbits(self.meta_bits),
                                         self.cycle - 1 + rng.randint(lo, hi)))
                self.current = []
        if fin:
            beats, meta, _ = self.unfinalized.popleft()
            self.fin_tiles.append([deque(beats), meta])
            self.readable += R
            self.stats["fins"] += 1
        if read:
            tile = self.fin_tiles[0]
            b = tile[0].popleft()
            last = not tile[0]
            self.shown = (b, tile[1], int(last))
            self.read_log.append(self.shown)
            if last:
                self.fin_tiles.popleft()
            self.readable -= 1
            self.credits += 1              # freed: usable from the next cycle
            self.stats["reads"] += 1
            self.stats["write_and_read"] += write
        self.stats["full"] += self.credits == 0

    async def run_until_idle(self, ctx, limit=20000, **kw):
        start = self.cycle
        while not self.idle:
            await self.cycle_once(ctx, **kw)
            assert self.cycle - start < limit, "bank deadlocked"


CASES = [  # (beats R, tiles N or None for bank_tiles(R))
    (1, None), (1, 2), (2, 2), (4, None), (4, 2), (8, 2), (16, None),
]


@pytest.mark.parametrize("beats,tiles", CASES)
@pytest.mark.parametrize("phase", ["balanced", "slow_reader", "slow_finalizer"])
def test_random_traffic_matches_model(beats, tiles, phase):
    """Random writes (only with a credit), finalizes (oldest first, 1..6 cycles or
    more after a tile's last beat) and reads (only while ``r_rdy``): every beat is read
    exactly once, in write order, with its tile's meta and ``r_last`` on the tile's last
    beat; ``r_rdy`` counts exactly the finalized beats not read yet (so a read never
    overtakes a write or a finalize), ``w_last`` marks every R-th beat, ``freed`` is
    ``r_en``, and the outputs of a read hold until the next one. The run fills the bank
    (writer out of credits) and drains it empty many times."""
    p = {"balanced": (0.7, 0.5, 0.6), "slow_reader": (0.9, 0.8, 0.25),
         "slow_finalizer": (0.9, 0.3, 0.9)}[phase]
    fin_delay = (2 * beats, 4 * beats + 24) if phase == "slow_finalizer" else (1, 6)
    dut = TileBank(BEAT, beats, META, tiles)
    assert dut.capacity == (bank_tiles(beats) if tiles is None else tiles) * beats
    rng = random.Random(f"{beats}-{tiles}-{phase}")
    tb = BankBench(dut, beats, rng, p_write=p[0], p_fin=p[1], p_read=p[2], fin_delay=fin_delay)
    n_tiles = max(12, 4 * dut.capacity // beats + 3)

    async def bench(ctx):
        tb.send(n_tiles * beats)
        await tb.run_until_idle(ctx)
        for _ in range(5):                 # nothing more comes out, r_rdy stays 0
            await tb.cycle_once(ctx)

    simulate(dut, bench)
    assert len(tb.read_log) == n_tiles * beats
    assert sum(last for _, _, last in tb.read_log) == n_tiles
    if phase != "balanced" or tiles == 2:
        assert tb.stats["no_credit"] > 0, "the bank never filled up"
    assert tb.stats["write_and_read"] > 0 or beats * n_tiles < 20


@pytest.mark.parametrize("beats", [1, 2, 4, 8, 16, 64])
def test_full_rate_with_finalize_max(beats):
    """The sizing rule of :func:`bank_tiles`: a writer with a beat in every cycle, each
    tile finalized so that its first read is exactly ``FINALIZE_MAX`` cycles after its
    last beat was written, and a reader that reads whenever ``r_rdy``: once the first
    tile is through, the writer never waits for a credit and the reader reads every
    cycle, with the default N."""
    dut = TileBank(BEAT, beats, META)
    rng = random.Random(beats)
    # fin in cycle last + FINALIZE_MAX - 1 makes r_rdy rise in cycle last + FINALIZE_MAX.
    tb = BankBench(dut, beats, rng, p_write=1.0, p_fin=1.0, p_read=1.0,
                   fin_delay=(FINALIZE_MAX - 1, FINALIZE_MAX - 1))
    n_tiles = max(6, 3 * dut.capacity // beats)

    async def bench(ctx):
        tb.send(n_tiles * beats)
        await tb.run_until_idle(ctx)

    simulate(dut, bench)
    assert tb.stats["no_credit"] == 0, f"writer waited {tb.stats['no_credit']} cycles"
    # reads run without a gap from the first tile's first read (FINALIZE_MAX cycles
    # after its last beat, written in cycle beats - 1) to the end
    assert len(tb.read_log) == n_tiles * beats
    assert tb.cycle == beats - 1 + FINALIZE_MAX + n_tiles * beats, tb.cycle


def test_read_in_the_cycle_after_finalize_and_write_into_freed_slot():
    """Tightest timing with N = 2, R = 2: fill both tiles, finalize them; the first
    read is possible in the cycle after its ``fin``; the writer writes into a freed slot
    in the cycle right after the read that freed it, while the reader goes on: every
    beat still comes out as written (the read port is not transparent, the write does
    not clobber an unread beat)."""
    dut = TileBank(8, 2, 8, 2)

    async def bench(ctx):
        for i in range(4):
            ctx.set(dut.w.valid, 1)
            ctx.set(dut.w.payload, 0x10 + i)
            await ctx.tick()
        ctx.set(dut.w.valid, 0)
        assert not ctx.get(dut.r_rdy)
        ctx.set(dut.fin.valid, 1)
        ctx.set(dut.fin.payload, 0xA0)
        await ctx.tick()
        ctx.set(dut.fin.payload, 0xA1)
        assert ctx.get(dut.r_rdy), "r_rdy must rise in the cycle after fin"
        ctx.set(dut.r_en, 1)               # read beat 0 while tile 1 is finalized
        await ctx.tick()
        ctx.set(dut.fin.valid, 0)
        got = [(ctx.get(dut.r_data), ctx.get(dut.r_meta), ctx.get(dut.r_last))]
        # from here: read every cycle, and write a new beat into each freed slot
        writes = [0x20 + i for i in range(4)]
        for i in range(7):
            ctx.set(dut.w.valid, i < 4)
            ctx.set(dut.w.payload, writes[i] if i < 4 else 0)
            if i == 2:
                ctx.set(dut.fin.valid, 1)
                ctx.set(dut.fin.payload, 0xA2)
            else:
                ctx.set(dut.fin.valid, 0)
            if i == 4:
                ctx.set(dut.fin.valid, 1)
                ctx.set(dut.fin.payload, 0xA3)
            assert ctx.get(dut.r_rdy), f"step {i}"
            ctx.set(dut.r_en, 1)
            await ctx.tick()
            got.append((ctx.get(dut.r_data), ctx.get(dut.r_meta), ctx.get(dut.r_last)))
        ctx.set(dut.r_en, 0)
        ctx.set(dut.w.valid, 0)
        ctx.set(dut.fin.valid, 0)
        await ctx.tick()
        assert not ctx.get(dut.r_rdy)
        assert got == [(0x10, 0xA0, 0), (0x11, 0xA0, 1), (0x12, 0xA1, 0), (0x13, 0xA1, 1),
                       (0x20, 0xA2, 0), (0x21, 0xA2, 1), (0x22, 0xA3, 0), (0x23, 0xA3, 1)]

    simulate(dut, bench)


@pytest.mark.parametrize("beats,tiles", [(2, 2), (4, None)])
def test_reset_in_the_middle_then_clean_traffic(beats, tiles):
    """A one-cycle reset while the bank holds finalized, unfinalized and half-written
    tiles and a read has just happened: afterwards ``r_rdy`` is 0 until a new tile is
    written and finalized, ``w_last`` counts from a fresh tile, and random traffic
    matches the model again (no old beat or meta ever appears)."""
    dut = TileBank(BEAT, beats, META, tiles)
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    rng = random.Random(beats)
    tb = BankBench(dut, beats, rng, p_write=0.9, p_fin=0.6, p_read=0.3)

    async def bench(ctx):
        tb.send(3 * dut.capacity + beats // 2 + 1)
        for _ in range(8 * dut.capacity):
            await tb.cycle_once(ctx)
        assert tb.fin_tiles and tb.read_log, "reset not in the middle of work"
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        tb.reset_model()
        for _ in range(4):                 # idle, nothing readable
            await tb.cycle_once(ctx, write_ok=False)
        before = len(tb.read_log)
        tb.send(5 * beats)
        await tb.run_until_idle(ctx)
        assert len(tb.read_log) == before + 5 * beats

    simulate(top, bench)


def test_bank_tiles_rule():
    """``bank_tiles``: a power of two with room for the tile read, one more, and the
    tiles that arrive during ``FINALIZE_MAX`` cycles; the constructor rejects N that is
    not a power of two >= 2."""
    for beats in [1, 2, 3, 4, 5, 8, 16, 17, 64, 512]:
        n = bank_tiles(beats)
        assert n & (n - 1) == 0
        need = 2 + -(-FINALIZE_MAX // beats)
        assert need <= n < 2 * need
    with warnings.catch_warnings():         # the refused objects are never elaborated
        warnings.simplefilter("ignore")
        for bad in (0, 1, 3, 6):
            with pytest.raises(ValueError):
                TileBank(8, 4, 8, bad)
        gc.collect()


def test_beats_not_a_power_of_two_are_refused():
    """A beat's address is its row beside the tile index, so R must be a power of two
    (R = T * T / L always is); any other R is refused, not silently aliased."""
    with warnings.catch_warnings():         # the refused objects are never elaborated
        warnings.simplefilter("ignore")
        for bad in (0, 3, 6, 12):
            with pytest.raises(ValueError, match="beats must be a power of two"):
                TileBank(8, bad, 4, 2)
        gc.collect()
