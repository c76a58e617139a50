"""Host side of the accelerator's streams: GEMM jobs to beats, result beats to golden
objects. The RTL tests, the cocotb testbenches, training's backends and the board driver
all go through this module, which packs with the beat descriptions of
:mod:`wire.streams` (the one definition; the gateware's layouts are built from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden.formats import ROUNDINGS, QTensor
from golden.gemm import GemmResult, check_kind_pair, tiled_gemm
from golden.output import (FusedLog4, alpha_sum_bits, clip_alpha, log4_quantize,
                           log4_quantize_fused, requantize)
from golden.xorshift import check_seed
from golden.params import EXP_MAX, EXP_MIN
from golden.params import NibbleParams

from .streams import (CODE_BITS, COMMAND, KIND_CODES, OUT_MODES, TILE_COUNT_BITS, operand_row,
                      result, tile_result_beats)

__all__ = ["OutputSpec", "GemmJob", "GemmOutput", "GemmBeats", "encode", "decode", "expected",
           "result_words"]


@dataclass(frozen=True)
class OutputSpec:
    """What the output stage returns.

    Parameters
    ----------
    mode : {"raw", "int", "fp4"}
    kind : {"int4", "uint4"}
        int mode's kind.
    clip : (int, int) or None
        int mode, uint4: PACT threshold (mant 0..255, exp -128..127).
    mask : array or None
        int or fp4 mode: ReLU' mask, shape of the result (0 zeroes the element).
    phase, rounding, ext_exp
        fp4 mode: TPR phase, "log", "linear" or "stochastic", external exponent
        (-128..127) or None.
    dual : bool
        fp4 mode: the gradient unit (:func:`golden.output.log4_quantize_fused`): both
        TPR phases from one accumulation (``phase`` must stay 0), each tile's alpha
        partial and largest magnitude; the result is :attr:`GemmOutput.fused`.
    clip_mask : array or None
        dual mode: the elements PACT clipped, whose accumulators the alpha partial sums.
    seed : int or None
        ``rounding="stochastic"`` only, and required there: the generator seed
        (0..2**32-1, :mod:`golden.xorshift`).

    An option the mode does not use (a clip on int4 or outside int mode, a mask in raw
    mode, an fp4 option outside fp4 mode) is a ``ValueError``, not silently dropped: the
    command would carry it to hardware that ignores it. ``dual`` and ``seed`` travel in
    the command's ``out_dual``, ``out_stochastic`` and ``seed`` fields, ``clip_mask`` in
    the mask beats' ``clip_mask`` half (:mod:`wire.streams`).
    """

    mode: str = "raw"
    kind: str = "int4"
    clip: tuple | None = None
    mask: np.ndarray | None = None
    phase: int = 0
    rounding: str = "log"
    ext_exp: int | None = None
    dual: bool = False
    clip_mask: np.ndarray | None = None
    seed: int | None = None

    def __post_init__(self):
        if self.mode not in OUT_MODES:
            raise ValueError(f"output mode must be one of {', '.join(OUT_MODES)}, got {self.mode!r}")
        if self.kind not in ("int4", "uint4"):
            raise ValueError(f"int output kind must be int4 or uint4, got {self.kind!r}")
        if self.clip is not None:
            if (self.mode, self.kind) != ("int", "uint4"):
                raise ValueError("a PACT clip applies to int mode with uint4 output only")
            clip_alpha(*self.clip)                       # mant 0..255, exp -128..127
        if self.mask is not None and self.mode == "raw":
            raise ValueError("a mask applies to int and fp4 output only, not raw")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {', '.join(ROUNDINGS)}, got {self.rounding!r}")
        if isinstance(self.phase, bool) or self.phase not in (0, 1):
            raise ValueError(f"phase must be 0 or 1, got {self.phase!r}")
        if self.mode != "fp4" and (self.phase, self.rounding, self.ext_exp) != (0, "log", None):
            raise ValueError("phase, rounding and ext_exp apply to fp4 output only")
        if self.ext_exp is not None and not (
                isinstance(self.ext_exp, (int, np.integer)) and not isinstance(self.ext_exp, bool)
                and EXP_MIN <= self.ext_exp <= EXP_MAX):
            raise ValueError(f"ext_exp must be an integer in {EXP_MIN}..{EXP_MAX}, got {self.ext_exp!r}")
        if not isinstance(self.dual, bool):
            raise ValueError(f"dual must be True or False, got {self.dual!r}")
        if self.dual and (self.mode != "fp4" or self.phase):
            raise ValueError("dual output is fp4 mode's, with phase 0 (it emits both phases)")
        if self.clip_mask is not None and not self.dual:
            raise ValueError("a clip_mask (the alpha partial's) applies to dual fp4 output only")
        if self.rounding == "stochastic":
            if self.seed is None:
                raise ValueError("stochastic rounding needs a seed (0..2**32-1)")
            check_seed(self.seed)
        elif self.seed is not None:
            raise ValueError(f"a seed applies to rounding='stochastic' only, not {self.rounding!r}")


@dataclass(frozen=True)
class GemmJob:
    """C = A . B where A is ``a`` (or ``a.T`` if ``a_trans``) and B is ``b`` (or ``b.T``).

    ``a`` and ``b`` are the operands as the host stores them; a transposed operand is
    streamed as stored and read column-wise by the hardware.
    """

    a: QTensor
    b: QTensor
    a_trans: bool = False
    b_trans: bool = False
    out: OutputSpec = field(default_factory=OutputSpec)

    @property
    def a_op(self) -> QTensor:
        return self.a.T if self.a_trans else self.a

    @property
    def b_op(self) -> QTensor:
        return self.b.T if self.b_trans else self.b

    @property
    def tiles(self):
        """(Mt, Kt, Nt)."""
        mt, kt = self.a_op.exps.shape
        return mt, kt, self.b_op.exps.shape[1]

    @property
    def shape(self):
        """(M, K, N)."""
        return self.a_op.shape[0], self.a_op.shape[1], self.b_op.shape[1]


@dataclass
class GemmOutput:
    """What a GEMM returns: raw accumulators or codes (or, in dual fp4 mode, the
    gradient unit's :class:`golden.output.FusedLog4` in ``fused``), and the saturation
    flag."""

    raw: GemmResult | None
    codes: QTensor | None
    saturated: bool
    fused: FusedLog4 | None = None


@dataclass
class GemmBeats:
    """Every stream's beats for one GEMM, as packed integers."""

    cmd: int
    a_codes: list
    a_exps: list
    b_codes: list
    b_exps: list
    mask: list
    result_beats: int

    #: The Accelerator's input streams, in port-name order.
    INPUTS = ("cmd", "a_codes", "a_exps", "b_codes", "b_exps", "mask")

    def inputs(self) -> dict:
        """Beats per input stream: {port name: [packed beat, ...]}."""
        return {"cmd": [self.cmd], "a_codes": self.a_codes, "a_exps": self.a_exps,
                "b_codes": self.b_codes, "b_exps": self.b_exps, "mask": self.mask}


def check_job(job: GemmJob, params: NibbleParams, *, study: bool = False) -> None:
    """Raise a one-line ValueError unless the hardware can run ``job`` with ``params``:
    so no illegal command (:func:`rtl.layouts.command_is_legal`; :data:`wire.streams.COMMAND`)
    is ever built.
    ``study=True`` (golden only, :func:`expected`) also lets the study kind fp4r2 pass,
    which the hardware has no code for."""
    a, b = job.a_op, job.b_op
    if a.tile != params.tile or b.tile != params.tile:
        raise ValueError(f"operand tiles {a.tile}, {b.tile} differ from the array's {params.tile}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: A is {a.shape}, B is {b.shape}")
    for name, q in (("A", a), ("B", b)):
        if q.kind not in KIND_CODES and not (study and q.kind == "fp4r2"):
            raise ValueError(f"{name} is {q.kind}, a kind the hardware does not implement "
                             f"(it has {', '.join(KIND_CODES)})")
    check_kind_pair(a.kind, b.kind)
    if max(job.tiles) > 1 << TILE_COUNT_BITS:
        raise ValueError(f"at most {1 << TILE_COUNT_BITS} tiles per dimension, got {job.tiles}")
    for name in ("mask", "clip_mask"):
        mask = getattr(job.out, name)
        if mask is not None and np.shape(mask) != (a.shape[0], b.shape[1]):
            raise ValueError(f"{name} shape {np.shape(mask)} differs from the result's "
                             f"{(a.shape[0], b.shape[1])}")
    if job.out.rounding == "stochastic" and not params.stochastic and not study:
        raise ValueError("stochastic rounding asked of hardware built without it "
                         "(NibbleParams.stochastic = False)")


def expected(job: GemmJob, params: NibbleParams) -> GemmOutput:
    """The golden result of ``job`` (which may use the study kind fp4r2)."""
    check_job(job, params, study=True)
    raw = tiled_gemm(job.a_op, job.b_op, acc_bits=params.acc_bits)
    out = job.out
    if out.mode == "raw":
        return GemmOutput(raw, None, raw.saturated)
    if out.mode == "int":
        codes = requantize(raw, out.kind, clip=out.clip, mask=out.mask)
    elif out.dual:
        fused = log4_quantize_fused(raw, rounding=out.rounding, exps=out.ext_exp,
                                    mask=out.mask, clip_mask=out.clip_mask, seed=out.seed)
        return GemmOutput(None, None, raw.saturated, fused)
    else:
        codes = log4_quantize(raw, phase=out.phase, rounding=out.rounding, exps=out.ext_exp,
                              mask=out.mask, seed=out.seed)
    return GemmOutput(None, codes, raw.saturated)


def _padded_codes(q: QTensor) -> np.ndarray:
    """4-bit code patterns of ``q``, zero-padded to whole tiles."""
    t = q.tile
    rows, cols = q.exps.shape
    out = np.zeros((rows * t, cols * t), dtype=np.int64)
    out[: q.shape[0], : q.shape[1]] = q.codes.astype(np.int64) & 0xF
    return out


def _pack(fields: np.ndarray, width: int) -> np.ndarray:
    """Pack the last axis of ``fields`` (unsigned, each < 2**width) into one integer,
    element 0 in the least significant bits, as an ArrayLayout constant would.

    Returns uint64 when the packed word fits, else Python ints (object array). NumPy
    instead of one packed word per row: encode is on the fast simulator's hot path.
    """
    n = fields.shape[-1]
    per_word = 64 // width
    words = []
    for lo in range(0, n, per_word):
        chunk = fields[..., lo:lo + per_word].astype(np.uint64)
        shifts = np.arange(chunk.shape[-1], dtype=np.uint64) * np.uint64(width)
        # disjoint bit fields: the sum is their OR
        words.append((chunk << shifts).sum(axis=-1, dtype=np.uint64))
    if len(words) == 1:
        return words[0]
    packed = words[0].astype(object)
    for k, word in enumerate(words[1:], 1):
        packed = packed | (word.astype(object) << (64 * k))
    return packed


def _tile_rows(q: QTensor, row) -> np.ndarray:
    """Every stored tile of ``q`` as packed ``row`` (an :class:`~wire.streams.Array`)
    beats: [tile row, tile col, row]."""
    t = q.tile
    rows, cols = q.exps.shape
    codes = _padded_codes(q).reshape(rows, t, cols, t)
    return _pack(codes, row.elem_width).transpose(0, 2, 1)


def encode(job: GemmJob, params: NibbleParams) -> GemmBeats:
    """Pack ``job`` into stream beats in the order of :mod:`wire.streams`."""
    check_job(job, params)
    T = params.tile
    mt, kt, nt = job.tiles
    a_op, b_op, out = job.a_op, job.b_op, job.out
    cmd = COMMAND.pack({
        "m_last": mt - 1, "k_last": kt - 1, "n_last": nt - 1,
        "a_kind": KIND_CODES[a_op.kind], "b_kind": KIND_CODES[b_op.kind],
        "a_phase": a_op.phase, "b_phase": b_op.phase,
        "a_trans": int(job.a_trans), "b_trans": int(job.b_trans),
        "out_mode": OUT_MODES[out.mode],
        "out_unsigned": int(out.mode == "int" and out.kind == "uint4"),
        "clip_en": int(out.clip is not None),
        "clip_mant": out.clip[0] if out.clip else 0,
        "clip_exp": out.clip[1] if out.clip else 0,
        "mask_en": int(_mask_en(out)),
        "out_phase": out.phase, "out_linear": int(out.rounding == "linear"),
        "ext_exp_en": int(out.ext_exp is not None),
        "ext_exp": 0 if out.ext_exp is None else int(out.ext_exp),
        "out_dual": int(out.dual), "out_stochastic": int(out.rounding == "stochastic"),
        "seed": 0 if out.seed is None else int(out.seed),
    })

    # Beat order: output tile (i, j), i outer, then reduction tile t, then tile row.
    # a_rows[i, t] is the stored A tile (i, t), or (t, i) if A is streamed transposed;
    # b_rows[j, t] is the stored B tile (t, j), or (j, t) if transposed.
    row = operand_row(params)
    a_rows = _tile_rows(job.a, row)
    a_rows = a_rows.transpose(1, 0, 2) if job.a_trans else a_rows
    b_rows = _tile_rows(job.b, row)
    b_rows = b_rows if job.b_trans else b_rows.transpose(1, 0, 2)
    shape = (mt, nt, kt, T)
    a_codes = np.broadcast_to(a_rows[:, None], shape).ravel().tolist()
    b_codes = np.broadcast_to(b_rows[None], shape).ravel().tolist()
    a_exps = np.asarray(a_op.exps, np.int64)[:, None, :]
    b_exps = np.asarray(b_op.exps, np.int64).T[None]
    a_exps = np.broadcast_to(a_exps, shape[:3]).ravel().tolist()
    b_exps = np.broadcast_to(b_exps, shape[:3]).ravel().tolist()
    return GemmBeats(cmd, a_codes, a_exps, b_codes, b_exps, _mask_beats(job, params),
                     mt * nt * tile_result_beats(params, out.dual))


def _mask_en(out: OutputSpec) -> bool:
    """Whether the GEMM takes mask beats: a ReLU' mask, or dual mode's clip mask."""
    return out.mode != "raw" and (out.mask is not None or out.clip_mask is not None)


def _mask_beats(job: GemmJob, params: NibbleParams) -> list:
    """The :func:`~wire.streams.mask_row` beats of ``job`` (none without mask_en): the
    ReLU' mask (all ones if only a clip mask is given) and the clip mask (zeros if none),
    padding bits zero."""
    out = job.out
    if not _mask_en(out):
        return []
    T = params.tile
    mt, _, nt = job.tiles
    m, _, n = job.shape
    halves = []
    for bits, fill in ((out.mask, True), (out.clip_mask, False)):
        padded = np.zeros((mt * T, nt * T), dtype=np.int64)
        padded[:m, :n] = fill if bits is None else np.asarray(bits).astype(bool)
        halves.append(_pack(padded.reshape(mt, T, nt, T), 1).transpose(0, 2, 1).ravel())
    # mask in the low T bits, clip_mask above it; T <= 64, so 2T bits may exceed uint64
    return [int(lo) | int(hi) << T for lo, hi in zip(*halves)]


def _field_values(bits: np.ndarray, field) -> np.ndarray:
    """Integer value (unsigned) of one :class:`~wire.streams.Field` in every row of a bit
    matrix."""
    width = field.width
    return bits[:, field.offset:field.offset + width].astype(np.int64) @ (
        np.int64(1) << np.arange(width, dtype=np.int64))


def _signed(values: np.ndarray, width: int) -> np.ndarray:
    """Unsigned ``width``-bit patterns as two's-complement values."""
    return np.where(values >= 1 << (width - 1), values - (1 << width), values)


def _beat_bits(params: NibbleParams, beats: list) -> tuple:
    """(layout, bits): the result beats as a (beats x bits) matrix of 0/1, checked to fit
    and to carry ``last`` on the final beat only."""
    layout = result(params)
    nbytes = (layout.size + 7) // 8
    # All beats at once as a (beats x bits) matrix instead of one Const per beat.
    try:
        raw = b"".join(int(word).to_bytes(nbytes, "little") for word in beats)
    except OverflowError:
        raise ValueError(f"a result beat does not fit in {layout.size} bits") from None
    bits = np.unpackbits(np.frombuffer(raw, np.uint8).reshape(len(beats), nbytes),
                         axis=1, bitorder="little")
    if bits[:, layout.size:].any():
        raise ValueError(f"a result beat does not fit in {layout.size} bits")
    last = bits[:, layout["last"].offset]
    bad = np.flatnonzero(last != (np.arange(len(beats)) == len(beats) - 1))
    if len(bad):
        raise ValueError(f"result beat {bad[0]}: 'last' flag is {last[bad[0]]}")
    return layout, bits


def _elements(bits: np.ndarray, tile: int, width: int) -> np.ndarray:
    """The T ``width``-bit unsigned elements at the bottom of each beat's ``data``."""
    elems = bits[:, :tile * width].reshape(len(bits), tile, width).astype(np.int64)
    return elems @ (np.int64(1) << np.arange(width, dtype=np.int64))


def _tile_exps(rows: np.ndarray, exp_field, mt: int, nt: int, T: int) -> np.ndarray:
    """The (Mt, Nt) tile exponents of ``rows`` (bit matrix, T rows per tile, tiles in
    stream order), checked to be the same on every row of a tile, as
    :mod:`wire.streams` has it (every beat of a tile repeats its exponent)."""
    exps = _field_values(rows, exp_field).reshape(mt, nt, T)
    bad = np.argwhere(exps != exps[:, :, -1:])
    if len(bad):
        i, j, row = bad[0]
        raise ValueError(f"tile ({i}, {j}): row {row} carries exp "
                         f"{_signed(exps[i, j, row], exp_field.width)}, the tile's last row "
                         f"{_signed(exps[i, j, -1], exp_field.width)}")
    return _signed(exps[:, :, -1], exp_field.width)


def decode(job: GemmJob, params: NibbleParams, beats: list) -> GemmOutput:
    """Unpack the result beats of ``job`` (packed integers) into golden objects."""
    T, acc_bits = params.tile, params.acc_bits
    mt, _, nt = job.tiles
    per_tile = tile_result_beats(params, job.out.dual)
    if len(beats) != mt * nt * per_tile:
        raise ValueError(f"expected {mt * nt * per_tile} result beats, got {len(beats)}")
    layout, bits = _beat_bits(params, beats)
    exp_field = layout["exp"]
    saturated = bool(bits[-1, layout["saturated"].offset])
    m, _, n = job.shape
    out = job.out
    if out.dual:
        return _decode_dual(job, params, bits.reshape(mt, nt, per_tile, -1), layout, saturated)
    width = acc_bits if out.mode == "raw" else CODE_BITS
    rows = _elements(bits, T, width)
    values = rows.reshape(mt, nt, T, T).transpose(0, 2, 1, 3).reshape(mt * T, nt * T)
    exps = _tile_exps(bits, exp_field, mt, nt, T)
    values = values[:m, :n]
    if out.mode == "raw":
        acc = _signed(values, acc_bits)
        return GemmOutput(GemmResult(acc, exps, saturated, T, acc_bits), None, saturated)
    if out.mode == "int":
        codes = _signed(values, CODE_BITS) if out.kind == "int4" else values
        return GemmOutput(None, QTensor(codes, exps, out.kind, T), saturated)
    return GemmOutput(None, QTensor(values, exps, "fp4", T, out.phase), saturated)


def _decode_dual(job: GemmJob, params: NibbleParams, bits: np.ndarray, layout,
                 saturated: bool) -> GemmOutput:
    """Dual fp4 mode's beats, ``bits`` shaped (Mt, Nt, T + 2, beat bits): the code
    rows of both phases, the alpha beat and the maximum beat of every tile (:mod:`wire.streams`)."""
    T, acc_bits = params.tile, params.acc_bits
    mt, nt = bits.shape[:2]
    m, _, n = job.shape
    exp_field = layout["exp"]
    rows = bits[:, :, :T].reshape(mt * nt * T, -1)
    exps = _tile_exps(rows, exp_field, mt, nt, T)
    codes = []
    for p in (0, 1):           # phase 0 in the low 4T bits, phase 1 in the next 4T
        half = _elements(rows[:, p * T * CODE_BITS:], T, CODE_BITS)
        half = half.reshape(mt, nt, T, T).transpose(0, 2, 1, 3).reshape(mt * T, nt * T)
        codes.append(QTensor(half[:m, :n], exps, "fp4", T, p))
    summary = bits[:, :, T:].reshape(mt * nt * 2, -1)
    out_exps = _signed(_field_values(summary, exp_field), exp_field.width).reshape(mt, nt, 2)
    alpha_bits = alpha_sum_bits(T, acc_bits)
    alpha_rows, max_rows = summary[0::2], summary[1::2]
    # the alpha partial may be wider than 64 bits (T = 64, acc_bits = 53): Python ints
    alpha = [int("".join(map(str, row[alpha_bits - 1::-1])), 2) for row in alpha_rows]
    alpha = np.array([a - (1 << alpha_bits) if a >> (alpha_bits - 1) else a for a in alpha],
                     dtype=object if alpha_bits > 64 else np.int64).reshape(mt, nt)
    tile_max = _elements(max_rows, 1, acc_bits).reshape(mt, nt)
    if (out_exps[..., 0] != out_exps[..., 1]).any():
        raise ValueError("a tile's alpha and maximum beats carry different out_exps")
    return GemmOutput(None, None, saturated,
                      FusedLog4(codes[0], codes[1], alpha, tile_max, out_exps[..., 0]))


def result_words(job: GemmJob, params: NibbleParams, output: GemmOutput) -> list:
    """The result beats (packed integers) the accelerator sends for ``output`` of ``job``
    (golden's :func:`expected`, say), in the order and format of :mod:`wire.streams`:
    the inverse of :func:`decode`, for stand-ins of the hardware (tests, fakes)."""
    T, acc_bits = params.tile, params.acc_bits
    mt, _, nt = job.tiles
    layout = result(params)

    def padded(values, width):
        grid = np.zeros((mt * T, nt * T), dtype=object)
        grid[:values.shape[0], :values.shape[1]] = np.asarray(values).astype(object)
        return grid & ((1 << width) - 1)

    def row(grids, i, j, r, width):
        """Row r of tile (i, j) of each grid, side by side, ``width`` bits an element."""
        elems = [g[i * T + r, j * T + c] for g in grids for c in range(T)]
        return sum(int(e) << (width * k) for k, e in enumerate(elems))

    out = job.out
    if out.mode == "raw":
        grids, width, exps = [padded(output.raw.acc, acc_bits)], acc_bits, output.raw.out_exps
    elif out.dual:
        f = output.fused
        grids = [padded(f.phase(p).codes, CODE_BITS) for p in (0, 1)]
        width, exps = CODE_BITS, f.phase0.exps
    else:
        grids, width, exps = [padded(output.codes.codes, CODE_BITS)], CODE_BITS, output.codes.exps
    words = []
    for i in range(mt):
        for j in range(nt):
            beats = [(row(grids, i, j, r, width), int(exps[i, j])) for r in range(T)]
            if out.dual:
                f, alpha_bits = output.fused, alpha_sum_bits(T, acc_bits)
                out_exp = int(f.out_exps[i, j])
                beats += [(int(f.alpha_sums[i, j]) & ((1 << alpha_bits) - 1), out_exp),
                          (int(f.tile_max[i, j]), out_exp)]
            words += [{"data": d, "exp": e, "saturated": int(output.saturated), "last": 0}
                      for d, e in beats]
    words[-1]["last"] = 1
    return [layout.pack(w) for w in words]
