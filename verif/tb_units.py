"""cocotb benches of the major units' generated Verilog against golden.

* ``pe_exhaustive`` (top ``systolic_array``): every 16 x 16 code pair in every PE mode,
  one pair per tile reduction, through the array's own edge encoders.
* ``log4_quantizer_tiles`` (top ``log4_quantizer``), ``requantizer_tiles``
  (top ``requantizer``): random full-range tiles plus every rounding threshold, flush,
  saturation and all-zero tiles (:func:`verif.stimulus.quantizer_tiles`), compared code
  for code and exponent for exponent with golden's output stages
  (:func:`golden.output.log4_quantize`, :func:`golden.output.requantize`). Parametrized
  by the phase (log4) and the output kind (requantizer); within a test the other
  settings change between back-to-back tile batches without a reset.
* ``rescaler_shifts`` (top ``tile_rescaler``): shifts far right to the largest left
  shift at the narrowest accumulator (:func:`verif.stimulus.rescaler_steps`), so
  rounding and saturation both happen, against golden's accumulation
  (:func:`verif.scoreboard.rescaled`).

Each test builds a :class:`UnitTB`, which owns the parameters
(:class:`verif.runner.Bench`, checked against the unit's port widths), the seed, the
clock and the reset. Nothing is built at import.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from amaranth.lib import data
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from golden.formats import element_values
from golden.output import log4_quantize, requantize
from rtl.layouts import (acc_row_layout, code_row_layout, operand_row_layout, out_beat_layout,
                         psum_row_layout, rescale_row_layout)
from wire.streams import CODE_BITS
from rtl.requantizer import Requantizer
from rtl.tile_bank import bank_tiles

from .cocotb_streams import CreditCounter, CreditedSink, ValidOnlyDriver, check_port_widths
from .runner import Bench
from .scoreboard import rescaled, tile_result
from .stimulus import quantizer_tiles, rescaler_steps

#: Per top: its data ports and the layouts that give their widths.
PORTS = {
    "systolic_array": {"a_col": operand_row_layout, "psum__payload": psum_row_layout},
    "log4_quantizer": {"acc_in__payload": acc_row_layout, "codes_out__payload": out_beat_layout},
    "requantizer": {"acc_in__payload": acc_row_layout, "codes_out__payload": code_row_layout},
    "tile_rescaler": {"psum_in__payload": rescale_row_layout, "acc_out__payload": acc_row_layout},
}


class UnitTB(Bench):
    """One test's bench around one unit (``top``, a key of :data:`PORTS`); parameters
    and seed: :class:`verif.runner.Bench`."""

    def __init__(self, dut, top: str):
        super().__init__(dut)
        check_port_widths(dut, self.params, PORTS[top])

    async def start(self):
        """Start the clock and reset the unit for two cycles."""
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
        dut.rst.value = 1
        for _ in range(2):
            await RisingEdge(dut.clk)
        dut.rst.value = 0
        await RisingEdge(dut.clk)


# ------------------------------------------------------------------------------- PE

#: (a_signed, b_fp4, a_fp4) -> golden kinds of a and b
PE_MODES = {(0, 0, 0): ("uint4", "int4"), (1, 0, 0): ("int4", "int4"),
            (0, 1, 0): ("uint4", "fp4"), (1, 1, 0): ("int4", "fp4"), (0, 0, 1): ("fp4", "int4")}


def element(code, kind):
    code = code - 16 if kind == "int4" and code >= 8 else code
    return int(element_values(np.array([code]), kind)[0])


async def collect_valid(dut, name, layout, count):
    """The payloads of the next ``count`` beats of a valid-only stream."""
    got = []
    valid, payload = getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__payload")
    while len(got) < count:
        await ReadOnly()
        if valid.value:
            got.append(data.Const(layout, payload.value.to_unsigned()))
        await RisingEdge(dut.clk)
    return got


@cocotb.test()
async def pe_exhaustive(dut):
    """P[0, 0] of a tile whose only nonzero step is (a, b) is a * b, for all pairs."""
    tb = UnitTB(dut, "systolic_array")
    params, t = tb.params, tb.params.tile
    await tb.start()
    row = data.ArrayLayout(4, t)
    cases = [(mode, a, b) for mode in PE_MODES for a in range(16) for b in range(16)]
    task = cocotb.start_soon(collect_valid(dut, "psum", psum_row_layout(params),
                                           len(cases) * t))
    for (a_signed, b_fp4, a_fp4), a, b in cases:
        for k in range(t):
            dut.valid.value, dut.last.value = 1, int(k == t - 1)
            dut.a_signed.value, dut.b_fp4.value, dut.a_fp4.value = a_signed, b_fp4, a_fp4
            dut.a_col.value = row.const([a if k == 0 else 0] + [0] * (t - 1)).as_value().value
            dut.b_row.value = row.const([b if k == 0 else 0] + [0] * (t - 1)).as_value().value
            await RisingEdge(dut.clk)
    dut.valid.value = 0
    got = await task
    for i, (mode, a, b) in enumerate(cases):
        ka, kb = PE_MODES[mode]
        want = element(a, ka) * element(b, kb)
        rows = got[i * t:(i + 1) * t]
        assert rows[0][0] == want, f"{ka} {a:#x} x {kb} {b:#x}: PE gave {rows[0][0]}, golden {want}"
        assert all(r[n] == 0 for r in rows for n in range(t) if (r is not rows[0] or n)), \
            f"{ka} {a:#x} x {kb} {b:#x}: a zero element is nonzero"


# --------------------------------------------------------------------- tile quantizers

async def run_tiles(dut, top, params, tiles, seed):
    """Tiles through a credited output unit (requantizer or log4 unit): a producer that
    sends only with one of the unit's input credits, a consumer buffer that gives the
    unit few credits and empties at random; returns [(codes T x T, E)]. The requantizer
    sends code rows, the log4 unit output-path beats with the codes in the low 4 L bits
    (``top`` names the unit)."""
    rng = random.Random(seed)
    R = params.beats_per_tile
    credits = CreditCounter(dut, bank_tiles(R) * R)
    counter = cocotb.start_soon(credits.run())
    drv = ValidOnlyDriver(dut, "acc_in", rng, 0.3, credits)
    sink = CreditedSink(dut, "codes_out", random.Random(seed + 1), 0.3)
    layout = acc_row_layout(params)
    L, t = params.lanes, params.tile
    words = [layout.const({"acc": [int(v) for v in flat[k:k + L]], "out_exp": oexp}).as_value().value
             for acc, oexp in tiles for flat in [np.asarray(acc).ravel()]
             for k in range(0, t * t, L)]
    task = cocotb.start_soon(drv.send(words))
    out = await sink.receive(len(words))
    await task
    counter.cancel()
    beats = [data.Const(PORTS[top]["codes_out__payload"](params), w) for w in out]
    codes = [c for b in beats for c in _beat_codes(b, L)]
    return [(np.array(codes[i * t * t:(i + 1) * t * t]).reshape(t, t), int(beats[i * R].exp))
            for i in range(len(tiles))]


def _beat_codes(beat, lanes):
    """The L 4-bit codes of a code row or of an output-path beat (its low 4 L bits)."""
    if "codes" in beat.shape().members:
        return [int(c) for c in beat.codes]
    word = int(beat.data)
    return [word >> (CODE_BITS * i) & 0xF for i in range(lanes)]


def check_tiles(tiles, got, expect, what):
    """Compare [(codes, E)] with ``expect(tile_result)``, golden's QTensor of a tile."""
    for i, ((acc, oexp), (codes, exp)) in enumerate(zip(tiles, got)):
        want = expect(tile_result(acc, oexp))
        want_codes = want.codes.astype(np.int64) & 0xF
        if exp != int(want.exps[0, 0]) or not np.array_equal(codes, want_codes):
            bad = np.argwhere(codes != want_codes)
            at = tuple(int(v) for v in bad[0]) if len(bad) else None
            raise AssertionError(
                f"{what} tile {i} (out_exp {oexp}): exp RTL {exp} golden {int(want.exps[0, 0])}; "
                f"first code mismatch at {at}: acc {acc[at] if at else '-'}, "
                f"RTL {codes[at] if at else '-'}, golden {want_codes[at] if at else '-'}")


