"""Functional coverage of the top-level regression: which crosses a GEMM exercised."""

from __future__ import annotations

from wire.gemm_protocol import GemmJob

from .stimulus import GEMM_ROLES, OUTPUT_VARIANTS

__all__ = ["STALLS", "PARTIAL", "all_bins", "coverage_key", "coverage_bin", "gemm_role"]

#: Functional coverage: the crosses that matter, training role x output variant
#: (:data:`verif.stimulus.GEMM_ROLES`, :data:`verif.stimulus.OUTPUT_VARIANTS`) x stalls x
#: partial tiles. Saturation is not a bin: golden's out_exp rule leaves at least one bit
#: of headroom, so a legal GEMM of at most 256 reduction tiles cannot saturate (the
#: rescaler's unit tests force it).
STALLS = ("none", "random")
PARTIAL = (False, True)


def all_bins() -> list:
    return [coverage_key(m, v, s, p) for m in GEMM_ROLES for v in OUTPUT_VARIANTS
            for s in STALLS for p in PARTIAL]


def coverage_key(role, variant, stalls, partial) -> str:
    out, rounding, phase = variant
    return f"{role} | {out} | {rounding} | {phase} | {stalls} | {'partial' if partial else 'whole'}"


def gemm_role(job: GemmJob) -> str:
    """The training role (one of :data:`verif.stimulus.GEMM_ROLES`) a job's operand
    kinds say it plays."""
    if job.a_op.kind == "fp4":
        return "backward"
    return "weight_grad" if job.b_op.kind == "fp4" else "forward"


def coverage_bin(job: GemmJob, t: int, stalled: bool) -> str:
    """The cross bin one checked GEMM (tile edge ``t``) falls in."""
    m, k, n = job.shape
    out = job.out
    if out.mode != "fp4":
        variant = (out.mode, "-", 0)
    else:
        variant = ("dual" if out.dual else "fp4", out.rounding, out.phase)
    return coverage_key(gemm_role(job), variant, STALLS[stalled],
                        bool(m % t or k % t or n % t))
