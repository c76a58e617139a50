"""Functional coverage of the top-level regression: which crosses a GEMM exercised."""

from __future__ import annotations

from rtl.gemm_protocol import GemmJob

__all__ = ["MODES", "OUTPUT_VARIANTS", "STALLS", "PARTIAL", "all_bins", "coverage_key",
           "coverage_bin", "training_mode"]

#: Functional coverage: the crosses that matter. Rounding and phase belong to the fp4
#: output stage, so raw and int outputs have one variant each. Saturation is not a
#: bin: golden's out_exp rule leaves at least one bit of headroom, so a legal GEMM of at
#: most 256 reduction tiles cannot saturate (the rescaler's unit tests force it).
MODES = ("forward", "backward", "weight_grad")
OUTPUT_VARIANTS = (("raw", "-", 0), ("int", "-", 0), ("fp4", "log", 0), ("fp4", "log", 1),
                   ("fp4", "linear", 0), ("fp4", "linear", 1))
STALLS = ("none", "random")
PARTIAL = (False, True)


def all_bins() -> list:
    return [coverage_key(m, v, s, p) for m in MODES for v in OUTPUT_VARIANTS
            for s in STALLS for p in PARTIAL]


def coverage_key(mode, variant, stalls, partial) -> str:
    out, rounding, phase = variant
    return f"{mode} | {out} | {rounding} | {phase} | {stalls} | {'partial' if partial else 'whole'}"


def training_mode(job: GemmJob) -> str:
    if job.a_op.kind == "fp4":
        return "backward"
    return "weight_grad" if job.b_op.kind == "fp4" else "forward"


def coverage_bin(job: GemmJob, t: int, stalled: bool) -> str:
    """The cross bin one checked GEMM (tile edge ``t``) falls in."""
    m, k, n = job.shape
    out = job.out
    variant = (out.mode, out.rounding, out.phase) if out.mode == "fp4" else (out.mode, "-", 0)
    return coverage_key(training_mode(job), variant, STALLS[stalled],
                        bool(m % t or k % t or n % t))
