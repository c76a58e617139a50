"""Training an MLP on digits in FP32 or with nibble's 4-bit GEMMs.

The 4-bit path follows Sun et al. (NeurIPS 2020) with nibble's numeric contract. Every
GEMM is a :class:`wire.gemm_protocol.GemmJob` run by a backend (golden model, Verilated
RTL or a board), output stage included, so the backends are interchangeable bit for bit:

* forward Y = X . W: X uint4 (input pixels, then the previous layer's output), W int4
  after SAWB clipping. Hidden layers come back from the requantizer as uint4 with the
  PACT clip alpha (in the hardware's mant * 2**exp form); the requantizer has no bias
  input, so hidden layers have no bias. The last layer returns raw accumulators; the
  host adds its bias.
* weight gradient dW = X^T . dY: X^T the forward's uint4 input, dY fp4 at phase 1
  (two-phase rounding); raw output to the host's FP32 master weights.
* backward dX = dY . W^T: dY fp4 at phase 0, W^T the transposed int4 weights. On a
  backend with the gradient unit (the golden one; :attr:`GoldenBackend.fused`) it is
  one pass (:func:`golden.output.log4_quantize_fused`): the next layer's dY at both TPR
  phases (PACT's straight-through mask applied on chip), each tile's sum of the
  accumulators PACT clipped (alpha's gradient) and its largest magnitude (GradScale's
  maximum). The hardware backends still run three passes, bit for bit the same: one raw
  (the host sums alpha's gradient from it as the unit would) and one log4 pass per
  phase. Per training step of the 64-64-64-10 MLP that is 8 GEMMs instead of 12.
* the loss gradient of the top layer is quantized to fp4 on the host; softmax, PACT's
  alpha and bias updates, and SGD stay in float on the host.
* ``rounding="stochastic"`` draws one generator seed per gradient quantization (the
  top layer's on the host, each layer's dX pass) from a generator of its own, seeded by
  the run's seed, so the batch order and weights of the other modes do not move.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np

from golden import NibbleParams, quantize
from golden.output import alpha_clip, alpha_gradient, alpha_partials, pact_masks
from golden.scaling import GradScale, sawb_clip
from wire.gemm_protocol import GemmJob, GemmOutput, OutputSpec, expected
from verif.stimulus import GEMM_ROLES, backward_job, forward_job, weight_grad_job

from .digits import Digits

__all__ = ["QuantConfig", "TrainConfig", "GoldenBackend", "RunResult", "train_run"]


@dataclass(frozen=True)
class QuantConfig:
    """How gradients are quantized in the 4-bit path.

    Parameters
    ----------
    tpr : bool
        Two-phase rounding: dY at phase 0 for dX, phase 1 for dW. False: both phase 0.
    grad_kind : {"fp4", "fp4r2"}
        Radix-4 FP4 (the hardware's) or the radix-2 study ablation.
    rounding : {"log", "linear", "stochastic"}
        FP4 rounding mode (stochastic: golden backend only until the RTL has it).
    gradscale : bool
        Per-layer GradScale exponent instead of per-tile exponents for dY.
    """

    tpr: bool = True
    grad_kind: str = "fp4"
    rounding: str = "log"
    gradscale: bool = False

    def __post_init__(self):
        if self.grad_kind not in ("fp4", "fp4r2"):
            raise ValueError(f"grad_kind must be fp4 or fp4r2, got {self.grad_kind!r}")
        if self.rounding not in ("log", "linear", "stochastic"):
            raise ValueError(f"rounding must be log, linear or stochastic, got {self.rounding!r}")

    @property
    def phases(self) -> tuple[int, int]:
        """(phase of dY in dX = dY.W^T, phase of dY in dW = X^T.dY)."""
        two_phase = self.tpr and self.grad_kind == "fp4"
        return 0, (1 if two_phase else 0)


@dataclass(frozen=True)
class TrainConfig:
    """Network and optimiser of the digits study (shared by every backend)."""

    hidden: tuple[int, ...] = (64, 64)
    epochs: int = 20
    batch: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    pact_alpha: float = 4.0
    pact_decay: float = 1e-3
    params: NibbleParams = field(default_factory=NibbleParams)

    def __post_init__(self):
        for name in ("epochs", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive, got {self.hidden!r}")
        for name in ("lr", "pact_alpha"):
            value = getattr(self, name)
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")


class GoldenBackend:
    """Runs each GEMM job with the golden model and counts the work.

    The backend interface: ``params``, ``gemms``, ``macs``, ``cycles`` (simulated clock
    cycles, 0 where nothing is simulated), ``step`` (set by the training loop for
    reports), ``gradient_unit`` and ``fused`` (below) and :meth:`run`.

    Parameters
    ----------
    params : NibbleParams
    fused : bool
        Run each backward dX GEMM as one pass of the gradient unit (both TPR phases,
        alpha partials, tile maxima) instead of three (raw, phase 0, phase 1). The
        results are the same bit for bit; False is for comparing the two.

    Attributes
    ----------
    gradient_unit : bool
        The backend runs the gradient unit's modes (dual fp4 output, stochastic
        rounding). Golden and the hardware backends do.
    """

    name = "golden"
    gradient_unit = True

    def __init__(self, params: NibbleParams, *, fused: bool = True):
        self.params = params
        self.fused = bool(fused) and self.gradient_unit
        self.gemms = 0
        self.macs = 0
        self.cycles = 0
        self.step = 0

    def _count(self, job: GemmJob, role: str) -> None:
        assert role in GEMM_ROLES, role
        m, k, n = job.shape
        self.gemms += 1
        self.macs += m * k * n

    def run(self, job: GemmJob, role: str, layer: int) -> GemmOutput:
        """One accelerator GEMM with its output stage; ``role`` is one of
        :data:`GEMM_ROLES`, ``layer`` the layer index (for reports)."""
        self._count(job, role)
        return expected(job, self.params)


@dataclass
class RunResult:
    """Outcome of one training run."""

    test_acc: float                         # percent
    train_loss: list = field(default_factory=list)    # mean loss per epoch
    test_curve: list = field(default_factory=list)    # test accuracy per epoch, percent
    steps: int = 0
    gemms: int = 0
    gemms_per_step: int = 0                 # GEMMs of the last training step (no evaluation)
    macs: int = 0
    cycles: int = 0                         # simulated clock cycles (RTL backends)
    seconds: float = 0.0
    weight_digests: list = field(default_factory=list)   # SHA-1 of all weights after each step
    grad_probe: dict | None = None          # last step's layer-0 output gradient, float and fp4


def _softmax_xent(logits: np.ndarray, labels: np.ndarray):
    """Mean cross-entropy and its gradient with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.mean(np.log(p[np.arange(n), labels] + 1e-300))
    grad = p
    grad[np.arange(n), labels] -= 1.0
    return float(loss), grad / n


