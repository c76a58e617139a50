"""Tests of ``rtl.tile_buffer.TileBuffer`` in the Amaranth simulator.

Every test plays one testbench that drives the load stream and the read side cycle by
cycle and checks every output against a Python model of the docstring:

* two banks, a FIFO of complete tiles (at most 2) plus the rows of the tile being
  loaded; tiles arrive row by row (row 0 first, T beats a tile, element 0 of a row in
  the least significant bits); ``load.ready`` is 1 whenever a bank is free (fewer than
  two complete tiles held, as the earlier cycles left them) and 0 while both banks are
  full, except that in a cycle which releases one of them either value is accepted;
  a row taken is stored in the free bank, so a held tile is never overwritten;
* ``full`` in a cycle is "the read bank (the oldest complete tile not yet released)
  holds a complete tile", for the state that the beats and releases of the earlier
  cycles left (a register: a load completion or a release shows one cycle later);
* ``vector`` in a cycle is, whenever the cycle ``READ_LATENCY`` earlier had a ``read``,
  row k (``read_col`` = 0) or column k (``read_col`` = 1) of the read bank's tile, k
  the number of reads of that tile before it (steps are read once, in order), element i
  from position i; the read of the cycle that pulses ``release`` (the tile's last)
  still comes from the bank being released;
* ``release`` (with a tile's last read) frees the read bank; the next complete tile,
  if any, becomes the read bank.

The testbench producer obeys the stream rules (a valid row stays valid and unchanged
until taken) and offers rows with random gaps; the reader reads a tile's T steps in
order with random pauses, as the feeder does (without the pauses).
"""

import random
from collections import Counter, deque

import pytest
from amaranth.hdl import ResetInserter, Signal

from golden.params import NibbleParams
from rtl.tile_buffer import TileBuffer
from verif.amaranth_streams import simulate

CODE_BITS = 4
CODE_MASK = (1 << CODE_BITS) - 1


def pack(codes):
    """T 4-bit codes as one integer, element 0 in the least significant bits."""
    word = 0
    for i, code in enumerate(codes):
        assert 0 <= code <= CODE_MASK
        word |= code << (CODE_BITS * i)
    return word


def unpack(word, T):
    return [(word >> (CODE_BITS * i)) & CODE_MASK for i in range(T)]


def random_tile(T, rng):
    return [[rng.randrange(16) for _ in range(T)] for _ in range(T)]


def tile_text(tile):
    return "[" + " ".join("".join(f"{c:x}" for c in row) for row in tile) + "]"


class BufferModel:
    """The TileBuffer of the docstring: complete tiles in load order (the head is the
    read bank), the rows of the tile being loaded, and ``full`` as the register shows it
    in the current cycle."""

    def __init__(self, T):
        self.T = T
        self.tiles = deque()
        self.rows = []
        self.k = 0             # steps of the head tile read so far
        self.full = False

    @property
    def ready(self):
        return len(self.tiles) < 2

    def read(self, col):
        """The vector that the next read of the read bank gives."""
        assert self.tiles and self.k < self.T, "testbench error: read past the tile"
        tile, k = self.tiles[0], self.k
        if col:
            return [tile[i][k] for i in range(self.T)]
        return list(tile[k])

    def after_tick(self, row, release, read=False):
        """One clock edge: ``row`` the row accepted in the cycle (or None)."""
        self.k += read
        if release:
            assert self.tiles, "testbench error: release of an empty buffer"
            assert self.k == self.T, "testbench error: release before the last read"
            self.tiles.popleft()
            self.k = 0
        if row is not None:
            assert len(self.tiles) < 2, "row accepted while both banks were full"
            self.rows.append(row)
            if len(self.rows) == self.T:
                self.tiles.append(self.rows)
                self.rows = []
        self.full = bool(self.tiles)


