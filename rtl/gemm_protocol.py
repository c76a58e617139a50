"""Host side of the accelerator's streams: GEMM jobs to beats, result beats to golden
objects. The RTL tests, the cocotb testbenches and the FPGA host bridge all go through
this module, which packs with the layouts of :mod:`rtl.layouts` (the one definition).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from amaranth.lib import data

from golden.formats import QTensor
from golden.gemm import GemmResult, tiled_gemm
from golden.output import fp4_output, int_output
from golden.params import NibbleParams

from .layouts import (KIND_CODES, OUT_MODES, TILE_COUNT_BITS, command_layout,
                      operand_row_layout, result_layout)

__all__ = ["OutputSpec", "GemmJob", "GemmOutput", "GemmBeats", "encode", "decode", "expected"]


@dataclass(frozen=True)
class OutputSpec:
    """What the output stage returns.

    Parameters
    ----------
    mode : {"raw", "int", "fp4"}
    kind : {"int4", "uint4"}
        int mode's kind.
    clip : (int, int) or None
        int mode, uint4: PACT threshold (mant, exp).
    mask : array or None
        int or fp4 mode: ReLU' mask, shape of the result (0 zeroes the element).
    phase, rounding, ext_exp
        fp4 mode: TPR phase, "log" or "linear", external exponent or None.
    """

    mode: str = "raw"
    kind: str = "int4"
    clip: tuple | None = None
    mask: np.ndarray | None = None
    phase: int = 0
    rounding: str = "log"
    ext_exp: int | None = None

    def __post_init__(self):
        if self.mode not in OUT_MODES:
            raise ValueError(f"output mode must be one of {', '.join(OUT_MODES)}, got {self.mode!r}")


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
    """What a GEMM returns: raw accumulators or codes, and the saturation flag."""

    raw: GemmResult | None
    codes: QTensor | None
    saturated: bool


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


def check_job(job: GemmJob, params: NibbleParams) -> None:
    """Raise ValueError unless the hardware can run ``job`` with ``params``."""
    a, b = job.a_op, job.b_op
    if a.tile != params.tile or b.tile != params.tile:
        raise ValueError(f"operand tiles {a.tile}, {b.tile} differ from the array's {params.tile}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: A is {a.shape}, B is {b.shape}")
    if a.kind == "fp4" and b.kind == "fp4":
        raise ValueError("at most one operand may be fp4")
    if max(job.tiles) > 1 << TILE_COUNT_BITS:
        raise ValueError(f"at most {1 << TILE_COUNT_BITS} tiles per dimension, got {job.tiles}")


def expected(job: GemmJob, params: NibbleParams) -> GemmOutput:
    """The golden result of ``job``."""
    check_job(job, params)
    raw = tiled_gemm(job.a_op, job.b_op, acc_bits=params.acc_bits)
    out = job.out
    if out.mode == "raw":
        return GemmOutput(raw, None, raw.saturated)
    if out.mode == "int":
        codes = int_output(raw, out.kind, clip=out.clip, mask=out.mask)
    else:
        codes = fp4_output(raw, phase=out.phase, rounding=out.rounding, exps=out.ext_exp,
                           mask=out.mask)
    return GemmOutput(None, codes, raw.saturated)


def _padded_codes(q: QTensor) -> np.ndarray:
    """4-bit code patterns of ``q``, zero-padded to whole tiles."""
    t = q.tile
    rows, cols = q.exps.shape
    out = np.zeros((rows * t, cols * t), dtype=np.int64)
    out[: q.shape[0], : q.shape[1]] = q.codes.astype(np.int64) & 0xF
    return out


def _pack_rows(tile_codes: np.ndarray, layout) -> list:
    return [layout.const([int(c) for c in row]).as_value().value for row in tile_codes]


def encode(job: GemmJob, params: NibbleParams) -> GemmBeats:
    """Pack ``job`` into stream beats in the order of :mod:`rtl.layouts`."""
    check_job(job, params)
    T = params.tile
    mt, kt, nt = job.tiles
    a_op, b_op, out = job.a_op, job.b_op, job.out
    cmd = command_layout().const({
        "m_last": mt - 1, "k_last": kt - 1, "n_last": nt - 1,
        "a_kind": KIND_CODES[a_op.kind], "b_kind": KIND_CODES[b_op.kind],
        "a_phase": a_op.phase, "b_phase": b_op.phase,
        "a_trans": int(job.a_trans), "b_trans": int(job.b_trans),
        "out_mode": OUT_MODES[out.mode],
        "out_unsigned": int(out.mode == "int" and out.kind == "uint4"),
        "clip_en": int(out.clip is not None),
        "clip_mant": out.clip[0] if out.clip else 0,
        "clip_exp": out.clip[1] if out.clip else 0,
        "mask_en": int(out.mode != "raw" and out.mask is not None),
        "out_phase": out.phase, "out_linear": int(out.rounding == "linear"),
        "ext_exp_en": int(out.ext_exp is not None),
        "ext_exp": 0 if out.ext_exp is None else int(out.ext_exp),
    }).as_value().value

    row_layout = operand_row_layout(params)
    a_store, b_store = _padded_codes(job.a), _padded_codes(job.b)
    tile_of = lambda x, r, c: x[r * T:(r + 1) * T, c * T:(c + 1) * T]
    a_codes, a_exps, b_codes, b_exps = [], [], [], []
    for i in range(mt):
        for j in range(nt):
            for t in range(kt):
                a_exps.append(int(a_op.exps[i, t]))
                b_exps.append(int(b_op.exps[t, j]))
                a_codes += _pack_rows(tile_of(a_store, t, i) if job.a_trans
                                      else tile_of(a_store, i, t), row_layout)
                b_codes += _pack_rows(tile_of(b_store, j, t) if job.b_trans
                                      else tile_of(b_store, t, j), row_layout)
    mask = []
    if out.mode != "raw" and out.mask is not None:
        padded = np.zeros((mt * T, nt * T), dtype=np.int64)
        m, _, n = job.shape
        padded[:m, :n] = np.asarray(out.mask).astype(bool)
        for i in range(mt):
            for j in range(nt):
                mask += [int(sum(int(bit) << c for c, bit in enumerate(row)))
                         for row in tile_of(padded, i, j)]
    return GemmBeats(cmd, a_codes, a_exps, b_codes, b_exps, mask, mt * nt * T)


def decode(job: GemmJob, params: NibbleParams, beats: list) -> GemmOutput:
    """Unpack the result beats of ``job`` (packed integers) into golden objects."""
    T, acc_bits = params.tile, params.acc_bits
    mt, _, nt = job.tiles
    if len(beats) != mt * nt * T:
        raise ValueError(f"expected {mt * nt * T} result beats, got {len(beats)}")
    layout = result_layout(params)
    values = np.zeros((mt * T, nt * T), dtype=np.int64)
    exps = np.zeros((mt, nt), dtype=np.int64)
    saturated = False
    for n_beat, word in enumerate(beats):
        beat = data.Const(layout, word)
        i, rest = divmod(n_beat, nt * T)
        j, r = divmod(rest, T)
        exps[i, j] = beat.exp
        bits = int(beat.data)
        if job.out.mode == "raw":
            width = acc_bits
        else:
            width = 4
        row = [(bits >> (c * width)) & ((1 << width) - 1) for c in range(T)]
        values[i * T + r, j * T:(j + 1) * T] = row
        saturated = bool(beat.saturated)
        if beat.last != (n_beat == len(beats) - 1):
            raise ValueError(f"result beat {n_beat}: 'last' flag is {beat.last}")
    m, _, n = job.shape
    values = values[:m, :n]
    out = job.out
    if out.mode == "raw":
        acc = np.where(values >= 1 << (acc_bits - 1), values - (1 << acc_bits), values)
        return GemmOutput(GemmResult(acc, exps, saturated, T, acc_bits), None, saturated)
    if out.mode == "int":
        codes = np.where(values >= 8, values - 16, values) if out.kind == "int4" else values
        return GemmOutput(None, QTensor(codes, exps, out.kind, T), saturated)
    return GemmOutput(None, QTensor(values, exps, "fp4", T, out.phase), saturated)