@cocotb.test()
@cocotb.parametrize(phase=[0, 1])
async def log4_quantizer_tiles(dut, phase):
    tb = UnitTB(dut, "log4_quantizer")
    params, seed = tb.params, tb.seed
    await tb.start()
    rng = np.random.default_rng([seed, phase])
    dut.dual.value, dut.mask_en.value = 0, 0
    dut.mask_in.value, dut.clip_mask_in.value = 0, 0
    for rounding in ("log", "linear"):
        for ext in (None, -128, 127, -20):
            dut.phase.value, dut.linear.value = phase, int(rounding == "linear")
            dut.ext_exp_en.value = int(ext is not None)
            dut.ext_exp.value = (ext or 0) & 0xFF
            tiles = quantizer_tiles(rng, params.tile, params.acc_bits)
            got = await run_tiles(dut, "log4_quantizer", params, tiles, seed + phase)
            check_tiles(tiles, got, lambda r: log4_quantize(r, phase=phase,
                                                            rounding=rounding, exps=ext),
                        f"log4 phase {phase} {rounding} ext {ext}")


@cocotb.test()
@cocotb.parametrize(kind=["int4", "uint4"])
async def requantizer_tiles(dut, kind):
    tb = UnitTB(dut, "requantizer")
    params, seed = tb.params, tb.seed
    await tb.start()
    rng = np.random.default_rng([seed, int(kind == "uint4")])
    dut.mask_en.value = 0
    dut.mask_in.value = 0
    # a PACT clip applies to uint4 output only
    for clip in (None, (200, -4), (1, 3), (255, 20)) if kind == "uint4" else (None,):
        dut.unsigned_out.value = int(kind == "uint4")
        dut.clip_en.value = int(clip is not None)
        dut.clip_mant.value, dut.clip_exp.value = (clip or (0, 0))[0], (clip or (0, 0))[1] & 0xFF
        # the documented configuration lead before the first beat
        for _ in range(Requantizer.CONFIG_LEAD):
            await RisingEdge(dut.clk)
        tiles = quantizer_tiles(rng, params.tile, params.acc_bits)
        got = await run_tiles(dut, "requantizer", params, tiles, seed + 7)
        check_tiles(tiles, got, lambda r: requantize(r, kind, clip=clip),
                    f"requantizer {kind} clip {clip}")