class BufferBench:
    """Drives one TileBuffer with a producer (rows of the tiles given to :meth:`send`,
    offered with probability ``p_valid`` when none is pending) and checks ``full``,
    ``load.ready`` and ``vector`` against :class:`BufferModel` in every cycle."""

    def __init__(self, dut, T, rng, p_valid=1.0):
        self.dut, self.T, self.rng, self.p_valid = dut, T, rng, p_valid
        self.stats = Counter()
        self.seen = set()             # (position, code) of every checked vector
        self.now = 0
        self.reset_model()

    def reset_model(self):
        self.model = BufferModel(self.T)
        self.to_send = deque()        # rows still to offer, in order
        self.offer = None             # the row on the load stream (valid) until taken
        # (vector, what) of the reads of the last READ_LATENCY cycles, oldest first:
        # the oldest is what ``vector`` must show once the deque is full
        self.expect = deque()
        self.accepted = 0             # rows taken since the reset

    def send(self, *tiles):
        for tile in tiles:
            assert len(tile) == self.T and all(len(row) == self.T for row in tile)
            self.to_send.extend(list(row) for row in tile)

    async def cycle(self, ctx, read=False, col=0, release=False):
        """Check this cycle's outputs, drive ``read``/``read_col``/``release`` and the
        producer for one cycle, tick, and advance the model."""
        dut, model, T = self.dut, self.model, self.T
        where = f"cycle {self.now}"
        full = ctx.get(dut.full)
        assert full == model.full, f"{where}: full {full}, model {int(model.full)}"
        due = (self.expect.popleft() if len(self.expect) == TileBuffer.READ_LATENCY
               else None)
        if due is not None:
            got = unpack(ctx.get(dut.vector.as_value()), T)
            want, what = due
            assert got == want, f"{where}: vector {got} for {what}, expected {want}"
            self.stats["checked_reads"] += 1
            self.seen.update(enumerate(got))
        # read side
        assert not read or model.full, "testbench error: read while not full"
        assert not release or read, "testbench error: release without the last read"
        ctx.set(dut.read, read)
        ctx.set(dut.read_col, col)
        ctx.set(dut.release, release)
        self.expect.append((model.read(col), f"{'column' if col else 'row'} {model.k} of "
                            f"{tile_text(model.tiles[0])}") if read else None)
        # producer: a row stays offered until it is taken
        if self.offer is None and self.to_send and self.rng.random() < self.p_valid:
            self.offer = self.to_send.popleft()
        valid = self.offer is not None
        ctx.set(dut.load.valid, valid)
        ctx.set(dut.load.payload.as_value(),
                pack(self.offer) if valid else self.rng.getrandbits(CODE_BITS * T))
        ready = ctx.get(dut.load.ready)
        if len(model.tiles) < 2:
            assert ready, f"{where}: load.ready 0 with {len(model.tiles)} complete tiles held"
        elif not release:
            assert not ready, f"{where}: load.ready 1 with both banks full"
        else:       # both full, one released in this cycle: taking a row now is allowed
            self.stats["ready_on_release"] += ready
        taken = self.offer if valid and ready else None
        self.stats["both_full"] += len(model.tiles) == 2
        self.stats["stalled_rows"] += valid and not ready
        self.stats["read_while_loading"] += bool(read and taken is not None)
        self.stats["release_and_complete"] += bool(
            release and taken is not None and len(model.rows) == T - 1)
        await ctx.tick()
        self.now += 1
        if taken is not None:
            self.offer = None
            self.accepted += 1
        self.stats["releases"] += release
        model.after_tick(taken, release, read)

    async def read_tile(self, ctx, col, *, p_step=1.0):
        """Wait for ``full``, then read the read bank's T steps in order by row or column,
        one step in a cycle with probability ``p_step`` (idle cycles in between), and
        release with the last. Returns the cycle of the first step."""
        while not ctx.get(self.dut.full):
            await self.idle(ctx, 1)
        first = self.now
        for k in range(self.T):
            while self.rng.random() >= p_step:
                await self.idle(ctx, 1)
            await self.cycle(ctx, True, col, k == self.T - 1)
        return first

    async def idle(self, ctx, n):
        """n cycles without a read (``read_col`` random: it means nothing then)."""
        for _ in range(n):
            await self.cycle(ctx, False, self.rng.randrange(2))


