"""cocotbext-axi bench of ``nibble_axi`` (verif/tb_axi.py) at T = 4: random GEMMs in
every training role and output mode with pauses on every stream against golden, the
register file over AXI4-Lite, the counters, a soft reset in the middle of a GEMM, and
the throughput without pauses against the bare Accelerator's. Then ``Device.axi`` on
the same build (tests/cocotb_axi_device.py)."""

import json

from cocotb_tools.check_results import get_results

from golden.params import NibbleParams
from verif.runner import build_dir, run


def throughput_ratio(params: NibbleParams) -> dict:
    """The ``throughput`` test's figures (run the bench first) and the bare
    Accelerator's cycles for the same GEMMs (``nibble_top`` on the fast C++ harness)."""
    from nibble.bench import axi_cycles
    from verif.stimulus import throughput_jobs
    from verif.tb_axi import THROUGHPUT_FILE

    axi = json.loads((build_dir(params) / "nibble_axi" / THROUGHPUT_FILE).read_text())
    bare = axi_cycles(params, throughput_jobs(params), "nibble_top")
    return {**axi, "bare_cycles": bare, "ratio": bare / axi["cycles"]}


def test_axi_bench():
    params = NibbleParams(tile=4)
    results = run(params, "verif.tb_axi", top="nibble_axi", seed=4)
    tests, failed = get_results(results)
    assert tests == 4 and failed == 0, f"see {results}"
    figures = throughput_ratio(params)
    # the target: >= 95 % of the bare array's throughput with no back-pressure
    assert figures["ratio"] >= 0.95 and figures["stall_cycles"] == 0, figures


def test_device_axi():
    """nibble.device.Device.axi from a bridge thread: GEMMs through gemm, run and
    write/read against golden, status, reset, a parameter mismatch and a wrong ID."""
    params = NibbleParams(tile=4)
    results = run(params, "cocotb_axi_device", top="nibble_axi", seed=5,
                  run_dir=build_dir(params) / "nibble_axi" / "device")
    tests, failed = get_results(results)
    assert tests == 3 and failed == 0, f"see {results}"
