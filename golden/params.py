"""The one parameter object shared by golden, rtl, verif, fpga and the CLI.

Every layer of nibble takes a :class:`NibbleParams` instead of inventing its own
defaults, so a design generated for ``tile=8, acc_bits=32`` is checked against a golden
model with exactly those numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["NibbleParams", "check_tile", "TILE_MIN", "TILE_MAX", "ACC_BITS_MAX",
           "EXP_MIN", "EXP_MAX", "ELEMENT_MAX", "psum_bits"]

#: Smallest and largest tile edge T (powers of two).
TILE_MIN, TILE_MAX = 2, 64
#: Tile exponents are signed 8-bit numbers.
EXP_MIN, EXP_MAX = -128, 127
#: Widest accumulator: ``GemmResult.value()`` and quantizing it go through float64, which
#: is exact only up to 53 significant bits.
ACC_BITS_MAX = 53
#: Largest integer element magnitude of each kind (fp4: 4**6; fp4r2: 2**6, study only).
ELEMENT_MAX = {"int4": 8, "uint4": 15, "fp4": 4096, "fp4r2": 64}


def check_tile(tile) -> int:
    """Return ``tile`` as an int, or raise ``ValueError`` unless it is a power of two in 2..64."""
    if isinstance(tile, bool) or not hasattr(tile, "__index__"):
        raise ValueError(f"tile must be an integer power of two in {TILE_MIN}..{TILE_MAX}, got {tile!r}")
    tile = int(tile)
    if not (TILE_MIN <= tile <= TILE_MAX) or tile & (tile - 1):
        raise ValueError(f"tile must be a power of two in {TILE_MIN}..{TILE_MAX}, got {tile}")
    return tile


def psum_bits(tile: int) -> int:
    """Width in bits (with sign) of one exact tile partial sum for the widest operand pair
    the three training GEMMs use (uint4 x fp4: T * 15 * 4096)."""
    return (check_tile(tile) * ELEMENT_MAX["uint4"] * ELEMENT_MAX["fp4"]).bit_length() + 1


@dataclass(frozen=True)
class NibbleParams:
    """Parameters of one nibble instance.

    Parameters
    ----------
    tile : int
        T, the edge of the square tile and of the T x T systolic array; a power of two
        from 2 to 64. Every T x T operand tile carries one power-of-two exponent.
    acc_bits : int
        Width of the two's-complement output accumulators, in bits. It must hold one exact
        tile partial sum (:func:`psum_bits`) and be at most 53, so that
        ``value()`` is exact in float64.
    lanes : int or None
        Elements per cycle of the accelerator's output path (rescaler, requantizer, log4
        unit): a power of two from 1 to ``tile``; None (the default) means ``tile``, one
        tile row per cycle. Fewer lanes shrink those units' logic (shifters, adders,
        encoders) about ``tile / lanes`` times for small FPGAs, not their stored tiles,
        at about ``tile / lanes`` times the cycles per GEMM. It does
        not change any result: golden ignores it.
    out_lanes : int or None
        Elements per cycle of the output stages behind the rescaler (requantizer, log4
        unit, result queue): a power of two from 1 to ``lanes``; None (the default)
        means ``lanes``. The rescaler must keep pace with the array (a partial-sum tile
        every T cycles), the output stages only with the *finished* tiles, one every K
        cycles of a GEMM with reduction depth K: with ``out_lanes`` = L / 4 they keep
        pace for K >= 4T and cost about a quarter of the logic. A narrower
        (:class:`rtl.narrower.Narrower`) buffers the rescaler's beats between the two
        widths. It does not change any result: golden ignores it.
    stochastic : bool
        The log4 unit rounds stochastically on command (True, the default), or the
        hardware is built without that rounding mode: its per-lane rounders, the
        column generators and the bank's fraction bits cost about as much as the rest
        of the unit, which a full FPGA may not have room for. Without it, a command for
        stochastic rounding is refused (the hardware) and a job that asks for it is a
        ``ValueError`` (:func:`wire.gemm_protocol.check_job`). Golden ignores it.
    pipelined : bool
        Build the register stages that exist only for timing on a fast clock (True, the
        default: the ECP5 boards at 100 MHz), or leave them out (False: the iCE40
        profile, 30 MHz), where every register costs a logic cell of its own: the
        queues' output rings (:class:`rtl.queue.StreamQueue` with ``read_stages=0``),
        the register slices on the accelerator's internal streams, and the log4 unit's
        delay lines of its tile sums. Fewer cycles of latency, the same results: golden
        ignores it.
    """

    tile: int = 8
    acc_bits: int = 32
    lanes: int | None = None
    stochastic: bool = True
    out_lanes: int | None = None
    pipelined: bool = True

    def __post_init__(self):
        object.__setattr__(self, "tile", check_tile(self.tile))
        if isinstance(self.acc_bits, bool) or not hasattr(self.acc_bits, "__index__"):
            raise ValueError(f"acc_bits must be an integer, got {self.acc_bits!r}")
        object.__setattr__(self, "acc_bits", int(self.acc_bits))
        need = psum_bits(self.tile)
        if not (need <= self.acc_bits <= ACC_BITS_MAX):
            raise ValueError(
                f"acc_bits must be in {need}..{ACC_BITS_MAX} for tile {self.tile} "
                f"(one exact tile partial sum needs {need} bits), got {self.acc_bits}")
        lanes = self.tile if self.lanes is None else self.lanes
        if isinstance(lanes, bool) or not hasattr(lanes, "__index__"):
            raise ValueError(f"lanes must be an integer, got {lanes!r}")
        lanes = int(lanes)
        if not (1 <= lanes <= self.tile) or lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two in 1..{self.tile} (the tile), "
                             f"got {lanes}")
        object.__setattr__(self, "lanes", lanes)
        out_lanes = lanes if self.out_lanes is None else self.out_lanes
        if isinstance(out_lanes, bool) or not hasattr(out_lanes, "__index__"):
            raise ValueError(f"out_lanes must be an integer, got {out_lanes!r}")
        out_lanes = int(out_lanes)
        if not (1 <= out_lanes <= lanes) or out_lanes & (out_lanes - 1):
            raise ValueError(f"out_lanes must be a power of two in 1..{lanes} (the lanes), "
                             f"got {out_lanes}")
        object.__setattr__(self, "out_lanes", out_lanes)
        if not isinstance(self.stochastic, bool):
            raise ValueError(f"stochastic must be True or False, got {self.stochastic!r}")
        if not isinstance(self.pipelined, bool):
            raise ValueError(f"pipelined must be True or False, got {self.pipelined!r}")

    @property
    def psum_bits(self) -> int:
        """Width of one exact tile partial sum: the PEs' accumulators and the array's
        output elements (:func:`psum_bits` of ``tile``)."""
        return psum_bits(self.tile)

    @property
    def out_params(self) -> "NibbleParams":
        """The parameters the output stages are built with: ``lanes`` = ``out_lanes``
        (their beats carry ``out_lanes`` elements)."""
        return replace(self, lanes=self.out_lanes, out_lanes=self.out_lanes)

    @property
    def beats_per_tile(self) -> int:
        """Beats of ``lanes`` elements that carry one T x T tile on the output path."""
        return self.tile * self.tile // self.lanes