# ---------------------------------------------------------------------------------------
# Random traffic
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [2, 4, 8, 16])
def test_random_loads_and_reads_match_model(T):
    """Random tiles (codes 0..15) loaded with random gaps (phases of fast and slow
    producers), read with random pauses, by row and by column, many reads in the same
    cycle as a row taken into the other bank, some releases in the same cycle as the
    other bank's last row, and every cycle's ``vector``, ``full`` and ``load.ready`` is
    checked against the model. Every code value reaches every position of ``vector``."""
    rng = random.Random(f"random-{T}")
    dut = TileBuffer(NibbleParams(tile=T))
    bench_ = BufferBench(dut, T, rng)
    n_tiles = {2: 160, 4: 80, 8: 40, 16: 40}[T]
    tiles = [random_tile(T, rng) for _ in range(n_tiles)]
    phases = [(0.3, 0.9), (0.9, 0.3), (0.7, 0.7), (1.0, 1.0)]   # (p_valid, p_step)

    async def bench(ctx):
        bench_.send(*tiles)
        for n in range(n_tiles):
            bench_.p_valid, p_step = phases[(n // 3) % len(phases)]
            if rng.random() < 0.3:
                await bench_.idle(ctx, rng.randrange(3 * T))     # let both banks fill
            await bench_.read_tile(ctx, rng.randrange(2), p_step=p_step)
        await bench_.idle(ctx, 3)
        assert not bench_.model.tiles and not bench_.to_send and bench_.offer is None

    simulate(dut, bench)
    stats = bench_.stats
    assert bench_.accepted == n_tiles * T
    assert stats["releases"] == n_tiles
    # the run reached the corners it claims to check
    assert stats["both_full"] > 5 * T and stats["stalled_rows"] > 5
    assert stats["release_and_complete"] >= 3
    assert stats["read_while_loading"] > n_tiles * T // 4
    assert stats["checked_reads"] == n_tiles * T
    assert bench_.seen == {(i, code) for i in range(T) for code in range(16)}


# ---------------------------------------------------------------------------------------
# full, ready and bank reuse
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [2, 4])
def test_full_is_a_register(T):
    """``full`` rises in the cycle after the last row of a tile is taken (not in that
    cycle, nor after T - 1 rows), stays while the tile is read, drops in the cycle after
    the release (not in the release cycle) and comes back one cycle after the next
    tile's last row; with the next tile already loaded it stays up across a release."""
    rng = random.Random(f"register-{T}")
    dut = TileBuffer(NibbleParams(tile=T))
    bb = BufferBench(dut, T, rng, p_valid=1.0)
    tiles = [random_tile(T, rng) for _ in range(4)]

    async def bench(ctx):
        # one tile, rows one per cycle: full stays 0 through the last row's cycle
        bb.send(tiles[0])
        for r in range(T):
            await bb.cycle(ctx)
            assert bb.accepted == r + 1
            assert ctx.get(dut.full) == (r == T - 1), f"full after {r + 1} rows"
        await bb.idle(ctx, 2)
        assert ctx.get(dut.full)
        # read it; release: full is still 1 in the release cycle and 0 from the next one
        for _ in range(T - 1):
            await bb.cycle(ctx, True, 0)
            assert ctx.get(dut.full)
        await bb.cycle(ctx, True, 0, release=True)
        assert not ctx.get(dut.full), "full still set in the cycle after the release"
        await bb.idle(ctx, 2)
        assert not ctx.get(dut.full)
        # two tiles loaded: both banks full, full stays 1 across the first release
        bb.send(tiles[1], tiles[2])
        await bb.idle(ctx, 2 * T + 3)
        assert ctx.get(dut.full) and not ctx.get(dut.load.ready)
        await bb.read_tile(ctx, 0)
        assert ctx.get(dut.full), "full dropped although the other bank was loaded"
        assert ctx.get(dut.load.ready), "the released bank is not free in the next cycle"
        # release in the same cycle as the other bank's last row: full stays 1
        bb.send(tiles[3])
        for r in range(T - 1):
            await bb.cycle(ctx, True, 1)
        assert ctx.get(dut.full)
        await bb.cycle(ctx, True, 1, release=True)    # last row of tiles[3] taken here
        assert bb.stats["release_and_complete"] == 1
        assert ctx.get(dut.full), "full dropped on a release with a completing load"
        await bb.read_tile(ctx, 1)
        assert not ctx.get(dut.full)
        await bb.idle(ctx, 2)

    simulate(dut, bench)


@pytest.mark.parametrize("T", [2, 4, 8])
def test_no_overwrite_while_both_banks_full(T):
    """Three tiles offered back to back with nothing read: the first two fill both
    banks, then ``load.ready`` stays 0 for many cycles with the third tile's first row
    held valid (nothing taken); both held tiles then read back intact (the first by
    rows, the second by columns); the third tile is taken only after the first release,
    into the freed bank, and reads back intact too."""
    rng = random.Random(f"overwrite-{T}")
    dut = TileBuffer(NibbleParams(tile=T))
    bb = BufferBench(dut, T, rng, p_valid=1.0)
    tiles = [random_tile(T, rng) for _ in range(3)]

    async def bench(ctx):
        bb.send(*tiles)
        await bb.idle(ctx, 2 * T)
        assert bb.accepted == 2 * T
        for _ in range(3 * T + 5):
            await bb.idle(ctx, 1)
            assert not ctx.get(dut.load.ready)
        assert bb.accepted == 2 * T and bb.stats["stalled_rows"] >= 3 * T + 5
        await bb.read_tile(ctx, 0)                        # by rows
        assert bb.accepted == 2 * T, "row taken before a bank was released"
        await bb.read_tile(ctx, 1)                        # by columns
        await bb.read_tile(ctx, 0)
        assert bb.accepted == 3 * T

    simulate(dut, bench)


# ---------------------------------------------------------------------------------------
# Full rate
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("preload", [0, 2])
@pytest.mark.parametrize("T", [2, 4, 8, 16])
def test_back_to_back_tiles_at_full_rate(T, preload):
    """Rows offered one per cycle and a reader that reads one step per cycle, releases
    with the last step and starts the next tile as soon as ``full`` is up: once the first
    tile is in, every cycle reads a step (no lost cycle between tiles), ``full`` never
    drops until the last tile, and the producer is never stalled except while both banks
    hold a tile. ``preload`` tiles are loaded before the reading starts. Each bank is
    read by rows and by columns in turn. With ``preload`` 0, every tile's first read
    comes in the cycle after its last row was taken (the row written last is read
    first, by columns), while the other bank's last steps are read; with ``preload`` 2,
    a released bank takes its next tile's first row while the other bank is read."""
    rng = random.Random(f"rate-{T}-{preload}")
    dut = TileBuffer(NibbleParams(tile=T))
    bb = BufferBench(dut, T, rng, p_valid=1.0)
    n_tiles = 8
    tiles = [random_tile(T, rng) for _ in range(n_tiles)]
    cols = [(n // 2) % 2 for n in range(n_tiles)]       # banks 0, 1: rows, then columns

    async def bench(ctx):
        bb.send(*tiles)
        if preload:
            await bb.idle(ctx, preload * T + 1)
            assert len(bb.model.tiles) == preload
        starts = []
        for n in range(n_tiles):
            starts.append(await bb.read_tile(ctx, cols[n]))
        assert not ctx.get(dut.full)
        start = T if preload == 0 else preload * T + 1
        assert starts == [start + n * T for n in range(n_tiles)], \
            f"tiles started at cycles {starts}: lost cycles between tiles"
        assert bb.now == start + n_tiles * T

    simulate(dut, bench)
    # from empty, the producer runs at one row per cycle throughout
    if preload == 0:
        assert bb.stats["stalled_rows"] == 0, bb.stats


# ---------------------------------------------------------------------------------------
# Extreme codes
# ---------------------------------------------------------------------------------------

def pattern_tiles(T):
    """Tiles of extreme and structured codes: all 0x0, all 0xF, 0x5/0xA alternating
    along rows, 0x0/0xF checkerboard, alternating rows, a 0xF diagonal on 0x0, its
    complement, and distinct position codes (row * T + col mod 16)."""
    return {
        "zeros": [[0x0] * T for _ in range(T)],
        "ones": [[0xF] * T for _ in range(T)],
        "alt_5a": [[(0x5, 0xA)[c % 2] for c in range(T)] for _ in range(T)],
        "checker": [[0xF * ((r + c) % 2) for c in range(T)] for r in range(T)],
        "alt_rows": [[0xF * (r % 2)] * T for r in range(T)],
        "diag": [[0xF * (r == c) for c in range(T)] for r in range(T)],
        "anti_diag": [[0xF * (r != c) for c in range(T)] for r in range(T)],
        "position": [[(r * T + c) % 16 for c in range(T)] for r in range(T)],
    }


@pytest.mark.parametrize("T", [2, 4, 8])
def test_extreme_codes(T):
    """Each pattern tile, loaded with random gaps, reads back exactly, by rows and by
    columns in turn (a tile of all 0xF after one of all 0x0 and back shows any stuck or
    leftover bit)."""
    rng = random.Random(f"extreme-{T}")
    dut = TileBuffer(NibbleParams(tile=T))
    bb = BufferBench(dut, T, rng, p_valid=0.6)
    patterns = pattern_tiles(T)
    names = ["zeros", "ones", "zeros", "alt_5a", "checker", "ones", "alt_rows", "diag",
             "anti_diag", "position", "zeros"]

    async def bench(ctx):
        bb.send(*(patterns[name] for name in names))
        for n, _ in enumerate(names):
            await bb.read_tile(ctx, n % 2, p_step=0.8)
        await bb.idle(ctx, 2)

    simulate(dut, bench)
    assert bb.stats["releases"] == len(names)


# ---------------------------------------------------------------------------------------
# Reset
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("T", [2, 4])
def test_reset_mid_load_and_read_then_clean_tile(T):
    """A one-cycle reset (1) after part of a tile, (2) in the middle of reading a tile
    with the other bank half loaded, (3) with both banks full, (4) in the cycle of a
    release: ``full`` is 0 and ``load.ready`` 1 after it, and a clean tile (and a second
    one behind it) loaded afterwards reads back exactly by row and by column, with no
    row of the earlier tiles mixed in and from the right bank."""
    rng = random.Random(f"reset-{T}")
    dut = TileBuffer(NibbleParams(tile=T))
    rst = Signal()
    top = ResetInserter({"sync": rst})(dut)
    bb = BufferBench(dut, T, rng, p_valid=0.7)

    async def reset(ctx):
        ctx.set(rst, 1)
        ctx.set(dut.load.valid, 0)
        ctx.set(dut.read, 0)
        ctx.set(dut.release, 0)
        await ctx.tick()
        ctx.set(rst, 0)
        bb.now += 1
        bb.reset_model()
        assert not ctx.get(dut.full), "full set after reset"
        assert ctx.get(dut.load.ready), "load not ready after reset"

    async def clean_tiles(ctx):
        tiles = [random_tile(T, rng) for _ in range(2)]
        bb.send(*tiles)
        for col in (1, 0):
            await bb.read_tile(ctx, col, p_step=0.7)
        await bb.idle(ctx, 2)
        assert bb.accepted == 2 * T

    async def bench(ctx):
        # (1) part of a tile loaded
        bb.send(random_tile(T, rng))
        while bb.accepted < T - 1:
            await bb.idle(ctx, 1)
        await reset(ctx)
        await clean_tiles(ctx)
        # (2) mid-read, other bank part loaded (odd row count)
        bb.p_valid = 1.0
        bb.send(random_tile(T, rng), random_tile(T, rng))
        await bb.cycle(ctx)
        while not ctx.get(dut.full):
            await bb.cycle(ctx)
        await bb.cycle(ctx, True, 1)
        assert 0 < len(bb.model.rows) < T
        await reset(ctx)
        bb.p_valid = 0.7
        await clean_tiles(ctx)
        # (3) both banks full, one released once so the read bank is bank 1
        bb.send(*(random_tile(T, rng) for _ in range(3)))
        await bb.read_tile(ctx, 0)
        await bb.idle(ctx, 3 * T)
        assert len(bb.model.tiles) == 2
        await reset(ctx)
        await clean_tiles(ctx)
        # (4) reset in the cycle that pulses release and takes a row
        bb.p_valid = 1.0
        before = bb.accepted
        bb.send(random_tile(T, rng))
        while not ctx.get(dut.full):
            await bb.idle(ctx, 1)
        for _ in range(T - 1):
            await bb.cycle(ctx, True, 0)
        bb.send(random_tile(T, rng))
        await bb.idle(ctx, 1)
        assert bb.accepted == before + T + 1 and ctx.get(dut.load.ready)
        ctx.set(dut.load.valid, 1)
        ctx.set(dut.read, 1)                      # the last read, with the release
        ctx.set(dut.release, 1)
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)
        bb.now += 1
        bb.reset_model()
        assert not ctx.get(dut.full) and ctx.get(dut.load.ready)
        bb.p_valid = 0.7
        await clean_tiles(ctx)

    simulate(top, bench)
