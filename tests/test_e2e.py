"""End to end on the simulated RTL: a short training run whose every GEMM runs on the
Verilated accelerator (the backward dX through the gradient unit, one fused pass) must
leave the weights bit-identical to the golden run after every step, and learn; with
stochastic rounding too."""

import numpy as np
import pytest

from golden.params import NibbleParams
from nibble.backends import AxiBackend, GemmMismatch, RtlBackend, make_backend
from nibble.digits import load_digits_split
from nibble.training import QuantConfig, TrainConfig, train_run


@pytest.fixture(scope="module")
def subset():
    d = load_digits_split()
    return type(d)(d.x_train[:192], d.y_train[:192], d.x_test[:64], d.y_test[:64])


def test_rtl_training_is_bit_exact_with_golden_and_learns(subset):
    config = TrainConfig(epochs=4, batch=32, hidden=(16,), lr=0.2, params=NibbleParams(tile=4))
    golden = train_run(subset, config, seed=5, quant=QuantConfig())
    backend = RtlBackend(config.params)
    rtl = train_run(subset, config, seed=5, quant=QuantConfig(), backend=backend)
    assert rtl.steps == golden.steps == 24
    # 2 forward, 2 weight-gradient and 1 fused backward GEMM per step
    assert rtl.gemms_per_step == golden.gemms_per_step == 5
    # identical weights after every single step, and every GEMM checked
    assert rtl.weight_digests == golden.weight_digests
    assert backend.checked == backend.gemms == rtl.gemms > 0
    assert backend.cycles > 0
    assert rtl.train_loss[-1] < 0.7 * rtl.train_loss[0]
    assert rtl.test_curve == golden.test_curve


def test_axi_training_is_bit_exact_with_golden(subset):
    """``--backend axi``: the same training through ``nibble_axi``'s AXI4-Stream ports."""
    config = TrainConfig(epochs=1, batch=32, hidden=(16,), lr=0.2, params=NibbleParams(tile=4))
    golden = train_run(subset, config, seed=5, quant=QuantConfig())
    backend = make_backend("axi", config.params)
    assert isinstance(backend, AxiBackend) and backend.sim.params == config.params
    axi = train_run(subset, config, seed=5, quant=QuantConfig(), backend=backend)
    assert axi.weight_digests == golden.weight_digests and axi.test_curve == golden.test_curve
    assert backend.checked == backend.gemms == axi.gemms > 0 and backend.cycles > 0


def test_rtl_stochastic_training_is_bit_exact_with_golden(subset):
    """Stochastic rounding: the hardware's generators, seeded by each command, give the
    golden run's weights after every step."""
    config = TrainConfig(epochs=1, batch=32, hidden=(16, 8), params=NibbleParams(tile=4))
    quant = QuantConfig(rounding="stochastic")
    golden = train_run(subset, config, seed=3, quant=quant)
    backend = RtlBackend(config.params)
    rtl = train_run(subset, config, seed=3, quant=quant, backend=backend)
    assert rtl.weight_digests == golden.weight_digests
    assert backend.checked == backend.gemms == rtl.gemms and rtl.gemms_per_step == 8


class _CorruptingBackend(RtlBackend):
    """Flips one output code of the 5th GEMM: the check must stop the run there."""

    def _execute(self, job):
        out = super()._execute(job)
        if self.gemms == 5:
            if out.raw is not None:
                out.raw.acc[0, 0] += 1
            else:
                (out.codes or out.fused.phase0).codes[0, 0] ^= 1
        return out


def test_rtl_backend_stops_at_the_first_mismatch(subset):
    config = TrainConfig(epochs=1, hidden=(16,), params=NibbleParams(tile=4))
    with pytest.raises(GemmMismatch, match=r"layer \d, step 0, \w+ GEMM \(#5 of the run\).*"
                                           r"mismatch at \[0, 0\]: RTL .*golden"):
        train_run(subset, config, seed=0, quant=QuantConfig(), backend=_CorruptingBackend(config.params))


def test_nibble_train_rtl_cli_writes_the_study_layout(tmp_path):
    import json
    import subprocess
    import sys

    out = tmp_path / "e2e.json"
    proc = subprocess.run([sys.executable, "-m", "nibble", "train", "--backend", "rtl",
                           "--epochs", "1", "--seeds", "1", "--hidden", "16", "--tile", "4",
                           "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| nibble (RTL) |" in proc.stdout and "bit-exact: True" in proc.stdout
    assert "GEMMs" in proc.stderr and "cycles" in proc.stderr          # the progress line
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"fp32", "nibble", "rtl"}
    assert results["rtl"]["bit_exact"] is True
    assert results["rtl"]["test_acc_mean"] == results["nibble"]["test_acc_mean"]
    assert results["rtl"]["gemms_checked"] == results["rtl"]["gemms"] > 0
    for r in results.values():
        assert 0.0 <= r["test_acc_mean"] <= 100.0 and r["test_acc_std"] == 0.0


def test_nibble_train_serial_needs_a_port():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "nibble", "train", "--backend", "serial"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--port" in proc.stderr
