"""The digits training study: the three GEMMs use the contract's kinds and phases, the
loop learns, and runs are reproducible."""

import numpy as np
import pytest

from golden import tiled_gemm
from golden.output import alpha_clip, clip_alpha, pact_masks, requantize
from nibble.backends import CheckedBackend
from nibble.digits import load_digits_split
from nibble.training import GoldenBackend, QuantConfig, TrainConfig, train_run
from wire.gemm_protocol import decode, encode, expected, result_words
from verif.scoreboard import tile_result


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
    """Golden backend that remembers every GEMM job with its role and layer."""

    def __init__(self, params, fused=True):
        super().__init__(params, fused=fused)
        self.calls = []

    def run(self, job, role, layer):
        self.calls.append((role, layer, job))
        return super().run(job, role, layer)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "three_pass"])
@pytest.mark.parametrize("quant, phases", [
    (QuantConfig(), (0, 1)),
    (QuantConfig(tpr=False), (0, 0)),
    (QuantConfig(grad_kind="fp4r2"), (0, 0)),
])
def test_three_gemms_use_contract_kinds_and_phases(digits, quant, phases, fused):
    config = TrainConfig(epochs=1, hidden=(16, 12))
    backend = RecordingBackend(config.params, fused=fused)
    small = type(digits)(digits.x_train[:32], digits.y_train[:32], digits.x_test[:8], digits.y_test[:8])
    train_run(small, config, seed=0, quant=quant, backend=backend)
    grad_kind = quant.grad_kind
    forward_weights, counts = [], {}
    for role, layer, job in backend.calls:
        a, b, out = job.a_op, job.b_op, job.out
        counts[role, out.mode] = counts.get((role, out.mode), 0) + 1
        if role == "forward":
            assert (a.kind, b.kind) == ("uint4", "int4") and not (job.a_trans or job.b_trans)
            forward_weights.append(b)
            # hidden layers: PACT-clipped uint4 from the requantizer; the last: raw
            assert (out.mode, out.kind) == (("raw", "int4") if layer == 2 else ("int", "uint4"))
            assert (out.clip is None) == (layer == 2)
        elif role == "backward":                       # dX = dY . W^T
            assert (a.kind, a.phase, b.kind) == (grad_kind, phases[0], "int4") and job.b_trans
            # W^T is a forward weight tensor transposed, codes and exponents alike
            assert any(np.array_equal(b.codes, w.codes.T) and np.array_equal(b.exps, w.exps.T)
                       for w in forward_weights)
            if out.mode == "fp4":                      # the log4 unit gives the next dY
                assert out.mask is not None and out.phase in phases
                assert out.dual == (fused and grad_kind == "fp4")
                assert (out.clip_mask is not None) == out.dual
        else:                                          # dW = X^T . dY
            assert role == "weight_grad" and job.a_trans and out.mode == "raw"
            assert (a.kind, b.kind, b.phase) == ("uint4", grad_kind, phases[1])
    # 3 layers, 1 step: 3 forward and 3 weight-gradient GEMMs; per lower layer either one
    # fused pass of the gradient unit (both phases, alpha partials, maxima) or a raw pass
    # (PACT's alpha gradient) plus one log4 pass per distinct phase (fp4 only; radix 2
    # is quantized on the host); plus the 3 forward GEMMs of the test-set evaluation
    if fused and grad_kind == "fp4":
        raw_passes, fp4_passes = 0, 2
    else:
        raw_passes, fp4_passes = 2, (2 * len(set(phases)) if grad_kind == "fp4" else 0)
    assert counts.get(("backward", "fp4"), 0) == fp4_passes
    assert counts.get(("backward", "raw"), 0) == raw_passes
    assert counts[("forward", "int")] == 2 * 2 and counts[("forward", "raw")] == 2
    assert backend.gemms == 6 + raw_passes + fp4_passes + 3


def test_backend_results_are_golden_gemms(digits):
    config = TrainConfig(epochs=1, hidden=(8,))
    backend = RecordingBackend(config.params)
    small = type(digits)(digits.x_train[:16], digits.y_train[:16], digits.x_test[:4], digits.y_test[:4])
    train_run(small, config, seed=3, quant=QuantConfig(), backend=backend)
    role, layer, job = backend.calls[0]
    got = GoldenBackend(config.params).run(job, role, layer)
    want = tiled_gemm(job.a_op, job.b_op, acc_bits=config.params.acc_bits)
    want = requantize(want, "uint4", clip=job.out.clip)
    assert np.array_equal(got.codes.codes, want.codes) and np.array_equal(got.codes.exps, want.exps)
    assert backend.macs == sum(np.prod(job.shape) for *_, job in backend.calls)


