"""Compare an accelerator's GEMM output with golden's and describe the first mismatch.

Used by the cocotb bench, the fast harness's users and the training backends, so a
mismatch reads the same everywhere: which value, where, both values, and the operands.
"""

from __future__ import annotations

import numpy as np

from rtl.gemm_protocol import GemmJob, GemmOutput

__all__ = ["first_mismatch"]


def first_mismatch(job: GemmJob, got: GemmOutput, want: GemmOutput) -> str | None:
    """None if ``got`` equals ``want`` bit for bit, else a one-paragraph report."""
    t = job.a_op.tile
    if job.out.mode == "raw":
        pairs = [("acc", got.raw.acc, want.raw.acc), ("out_exp", got.raw.out_exps, want.raw.out_exps)]
    else:
        pairs = [("code", got.codes.codes, want.codes.codes), ("exp", got.codes.exps, want.codes.exps)]
    what = (f"{job.a_op.kind}{'^T' if job.a_trans else ''} x "
            f"{job.b_op.kind}{'^T' if job.b_trans else ''} -> {job.out.mode}, shape {job.shape}")
    for name, g, w in pairs:
        g, w = np.asarray(g), np.asarray(w)
        bad = np.argwhere(g != w)
        if len(bad):
            r, c = (int(v) for v in bad[0])
            row = r * (t if name in ("exp", "out_exp") else 1)
            return (f"{what}: first {name} mismatch at [{r}, {c}]: RTL {g[r, c]}, golden "
                    f"{w[r, c]}; {len(bad)} mismatches; A row {row} codes "
                    f"{job.a_op.codes[row].tolist()}")
    if got.saturated != want.saturated:
        return f"{what}: saturated flag RTL {got.saturated}, golden {want.saturated}"
    return None
