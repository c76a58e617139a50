"""TileRescaler against golden.gemm: shifted, rounded, saturating accumulation."""

import gc
import random
import re
import warnings

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.gemm import out_exponents, tiled_gemm
from golden.params import NibbleParams, psum_bits
from rtl.generate import convert
from rtl.tile_rescaler import TileRescaler
from verif.amaranth_streams import ValidOnlyMonitor, send_beat
from verif.scoreboard import rescaled
from verif.stimulus import random_operand, rescaler_steps, with_tile_exps


def run_rescaler(params, tiles, seed, ring="ram"):
    """Feed ``tiles`` = [(psum (T,T) ints, shift, out_exp, first, last)] through the DUT
    with random gaps between beats; return the accumulator rows it emits and the sticky
    flag. With ``params.lanes`` L < T, each row goes in and comes out as T / L beats of L
    elements; the rows returned are whole (T elements). Every accumulator beat must
    leave exactly ``TileRescaler.latency`` cycles after the psum beat that finished it.
    ``ring``: how the DUT stores its accumulators (``TileRescaler.RINGS``)."""
    T, L = params.tile, params.lanes
    dut = TileRescaler(params, ring=ring)
    rng = random.Random(seed)
    sent_last = []            # cycles of the beats that end an output tile
    monitor = ValidOnlyMonitor(dut.acc_out, lambda beat: ([int(v) for v in beat.acc],
                                                          int(beat.out_exp)))
    flag = []

    async def producer(ctx):
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        cycle = 1
        for psum, shift, out_exp, first, last in tiles:
            for m in range(T):
                for k in range(0, T, L):
                    if rng.random() < 0.3:
                        gap = rng.randint(1, 4)
                        await ctx.tick().repeat(gap)
                        cycle += gap
                    if last:
                        sent_last.append(cycle)
                    await send_beat(ctx, dut.psum_in, {
                        "psums": [int(v) for v in psum[m][k:k + L]], "shift": shift,
                        "out_exp": out_exp, "first": first, "last": last})
                    cycle += 1
        await ctx.tick().repeat(TileRescaler.latency + 2)
        flag.append(ctx.get(dut.saturated))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(monitor.run, background=True)
    sim.run()
    assert [c for c, _ in monitor.beats] == [c + TileRescaler.latency for c in sent_last]
    got = [beat for _, beat in monitor.beats]
    rows = []
    for k in range(0, len(got), T // L):
        parts = got[k:k + T // L]
        assert len({e for _, e in parts}) == 1, "out_exp differs within a row"
        rows.append(([v for part, _ in parts for v in part], parts[0][1]))
    return rows, bool(flag[0])


def gemm_tiles(a, b, acc_bits):
    """The rescaler's input for golden GEMM operands: per output tile (i, j) and
    reduction tile t, the exact P_t and shift s_t - out_exp, in the hardware's order."""
    T = a.tile
    out_exps = out_exponents(a, b, acc_bits)
    ai, bi = a.ints(), b.ints()
    mt, kt = a.exps.shape
    nt = b.exps.shape[1]
    pad = lambda x, r, c: np.pad(x, ((0, r * T - x.shape[0]), (0, c * T - x.shape[1])))
    ai, bi = pad(ai, mt, kt), pad(bi, kt, nt)
    tiles = []
    for i in range(mt):
        for j in range(nt):
            for t in range(kt):
                psum = ai[i*T:(i+1)*T, t*T:(t+1)*T] @ bi[t*T:(t+1)*T, j*T:(j+1)*T]
                s = int(a.exps[i, t]) + int(b.exps[t, j]) + a.phase + b.phase
                tiles.append((psum, s - int(out_exps[i, j]), int(out_exps[i, j]),
                              t == 0, t == kt - 1))
    return tiles


@pytest.mark.parametrize("ring", TileRescaler.RINGS)
@pytest.mark.parametrize("tile,lanes", [(4, None), (8, None), (4, 1), (8, 2)])
@pytest.mark.parametrize("kinds", [("uint4", "int4"), ("fp4", "int4"), ("uint4", "fp4")])
def test_gemm_accumulators_equal_golden(tile, lanes, kinds, ring):
    """Full-range operands with tile exponents spread over -128..127, so terms are
    shifted left, right by a little, and right past every bit; shapes not multiples of T.
    lanes < T: L elements of a row per beat."""
    params = NibbleParams(tile=tile, acc_bits=32, lanes=lanes)
    rng = np.random.default_rng(tile)
    m, k, n = 2 * tile + 1, 3 * tile - 1, tile + 3
    def operand(shape, kind, phase):
        q = random_operand(rng, shape, kind, tile, phase, binades=30, zeros=0.0)
        # replace the tile exponents by a wide spread, including the int8 extremes
        return with_tile_exps(q, rng.choice([-128, 127, -5, 0, 3, 60, -60], size=q.exps.shape))
    a = operand((m, k), kinds[0], 0)
    b = operand((k, n), kinds[1], 1 if kinds[1] == "fp4" else 0)
    want = tiled_gemm(a, b, acc_bits=params.acc_bits)
    got, saturated = run_rescaler(params, gemm_tiles(a, b, params.acc_bits), seed=tile,
                                  ring=ring)
    T = tile
    mt, nt = want.out_exps.shape
    acc = np.zeros((mt * T, nt * T), dtype=np.int64)
    beats = iter(got)
    for i in range(mt):
        for j in range(nt):
            for r in range(T):
                row, out_exp = next(beats)
                assert out_exp == want.out_exps[i, j]
                acc[i * T + r, j * T:(j + 1) * T] = row
    np.testing.assert_array_equal(acc[:m, :n], want.acc)
    assert acc[m:].sum() == 0 and acc[:, n:].sum() == 0   # padding stays zero
    assert saturated == want.saturated


@pytest.mark.parametrize("ring", TileRescaler.RINGS)
@pytest.mark.parametrize("tile,lanes", [(2, None), (4, None), (8, None), (2, 1), (4, 1),
                                        (8, 2)])
def test_extreme_psums_shifts_and_saturation(tile, lanes, ring):
    """Random full-scale partial sums with shifts from far right to the largest left
    shift the accumulator can take, at the narrowest accumulator: saturates often.
    T = 2, L = 2 is the shortest ring (R = 2), where the RAM's slot read for the next
    beat was written by the beat just before it."""
    acc_bits = psum_bits(tile)
    params = NibbleParams(tile=tile, acc_bits=acc_bits, lanes=lanes)
    tiles = rescaler_steps(random.Random(tile), tile, acc_bits, groups=12)
    want, want_sat = rescaled(tiles, tile, acc_bits)
    got, saturated = run_rescaler(params, tiles, seed=tile + 100, ring=ring)
    assert got == want
    assert saturated == want_sat and want_sat          # this stimulus must saturate


@pytest.mark.parametrize("ring", TileRescaler.RINGS)
def test_round_half_even_ties(ring):
    """Terms exactly halfway round to even: 3/2 -> 2, 5/2 -> 2, -3/2 -> -2, -1/2 -> 0."""
    params = NibbleParams(tile=2, acc_bits=psum_bits(2))
    psum = [[3, 5], [-3, -1]]
    tiles = [(psum, -1, 0, True, True)]
    got, saturated = run_rescaler(params, tiles, seed=0, ring=ring)
    assert got == [([2, 2], 0), ([-2, 0], 0)]
    assert not saturated


@pytest.mark.parametrize("ring", TileRescaler.RINGS)
def test_converts_to_verilog(ring):
    """The RAM ring is one memory per lane (an array in the Verilog, LUT RAM on ECP5);
    the register ring has none."""
    text = convert(TileRescaler(NibbleParams(tile=8), ring=ring), "tile_rescaler")
    assert "module tile_rescaler" in text
    memories = re.findall(r"reg \[31:0\] acc_mem\d+ \[7:0\];", text)
    assert len(memories) == (8 if ring == "ram" else 0)


def test_unknown_ring():
    with warnings.catch_warnings():         # the refused object is never elaborated
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="ring"):
            TileRescaler(NibbleParams(tile=4), ring="shift")
        gc.collect()
