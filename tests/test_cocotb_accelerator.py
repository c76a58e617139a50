"""cocotb regression of the generated Verilog (nibble_top) under Verilator, against
golden: random GEMMs in all training and output modes, stalled on every stream."""

import pytest
from cocotb_tools.check_results import get_results

from golden.params import NibbleParams
from verif.runner import run


# T = 16 builds for about 7 minutes on 2 cores: with pytest --long (nibble regress --long
# runs it too).
@pytest.mark.parametrize("tile", [4, 8, pytest.param(16, marks=pytest.mark.long)])
def test_random_gemms_match_golden(tile):
    """Every coverage bin (training role x output variant, dual and stochastic ones
    included, x stalls x partial tiles) once, then random GEMMs."""
    from verif.coverage import all_bins

    results = run(NibbleParams(tile=tile), "verif.tb_accelerator", seed=tile,
                  extra_env={"NIBBLE_GEMMS": str(len(all_bins()) + 8)})
    tests, failed = get_results(results)
    assert tests == 3 and failed == 0, f"see {results}"


def test_nibble_regress_prints_summary(tmp_path):
    import json
    import subprocess
    import sys

    from nibble.commands.regress import regress_table
    out = tmp_path / "regress.json"
    proc = subprocess.run([sys.executable, "-m", "nibble", "regress", "--cocotb", "--size", "4",
                           "--gemms", "3", "--seed", "5", "--json", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 4 |")]
    # 3 random GEMMs, 4 edge shapes and the 3 clean GEMMs after mid-GEMM resets
    assert row and row[0].split("|")[2:4] == [" 3 ", " 10 "] and row[0].split("|")[5] == " 0 "
    # --json keeps what the table shows (docs/results.md renders it with the same function)
    doc = json.loads(out.read_text())
    assert regress_table(doc["regress"]["rows"]) in proc.stdout
    assert doc["regress"]["engine"] == "cocotb" and doc["regress"]["seed"] == 5 and doc["measured"]["date"]


def test_nibble_regress_parallel_shards():
    """-j 2 splits the random GEMMs over two xdist workers; the directed tests run once."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "nibble", "regress", "--cocotb", "--size", "4",
                           "--gemms", "5", "--seed", "7", "-j", "2"], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 shards on 2 pytest-xdist workers" in proc.stdout
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 4 |")]
    # shard 0: 3 random + 7 directed GEMMs in 3 tests; shard 1: 2 random GEMMs in 1 test
    assert row and row[0].split("|")[2:4] == [" 4 ", " 12 "] and row[0].split("|")[5] == " 0 "


def test_nibble_regress_rejects_bad_size():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "nibble", "regress", "--size", "6"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "power of two" in proc.stderr


# (top, test, cocotb tests it runs: one per value of its cocotb.parametrize axis)
@pytest.mark.parametrize("top, test, count", [("systolic_array", "pe_exhaustive", 1),
                                              ("log4_quantizer", "log4_quantizer_tiles", 2),
                                              ("requantizer", "requantizer_tiles", 2)])
def test_unit_benches(top, test, count):
    results = run(NibbleParams(tile=4), "verif.tb_units", top=top, testcase=test, seed=3)
    tests, failed = get_results(results)
    assert tests == count and failed == 0, f"see {results}"


def test_rescaler_bench_at_narrowest_accumulator():
    from golden.params import psum_bits
    params = NibbleParams(tile=4, acc_bits=psum_bits(4))
    results = run(params, "verif.tb_units", top="tile_rescaler", testcase="rescaler_shifts",
                  seed=3)
    tests, failed = get_results(results)
    assert tests == 1 and failed == 0, f"see {results}"
