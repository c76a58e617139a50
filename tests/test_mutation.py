"""verif/mutation.py and ``nibble mutate``: units, the mutate list's parsing, the score,
and (``--long``) the whole flow on a small array."""

import json
import subprocess
import sys

import pytest

from golden.params import NibbleParams
from verif.mutation import Mutation, _parse, regression_jobs, score, unit_of
from verif.coverage import all_bins, coverage_bin

LINE = ("mutate -ctrl mutsel 8 3 -mode const0 -module nibble_top -cell "
        "$flatten\\requant.$procdff$16998 -port Q -portbit 5 -wire requant.clip4 -wirebit 0 "
        "-src nibble_top.v:24536.7-24536.12 -src nibble_top.v:26355.3-26356.22")


@pytest.mark.parametrize("cell, unit", [
    ("$flatten\\array.\\pe_1_3.$procdff$17822", "PE"),
    ("$flatten\\array.$procmux$1", "array"),
    ("$flatten\\rescaler.$add$x", "rescaler"),
    ("$flatten\\log4.$procdff$17512", "log4 unit"),
    ("$flatten\\requant.$shr$nibble_top.v:26114$10984", "requantizer"),
    ("$flatten\\psum_queue.$procmux$14087_CMP0", "controller"),
    ("$procmux$16641", "controller"),
    ("\\busy", "controller")])
def test_unit_of_a_flattened_cell(cell, unit):
    assert unit_of(cell) == unit


def test_a_mutate_line_is_parsed_with_its_select_and_cell():
    m = _parse(LINE, 3)
    assert (m.select, m.mode, m.port, m.portbit) == (3, "const0", "Q", 5)
    assert m.cell == "$flatten\\requant.$procdff$16998" and m.unit == "requantizer"
    assert m.wire == "requant.clip4"
    assert m.command == LINE


def _mut(select, cell):
    return Mutation(select, "inv", cell, "Y", 0, f"mutate ... {select}")


def test_score_per_unit_and_total():
    muts = [_mut(1, "$flatten\\requant.$a"), _mut(2, "$flatten\\requant.$b"),
            _mut(3, "$flatten\\log4.$c"), _mut(4, "$top")]
    results = [{"select": 1, "killed": True}, {"select": 2, "killed": False},
               {"select": 3, "killed": False}, {"select": 4, "killed": True}]
    report = score(results, muts, {3: "equivalent"})
    assert report["units"]["requantizer"] == {"sampled": 2, "killed": 1, "equivalent": 0,
                                              "survived": 1, "score": 0.5}
    assert report["units"]["log4 unit"]["score"] == 1.0        # only an equivalent one
    assert report["total"] == {"sampled": 4, "killed": 2, "equivalent": 1, "survived": 1,
                               "score": 2 / 3}
    assert [s["select"] for s in report["survivors"]] == [2]


def test_the_regression_visits_every_coverage_bin():
    params = NibbleParams(tile=4)
    jobs = regression_jobs(params, seed=1, random_gemms=0)
    assert {coverage_bin(job, 4, stalls != "none") for job, stalls in jobs} == set(all_bins())
    assert sum(stalls == "backpressure" for _, stalls in jobs) == 4


def test_nibble_mutate_kills_mutants_of_a_small_array(tmp_path):
    """The whole flow at T = 2, a mini campaign so it cannot rot: the unmutated netlist
    (select 0, MCY's "none" mutation) must pass the regression or the command fails,
    mutants are killed, the report adds up."""
    out = tmp_path / "mutate.json"
    proc = subprocess.run([sys.executable, "-m", "nibble", "mutate", "--size", "2",
                           "--acc-bits", "18", "--count", "12", "--random-gemms", "5",
                           "--workdir", str(tmp_path / "work"), "--json", str(out)],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())["mutate"]
    assert r["total"]["sampled"] == 12 and r["total"]["killed"] >= 6
    assert sum(u["sampled"] for u in r["units"].values()) == 12
    assert "| total | 12 |" in proc.stdout


def test_equivalent_mutations_are_read_by_their_key_and_bad_files_refused(tmp_path):
    from verif.mutation import load_equivalent, mutation_key

    assert mutation_key(LINE) == LINE.replace("-ctrl mutsel 8 3 ", "")
    path = tmp_path / "eq.json"
    path.write_text(json.dumps({LINE: "the OR is 1 either way"}))
    assert load_equivalent(path) == {mutation_key(LINE): "the OR is 1 either way"}
    assert _parse(LINE, 3).key in load_equivalent(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected a JSON object"):
        load_equivalent(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_equivalent(tmp_path / "missing.json")


TINY = """
module unit(input clk, input [3:0] a, output reg y);
  always @(posedge clk) y <= |a;
endmodule
module nibble_top(input clk, input [3:0] a, output y);
  unit u(.clk(clk), .a(a), .y(y));
endmodule
"""


def test_the_prover_proves_an_equivalent_mutant_and_refuses_a_killed_one(tmp_path):
    """On a tiny design (an OR of four bits into a register): flipping one input bit of
    the OR only while another is 1 leaves the OR 1, which the prover proves; inverting
    the OR's output is visible, which it refuses."""
    from verif.mutation import _yosys, prove_equivalent

    (tmp_path / "nibble_top.v").write_text(TINY)
    proc = _yosys("read_verilog nibble_top.v\nprep -top nibble_top -flatten\n"
                  "mutate -list 200 -o list.txt -ctrl mutsel 8 1\n", tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "list.txt").read_text().splitlines()
    cnot = next(l for l in lines if "$reduce_or" in l and "-mode cnot1" in l and "-port A" in l)
    inv = next(l for l in lines if "$reduce_or" in l and "-mode inv" in l and "-port Y" in l)
    proof = prove_equivalent(_parse(cnot, 1), tmp_path)
    assert proof["proven"] and proof["cut"] == "u", proof
    refused = prove_equivalent(_parse(inv, 2), tmp_path)
    assert not refused["proven"] and "not proven equal" in refused["detail"], refused
