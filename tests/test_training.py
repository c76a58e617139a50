"""The digits training study: the three GEMMs use the contract's kinds and phases, the
loop learns, and runs are reproducible."""

import numpy as np
import pytest

from golden import tiled_gemm
from nibble.digits import load_digits_split
from nibble.training import GoldenBackend, QuantConfig, TrainConfig, train_run


@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


def test_split_is_fixed_disjoint_and_complete(digits):
    again = load_digits_split()
    assert np.array_equal(digits.x_train, again.x_train)
    assert len(digits.y_train) + len(digits.y_test) == 1797
    assert len(digits.y_test) == 449
    train_rows = {r.tobytes() for r in digits.x_train}
    # a few digits images are duplicated in the data set itself; most test rows are unseen
    assert sum(r.tobytes() in train_rows for r in digits.x_test) < 10
    assert digits.x_train.min() >= 0 and digits.x_train.max() <= 1
    assert set(np.unique(digits.y_test)) == set(range(10))


class RecordingBackend(GoldenBackend):
    """Golden backend that remembers every GEMM's role and operands."""

    def __init__(self, params):
        super().__init__(params)
        self.calls = []

    def gemm(self, a, b, role):
        self.calls.append((role, a, b))
        return super().gemm(a, b, role)


@pytest.mark.parametrize("quant, phases", [
    (QuantConfig(), (0, 1)),
    (QuantConfig(tpr=False), (0, 0)),
    (QuantConfig(grad_kind="fp4r2"), (0, 0)),
])
def test_three_gemms_use_contract_kinds_and_phases(digits, quant, phases):
    config = TrainConfig(epochs=1, hidden=(16, 12))
    backend = RecordingBackend(config.params)
    small = type(digits)(digits.x_train[:32], digits.y_train[:32], digits.x_test[:8], digits.y_test[:8])
    train_run(small, config, seed=0, quant=quant, backend=backend)
    grad_kind = quant.grad_kind
    seen = set()
    forward_weights = []
    for role, a, b in backend.calls:
        seen.add(role)
        if role == "forward":
            assert (a.kind, b.kind) == ("uint4", "int4")
            forward_weights.append(b)
        elif role == "backward":                       # dX = dY . W^T
            assert (a.kind, a.phase, b.kind) == (grad_kind, phases[0], "int4")
            # W^T is a forward weight tensor transposed, codes and exponents alike
            assert any(np.array_equal(b.codes, w.codes.T) and np.array_equal(b.exps, w.exps.T)
                       for w in forward_weights)
        else:                                          # dW = X^T . dY
            assert role == "weight_grad"
            assert (a.kind, b.kind, b.phase) == ("uint4", grad_kind, phases[1])
    assert seen == {"forward", "backward", "weight_grad"}
    # 3 layers: 3 forward + 2 backward + 3 weight-gradient GEMMs per step, 1 step, plus
    # the 3 forward GEMMs of the test-set evaluation
    assert backend.gemms == 8 + 3


def test_backend_results_are_golden_gemms(digits):
    config = TrainConfig(epochs=1, hidden=(8,))
    backend = RecordingBackend(config.params)
    small = type(digits)(digits.x_train[:16], digits.y_train[:16], digits.x_test[:4], digits.y_test[:4])
    train_run(small, config, seed=3, quant=QuantConfig(), backend=backend)
    role, a, b = backend.calls[0]
    got = GoldenBackend(config.params).gemm(a, b, role)
    want = tiled_gemm(a, b, acc_bits=config.params.acc_bits)
    assert np.array_equal(got.acc, want.acc)
    assert backend.macs == sum(a.shape[0] * a.shape[1] * b.shape[1] for _, a, b in backend.calls)


@pytest.mark.parametrize("quant", [None, QuantConfig()], ids=["fp32", "nibble"])
def test_training_learns_and_is_reproducible(digits, quant):
    config = TrainConfig(epochs=3, hidden=(32,))
    first = train_run(digits, config, seed=1, quant=quant)
    again = train_run(digits, config, seed=1, quant=quant)
    assert first.train_loss[-1] < 0.5 * first.train_loss[0]
    assert first.test_acc > 85.0                      # chance is 10 %
    assert first.test_curve == again.test_curve and first.train_loss == again.train_loss


def test_train_config_rejects_bad_values():
    for bad in (dict(epochs=0), dict(batch=-1), dict(lr=float("nan")), dict(hidden=()),
                dict(pact_alpha=0.0), dict(epochs=True)):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError):
        QuantConfig(grad_kind="int4")
    with pytest.raises(ValueError):
        QuantConfig(rounding="stochastic")
