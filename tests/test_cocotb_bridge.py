"""cocotb regression of ``host_bridge`` (Accelerator + UART bridge) under Verilator:
GEMMs through the host driver (wire.host_driver) on the simulated UART, checked against golden,
with flipped and truncated frames on the line."""

from cocotb_tools.check_results import get_results

from golden.params import NibbleParams
from verif.runner import run


def test_device_over_simulated_uart():
    results = run(NibbleParams(tile=4), "verif.tb_bridge", top="host_bridge", seed=11)
    tests, failed = get_results(results)
    assert tests == 3 and failed == 0, f"see {results}"


def test_device_over_simulated_uart_icebreaker_config():
    """The configuration that fits the iCEBreaker: T=2, 18-bit accumulators, one lane."""
    results = run(NibbleParams(tile=2, acc_bits=18, lanes=1), "verif.tb_bridge",
                  top="host_bridge", seed=12)
    tests, failed = get_results(results)
    assert tests == 3 and failed == 0, f"see {results}"
