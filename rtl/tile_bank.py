"""A multi-buffered tile memory: the storage the requantizer and the log4 unit share.

Both output units must see a whole tile before they can encode any element of it (the
tile exponent depends on the tile's maximum), so each keeps several tiles in one
block-RAM memory: while the oldest is read, the next ones are written. The unit writes
beats in its own element format, finalizes each tile once its statistics are known (a
small record, the tile's *meta*, stored per bank), and reads the tile back beat by beat
with its meta.

Flow control is by credits: the memory has ``N R`` beat slots and gives one back
(``freed``) for every beat read; the writer (the rescaler, through the drain) sends a
beat only with a credit, so a tile is never overwritten before it has been read.

How many tiles: a tile can be read only some cycles after its last beat came in (its
statistics must be finalized); for the unit to take a beat every cycle, the memory must
hold the tile being read plus every tile that arrives meanwhile. :func:`bank_tiles`
gives N for a finalize time of up to :data:`FINALIZE_MAX` cycles. In block RAM the extra
depth is free: the width decides the number of blocks.
"""

from amaranth.hdl import Cat, Module, Mux, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .queue import ram_attrs

__all__ = ["TileBank", "bank_tiles", "FINALIZE_MAX"]

#: Cycles from a tile's last beat written to its first read that :func:`bank_tiles`
#: allows for (the units' finalize pipelines are shorter).
FINALIZE_MAX = 16


def bank_tiles(beats: int) -> int:
    """Tiles of ``beats`` beats a :class:`TileBank` needs for one beat per cycle: the one
    being read, the ones written while the previous one is finalized, one more; a power
    of two."""
    need = 2 + -(-FINALIZE_MAX // beats)
    return 1 << (need - 1).bit_length()


class TileBank(wiring.Component):
    """N tiles of R beats, written and read in order.

    Parameters
    ----------
    shape : shape-castable
        One beat as the unit stores it.
    beats : int
        R, beats per tile: a power of two (a beat's address is its row beside the tile
        index).
    meta : shape-castable
        What the unit records per tile when it finalizes it.
    tiles : int
        N, a power of two (default :func:`bank_tiles` (R)).

    Attributes
    ----------
    w : In(stream.Signature(shape, always_ready=True))
        Beats, R per tile, tile after tile (the writer holds a credit for each).
    w_last : Out(1)
        The beat now on ``w`` would be the last of its tile.
    fin : In(stream.Signature(meta, always_ready=True))
        Finalize the oldest written tile that is not finalized yet, with its meta. A
        tile may be finalized any time after its last beat was written.
    r_rdy : Out(1)
        A finalized tile has beats left to read.
    r_en : In(1)
        Read the next beat (only while ``r_rdy``).
    r_data : Out(shape)
        The beat of a read, in the cycle after it (other cycles show the slot at the
        read pointer, which means nothing).
    r_meta : Out(meta)
        The meta of that beat's tile, with it.
    r_last : Out(1)
        The last read's beat was the last of its tile (until the next read).
    freed : Out(1)
        A beat's slot became free (one per read): the writer's credit.
    capacity : int
        ``N R`` slots.
    """

    def __init__(self, shape, beats: int, meta, tiles: int | None = None):
        tiles = bank_tiles(beats) if tiles is None else tiles
        if tiles < 2 or tiles & (tiles - 1):
            raise ValueError(f"tiles must be a power of two >= 2, got {tiles}")
        if beats < 1 or beats & (beats - 1):
            raise ValueError(f"beats must be a power of two >= 1, got {beats}")
        self._shape, self._beats, self._meta, self._tiles = shape, beats, meta, tiles
        self.capacity = tiles * beats
        super().__init__({
            "w": In(stream.Signature(shape, always_ready=True)),
            "w_last": Out(1),
            "fin": In(stream.Signature(meta, always_ready=True)),
            "r_rdy": Out(1), "r_en": In(1),
            "r_data": Out(shape), "r_meta": Out(meta), "r_last": Out(1),
            "freed": Out(1),
        })

    def elaborate(self, platform):
        R = self._beats
        m = Module()
        # Block RAM even when small: in flip-flops a small tile's buffer costs more logic
        # cells than an iCE40 UP5K can spare.
        N = self._tiles
        m.submodules.mem = mem = Memory(shape=self._shape, depth=N * R, init=[],
                                        attrs={"ram_style": "block"})
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=())  # a slot is read only after it is written

        wbank, wrow = Signal(range(N), name="wbank"), Signal(range(R))
        m.d.comb += [self.w_last.eq(wrow == R - 1), wp.addr.eq(Cat(wrow, wbank)),
                     wp.data.eq(self.w.payload), wp.en.eq(self.w.valid)]
        with m.If(self.w.valid):
            m.d.sync += wrow.eq(wrow + 1)
            with m.If(wrow == R - 1):
                m.d.sync += [wrow.eq(0), wbank.eq(wbank + 1)]

        # The metas in a small memory of N entries, read with the beat.
        m.submodules.meta = meta = Memory(
            shape=self._meta, depth=N, init=[],
            attrs=ram_attrs(Shape.cast(self._meta).width, N, platform))
        meta_w = meta.write_port()
        meta_r = meta.read_port(transparent_for=())  # read only once finalized, later
        fbank = Signal(range(N))
        m.d.comb += [meta_w.addr.eq(fbank), meta_w.data.eq(self.fin.payload),
                     meta_w.en.eq(self.fin.valid)]
        with m.If(self.fin.valid):
            m.d.sync += fbank.eq(fbank + 1)

        # r_rdy is a register: a count of the finalized beats not read yet, and whether
        # the next count is nonzero.
        # (``r_en`` is the reader's late decision: it only selects between two sums.)
        readable = Signal(range(N * R + 1))
        kept, read = Signal.like(readable), Signal.like(readable)
        m.d.comb += [kept.eq(readable + Mux(self.fin.valid, R, 0)), read.eq(kept - 1)]
        m.d.sync += [readable.eq(Mux(self.r_en, read, kept)),
                     self.r_rdy.eq(Mux(self.r_en, read != 0, kept != 0))]
        rbank, rrow = Signal(range(N), name="rbank"), Signal(range(R))
        # The memories are read every cycle at the read pointer, so the late ``r_en``
        # moves the pointer and never reaches the memories' wide outputs.
        m.d.comb += [rp.addr.eq(Cat(rrow, rbank)),
                     rp.en.eq(1), self.r_data.eq(rp.data), self.freed.eq(self.r_en),
                     meta_r.addr.eq(rbank), meta_r.en.eq(1),
                     self.r_meta.eq(meta_r.data)]
        with m.If(self.r_en):
            m.d.sync += [self.r_last.eq(rrow == R - 1),
                         rrow.eq(rrow + 1)]
            with m.If(rrow == R - 1):
                m.d.sync += [rrow.eq(0), rbank.eq(rbank + 1)]
        return m
