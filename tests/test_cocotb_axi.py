"""cocotbext-axi bench of ``nibble_axi`` (verif/tb_axi.py) at T = 4: random GEMMs in
every training role and output mode with pauses on every stream against golden, the
register file over AXI4-Lite, the counters, and a soft reset in the middle of a GEMM."""

from cocotb_tools.check_results import get_results

from golden.params import NibbleParams
from verif.runner import run


def test_axi_bench():
    results = run(NibbleParams(tile=4), "verif.tb_axi", top="nibble_axi", seed=4)
    tests, failed = get_results(results)
    assert tests == 3 and failed == 0, f"see {results}"
