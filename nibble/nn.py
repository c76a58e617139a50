"""A small layer API whose every GEMM runs on nibble: ``Linear``, ``Conv2d``, ``ReLU``
(PACT in 4 bits), ``MaxPool2d``, ``Flatten`` and ``Sequential``. NumPy only.

A :class:`Sequential` describes a network; :func:`nibble.training.train_run` trains it
(``model=``) in FP32 or with nibble's 4-bit GEMMs on any backend (golden, the Verilated
RTL, a board), bit for bit the same on each, exactly as it trains the digits MLP. Each
GEMM layer lowers to the three training GEMMs of :mod:`verif.stimulus`:

============  =====================================  ===================================
layer         GEMM (A . B)                            output stage
============  =====================================  ===================================
Linear        forward X . W                           requantizer, uint4 with PACT's clip
                                                      (raw + host bias for the last layer)
              backward dY . W^T                       log4 unit: next dY, both TPR phases,
                                                      PACT's masks and alpha partials
              weight gradient X^T . dY                raw, to the host's FP32 weights
Conv2d        forward im2col(X) . W                   as Linear
              backward im2col(full-pad(dY)) . Wflip   as Linear: the result is already dX
                                                      in activation layout (N*H*W, C_in)
              weight gradient im2col(X)^T . dY        raw
============  =====================================  ===================================

Activations are NHWC tensors; the matrix a GEMM sees of an (N, H, W, C) tensor is
(N*H*W, C), of an (N, F) tensor the tensor itself. A convolution's W is the
(k*k*C_in, C_out) matrix whose rows are (kh, kw, c_in); im2col's columns follow the
same order. Its backward GEMM needs no host col2im (which would have to sum 4-bit
values in float): dX = im2col(dY zero-padded by k-1-p, dilated by the stride) against
the flipped kernels Wflip[(kh, kw, c_out), c_in] = W[(k-1-kh, k-1-kw, c_in), c_out], so
the log4 unit, the ReLU'/PACT mask and alpha's partial sums act on chip.

Host work, as in the paper: im2col, max pooling, flattening, softmax, biases, SGD on
FP32 master weights. In the 4-bit path the host's layout changes re-tile a tensor: the
GEMM operand is quantized again from the dequantized values, with each new tile's
exponent (:func:`retile`) taken from the tiles its elements came from, so a change
that keeps tiles together (a 1x1 convolution, a flipped kernel whose channels are
multiples of T) loses nothing, and one that mixes tiles rounds only the elements whose
source exponent differs from the largest one in the new tile.

Rules of the 4-bit path (:meth:`Sequential.build` checks them, one-line errors):
every GEMM layer but the last is followed directly by a :class:`ReLU` (the requantizer
applies PACT's clip; hidden GEMM layers then have no bias, the requantizer has no bias
input), a ReLU follows only a GEMM layer, and the last layer is a :class:`Linear` whose
raw output gets the host's bias. :class:`MaxPool2d` and :class:`Flatten` may sit
between a ReLU and the next GEMM layer: PACT's masks move with the pooled maximum, so
the next layer's backward GEMM still applies them on chip.

A GEMM wider than the command's tile counts (2**TILE_COUNT_BITS tiles per dimension,
e.g. a convolution over a batch of 28x28 images) runs as several jobs: rows split for
the forward and backward GEMMs (each its own output tiles; stochastic rounding seeds
each part with seed + i), the reduction split for the weight gradient (raw parts
summed on the host). Every backend runs the same parts.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from golden.formats import QTensor, quantize
from golden.gemm import GemmResult
from golden.output import FusedLog4, alpha_clip, pact_masks
from golden.params import EXP_MIN
from golden.scaling import sawb_clip
from wire.gemm_protocol import GemmOutput, OutputSpec
from wire.streams import TILE_COUNT_BITS
from verif.stimulus import backward_job, forward_job, weight_grad_job

from .training import MLP, TrainConfig, _softmax_xent

__all__ = ["Layer", "Linear", "Conv2d", "ReLU", "PACT", "MaxPool2d", "Flatten", "Sequential",
           "Network", "TileLimitedBackend", "im2col", "retile", "mlp", "default_cnn", "MODELS", "make_model"]

#: Model names of ``nibble train --model``.
MODELS = ("mlp", "cnn")

#: Images per forward pass when a network is evaluated (a multiple of every tile edge,
#: so the result does not depend on it).
EVAL_BATCH = 256


def _positive(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------- host helpers

def im2col(x: np.ndarray, k: int, stride: int = 1, pad: int = 0, pad_after: int | None = None,
           fill=0) -> np.ndarray:
    """Patches of an NHWC tensor as rows: (N*Ho*Wo, k*k*C), columns ordered (kh, kw, c).
    ``pad`` cells of ``fill`` before and ``pad_after`` (default ``pad``) after each
    spatial dimension."""
    pad_after = pad if pad_after is None else pad_after
    n, h, w, c = x.shape
    xp = np.full((n, h + pad + pad_after, w + pad + pad_after, c), fill, dtype=x.dtype)
    xp[:, pad:pad + h, pad:pad + w] = x
    win = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(-1, k * k * c)


def _as_matrix(v: np.ndarray) -> np.ndarray:
    """The GEMM matrix of a tensor: (N, F) as is, (N, H, W, C) as (N*H*W, C)."""
    return v.reshape(-1, v.shape[-1])


def _source_exps(q: QTensor) -> np.ndarray:
    """Each element's tile exponent (without the phase), int64, the shape of ``q``."""
    return q.element_exps() - q.phase


