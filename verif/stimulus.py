"""What the accelerator is fed: the three training GEMMs as jobs, and random operands.

One module for the training loop (:mod:`nibble.training`), the benchmarks
(:mod:`nibble.bench`), the cocotb benches (``verif.tb_*``) and the tests, so a training
role's operand kinds, phases and transposes are written once (:data:`ROLES`) and every
random GEMM is drawn by the same functions. Nothing here is built from the environment
or kept between calls: a caller passes its own ``numpy.random.Generator`` and
:class:`golden.params.NibbleParams`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from golden.formats import QTensor, quantize, stochastic_margins
from golden.gemm import out_exponents, tiled_gemm
from golden.params import EXP_MAX, NibbleParams
from golden.xorshift import element_words, phase_bits
from wire.gemm_protocol import GemmJob, OutputSpec
from wire.streams import TILE_COUNT_BITS

__all__ = ["Role", "ROLES", "GEMM_ROLES", "forward_job", "backward_job", "weight_grad_job",
           "OUTPUT_VARIANTS", "EXTREME_EXPS", "random_operand", "with_tile_exps",
           "random_role_job", "random_job", "edge_jobs", "backpressure_jobs", "extreme_jobs",
           "stochastic_jobs", "threshold_jobs", "planted_jobs", "queued_jobs", "plateau_jobs",
           "burst_jobs",
           "throughput_jobs",
           "quantizer_tiles", "rescaler_steps"]


@dataclass(frozen=True)
class Role:
    """One training GEMM of a layer as the training loop stores its operands: A's and
    B's kinds and TPR phases (those of random operands; the job itself takes whatever
    QTensors it is given), and which operand the array reads transposed."""

    name: str
    a_kind: str
    a_phase: int
    a_trans: bool
    b_kind: str
    b_phase: int
    b_trans: bool

    def job(self, a: QTensor, b: QTensor, out: OutputSpec | None = None) -> GemmJob:
        """The GEMM of this role on stored operands ``a`` and ``b``."""
        return GemmJob(a, b, self.a_trans, self.b_trans, out if out is not None else OutputSpec())

    def stored_shapes(self, m: int, k: int, n: int) -> tuple[tuple, tuple]:
        """Shapes of A and B as stored for a GEMM of (M, K, N)."""
        return (k, m) if self.a_trans else (m, k), (n, k) if self.b_trans else (k, n)


#: Y = X . W: X (batch, fan_in) uint4, W (fan_in, fan_out) int4.
FORWARD = Role("forward", "uint4", 0, False, "int4", 0, False)
#: dX = dY . W^T: dY (batch, fan_out) fp4 at phase 0, W as the forward pass stores it.
BACKWARD = Role("backward", "fp4", 0, False, "int4", 0, True)
#: dW = X^T . dY: X as the forward pass stores it, dY (batch, fan_out) fp4 at phase 1.
WEIGHT_GRAD = Role("weight_grad", "uint4", 0, True, "fp4", 1, False)

#: The training roles by name, in the order coverage and reports list them.
ROLES = {role.name: role for role in (FORWARD, BACKWARD, WEIGHT_GRAD)}
GEMM_ROLES = tuple(ROLES)

forward_job, backward_job, weight_grad_job = FORWARD.job, BACKWARD.job, WEIGHT_GRAD.job

#: Output-stage settings (mode, rounding, phase). Rounding and phase belong to the fp4
#: output stage, so raw and int outputs have one variant each; "dual" is fp4 output
#: through the gradient unit (both phases, alpha partials, tile maxima), phase 0.
OUTPUT_VARIANTS = (("raw", "-", 0), ("int", "-", 0), ("fp4", "log", 0), ("fp4", "log", 1),
                   ("fp4", "linear", 0), ("fp4", "linear", 1), ("fp4", "stochastic", 0),
                   ("fp4", "stochastic", 1), ("dual", "log", 0), ("dual", "linear", 0),
                   ("dual", "stochastic", 0))

#: Tile exponents at and near the int8 extremes, for operands whose exponents are forced.
EXTREME_EXPS = (-128, 127, 0, -60, 60)


def with_tile_exps(q: QTensor, exps) -> QTensor:
    """``q`` with its tile exponents replaced by ``exps`` (the codes unchanged)."""
    return type(q)(q.codes, np.asarray(exps), q.kind, q.tile, q.phase)


def random_operand(rng: np.random.Generator, shape, kind: str, tile: int, phase: int = 0, *,
                   binades: int = 20, zeros: float = 0.1, p_extreme: float = 0.0) -> QTensor:
    """A random operand quantized to ``kind``: normal values times 2**e with e uniform in
    -binades..binades-1 (none for 0), a fraction ``zeros`` of exact zeros, and with
    probability ``p_extreme`` every tile exponent drawn from :data:`EXTREME_EXPS`."""
    x = rng.normal(size=shape)
    if binades:
        x = x * np.exp2(rng.integers(-binades, binades, size=shape))
    if zeros:
        x[rng.random(shape) < zeros] = 0.0
    q = quantize(x, kind, tile=tile, phase=phase)
    if p_extreme and rng.random() < p_extreme:
        q = with_tile_exps(q, rng.choice(EXTREME_EXPS, size=q.exps.shape))
    return q


def random_role_job(rng: np.random.Generator, role: str, shape, tile: int,
                    out: OutputSpec | None = None, **operand) -> GemmJob:
    """A ``role`` GEMM of (M, K, N) = ``shape`` on random operands of the role's kinds
    and phases, stored as the training loop stores them; ``operand`` goes to
    :func:`random_operand` (A is drawn first, then B)."""
    r = ROLES[role]
    a_shape, b_shape = r.stored_shapes(*shape)
    a = random_operand(rng, a_shape, r.a_kind, tile, r.a_phase, **operand)
    b = random_operand(rng, b_shape, r.b_kind, tile, r.b_phase, **operand)
    return r.job(a, b, out)


def random_job(rng: np.random.Generator, params: NibbleParams, target=None,
               shape=None) -> GemmJob:
    """A random training GEMM with full-range operands (a third of them with extreme
    tile exponents). ``target`` = (role index in :data:`GEMM_ROLES`, index in
    :data:`OUTPUT_VARIANTS`, partial tiles) steers it into one coverage bin of
    :mod:`verif.coverage`; None picks one at random. ``shape`` = (M, K, N) fixes the
    shape (it must agree with the target's partial-tiles flag)."""
    t = params.tile
    # (hardware built without stochastic rounding refuses it: no such variant)
    variants = [i for i, (_, rounding, _) in enumerate(OUTPUT_VARIANTS)
                if params.stochastic or rounding != "stochastic"]
    if target is None:
        target = (int(rng.integers(0, len(GEMM_ROLES))), int(rng.choice(variants)),
                  bool(rng.random() < 0.7))
    role, variant, partial = target
    if variant not in variants:
        raise ValueError(f"output variant {OUTPUT_VARIANTS[variant]} needs stochastic "
                         "rounding, which these parameters leave out")
    while shape is None:
        if partial:
            m, k, n = (int(v) for v in rng.integers(1, 3 * t + 1, size=3))
        else:
            m, k, n = (t * int(v) for v in rng.integers(1, 4, size=3))
        if bool(m % t or k % t or n % t) == partial:
            shape = (m, k, n)
    m, k, n = shape
    if bool(m % t or k % t or n % t) != partial:
        raise ValueError(f"shape {shape} does not match partial tiles = {partial}")
    job = random_role_job(rng, GEMM_ROLES[role], (m, k, n), t, p_extreme=0.3)
    out, rounding, phase = OUTPUT_VARIANTS[variant]
    if out == "int":
        clip = (int(rng.integers(1, 256)), int(rng.integers(-20, 20))) if rng.random() < 0.5 else None
        mask = rng.random((m, n)) < 0.7 if rng.random() < 0.5 else None
        spec = OutputSpec("int", kind="uint4" if clip or rng.random() < 0.5 else "int4",
                          clip=clip, mask=mask)
    elif out in ("fp4", "dual"):
        seed = int(rng.integers(0, 1 << 32)) if rounding == "stochastic" else None
        dual = out == "dual"
        # dual: PACT's masks (the clipped elements are masked ones) or independent ones
        clip = None
        if dual and rng.random() < 0.7:
            clip = rng.random((m, n)) < 0.3
        mask = rng.random((m, n)) < 0.7 if rng.random() < (0.6 if dual else 0.3) else None
        if clip is not None and mask is not None and rng.random() < 0.5:
            mask &= ~clip
        spec = OutputSpec("fp4", phase=phase, rounding=rounding, seed=seed, dual=dual,
                          ext_exp=int(rng.integers(-40, 10)) if rng.random() < 0.3 else None,
                          mask=mask, clip_mask=clip)
    else:
        spec = OutputSpec("raw")
    return replace(job, out=spec)


def throughput_jobs(params: NibbleParams, count: int = 6) -> list:
    """``count`` GEMMs of 4T x 4T x 4T, through every training role and the raw, int,
    fp4 and dual output modes in turn, the same for every caller (one seed each): the
    bare Accelerator's cycles for them (``verif.fast_sim``) and ``nibble_axi``'s
    (:func:`verif.tb_axi.throughput`) are compared."""
    variants = [OUTPUT_VARIANTS.index(v) for v in (("raw", "-", 0), ("int", "-", 0),
                                                  ("fp4", "log", 0), ("dual", "log", 0))]
    edge = 4 * params.tile
    return [random_job(np.random.default_rng(i), params,
                       (i % len(GEMM_ROLES), variants[i % len(variants)], False),
                       shape=(edge, edge, edge)) for i in range(count)]


def edge_jobs(rng: np.random.Generator, tile: int) -> list[GemmJob]:
    """1x1x1 GEMMs (int and fp4 output), and the longest reduction the exponent buffers
    allow (2**TILE_COUNT_BITS tiles of K) at full scale and transposed."""
    t = tile
    longest = (1 << TILE_COUNT_BITS) * t
    return [
        GemmJob(quantize(rng.normal(size=(1, 1)), "uint4", tile=t),
                quantize(rng.normal(size=(1, 1)), "int4", tile=t)),
        GemmJob(quantize(rng.normal(size=(1, 1)), "fp4", tile=t),
                quantize(rng.normal(size=(1, 1)), "int4", tile=t), out=OutputSpec("fp4")),
        GemmJob(quantize(np.full((t, longest), 15.0), "uint4", tile=t),
                quantize(np.full((longest, t), -8.0), "int4", tile=t)),
        weight_grad_job(quantize(rng.normal(size=(longest, t - 1)), "uint4", tile=t),
                        quantize(rng.normal(size=(longest, 2)) * EXP_MAX, "fp4", tile=t, phase=1),
                        OutputSpec("fp4", rounding="linear")),
    ]


def backpressure_jobs(rng: np.random.Generator, params: NibbleParams) -> list[GemmJob]:
    """GEMMs whose results outrun a slow consumer: 4 x 4 output tiles of one reduction
    tile each (a tile's results every T cycles): forward raw and int, a weight gradient
    in fp4 and a backward pass through the gradient unit (both with stochastic rounding
    where the build has it), with masks where the mode takes them, so that with the
    result's ready mostly low every queue and credit pool behind the array, and the mask
    queue, fills and empties."""
    t = params.tile
    stochastic = params.stochastic
    variants = [(0, 0), (0, 1), (2, 6 if stochastic else 2), (1, 10 if stochastic else 8)]
    jobs = []
    for role, variant in variants:
        job = random_job(rng, params, (role, variant, False), shape=(4 * t, t, 4 * t))
        if job.out.mode != "raw":      # mask rows too, so the mask queue fills as well
            job = replace(job, out=replace(job.out, mask=rng.random((4 * t, 4 * t)) < 0.7))
        jobs.append(job)
    return jobs


def burst_jobs(rng: np.random.Generator, params: NibbleParams) -> list[GemmJob]:
    """GEMMs of 8 x 8 output tiles of one reduction tile in the raw, int, fp4 and dual
    modes, long enough (8T rows of 8 tiles) for a burst consumer
    (:data:`verif.fast_regress.STALL_MODES` "burst") to let the result queue and its
    credits fill and drain many times, each fill ending at another slot."""
    t = params.tile
    return [random_job(rng, params, (role, variant, False), shape=(8 * t, t, 8 * t))
            for role, variant in ((0, 0), (0, 1), (1, 2), (1, 8))]


def stochastic_jobs(rng: np.random.Generator, params: NibbleParams, count: int = 60) -> list:
    """``count`` rounds of 4 x 4-tile GEMMs (two reduction tiles) in every stochastic
    variant (fp4 at both phases, weight gradient; backward fp4 and the gradient unit):
    a one-bit error in a random word or a fraction changes a rounding decision only
    for a few elements in thousands, more than the random GEMMs hold. None without
    the stochastic hardware."""
    if not params.stochastic:
        return []
    t = params.tile
    return [random_job(rng, params, (role, variant, False), shape=(4 * t, 2 * t, 4 * t))
            for _ in range(count) for role, variant in ((2, 6), (2, 7), (1, 10), (1, 6))]


#: Stochastic variants (role index, output variant) of :func:`threshold_jobs`, in turn:
#: the gradient unit's both phases (backward and weight gradient), fp4 at each phase.
THRESHOLD_VARIANTS = ((1, 10), (2, 10), (2, 6), (1, 7), (0, 6), (0, 7))


#: Bits of the low end of a decision's operands (fraction, random integer, 3u) whose
#: flips :func:`threshold_jobs` aims to turn, on each side of the threshold.
THRESHOLD_BITS = 4


def _small_accumulators(job: GemmJob, params: NibbleParams) -> GemmJob:
    """``job`` (two reduction tiles) with A's second reduction tile all zero codes at a
    tile exponent D above the first's, D the smallest that leaves every accumulator
    below 2**10: out_exp follows the empty tile, so the accumulators are the first
    tile's partial sums, a few bits each (elements of a few bits below their leading
    one, which GEMMs whose accumulators fill acc_bits never have)."""
    axis = 0 if job.a_trans else 1
    t = params.tile
    codes, exps = job.a.codes.copy(), job.a.exps
    np.moveaxis(codes, axis, 0)[t:2 * t] = 0
    for d in range(1, EXP_MAX):
        raised = exps.copy()
        np.moveaxis(raised, axis, 0)[1] = np.minimum(np.moveaxis(exps, axis, 0)[0] + d, EXP_MAX)
        small = replace(job, a=type(job.a)(codes, raised, job.a.kind, t, job.a.phase))
        acc = tiled_gemm(small.a_op, small.b_op, acc_bits=params.acc_bits).acc
        if np.abs(acc).max() < 1 << 10:
            return small
    return job


def threshold_jobs(rng: np.random.Generator, params: NibbleParams, count: int = 120,
                   candidates: int = 1024) -> list:
    """``count`` stochastic-rounding GEMMs (4 x 4 output tiles of two reduction tiles,
    the variants of :data:`THRESHOLD_VARIANTS` in turn) whose seeds put decisions on
    their thresholds. An element of margin m (:func:`golden.formats.stochastic_margins`)
    in 1..2**b turns down when its d or x loses 2**b or its u or 3u gains it, one in
    1-2**b..0 turns up the other way: the targets are (dual mode or not, phase, column,
    b < :data:`THRESHOLD_BITS`, side), and of ``candidates`` random seeds each GEMM
    takes the one that hits the targets hit least so far (weight 1 / (1 + hits)**2).
    A random seed hits b = 0 about once in 10**5 elements (mutation analysis found the
    lanes' low fraction and 3u bits untested). None without the stochastic hardware."""
    if not params.stochastic:
        return []
    t = params.tile
    shape = (4 * t, 2 * t, 4 * t)
    hits = np.zeros((2, 2, t, THRESHOLD_BITS, 2))     # dual, phase, column, bit, side
    jobs = []
    for i in range(count):
        role, variant = THRESHOLD_VARIANTS[i % len(THRESHOLD_VARIANTS)]
        # operands of few binades and no external exponent or mask: most elements then
        # fall in the tile's stochastic range, not below it or saturating
        out = random_job(rng, params, (role, variant, False), shape=shape).out
        out = replace(out, ext_exp=None, mask=None)
        job = random_role_job(rng, GEMM_ROLES[role], shape, t, out, binades=2, zeros=0.0)
        if i % 2:
            job = _small_accumulators(job, params)
        y = tiled_gemm(job.a_op, job.b_op, acc_bits=params.acc_bits).value()
        seeds = rng.integers(0, 1 << 32, size=candidates, dtype=np.uint64)
        words = element_words(seeds, y.shape, t)
        hit = np.zeros((candidates, *hits.shape), dtype=bool)
        for phase in ((0, 1) if out.dual else (out.phase,)):
            margin = stochastic_margins(y, t, phase, phase_bits(words, phase), out.ext_exp)
            by_column = margin.reshape(candidates, -1, t)            # (seed, ..., column)
            for b in range(THRESHOLD_BITS):
                for side, (lo, hi) in enumerate(((1, 1 << b), (1 - (1 << b), 0))):
                    on = (by_column >= lo) & (by_column <= hi)
                    hit[:, int(out.dual), phase, :, b, side] = on.any(axis=1)
        best = int(np.argmax((hit / (1 + hits) ** 2).sum(axis=(1, 2, 3, 4, 5))))
        hits += hit[best]
        jobs.append(replace(job, out=replace(out, seed=int(seeds[best]))))
    return jobs


def _forward_shift(params: NibbleParams, tiles: int) -> int:
    """The left shift of a forward GEMM's partial sums into its accumulators (uint4 A,
    int4 B, ``tiles`` reduction tiles, every tile exponent 0): -out_exp by golden's rule."""
    t = params.tile
    a = QTensor(np.zeros((t, tiles * t), dtype=np.int64), np.zeros((1, tiles)), "uint4", t)
    b = QTensor(np.zeros((tiles * t, t), dtype=np.int64), np.zeros((tiles, 1)), "int4", t)
    return -int(out_exponents(a, b, params.acc_bits)[0, 0])


#: Bits of a stochastic rounding decision's operand: d (in range, against 3u) is below
#: 3 * 2**16, x (below G_0, against u) below 2**16.
OPERAND_BITS = 17

#: (dual, phase) of :func:`planted_jobs`' GEMMs: whose decisions they plant.
PLANT_SETTINGS = ((True, 0), (True, 1), (False, 0), (False, 1))

#: Binades between the reduction tiles of :func:`planted_jobs`: an accumulator is three
#: 6-bit digits X = p0 * 2**12 + p1 * 2**6 + p2 (times a power of two).
_DIGIT = 6


def _planted_operand(rng, u: int, below: bool, bit: int, side: int) -> int | None:
    """An operand value O of a decision against random integer ``u`` (x against u
    below G_0, d against 3u in range) such that flipping O's ``bit`` turns the decision:
    side 0, the bit is 1 and 0 < O - threshold <= 2**bit (clearing it turns the element
    down); side 1, the bit is 0 and -2**bit < O - threshold <= 0. None if no such O is
    a possible operand."""
    threshold, lo, hi = (u, 1, 1 << 16) if below else (3 * u, 0, 3 << 16)
    width = 1 << bit
    first = threshold + 1 if side == 0 else threshold - width + 1
    values = np.arange(max(first, lo), min(first + width, hi))
    values = values[((values >> bit) & 1) == (side == 0)]
    return int(rng.choice(values)) if len(values) else None


def planted_jobs(rng: np.random.Generator, params: NibbleParams, rounds: int = 4) -> list:
    """Stochastic-rounding GEMMs whose elements are built to decisions on a threshold of
    every operand bit: for each setting of :data:`PLANT_SETTINGS` (gradient unit at
    phase 0 or 1, fp4 at phase 0 or 1), ``rounds`` GEMMs of one row tile, T / 2 planted
    rows and 8 column tiles, whose planted element (row, lane) meets its random integer u
    (from the GEMM's seed, drawn first) with an operand value O (:func:`_planted_operand`)
    for a target (below G_0 or in range, bit 0..16, side) that the lane's elements take
    in turn (the first the element's u can meet: bit 0, e.g., needs an even u). Random seeds put a decision within 2**b of its threshold about once in
    2**(17 - b) elements, too seldom for the low bits of x below G_0 (which
    :func:`threshold_jobs`' operands rarely reach) and for a middle bit of ``frac`` in
    elements with many significant bits: mutation analysis found both unseen.

    Construction: the external tile exponent E puts an accumulator of bit length 17
    (times the shift) at r = 0, so an accumulator X (times the shift) is a decision with
    x = X below G_0 (X < 2**16) and with d = X - 2**16 in range (even r for X < 2**17,
    odd up to 2**18). X is three 6-bit digits, one per reduction tile, the tiles
    :data:`_DIGIT` binades apart: planted row s has codes 8 and 1 in reduction columns
    2s and 2s + 1 of every reduction tile, column j the digit's two octal digits there.
    None without the stochastic hardware, or when the accumulator cannot hold the
    three digits (acc_bits too small)."""
    if not params.stochastic:
        return []
    t = params.tile
    k, n = 3 * t, 8 * t
    top = _forward_shift(params, 3)
    if top < 2 * _DIGIT:
        return []
    targets = [(below, bit, side) for below in (True, False) for bit in range(OPERAND_BITS)
               for side in (0, 1)]
    rows = max(t // 2, 1)
    jobs = []
    for dual, phase in PLANT_SETTINGS:
        pending = [list(targets) for _ in range(t)]     # each lane's targets not met yet
        for _ in range(rounds):
            seed = int(rng.integers(0, 1 << 32))
            u = phase_bits(element_words(seed, (t, n), t), phase)
            a = np.zeros((t, k), dtype=np.int64)
            b = np.zeros((k, n), dtype=np.int64)
            for s in range(rows):
                a[s, 2 * s::t], a[s, 2 * s + 1::t] = 8, 1
                for j in range(n):
                    o = None                    # the lane's first target u can meet
                    for target in pending[j % t]:
                        below = target[0]
                        o = _planted_operand(rng, int(u[s, j]), *target)
                        if o is not None:
                            pending[j % t].remove(target)
                            break
                    x = 0 if o is None else o if below else o + (1 << 16)
                    digits = [x >> 2 * _DIGIT, (x >> _DIGIT) & 63, x & 63]
                    b[2 * s::t, j] = [d >> 3 for d in digits]
                    b[2 * s + 1::t, j] = [d & 7 for d in digits]
            base = int(rng.integers(-60, 61))
            a_exps = np.array([[base, base - _DIGIT, base - 2 * _DIGIT]])
            job = forward_job(QTensor(a, a_exps, "uint4", t),
                              QTensor(b, np.zeros((3, n // t)), "int4", t))
            # E with an accumulator X * 2**(top - 12) of bit length 17 at r = 0
            ext_exp = base + 4 - phase
            if dual:
                out = random_job(rng, params, (0, OUTPUT_VARIANTS.index(("dual", "stochastic", 0)),
                                               False), shape=(t, k, n)).out
                out = replace(out, mask=None, ext_exp=ext_exp, seed=seed)
            else:
                out = OutputSpec("fp4", phase=phase, rounding="stochastic", seed=seed,
                                 ext_exp=ext_exp)
            jobs.append(replace(job, out=out))
    return jobs


def queued_jobs(rng: np.random.Generator, params: NibbleParams, count: int = 12) -> list:
    """``count`` small GEMMs of random roles and output variants to run back to back,
    each command offered while the GEMM before it runs (the accelerator must hold it
    off with ``busy``; mutation analysis found a ``busy`` stuck at 0 unseen by GEMMs run
    one at a time)."""
    t = params.tile
    variants = [i for i, (_, rounding, _) in enumerate(OUTPUT_VARIANTS)
                if params.stochastic or rounding != "stochastic"]
    jobs = []
    for _ in range(count):
        shape = tuple(int(v) for v in rng.integers(1, 2 * t + 1, 3))
        target = (int(rng.integers(len(GEMM_ROLES))), int(rng.choice(variants)),
                  any(v % t for v in shape))
        jobs.append(random_job(rng, params, target, shape=shape))
    return jobs


#: The largest-magnitude element value of each kind (its top code).
KIND_EXTREMES = {"uint4": 15.0, "int4": -8.0, "fp4": 1.0}


def extreme_jobs(rng: np.random.Generator, params: NibbleParams) -> list[GemmJob]:
    """Every training role in every output variant on operands at their largest
    magnitude (every code the top one, all tiles at one exponent), once with one sign
    everywhere and once with random signs: the accumulators come within a factor of four
    of the bound the out_exp rule leaves them (2**(acc_bits - 1)), which random operands
    with their spread of tile exponents almost never do. (T, 2T, T) each; output options (clip,
    masks, seeds) as :func:`random_job` draws them."""
    t = params.tile
    jobs = []
    for role_index, role_name in enumerate(GEMM_ROLES):
        role = ROLES[role_name]
        for variant, (_, rounding, _) in enumerate(OUTPUT_VARIANTS):
            if rounding == "stochastic" and not params.stochastic:
                continue
            for signed in (False, True):
                job = random_job(rng, params, (role_index, variant, False), shape=(t, 2 * t, t))
                a_shape, b_shape = role.stored_shapes(t, 2 * t, t)
                ops = []
                for shape, kind, phase in ((a_shape, role.a_kind, role.a_phase),
                                           (b_shape, role.b_kind, role.b_phase)):
                    x = np.full(shape, KIND_EXTREMES[kind])
                    if signed and kind != "uint4":
                        x *= rng.choice([-1.0, 1.0], size=shape)
                    ops.append(quantize(x, kind, tile=t, phase=phase))
                jobs.append(replace(job, a=ops[0], b=ops[1]))
    return jobs


#: Output settings of :func:`plateau_jobs`: (mode, int kind, the planted maximum C before
#: the shift). C = qmax * 2**j, qmax = 15 (uint4) or 7 (int4): its top bit_length(qmax)
#: bits all ones and none below, where the requantizer's tile exponent turns over.
PLATEAU_OUTPUTS = (("int", "uint4", 15 << 4), ("int", "int4", 7 << 5), ("dual", None, 15 << 4))

#: The plateau's floor: two reduction columns every element shares, 15 * 7 each.
_PLATEAU_BASE = 2 * 15 * 7

#: Output row tiles (one shift each) per GEMM of :func:`plateau_jobs`.
_PLATEAU_GROUPS = 4


def plateau_jobs(rng: np.random.Generator, params: NibbleParams) -> list[GemmJob]:
    """Forward GEMMs whose output tiles are plateaus: every element within a few
    hundred of its tile's maximum C (:data:`PLATEAU_OUTPUTS`), which only one element
    (a random row, lane j of column tile j) reaches, times 2**s, one shift s per output
    row tile and every shift from 0 to the largest the out_exp rule leaves (at T <= 4,
    every shift in every lane). So the tile maxima's
    comparators see near-ties at every bit position, and the requantizer's exponent a
    maximum on the top of its range, which accumulators of random operands (a few
    significant bits at random places) almost never show: mutation analysis found a
    flipped low bit in the requantizer's and the gradient unit's max trees unseen.
    Int outputs without clip or mask; dual output (log, linear, stochastic in turn)
    with a random clip mask and no ReLU' mask.

    A's rows are [15, 15, a_i, c_i] and B's columns [7, 7, b2, d_j] in the first four
    reduction columns (the rest 0), followed by a reduction tile of zero codes whose
    exponent, above the others, sets out_exp and so the shift:
    acc_ij = (210 + b2 a_i + c_i d_j) * 2**s, largest where a_i is (its top, one row per
    row tile) and d_j = 0 (one column per column tile), near-ties along that row."""
    t = params.tile
    pattern = -(-4 // t)                    # reduction tiles that hold the pattern
    k, m, n = (pattern + 1) * t, _PLATEAU_GROUPS * t, min(t, 4) * t
    top = _forward_shift(params, pattern + 1)    # the largest shift
    shifts = list(range(top + 1))
    duals = [i for i, (mode, rounding, _) in enumerate(OUTPUT_VARIANTS)
             if mode == "dual" and (params.stochastic or rounding != "stochastic")]
    jobs = []
    for mode, kind, peak in PLATEAU_OUTPUTS:
        b2 = -(-(peak - _PLATEAU_BASE) // 15)
        a_top = (peak - _PLATEAU_BASE) // b2
        for g, first in enumerate(range(0, len(shifts), _PLATEAU_GROUPS)):
            rows = shifts[first:first + _PLATEAU_GROUPS]
            rows += [int(s) for s in rng.choice(shifts, _PLATEAU_GROUPS - len(rows))]
            a = np.zeros((m, k), dtype=np.int64)
            b = np.zeros((k, n), dtype=np.int64)
            a[:, :2], b[:2], b[2] = 15, 7, b2
            for i in range(0, m, t):
                a[i:i + t, 2] = rng.integers(0, a_top, t)
                a[i:i + t, 3] = rng.integers(0, 16, t)
                peak_row = i + int(rng.integers(t))
                a[peak_row, 2:4] = a_top, int(rng.integers(1, 4))
            lane = int(rng.integers(t))
            for j in range(0, n, t):
                b[3, j:j + t] = rng.integers(-7, 0, t)
                b[3, j + (lane + j // t) % t] = 0
            if kind != "uint4":                 # the same magnitudes, mixed signs
                b *= rng.choice([-1, 1], size=n)
            base = int(rng.integers(-20, 1))
            a_exps = np.full((_PLATEAU_GROUPS, pattern + 1), base)
            a_exps[:, -1] += [top - s for s in rows]
            job = forward_job(QTensor(a, a_exps, "uint4", t),
                              QTensor(b, np.zeros((pattern + 1, n // t)), "int4", t))
            if mode == "int":
                out = OutputSpec("int", kind=kind)
            else:
                out = random_job(rng, params, (0, duals[g % len(duals)], False),
                                 shape=(m, k, n)).out
                out = replace(out, mask=None, ext_exp=None)
            jobs.append(replace(job, out=out))
    return jobs


# ------------------------------------------------------------- output-path unit stimulus

def quantizer_tiles(rng: np.random.Generator, tile: int, acc_bits: int) -> list:
    """[(acc T x T ints, out_exp)] for the requantizer and the log4 unit: random full
    range over every bit length, plus all-zero, most-negative, rounding-threshold and
    exponent-clipping tiles."""
    t = tile
    lim = 1 << (acc_bits - 1)
    tiles = []
    for _ in range(40):
        bits = rng.integers(0, acc_bits, size=(t, t))
        acc = rng.integers(-(1 << 62), 1 << 62, size=(t, t)) >> (63 - bits)
        tiles.append((np.clip(acc, -lim, lim - 1), int(rng.integers(-300, 300))))
    tiles.append((np.zeros((t, t), dtype=np.int64), 0))                   # all zero
    one = np.zeros((t, t), dtype=np.int64)
    one[t - 1, 0] = -lim                                                    # most negative
    tiles.append((one, -40))
    # every fp4 rounding threshold and int tie around a maximum of 2**20
    near = [(1 << 20), 3 << 19, 5 << 18, (5 << 18) - 1, 1 << 8, (1 << 8) - 1, 3 << 7, 1,
            -(3 << 19), -(5 << 18), 7, 15, 23, -25, 8 << 10]
    for start in range(0, len(near), t * t):
        chunk = near[start:start + t * t] + [0] * max(0, t * t - len(near[start:]))
        tiles.append((np.array(chunk[:t * t], dtype=np.int64).reshape(t, t), -10))
    for oexp in (-500, 500, -140, 120):                                     # E clipping
        tiles.append((rng.integers(-1000, 1000, size=(t, t)), oexp))
    return tiles


def rescaler_steps(rng, tile: int, acc_bits: int, groups: int) -> list:
    """[(psum T x T ints, shift, out_exp, first, last)] for the rescaler: ``groups``
    output tiles of 1 to 4 reduction steps each, partial sums at the extremes of
    ``psum_bits`` (and small odd values), shifts from far right past every bit to the
    largest left shift ``acc_bits`` can take, so rounding and saturation both happen.
    ``rng`` is a :class:`random.Random`."""
    pb = NibbleParams(tile=tile, acc_bits=acc_bits).psum_bits
    lim = 1 << (pb - 1)
    steps = []
    for _ in range(groups):
        kt = rng.randint(1, 4)
        out_exp = rng.randint(-512, 511)
        for t in range(kt):
            psum = [[rng.choice([-lim, lim - 1, 0, 1, -1, 3, -3, rng.randint(-lim, lim - 1)])
                     for _ in range(tile)] for _ in range(tile)]
            shift = rng.choice([-1024, -pb - 3, -pb, -pb + 1, -2, -1, 0, 1, acc_bits + 1 - pb,
                                rng.randint(-pb, acc_bits + 1 - pb)])
            steps.append((psum, shift, out_exp, t == 0, t == kt - 1))
    return steps
