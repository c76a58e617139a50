"""End to end: train the digits MLP with every GEMM on hardware (the Verilated RTL or a
board) next to FP32 and the golden 4-bit run, and prove the hardware run bit-exact.

Each GEMM of the hardware run is checked against golden as it runs (the backend stops
at the first mismatch), and the weights after every step are compared with the golden
run's through per-step SHA-1 digests.
"""

from __future__ import annotations

import sys
import time

from .backends import make_backend
from .digits import Digits, load_digits_split
from .study import summarize_runs
from .training import QuantConfig, TrainConfig, train_run

__all__ = ["StepProgress", "run_e2e", "format_e2e_table"]


class StepProgress:
    """One status line per step (redrawn on a tty; every ``every`` steps otherwise):
    epoch, step, GEMMs done, simulated cycles and cycles per second."""

    def __init__(self, label: str, epochs: int, steps_per_epoch: int, stream=sys.stderr,
                 every: int = 50):
        self.label, self.epochs, self.steps_per_epoch = label, epochs, steps_per_epoch
        self.stream, self.every = stream, every
        self.tty = stream.isatty()
        self.start = time.perf_counter()

    def __call__(self, epoch, result, backend) -> None:
        total = self.epochs * self.steps_per_epoch
        last = result.steps == total
        if not (self.tty or last or result.steps % self.every == 0):
            return
        secs = time.perf_counter() - self.start
        cycles = backend.cycles if backend is not None else 0
        line = (f"{self.label}: epoch {epoch + 1}/{self.epochs} step {result.steps}/{total} "
                f"GEMMs {backend.gemms if backend else 0:,} cycles {cycles:,} "
                f"({cycles / secs if secs else 0:,.0f}/s) {secs:.0f} s")
        if self.tty:
            self.stream.write("\r" + line.ljust(100) + ("\n" if last else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _summary(runs, extra=None) -> dict:
    return {**summarize_runs(runs), **(extra or {})}


def run_e2e(config: TrainConfig, seeds, backend: str = "rtl", *, data: Digits | None = None,
            progress: bool = True, port: str | None = None, keep_runs: bool = False,
            model=None) -> dict:
    """FP32, golden 4-bit and hardware 4-bit runs per seed.

    Returns
    -------
    dict
        ``{"fp32": ..., "nibble": ..., backend: ...}`` summaries (test accuracy in
        percent); the hardware entry has ``bit_exact`` (every GEMM matched golden and the
        weights after every step equal the golden run's) and ``gemms_checked``. With
        ``keep_runs`` the raw :class:`RunResult` lists are under ``"_runs"``.

    Raises
    ------
    nibble.backends.GemmMismatch
        At the first hardware GEMM that differs from golden.
    """
    data = data if data is not None else load_digits_split()
    quant = QuantConfig()
    steps_per_epoch = -(-len(data.y_train) // config.batch)
    fp32, golden, hw = [], [], []
    checked, digests_equal, roles = 0, True, {}
    for seed in seeds:
        hw_backend = make_backend(backend, config.params, port=port)   # fails fast
        fp32.append(train_run(data, config, seed, None, model=model))
        golden.append(train_run(data, config, seed, quant, model=model))
        bar = StepProgress(f"{backend} seed {seed}", config.epochs, steps_per_epoch) if progress else None
        hw.append(train_run(data, config, seed, quant, backend=hw_backend, on_step=bar,
                            model=model))
        checked += hw_backend.checked
        for role, used in getattr(hw_backend, "role_cycles", {}).items():
            total_role = roles.setdefault(role, {"gemms": 0, "cycles": 0, "ideal": 0, "macs": 0})
            for key in total_role:
                total_role[key] += used.get(key, 0)
        digests_equal &= hw[-1].weight_digests == golden[-1].weight_digests
        if progress:
            print(f"seed {seed}: fp32 {fp32[-1].test_acc:.2f}%  golden {golden[-1].test_acc:.2f}%  "
                  f"{backend} {hw[-1].test_acc:.2f}%  weights identical after every step: "
                  f"{hw[-1].weight_digests == golden[-1].weight_digests}", file=sys.stderr)
    total = sum(r.gemms for r in hw)
    results = {
        "fp32": _summary(fp32),
        "nibble": _summary(golden),
        backend: _summary(hw, {"bit_exact": bool(digests_equal and checked == total),
                               "gemms_checked": checked,
                               # per GEMM role (RTL): array utilization over the simulated
                               # cycles, and the useful share of the padded tiles' MACs
                               "roles": {role: {**r, "utilization": r["ideal"] / r["cycles"],
                                                "useful_macs": r["macs"] / (
                                                    r["ideal"] * config.params.tile ** 2)}
                                         for role, r in roles.items() if r["cycles"]},
                               "cycles_per_second": sum(r.cycles for r in hw) /
                               max(sum(r.seconds for r in hw), 1e-9)}),
    }
    if keep_runs:
        results["_runs"] = {"fp32": fp32, "nibble": golden, backend: hw}
    return results


def format_e2e_table(results) -> str:
    """Markdown table: FP32, nibble-golden and nibble-hardware side by side."""
    labels = {"fp32": "FP32", "nibble": "nibble (golden)", "rtl": "nibble (RTL)", "axi": "nibble (RTL, AXI)",
              "serial": "nibble (board)"}
    rows = ["| run | test acc % | Δ vs FP32 | steps | GEMMs | MACs | simulated cycles | wall s |",
            "|---|---|---|---|---|---|---|---|"]
    ref = results["fp32"]["test_acc_mean"]
    for name, r in results.items():
        if name.startswith("_"):
            continue
        acc = f"{r['test_acc_mean']:.2f}" + (f" ± {r['test_acc_std']:.2f}" if r["test_acc_std"] else "")
        delta = "" if name == "fp32" else f"{r['test_acc_mean'] - ref:+.2f}"
        macs = f"{r['macs']:,}" if r["macs"] else "—"
        cycles = f"{r['cycles']:,}" if r["cycles"] else "—"
        rows.append(f"| {labels.get(name, name)} | {acc} | {delta} | {r['steps']} | "
                    f"{r['gemms'] or '—'} | {macs} | {cycles} | {r['seconds']:.1f} |")
    return "\n".join(rows)