def test_pact_masks_follow_the_clip():
    """Clipped: at or within half a step of alpha; in range: positive and not clipped."""
    clip = alpha_clip(2.0)
    y = np.array([[-1.0, 0.0, 0.01, 0.5, 1.9, 1.99, 2.0, 7.0]])
    q = requantize_of(y, clip)
    in_range, clipped = pact_masks(q, clip)
    values = q.dequantize()
    step = np.ldexp(1.0, q.element_exps())
    assert np.array_equal(clipped, values >= 2.0 - step / 2)
    assert clipped[0, -2:].all() and not clipped[0, :4].any()
    assert np.array_equal(in_range, (values > 0) & ~clipped)
    assert not in_range[0, :2].any() and in_range[0, 3]


def requantize_of(y, clip):
    """The requantizer's clipped uint4 output (golden.output.requantize) for a row of
    values ``y``, given to it as accumulators with weight 2**-30."""
    return requantize(tile_result(np.rint(np.ldexp(y, 30)), -30, tile=8), "uint4", clip=clip)


def test_alpha_clip_rounds_to_the_hardware_form():
    for alpha in (4.0, 3.3, 0.01, 1000.0, 255.9):
        mant, exp = alpha_clip(alpha)
        assert 128 <= mant <= 255
        assert abs(clip_alpha(mant, exp) - alpha) <= np.ldexp(0.5, exp) * (1 + 1e-12)
    for bad in (0.0, -1.0, float("nan"), float("inf"), 1e300):
        with pytest.raises(ValueError):
            alpha_clip(bad)


def test_weights_digest_per_step_and_golden_runs_agree(digits):
    small = type(digits)(digits.x_train[:64], digits.y_train[:64], digits.x_test[:8], digits.y_test[:8])
    config = TrainConfig(epochs=1, hidden=(16,))
    one = train_run(small, config, seed=2, quant=QuantConfig())
    two = train_run(small, config, seed=2, quant=QuantConfig(), backend=RecordingBackend(config.params))
    assert len(one.weight_digests) == one.steps == 2
    assert one.weight_digests == two.weight_digests
    assert one.weight_digests[0] != one.weight_digests[1]


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
    with pytest.raises(ValueError, match="rounding must be log, linear or stochastic"):
        QuantConfig(rounding="nearest")
    QuantConfig(rounding="stochastic")


# ---- the gradient unit's fused pass --------------------------------------------------------

def _subset(digits, n=96):
    return type(digits)(digits.x_train[:n], digits.y_train[:n], digits.x_test[:16],
                        digits.y_test[:16])


def test_digits_mlp_step_is_8_gemms_fused_and_12_in_three_passes(digits):
    """The study's 64-64-64-10 MLP: per step 3 forward, 3 weight-gradient GEMMs and for
    the two upper layers one fused backward pass each (8), against a raw and two log4
    passes each (12) without the gradient unit."""
    one_step = type(digits)(digits.x_train[:32], digits.y_train[:32], digits.x_test[:8],
                            digits.y_test[:8])
    config = TrainConfig(epochs=1, hidden=(64, 64))
    for fused, want in ((True, 8), (False, 12)):
        run = train_run(one_step, config, seed=0, quant=QuantConfig(),
                        backend=GoldenBackend(config.params, fused=fused))
        assert run.steps == 1 and run.gemms_per_step == want
        assert run.gemms == want + 3                       # + the evaluation's forwards


class _AlphaRecording(GoldenBackend):
    """Fused golden backend noting whether each backward pass had a non-zero alpha sum."""

    def __init__(self, params):
        super().__init__(params)
        self.alpha_sums_nonzero = []

    def run(self, job, role, layer):
        out = super().run(job, role, layer)
        if out.fused is not None:
            self.alpha_sums_nonzero.append(bool(np.any(out.fused.alpha_sums)))
        return out


@pytest.mark.parametrize("quant", [QuantConfig(), QuantConfig(gradscale=True),
                                   QuantConfig(rounding="linear"),
                                   QuantConfig(rounding="stochastic"),
                                   QuantConfig(rounding="stochastic", gradscale=True)],
                         ids=["nibble", "gradscale", "linear", "stochastic", "stoch_gradscale"])
def test_fused_pass_trains_bit_identically_to_three_passes(digits, quant):
    """Both TPR phases, PACT's alpha gradient and GradScale's maximum from the gradient
    unit give the weights of the three-pass path after every step. A low PACT alpha
    makes many activations clip, so alpha's gradient is far from 0."""
    config = TrainConfig(epochs=2, hidden=(16, 12), pact_alpha=0.5)
    small = _subset(digits)
    fused_backend = _AlphaRecording(config.params)
    runs = [train_run(small, config, seed=4, quant=quant, backend=backend)
            for backend in (fused_backend, GoldenBackend(config.params, fused=False))]
    assert sum(fused_backend.alpha_sums_nonzero) > len(fused_backend.alpha_sums_nonzero) // 2
    assert runs[0].weight_digests == runs[1].weight_digests
    assert runs[0].gemms < runs[1].gemms
    # the plot's probe: golden recomputes the float gradient the fused pass did not return
    assert np.array_equal(runs[0].grad_probe["g"], runs[1].grad_probe["g"])
    for p in runs[1].grad_probe["dy"]:
        assert np.array_equal(runs[0].grad_probe["dy"][p].codes, runs[1].grad_probe["dy"][p].codes)