# ----------------------------------------------------------------------------- rescaler

@cocotb.test()
async def rescaler_shifts(dut):
    tb = UnitTB(dut, "tile_rescaler")
    params, seed = tb.params, tb.seed
    t, L = params.tile, params.lanes
    await tb.start()
    steps = rescaler_steps(random.Random(seed), t, params.acc_bits, groups=30)
    rows, saturated = rescaled(steps, t, params.acc_bits)
    want = [(row[k:k + L], oexp) for row, oexp in rows for k in range(0, t, L)]
    layout = rescale_row_layout(params)
    beats = [layout.const({"psums": [int(v) for v in flat[k:k + L]], "shift": shift,
                           "out_exp": out_exp, "first": int(first), "last": int(last)}
                          ).as_value().value
             for psum, shift, out_exp, first, last in steps
             for flat in [np.asarray(psum).ravel()] for k in range(0, t * t, L)]
    dut.clear.value = 0
    drv = ValidOnlyDriver(dut, "psum_in", random.Random(seed + 1), 0.3)
    task = cocotb.start_soon(drv.send(beats))
    out = await collect_valid(dut, "acc_out", acc_row_layout(params), len(want))
    await task
    for i, (beat, (row, oexp)) in enumerate(zip(out, want)):
        got = [int(v) for v in beat.acc]
        assert (got, int(beat.out_exp)) == (row, oexp), f"beat {i}: RTL {got}, golden {row}"
    for _ in range(2):
        await RisingEdge(dut.clk)
    assert bool(dut.saturated.value) == saturated and saturated, "sticky saturation flag"