class MLP:
    """A ReLU (FP32) or PACT (4-bit) multilayer perceptron with float master weights."""

    def __init__(self, sizes, config: TrainConfig, rng: np.random.Generator,
                 seeds: np.random.Generator | None = None):
        self.config = config
        self.seeds = seeds if seeds is not None else np.random.default_rng(0)
        self.w = [rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))
                  for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]
        self.b = [np.zeros(n) for n in sizes[1:]]
        self.alpha = [config.pact_alpha] * (len(sizes) - 2)
        self._vel = {}
        self.grad_probe = None

    def step(self, grads: dict, lr: float) -> None:
        """SGD with momentum; ``grads`` maps ('w'|'b'|'alpha', layer) to gradients."""
        c = self.config
        for key, g in grads.items():
            kind, l = key
            param = getattr(self, kind)[l]
            decay = c.weight_decay if kind == "w" else c.pact_decay if kind == "alpha" else 0.0
            v = c.momentum * self._vel.get(key, 0.0) + g + decay * param
            self._vel[key] = v
            new = param - lr * v
            if kind == "alpha":
                new = max(float(new), 1e-3)         # PACT alpha stays positive
            getattr(self, kind)[l] = new

    # -- FP32 -------------------------------------------------------------------------
    def fp32_forward(self, x):
        acts = [x]
        for l, (w, b) in enumerate(zip(self.w, self.b)):
            y = acts[-1] @ w + b
            acts.append(np.maximum(y, 0.0) if l < len(self.w) - 1 else y)
        return acts

    def fp32_grads(self, x, labels):
        acts = self.fp32_forward(x)
        loss, g = _softmax_xent(acts[-1], labels)
        grads = {}
        for l in reversed(range(len(self.w))):
            grads["w", l] = acts[l].T @ g
            grads["b", l] = g.sum(axis=0)
            if l:
                g = (g @ self.w[l].T) * (acts[l] > 0)
        return loss, grads

    # -- nibble 4-bit -----------------------------------------------------------------
    def quant_forward(self, x, backend):
        """Forward pass with every GEMM on ``backend``; returns (logits, per-layer cache
        of (uint4 input, int4 weights, PACT clip of the layer's output or None))."""
        tile = backend.params.tile
        a_q = quantize(x, "uint4", tile=tile)
        cache = []
        last = len(self.w) - 1
        for l, w in enumerate(self.w):
            w_q = quantize(sawb_clip(w), "int4", tile=tile)
            if l == last:
                y = backend.run(forward_job(a_q, w_q), "forward", l).raw.value() + self.b[l]
                cache.append((a_q, w_q, None))
            else:
                clip = alpha_clip(self.alpha[l])
                out = OutputSpec("int", kind="uint4", clip=clip)
                cache.append((a_q, w_q, clip))
                a_q = backend.run(forward_job(a_q, w_q, out), "forward", l).codes
        return y, cache

    def quant_grads(self, x, labels, backend, quant: QuantConfig, scales):
        tile = backend.params.tile
        logits, cache = self.quant_forward(x, backend)
        loss, dy, grads, phases = self._output_gradient(logits, labels, quant, scales, tile)
        p_dx, p_dw = quant.phases
        fused = quant.grad_kind == "fp4" and backend.fused
        for l in reversed(range(len(self.w))):
            a_q, w_q, _ = cache[l]
            grads["w", l] = backend.run(weight_grad_job(a_q, dy[p_dw]),
                                        "weight_grad", l).raw.value()
            if not l:
                break
            # dX = dY . W^T; its elementwise PACT backward uses masks read from a_q.
            in_range, clipped = pact_masks(a_q, cache[l - 1][2])
            backward = self._fused_backward if fused else self._three_pass_backward
            dy_next, grads["alpha", l - 1], g_prev = backward(
                backend, l, dy[p_dx], w_q, in_range, clipped, quant, scales[l - 1], phases)
            if l == 1:    # kept for the gradient-vs-FP4-grid histograms
                self.grad_probe = {"layer": 0, "g": g_prev, "dy": dy_next,
                                   "backward": (dy[p_dx], w_q, in_range)}
            dy = dy_next
        return loss, grads

    def _output_gradient(self, logits, labels, quant: QuantConfig, scales, tile: int):
        """The loss and its gradient at the logits, quantized at each phase the step needs
        (GradScale's exponent from the top layer's scale, which then sees the gradient).
        Returns (loss, dY per phase, the gradients dict with the top bias, the phases)."""
        loss, g = _softmax_xent(logits, labels)
        phases = sorted(set(quant.phases))
        top = len(self.w) - 1
        exps = scales[top].exponent(g) if quant.gradscale else None
        seed = self._seed(quant)
        dy = {p: quantize(g, quant.grad_kind, tile=tile, phase=p, rounding=quant.rounding,
                          exps=exps, seed=seed) for p in phases}
        if quant.gradscale:
            scales[top].update(g)
        return loss, dy, {("b", top): g.sum(axis=0)}, phases

    def _seed(self, quant: QuantConfig):
        """A fresh generator seed for one stochastic quantization (None otherwise)."""
        if quant.rounding != "stochastic":
            return None
        return int(self.seeds.integers(0, 1 << 32))

    def _fused_backward(self, backend, l, dy, w_q, in_range, clipped, quant, scale, phases):
        """dX = dY . W^T as one pass of the gradient unit; returns (next dY per phase,
        alpha's gradient, None: no float gradient comes back)."""
        seed = self._seed(quant)

        def run(ext_exp):
            out = OutputSpec("fp4", dual=True, rounding=quant.rounding, ext_exp=ext_exp,
                             mask=in_range, clip_mask=clipped, seed=seed)
            return backend.run(backward_job(dy, w_q, out), "backward", l).fused

        exps = None
        if quant.gradscale:
            # GradScale's first step scales by its own maximum: one extra pass reads it
            amax = None if scale.has_history else run(None).amax()
            exps = scale.exponent(amax=amax)
        fused = run(exps)
        if quant.gradscale:
            scale.update(amax=fused.amax())
        return {p: fused.phase(p) for p in phases}, fused.alpha_grad(), None

    def _three_pass_backward(self, backend, l, dy, w_q, in_range, clipped, quant, scale,
                             phases):
        """dX = dY . W^T raw, then once per TPR phase into the log4 unit (the hardware
        backends' path; radix 2 quantizes on the host); returns (next dY per phase,
        alpha's gradient, the masked float gradient)."""
        tile = backend.params.tile
        raw = backend.run(backward_job(dy, w_q), "backward", l).raw
        # summed exactly per tile, as the gradient unit does
        alpha = alpha_gradient(alpha_partials(raw, clipped), raw.out_exps)
        g_prev = raw.value() * in_range
        exps = scale.exponent(g_prev) if quant.gradscale else None
        seed = self._seed(quant)
        if quant.grad_kind == "fp4":     # the log4 unit, once per TPR phase
            dy_next = {p: backend.run(backward_job(dy, w_q, OutputSpec(
                           "fp4", phase=p, rounding=quant.rounding, ext_exp=exps, mask=in_range,
                           seed=seed)), "backward", l).codes for p in phases}
        else:                            # radix-2 study ablation: no hardware, host quantizes
            dy_next = {p: quantize(g_prev, quant.grad_kind, tile=tile, phase=p,
                                   rounding=quant.rounding, exps=exps, seed=seed)
                       for p in phases}
        if quant.gradscale:
            scale.update(g_prev)
        return dy_next, alpha, g_prev

    def weight_digest(self) -> str:
        """SHA-1 over every trainable parameter's bytes: equal digests, identical weights."""
        h = hashlib.sha1()
        for arrays in (self.w, self.b):
            for a in arrays:
                h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
        h.update(np.asarray(self.alpha, dtype=np.float64).tobytes())
        return h.hexdigest()

    def predict(self, x, backend=None):
        if backend is None:
            return self.fp32_forward(x)[-1].argmax(axis=1)
        return self.quant_forward(x, backend)[0].argmax(axis=1)