def retile(values: np.ndarray, exps: np.ndarray, kind: str, phase: int, tile: int,
           rounding: str = "log", seed=None) -> QTensor:
    """Quantize gradient ``values`` (already on 4-bit grids) to new tiles: each new tile's
    exponent is the largest source exponent ``exps`` among its non-zero elements (an
    all-zero tile -128). An element from a tile of that exponent keeps its code; one from
    a tile of another exponent is rounded by ``rounding`` (an exact grid value is kept
    by every mode)."""
    e = np.where(values != 0, exps, EXP_MIN).astype(np.int64)
    m, k = e.shape
    mt, kt = -(-m // tile), -(-k // tile)
    padded = np.full((mt * tile, kt * tile), EXP_MIN, dtype=np.int64)
    padded[:m, :k] = e
    table = padded.reshape(mt, tile, kt, tile).max(axis=(1, 3))
    return quantize(values, kind, tile=tile, phase=phase, rounding=rounding, exps=table,
                    seed=seed)


# ---------------------------------------------------------------------------- layers

class Layer:
    """A layer of a :class:`Sequential`. GEMM layers (``gemm = True``) own a weight
    matrix and a bias; the others are host work with no parameters."""

    gemm = False

    def out_shape(self, in_shape: tuple) -> tuple:
        """Shape of one sample's output for one sample's input (both without N)."""
        return in_shape

    def forward(self, v):
        """FP32 (and 4-bit host work): (output, cache for :meth:`backward`)."""
        return v, None

    def backward(self, g, cache, fill=0):
        """The input's gradient; ``fill`` is what positions no output reached get."""
        return g

    def forward_mask(self, m, cache):
        """A per-element mask of the input, carried to the output (PACT's masks)."""
        return self.forward(m)[0]

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class _Gemm(Layer):
    gemm = True
    fan_in: int
    fan_out: int

    def init(self, rng: np.random.Generator) -> np.ndarray:
        """He-normal weights (fan_in, fan_out), drawn as the digits MLP draws them."""
        return rng.normal(0.0, np.sqrt(2.0 / self.fan_in), size=(self.fan_in, self.fan_out))

    def columns(self, x):
        """The forward GEMM's A of input ``x``."""
        raise NotImplementedError

    def columns_are_input(self, in_shape) -> bool:
        """True if :meth:`columns` is the input's own matrix (its codes can be reused)."""
        raise NotImplementedError

    def grad_columns(self, dy, in_shape, fill=0):
        """The backward GEMM's A of output gradient ``dy`` (its result is in the matrix
        layout of inputs of one-sample shape ``in_shape``)."""
        raise NotImplementedError

    def grad_columns_are_output(self) -> bool:
        raise NotImplementedError

    def backward_weights(self, w):
        """The backward GEMM's B as the array stores it (read transposed)."""
        raise NotImplementedError

    def forward(self, v, w=None, b=None):
        n = len(v)
        cols = self.columns(v)
        y = cols @ w + b
        return y.reshape(n, *self.out_shape(v.shape[1:])), (cols, v.shape)

    def backward(self, g, cache, w=None):
        """(dW, db, dX) in FP32."""
        cols, in_shape = cache
        g2 = _as_matrix(g)
        dw = cols.T @ g2
        db = g2.sum(axis=0)
        dx = (self.grad_columns(g, in_shape[1:]) @ self.backward_weights(w).T).reshape(in_shape)
        return dw, db, dx


class Linear(_Gemm):
    """y = x . W + b on (N, in_features) inputs (after a :class:`Flatten` for images)."""

    def __init__(self, in_features: int, out_features: int):
        self.fan_in = _positive("in_features", in_features)
        self.fan_out = _positive("out_features", out_features)

    def __repr__(self):
        return f"Linear({self.fan_in}, {self.fan_out})"

    def out_shape(self, in_shape):
        if tuple(in_shape) != (self.fan_in,):
            raise ValueError(f"{self!r} needs inputs of shape ({self.fan_in},), got "
                             f"{tuple(in_shape)}" + (" (add a Flatten)" if len(in_shape) > 1 else ""))
        return (self.fan_out,)

    def columns(self, x):
        return x

    def columns_are_input(self, in_shape):
        return True

    def grad_columns(self, dy, in_shape, fill=0):
        return dy

    def grad_columns_are_output(self):
        return True

    def backward_weights(self, w):
        return w

    def backward(self, g, cache, w=None):
        x, _ = cache
        # the digits MLP's expressions, so a Sequential of Linears trains bit for bit as it
        return x.T @ g, g.sum(axis=0), g @ w.T


class Conv2d(_Gemm):
    """2-D convolution of NHWC tensors with square kernels, stride and zero padding
    (0 <= padding < kernel_size)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        self.in_channels = _positive("in_channels", in_channels)
        self.out_channels = _positive("out_channels", out_channels)
        self.k = _positive("kernel_size", kernel_size)
        self.stride = _positive("stride", stride)
        if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or \
                not 0 <= padding < self.k:
            raise ValueError(f"padding must be an integer in 0..kernel_size-1 "
                             f"(0..{self.k - 1}), got {padding!r}")
        self.padding = int(padding)
        self.fan_in, self.fan_out = self.k * self.k * self.in_channels, self.out_channels

    def __repr__(self):
        return (f"Conv2d({self.in_channels}, {self.out_channels}, {self.k}, "
                f"stride={self.stride}, padding={self.padding})")

    def out_shape(self, in_shape):
        if len(in_shape) != 3 or in_shape[2] != self.in_channels:
            raise ValueError(f"{self!r} needs (H, W, {self.in_channels}) inputs, got "
                             f"{tuple(in_shape)}")
        h, w, _ = in_shape
        ho, wo = ((d + 2 * self.padding - self.k) // self.stride + 1 for d in (h, w))
        if ho < 1 or wo < 1:
            raise ValueError(f"{self!r}: input {tuple(in_shape)} is smaller than the kernel")
        return ho, wo, self.out_channels

    def columns(self, x):
        return im2col(x, self.k, self.stride, self.padding)

    def columns_are_input(self, in_shape):
        return (self.k, self.stride, self.padding) == (1, 1, 0)

    def grad_columns(self, dy, in_shape, fill=0):
        """im2col of dY dilated by the stride and padded by k-1-p (plus what the forward
        stride left over at the bottom and right): a stride-1 'full' convolution with
        the flipped kernels gives dX at every input position."""
        n, ho, wo, c = dy.shape
        s, k, p = self.stride, self.k, self.padding
        h, w = in_shape[:2]
        if s > 1:
            d = np.full((n, (ho - 1) * s + 1, (wo - 1) * s + 1, c), fill, dtype=dy.dtype)
            d[:, ::s, ::s] = dy
            dy = d
        rh, rw = (h + 2 * p - k) % s, (w + 2 * p - k) % s
        # pad the two dimensions separately when the strides left different remainders
        before = k - 1 - p
        d = np.full((n, dy.shape[1] + 2 * before + rh, dy.shape[2] + 2 * before + rw, c), fill,
                    dtype=dy.dtype)
        d[:, before:before + dy.shape[1], before:before + dy.shape[2]] = dy
        return im2col(d, k, 1, 0)

    def grad_columns_are_output(self):
        return (self.k, self.stride, self.padding) == (1, 1, 0)

    def backward_weights(self, w):
        k = self.k
        w4 = w.reshape(k, k, self.in_channels, self.out_channels)[::-1, ::-1]
        return w4.transpose(2, 0, 1, 3).reshape(self.in_channels, k * k * self.out_channels)


class ReLU(Layer):
    """ReLU in FP32; in 4 bits PACT, y = clip(x, 0, alpha) with a learned alpha (one per
    layer, from ``TrainConfig.pact_alpha``), applied by the requantizer of the GEMM
    before it. :data:`PACT` is the same layer."""

    def forward(self, v):
        out = np.maximum(v, 0.0)
        return out, out

    def backward(self, g, cache, fill=0):
        return g * (cache > 0)

    def __repr__(self):
        return "ReLU()"


PACT = ReLU


class MaxPool2d(Layer):
    """Max pooling of NHWC tensors over k x k windows (stride k unless given); the
    gradient goes to the first maximum of each window."""

    def __init__(self, kernel_size: int, stride: int | None = None):
        self.k = _positive("kernel_size", kernel_size)
        self.stride = self.k if stride is None else _positive("stride", stride)

    def __repr__(self):
        return f"MaxPool2d({self.k}, stride={self.stride})"

    def out_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ValueError(f"{self!r} needs (H, W, C) inputs, got {tuple(in_shape)}")
        h, w, c = in_shape
        if h < self.k or w < self.k:
            raise ValueError(f"{self!r}: input {tuple(in_shape)} is smaller than the window")
        return (h - self.k) // self.stride + 1, (w - self.k) // self.stride + 1, c

    def _windows(self, v):
        win = sliding_window_view(v, (self.k, self.k), axis=(1, 2))[:, ::self.stride, ::self.stride]
        return win.reshape(*win.shape[:4], self.k * self.k)        # (N, Ho, Wo, C, k*k)

    def forward(self, v):
        idx = self._windows(v).argmax(axis=-1)
        out = np.take_along_axis(self._windows(v), idx[..., None], axis=-1)[..., 0]
        return out, (idx, v.shape)

    def forward_mask(self, m, cache):
        idx, _ = cache
        return np.take_along_axis(self._windows(m), idx[..., None], axis=-1)[..., 0]

    def _positions(self, cache):
        idx, shape = cache
        n, ho, wo, c = idx.shape
        hs = np.arange(ho)[None, :, None, None] * self.stride + idx // self.k
        ws = np.arange(wo)[None, None, :, None] * self.stride + idx % self.k
        ns = np.arange(n)[:, None, None, None]
        cs = np.arange(c)[None, None, None, :]
        return tuple(np.broadcast_arrays(ns, hs, ws, cs))

    def backward(self, g, cache, fill=0):
        _, shape = cache
        out = np.full(shape, fill, dtype=g.dtype)
        pos = self._positions(cache)
        if fill == 0:
            np.add.at(out, pos, g)
        else:                       # exponents of the 4-bit path: the largest one counts
            np.maximum.at(out, pos, g)
        return out


class Flatten(Layer):
    """(N, H, W, C) to (N, H*W*C), in NHWC order."""

    def out_shape(self, in_shape):
        return (int(np.prod(in_shape)),)

    def forward(self, v):
        return v.reshape(len(v), -1), v.shape

    def backward(self, g, cache, fill=0):
        return g.reshape(cache)

    def __repr__(self):
        return "Flatten()"


class Sequential:
    """A network of layers in order, for :func:`nibble.training.train_run` (``model=``).

    Parameters
    ----------
    *layers : Layer
    input_shape : tuple
        One sample's shape: (features,) for a network starting with a Linear,
        (H, W, C) for one starting with a Conv2d. A data set's rows are reshaped to it
        (NHWC), so their length must be its product.

    Example
    -------
    >>> net = Sequential(Conv2d(1, 8, 3, padding=1), ReLU(), MaxPool2d(2),
    ...                  Flatten(), Linear(14 * 14 * 8, 10), input_shape=(28, 28, 1))
    """

    def __init__(self, *layers: Layer, input_shape):
        if not layers:
            raise ValueError("a Sequential needs at least one layer")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise ValueError(f"Sequential takes layers (Linear, Conv2d, ReLU, MaxPool2d, "
                                 f"Flatten), got {layer!r}")
        self.layers = tuple(layers)
        self.input_shape = tuple(int(d) for d in input_shape)
        self.shapes = [self.input_shape]                 # each layer's input, then the output
        for layer in self.layers:
            self.shapes.append(tuple(layer.out_shape(self.shapes[-1])))
        self.gemm_layers = [layer for layer in self.layers if layer.gemm]
        self._check_4bit_rules()

    def _check_4bit_rules(self):
        layers = self.layers
        if not isinstance(layers[-1], Linear):
            raise ValueError(f"the last layer must be a Linear (its raw output gets the "
                             f"bias), got {layers[-1]!r}")
        for i, layer in enumerate(layers):
            follower = layers[i + 1] if i + 1 < len(layers) else None
            if layer.gemm and follower is not None and not isinstance(follower, ReLU):
                raise ValueError(f"layer {i} ({layer!r}) must be followed by a ReLU: in 4 "
                                 f"bits the requantizer applies PACT to its output")
            if isinstance(layer, ReLU) and (i == 0 or not layers[i - 1].gemm):
                raise ValueError(f"layer {i} (ReLU) must follow a Linear or Conv2d")

    @property
    def out_features(self) -> int:
        return self.shapes[-1][0]

    def __repr__(self):
        return ("Sequential(" + ", ".join(map(repr, self.layers)) +
                f", input_shape={self.input_shape})")

    def describe(self) -> str:
        """One line per layer with its output shape."""
        return " -> ".join([f"{self.input_shape}"] + [
            f"{layer!r} {shape}" for layer, shape in zip(self.layers, self.shapes[1:])])

    def build(self, config: TrainConfig, rng: np.random.Generator,
              seeds: np.random.Generator | None = None, *, n_features: int | None = None,
              n_classes: int | None = None) -> "Network":
        """Fresh weights (drawn from ``rng``) for a training run; checks that the data
        fits (``n_features`` per row, ``n_classes`` labels)."""
        if n_features is not None and n_features != int(np.prod(self.input_shape)):
            raise ValueError(f"the model's input shape {self.input_shape} does not match "
                             f"data with {n_features} features per sample")
        if n_classes is not None and n_classes != self.out_features:
            raise ValueError(f"the model has {self.out_features} outputs, the data "
                             f"{n_classes} classes")
        return Network(self, config, rng, seeds)


# -------------------------------------------------------------- the 4-bit job splitter

def _rows(q: QTensor, r0: int, r1: int) -> QTensor:
    t = q.tile
    return QTensor(q.codes[r0:r1], q.exps[r0 // t:-(-r1 // t)], q.kind, t, q.phase)


def _cat(qs) -> QTensor:
    q = qs[0]
    return QTensor(np.concatenate([p.codes for p in qs]), np.concatenate([p.exps for p in qs]),
                   q.kind, q.tile, q.phase)


class _SummedRaw:
    """Raw weight-gradient parts summed on the host (``value()`` as a GemmResult's)."""

    def __init__(self, value, saturated):
        self._value, self.saturated = value, saturated

    def value(self):
        return self._value


class TileLimitedBackend:
    """Runs each job on ``backend``, split into jobs of at most 2**TILE_COUNT_BITS tiles
    per dimension (see the module docstring); every other attribute is the backend's."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def run(self, job, role, layer):
        limit = 1 << TILE_COUNT_BITS
        mt, kt, nt = job.tiles
        if max(mt, kt, nt) <= limit:
            return self.backend.run(job, role, layer)
        t = self.backend.params.tile
        step = limit * t
        if nt > limit:
            raise ValueError(f"a GEMM of {nt} output column tiles is wider than the "
                             f"command's {limit}")
        if kt > limit:                      # the weight gradient's long reduction
            if job.out.mode != "raw" or job.b_trans or mt > limit:
                raise ValueError(f"cannot split the reduction of a {job.out.mode} GEMM")
            k = job.shape[1]
            total, saturated = None, False
            for r0 in range(0, k, step):
                r1 = min(r0 + step, k)
                a = _rows(job.a, r0, r1) if job.a_trans else _rows(job.a.T, r0, r1).T
                part = self.backend.run(replace(job, a=a, b=_rows(job.b, r0, r1)), role, layer)
                total = part.raw.value() if total is None else total + part.raw.value()
                saturated |= part.saturated
            return GemmOutput(_SummedRaw(total, saturated), None, saturated)
        if job.a_trans:
            raise ValueError("cannot split the rows of a transposed A")
        m, out, parts = job.shape[0], job.out, []
        for i, r0 in enumerate(range(0, m, step)):
            r1 = min(r0 + step, m)
            spec = replace(out, mask=None if out.mask is None else out.mask[r0:r1],
                           clip_mask=None if out.clip_mask is None else out.clip_mask[r0:r1],
                           seed=None if out.seed is None else (out.seed + i) % (1 << 32))
            parts.append(self.backend.run(replace(job, a=_rows(job.a, r0, r1), out=spec),
                                          role, layer))
        saturated = any(p.saturated for p in parts)
        if out.mode == "raw":
            r = parts[0].raw
            raw = GemmResult(np.concatenate([p.raw.acc for p in parts]),
                             np.concatenate([p.raw.out_exps for p in parts]), saturated,
                             r.tile, r.acc_bits)
            return GemmOutput(raw, None, saturated)
        if out.dual:
            f = [p.fused for p in parts]
            fused = FusedLog4(_cat([x.phase0 for x in f]), _cat([x.phase1 for x in f]),
                              np.concatenate([x.alpha_sums for x in f]),
                              np.concatenate([x.tile_max for x in f]),
                              np.concatenate([x.out_exps for x in f]))
            return GemmOutput(None, None, saturated, fused)
        return GemmOutput(None, _cat([p.codes for p in parts]), saturated)


# ------------------------------------------------------------------------ the network

class Network(MLP):
    """A :class:`Sequential` with weights, trained by :func:`nibble.training.train_run`
    (the digits MLP's optimiser, weight digest and backward passes, for any layers)."""

    def __init__(self, model: Sequential, config: TrainConfig, rng: np.random.Generator,
                 seeds: np.random.Generator | None = None):
        self.model = model
        self.config = config
        self.seeds = seeds if seeds is not None else np.random.default_rng(0)
        self.w = [layer.init(rng) for layer in model.gemm_layers]
        self.b = [np.zeros(layer.fan_out) for layer in model.gemm_layers]
        self.alpha = [config.pact_alpha] * (len(self.w) - 1)
        self._vel = {}
        self.grad_probe = None

    def _input(self, x):
        return np.asarray(x, dtype=np.float64).reshape(len(x), *self.model.input_shape)

    # -- FP32 -------------------------------------------------------------------------
    def _fp32(self, x):
        v, caches, gi = self._input(x), [], 0
        for layer in self.model.layers:
            if layer.gemm:
                v, cache = layer.forward(v, self.w[gi], self.b[gi])
                gi += 1
            else:
                v, cache = layer.forward(v)
            caches.append(cache)
        return v, caches

    def fp32_forward(self, x):
        return [self._fp32(x)[0]]

    def fp32_grads(self, x, labels):
        logits, caches = self._fp32(x)
        loss, g = _softmax_xent(logits, labels)
        grads, gi = {}, len(self.w)
        for i in reversed(range(len(self.model.layers))):
            layer = self.model.layers[i]
            if layer.gemm:
                gi -= 1
                grads["w", gi], grads["b", gi], g = layer.backward(g, caches[i], self.w[gi])
            else:
                g = layer.backward(g, caches[i])
        return loss, grads

    # -- nibble 4-bit -----------------------------------------------------------------
    def quant_forward(self, x, backend):
        """Forward pass with every GEMM on ``backend``; returns (logits, per GEMM layer
        a dict: uint4 A, int4 W, PACT clip or None, PACT's masks at the layer's input
        (its matrix layout), and the host layers after its ReLU with their caches)."""
        backend = backend if isinstance(backend, TileLimitedBackend) else TileLimitedBackend(backend)
        tile = backend.params.tile
        layers, last = self.model.layers, len(self.w) - 1
        v, q, masks = self._input(x), None, None
        cache, gi = [], 0
        for i, layer in enumerate(layers):
            if isinstance(layer, ReLU):
                continue                     # applied by the GEMM's requantizer
            if not layer.gemm:
                v, c = layer.forward(v)
                if masks is not None:
                    masks = tuple(layer.forward_mask(m, c) for m in masks)
                if not (isinstance(layer, Flatten) and len(c) == 2):
                    q = None                 # the layout changed: re-quantize at the GEMM
                if cache:                    # (before the first GEMM: no gradient needed)
                    cache[-1]["host"].append((layer, c))
                continue
            n = len(v)
            if q is not None and layer.columns_are_input(v.shape[1:]):
                a_q = q
            else:
                a_q = quantize(layer.columns(v), "uint4", tile=tile)
            w_q = quantize(sawb_clip(self.w[gi]), "int4", tile=tile)
            entry = {"a_q": a_q, "w_q": w_q, "clip": None, "host": [], "in_shape": v.shape,
                     "masks": None if masks is None else tuple(_as_matrix(m) for m in masks)}
            out_shape = (n, *layer.out_shape(v.shape[1:]))
            if gi == last:
                y = backend.run(forward_job(a_q, w_q), "forward", gi).raw.value() + self.b[gi]
                v, q, masks = y.reshape(out_shape), None, None
            else:
                clip = alpha_clip(self.alpha[gi])
                out = OutputSpec("int", kind="uint4", clip=clip)
                q = backend.run(forward_job(a_q, w_q, out), "forward", gi).codes
                in_range, clipped = pact_masks(q, clip)
                masks = (in_range.reshape(out_shape), clipped.reshape(out_shape))
                v = q.dequantize().reshape(out_shape)
                entry["clip"] = clip
            entry["out_shape"] = out_shape
            cache.append(entry)
            gi += 1
        return v, cache

    def quant_grads(self, x, labels, backend, quant, scales):
        backend = TileLimitedBackend(backend)
        tile = backend.params.tile
        logits, cache = self.quant_forward(x, backend)
        loss, dy, grads, phases = self._output_gradient(logits, labels, quant, scales, tile)
        p_dx, p_dw = quant.phases
        fused = quant.grad_kind == "fp4" and backend.fused
        layers = self.model.gemm_layers
        for l in reversed(range(len(self.w))):
            entry, layer = cache[l], layers[l]
            grads["w", l] = backend.run(weight_grad_job(entry["a_q"], dy[p_dw]),
                                        "weight_grad", l).raw.value()
            if not l:
                break
            in_range, clipped = entry["masks"]
            dy_op = dy[p_dx] if layer.grad_columns_are_output() else self._grad_columns(
                layer, dy[p_dx], entry["out_shape"], entry["in_shape"], quant, tile)
            if isinstance(layer, Linear):
                b_op = entry["w_q"]          # W^T: the forward's codes, read transposed
            else:
                b_op = quantize(layer.backward_weights(entry["w_q"].dequantize()), "int4",
                                tile=tile)
            backward = self._fused_backward if fused else self._three_pass_backward
            dy_next, grads["alpha", l - 1], g_prev = backward(
                backend, l, dy_op, b_op, in_range, clipped, quant, scales[l - 1], phases)
            if l == 1 and max(backward_job(dy_op, b_op).tiles) <= 1 << TILE_COUNT_BITS:
                self.grad_probe = {"layer": 0, "g": g_prev, "dy": dy_next,
                                   "backward": (dy_op, b_op, in_range)}
            host = cache[l - 1]["host"]
            if host:                         # pooling / flattening between the two GEMMs
                dy_next = {p: self._host_backward(d, host, entry["in_shape"], quant, tile)
                           for p, d in dy_next.items()}
            dy = dy_next
        return loss, grads

    def _retile(self, values, exps, like: QTensor, quant, tile):
        rounding = quant.rounding
        seed = self._seed(quant)
        return retile(values, exps, like.kind, like.phase, tile, rounding, seed)

    def _grad_columns(self, layer, dy: QTensor, out_shape, in_shape, quant, tile) -> QTensor:
        """A convolution's backward A from its output gradient's codes."""
        values = layer.grad_columns(dy.dequantize().reshape(out_shape), in_shape[1:])
        exps = layer.grad_columns(_source_exps(dy).reshape(out_shape), in_shape[1:],
                                  fill=EXP_MIN)
        return self._retile(values, exps, dy, quant, tile)

    def _host_backward(self, dy: QTensor, host, in_shape, quant, tile) -> QTensor:
        """The gradient at a GEMM's input, back through the host layers before it, as
        codes in the layout of the previous GEMM's output."""
        values = dy.dequantize().reshape(in_shape)
        exps = _source_exps(dy).reshape(in_shape)
        for layer, c in reversed(host):
            values = layer.backward(values, c)
            exps = layer.backward(exps, c, fill=EXP_MIN)
        return self._retile(_as_matrix(values), _as_matrix(exps), dy, quant, tile)

    def predict(self, x, backend=None):
        preds = []
        for i in range(0, len(x), EVAL_BATCH):
            chunk = x[i:i + EVAL_BATCH]
            logits = (self.fp32_forward(chunk)[-1] if backend is None
                      else self.quant_forward(chunk, backend)[0])
            preds.append(logits.argmax(axis=1))
        return np.concatenate(preds)


# ------------------------------------------------------------------------ the models

def mlp(n_features: int, hidden=(64, 64), n_classes: int = 10) -> Sequential:
    """The digits study's MLP as a Sequential: Linear and ReLU per hidden layer, then a
    Linear head; it trains bit for bit as :class:`nibble.training.MLP`."""
    sizes = [int(n_features), *hidden, int(n_classes)]
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        layers += [Linear(fan_in, fan_out), ReLU()]
    return Sequential(*layers[:-1], input_shape=(sizes[0],))


def default_cnn(image_shape=(28, 28, 1), n_classes: int = 10, channels=(8, 16)) -> Sequential:
    """``nibble train --model cnn``: two 3x3 convolutions (padding 1) with ReLU (PACT)
    and 2x2 max pooling each, then a Linear head. On MNIST's 28x28 images:
    28x28x1 -> 28x28x8 -> 14x14x8 -> 14x14x16 -> 7x7x16 -> 784 -> 10. Channel counts
    that are multiples of T keep the flipped kernels of the backward GEMM exact."""
    h, w, c = image_shape
    c1, c2 = channels
    h2, w2 = h // 2 // 2, w // 2 // 2
    if h2 < 1 or w2 < 1:
        raise ValueError(f"the default CNN needs images of at least 4x4, got {image_shape}")
    return Sequential(Conv2d(c, c1, 3, padding=1), ReLU(), MaxPool2d(2),
                      Conv2d(c1, c2, 3, padding=1), ReLU(), MaxPool2d(2),
                      Flatten(), Linear(h2 * w2 * c2, n_classes), input_shape=image_shape)


def make_model(name: str, image_shape, n_classes: int = 10, hidden=(64, 64)) -> Sequential:
    """The model ``nibble train --model name`` trains on images of ``image_shape``."""
    if name == "mlp":
        return mlp(int(np.prod(image_shape)), hidden, n_classes)
    if name == "cnn":
        return default_cnn(tuple(image_shape), n_classes)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
