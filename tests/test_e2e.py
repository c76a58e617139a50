"""End to end on the simulated RTL: a short training run whose every GEMM runs on the
Verilated accelerator must leave the weights bit-identical to the golden run after
every step, and learn."""

import numpy as np
import pytest

from golden.params import NibbleParams
from nibble.backends import GemmMismatch, RtlBackend
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
    # identical weights after every single step, and every GEMM checked
    assert rtl.weight_digests == golden.weight_digests
    assert backend.checked == backend.gemms == rtl.gemms > 0
    assert backend.cycles > 0
    assert rtl.train_loss[-1] < 0.7 * rtl.train_loss[0]
    assert rtl.test_curve == golden.test_curve


class _CorruptingBackend(RtlBackend):
    """Flips one output code of the 5th GEMM: the check must stop the run there."""

    def _execute(self, job):
        out = super()._execute(job)
        if self.gemms == 5:
            if out.raw is not None:
                out.raw.acc[0, 0] += 1
            else:
                out.codes.codes[0, 0] ^= 1
        return out


def test_rtl_backend_stops_at_the_first_mismatch(subset):
    config = TrainConfig(epochs=1, hidden=(16,), params=NibbleParams(tile=4))
    with pytest.raises(GemmMismatch, match=r"layer \d, step 0, \w+ GEMM \(#5 of the run\).*"
                                           r"mismatch at \[0, 0\]: RTL .*golden"):
        train_run(subset, config, seed=0, quant=QuantConfig(), backend=_CorruptingBackend(config.params))