def train_run(data: Digits, config: TrainConfig, seed: int, quant: QuantConfig | None,
              backend=None, progress=None, on_step=None, model=None) -> RunResult:
    """Train one network from scratch.

    Parameters
    ----------
    data : Digits
    config : TrainConfig
    seed : int
        Seeds weight initialisation and batch order.
    quant : QuantConfig or None
        None trains in FP32; otherwise every GEMM runs in 4 bits on ``backend``.
    backend : object, optional
        A GEMM backend (default :class:`GoldenBackend` for ``config.params``).
    progress : callable, optional
        Called after every epoch as ``progress(epoch, result)``.
    on_step : callable, optional
        Called after every step as ``on_step(epoch, result, backend)``.
    model : nibble.nn.Sequential, optional
        The network to train (fresh weights per run); default the MLP of
        ``config.hidden``.
    """
    rng = np.random.default_rng(seed)
    sizes = [data.x_train.shape[1], *config.hidden, data.n_classes]
    # stochastic rounding's seeds come from a generator of their own
    seeds = np.random.default_rng((seed, 0x5EED))
    if model is None:
        model = MLP(sizes, config, rng, seeds=seeds)
    else:
        model = model.build(config, rng, seeds, n_features=data.x_train.shape[1],
                            n_classes=data.n_classes)
    if quant is not None and backend is None:
        backend = GoldenBackend(config.params)
    if quant is not None and quant.rounding == "stochastic" and not backend.gradient_unit:
        raise ValueError(f"stochastic rounding needs the gradient unit's generator; the "
                         f"{backend.name} backend has none")
    scales = [GradScale() for _ in model.w]
    result = RunResult(test_acc=0.0)
    n = len(data.y_train)
    steps_per_epoch = -(-n // config.batch)
    total_steps = config.epochs * steps_per_epoch
    start = time.perf_counter()
    for epoch in range(config.epochs):
        order = rng.permutation(n)
        losses = []
        for i in range(steps_per_epoch):
            # cosine learning-rate decay over the whole run
            lr = 0.5 * config.lr * (1.0 + np.cos(np.pi * result.steps / total_steps))
            idx = order[i * config.batch:(i + 1) * config.batch]
            if backend is not None:
                backend.step = result.steps
            x, y = data.x_train[idx], data.y_train[idx]
            if quant is None:
                loss, grads = model.fp32_grads(x, y)
            else:
                before = backend.gemms
                loss, grads = model.quant_grads(x, y, backend, quant, scales)
                result.gemms_per_step = backend.gemms - before
            model.step(grads, lr)
            losses.append(loss)
            result.steps += 1
            result.weight_digests.append(model.weight_digest())
            if on_step is not None:
                on_step(epoch, result, backend)
        pred = model.predict(data.x_test, backend if quant is not None else None)
        result.test_curve.append(100.0 * float(np.mean(pred == data.y_test)))
        result.train_loss.append(float(np.mean(losses)))
        if progress is not None:
            progress(epoch, result)
    result.test_acc = result.test_curve[-1]
    result.grad_probe = _probe_gradient(model.grad_probe, config.params)
    if backend is not None:
        result.gemms, result.macs, result.cycles = backend.gemms, backend.macs, backend.cycles
    result.seconds = time.perf_counter() - start
    return result


def _probe_gradient(probe: dict | None, params: NibbleParams) -> dict | None:
    """The last step's layer-0 probe for the gradient histograms, {"layer", "g", "dy"}.
    After a fused pass no float gradient came back, so golden computes it here from the
    probe's dX operands (host-side, for the plot only: not a counted GEMM)."""
    if probe is None:
        return None
    g = probe["g"]
    if g is None:
        dy, w_q, in_range = probe["backward"]
        g = expected(backward_job(dy, w_q), params).raw.value() * in_range
    return {"layer": probe["layer"], "g": g, "dy": probe["dy"]}