def test_gradscale_reads_its_first_maximum_in_one_extra_pass(digits):
    """GradScale's first step scales by its own maximum, which only the pass itself
    measures: the fused path runs that step's backward GEMMs twice, and only that step."""
    config = TrainConfig(epochs=1, hidden=(16, 12))
    backend = RecordingBackend(config.params)
    train_run(_subset(digits), config, seed=1, quant=QuantConfig(gradscale=True), backend=backend)
    steps = len(_subset(digits).y_train) // config.batch
    backward = [job for role, _, job in backend.calls if role == "backward"]
    assert len(backward) == 2 * steps + 2
    # step 0, layer 2 then layer 1: a probe pass (per-tile exponents), then the real one
    assert [job.out.ext_exp is None for job in backward] == [True, False] * 2 + [False] * (
        2 * steps - 2)


class _HardwareLike(CheckedBackend):
    """A hardware backend whose 'hardware' is the encoder and decoder plus golden: every
    job goes through the wire format the accelerator sees."""

    name = "fake"

    def _execute(self, job):
        encode(job, self.params)                 # refuses what the hardware cannot run
        return decode(job, self.params, result_words(job, self.params, expected(job, self.params)))


def test_hardware_backends_run_the_fused_pass_through_the_wire_format(digits):
    """A hardware backend runs the gradient unit: 8 GEMMs per step (3 forward, 3 weight
    gradient, 2 fused backward), every one through encode and decode, weights identical
    to golden's after every step, stochastic rounding included; with fused=False, the
    three-pass backward (12 per step) gives the same weights."""
    config = TrainConfig(epochs=1, hidden=(16, 12))
    small = _subset(digits, 64)
    for quant in (QuantConfig(), QuantConfig(rounding="stochastic")):
        hw = _HardwareLike(config.params)
        assert hw.fused and hw.gradient_unit
        run = train_run(small, config, seed=2, quant=quant, backend=hw)
        golden = train_run(small, config, seed=2, quant=quant)
        assert hw.checked == hw.gemms and run.gemms_per_step == golden.gemms_per_step == 8
        assert run.weight_digests == golden.weight_digests
    three = _HardwareLike(config.params, fused=False)
    run = train_run(small, config, seed=2, quant=QuantConfig(), backend=three)
    assert three.checked == three.gemms and run.gemms_per_step == 12
    assert run.weight_digests == train_run(small, config, seed=2, quant=QuantConfig()).weight_digests


def test_stochastic_training_learns_reproducibly_and_leaves_other_modes_alone(digits):
    """Reproducible per seed; its seeds come from a generator of their own, so the batch
    order is the other modes' (the same layer-0 inputs at every step)."""
    config = TrainConfig(epochs=3, hidden=(32,))
    quant = QuantConfig(rounding="stochastic")
    recorders = [RecordingBackend(config.params) for _ in range(2)]
    first = train_run(digits, config, seed=1, quant=quant, backend=recorders[0])
    again = train_run(digits, config, seed=1, quant=quant)
    other = train_run(digits, config, seed=2, quant=quant)
    log = train_run(digits, config, seed=1, quant=QuantConfig(), backend=recorders[1])
    assert first.weight_digests == again.weight_digests
    assert first.weight_digests != other.weight_digests != log.weight_digests
    assert first.train_loss[-1] < 0.5 * first.train_loss[0] and first.test_acc > 85.0
    inputs = [[job.a.codes for role, layer, job in r.calls if (role, layer) == ("forward", 0)]
              for r in recorders]
    assert len(inputs[0]) == len(inputs[1]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(*inputs))


def test_study_has_the_stochastic_rows_and_counts_gemms_per_step(digits):
    from nibble.study import STUDY_CONFIGS, format_table, run_study

    by_name = {c.name: c for c in STUDY_CONFIGS}
    assert by_name["stochastic"].quant == QuantConfig(rounding="stochastic")
    assert by_name["radix2_stochastic"].quant == QuantConfig(grad_kind="fp4r2",
                                                             rounding="stochastic")
    config = TrainConfig(epochs=1, hidden=(64, 64))
    rows = [by_name[n] for n in ("nibble", "stochastic", "radix2_stochastic")]
    results = run_study(config, [0], rows, data=_subset(digits, 64), progress=False)
    # 3 forward + 3 weight gradient + 2 backward (fused; radix 2: raw, host-quantized)
    assert [results[n]["gemms_per_step"] for n in results] == [8, 8, 8]
    table = format_table(results)
    assert "| GEMMs/step |" in table
    assert "| stochastic | " in table and "| radix2_stochastic | " in table
