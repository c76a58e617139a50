"""Compare an accelerator's output with golden's: expected values always come from
golden, never from a copy of its rules.

* :func:`first_mismatch` describes the first differing value of a GEMM; used by the
  cocotb benches, the fast harness's users and the training backends, so a mismatch
  reads the same everywhere: which value, where, both values, and the operands.
* :class:`Scoreboard` checks GEMMs against :func:`wire.gemm_protocol.expected` and keeps
  the statistics of what it checked (``stats.json`` for ``nibble regress``).
* :func:`tile_result` hands one tile of accumulators to golden's output stages
  (:func:`golden.output.requantize`, :func:`golden.output.log4_quantize`), for the
  benches and tests of the requantizer and the log4 unit; :func:`rescaled` is golden's
  accumulation step on given partial sums, for the rescaler's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from golden.gemm import GemmResult, shift_round_half_even
from golden.params import ACC_BITS_MAX, NibbleParams
from wire.gemm_protocol import GemmJob, GemmOutput, expected

from .coverage import coverage_bin

__all__ = ["first_mismatch", "Scoreboard", "STATS_FILE", "tile_result", "rescaled"]

#: The file a simulation run's scoreboards add their statistics to (in the run directory).
STATS_FILE = "stats.json"


def first_mismatch(job: GemmJob, got: GemmOutput, want: GemmOutput) -> str | None:
    """None if ``got`` equals ``want`` bit for bit, else a one-paragraph report."""
    t = job.a_op.tile
    if job.out.mode == "raw":
        pairs = [("acc", got.raw.acc, want.raw.acc), ("out_exp", got.raw.out_exps, want.raw.out_exps)]
    elif job.out.dual:
        g, w = got.fused, want.fused
        pairs = [("phase-0 code", g.phase0.codes, w.phase0.codes),
                 ("phase-1 code", g.phase1.codes, w.phase1.codes),
                 ("exp", g.phase0.exps, w.phase0.exps), ("exp", g.phase1.exps, w.phase1.exps),
                 ("alpha partial", g.alpha_sums, w.alpha_sums),
                 ("tile max", g.tile_max, w.tile_max), ("out_exp", g.out_exps, w.out_exps)]
    else:
        pairs = [("code", got.codes.codes, want.codes.codes), ("exp", got.codes.exps, want.codes.exps)]
    what = (f"{job.a_op.kind}{'^T' if job.a_trans else ''} x "
            f"{job.b_op.kind}{'^T' if job.b_trans else ''} -> {job.out.mode}"
            f"{' dual' if job.out.dual else ''}, shape {job.shape}")
    for name, g, w in pairs:
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return f"{what}: {name} shape RTL {g.shape}, golden {w.shape}"
        bad = np.argwhere(g != w)
        if len(bad):
            r, c = (int(v) for v in bad[0])
            per_tile = name in ("exp", "out_exp", "alpha partial", "tile max")
            row = r * (t if per_tile else 1)
            return (f"{what}: first {name} mismatch at [{r}, {c}]: RTL {g[r, c]}, golden "
                    f"{w[r, c]}; {len(bad)} mismatches; A row {row} codes "
                    f"{job.a_op.codes[row].tolist()}")
    if got.saturated != want.saturated:
        return f"{what}: saturated flag RTL {got.saturated}, golden {want.saturated}"
    return None


class Scoreboard:
    """Checks GEMMs against golden and counts what it checked.

    Attributes
    ----------
    counts : dict
        ``gemms`` and ``macs`` checked, ``coverage`` (GEMMs per bin of
        :mod:`verif.coverage`), and the ``cycles`` and wall ``seconds`` the driver
        reports through :meth:`add_time`.

    With ``path``, every check adds what was counted since the previous one into that
    JSON file (with ``info``, e.g. the seed and tile), so the tests of one simulation
    run add up in one file; :func:`verif.runner.run` removes it before a run.
    """

    def __init__(self, params: NibbleParams, path: str | Path | None = None,
                 info: dict | None = None):
        self.params = params
        self.path = None if path is None else Path(path)
        self.info = dict(info or {})
        self.counts = self._zero()
        self._unwritten = self._zero()

    @staticmethod
    def _zero() -> dict:
        return {"gemms": 0, "macs": 0, "cycles": 0, "seconds": 0.0, "coverage": {}}

    def _add(self, key, value) -> None:
        for counts in (self.counts, self._unwritten):
            counts[key] += value

    def add_time(self, cycles: int, seconds: float) -> None:
        """Simulated clock cycles and wall seconds spent on one GEMM."""
        self._add("cycles", int(cycles))
        self._add("seconds", float(seconds))

    def check(self, job: GemmJob, got: GemmOutput, index: int, stalled: bool = True) -> None:
        """Compare with golden; raise with the first mismatch's coordinates and operands,
        else count the GEMM (``stalled``: whether its streams stalled, a coverage axis)."""
        report = first_mismatch(job, got, expected(job, self.params))
        if report:
            raise AssertionError(f"GEMM {index}: {report}")
        m, k, n = job.shape
        self._add("gemms", 1)
        self._add("macs", m * k * n)
        key = coverage_bin(job, self.params.tile, stalled)
        for counts in (self.counts, self._unwritten):
            counts["coverage"][key] = counts["coverage"].get(key, 0) + 1
        if self.path is not None:
            self.write()

    def write(self) -> None:
        """Add what was counted since the last write into :attr:`path`."""
        total = json.loads(self.path.read_text()) if self.path.exists() else {}
        for key, value in self._unwritten.items():
            if key == "coverage":
                bins = total.setdefault("coverage", {})
                for name, count in value.items():
                    bins[name] = bins.get(name, 0) + count
            else:
                total[key] = total.get(key, 0) + value
        self.path.write_text(json.dumps({**total, **self.info}))
        self._unwritten = self._zero()


def tile_result(acc, out_exp: int, *, tile: int | None = None,
                acc_bits: int = ACC_BITS_MAX) -> GemmResult:
    """One output tile of accumulators ``acc`` (ints, at most ``tile`` x ``tile``;
    ``tile`` defaults to its row count) with weight 2**``out_exp``, as the
    :class:`golden.gemm.GemmResult` golden's output stages take."""
    acc = np.asarray(acc, dtype=np.int64)
    tile = acc.shape[0] if tile is None else tile
    if acc.ndim != 2 or max(acc.shape) > tile:
        raise ValueError(f"one tile of at most {tile} x {tile} accumulators, got {acc.shape}")
    return GemmResult(acc, np.array([[out_exp]]), False, tile, acc_bits)


def rescaled(steps, tile: int, acc_bits: int):
    """What the rescaler must emit for ``steps`` = [(psum T x T ints, shift, out_exp,
    first, last)]: golden's accumulation (:mod:`golden.gemm`: each term shifted with
    :func:`golden.gemm.shift_round_half_even`, added, the sum saturated to ``acc_bits``)
    on the given partial sums. Returns ([(row, out_exp)] per row of every finished tile,
    whether any addition saturated)."""
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    acc = np.zeros((tile, tile), dtype=np.int64)
    out, saturated = [], False
    for psum, shift, out_exp, first, last in steps:
        total = (0 if first else acc) + shift_round_half_even(np.asarray(psum), shift)
        saturated |= bool(np.any((total > hi) | (total < lo)))
        acc = np.clip(total, lo, hi)
        if last:
            out += [(list(map(int, row)), out_exp) for row in acc]
    return out, saturated
