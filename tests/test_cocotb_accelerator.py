"""cocotb regression of the generated Verilog (nibble_top) under Verilator, against
golden: random GEMMs in all training and output modes, stalled on every stream."""

import pytest
from cocotb_tools.check_results import get_results

from golden.params import NibbleParams
from verif.runner import run


@pytest.mark.parametrize("tile", [4, 8])
def test_random_gemms_match_golden(tile):
    results = run(NibbleParams(tile=tile), "verif.tb_accelerator", seed=tile,
                  extra_env={"NIBBLE_GEMMS": "40"})
    tests, failed = get_results(results)
    assert tests == 1 and failed == 0, f"see {results}"
