"""The 4-bit training study: FP32 against nibble 4-bit and its ablations, over seeds."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .digits import load_digits_split
from .results import measurement_stamp
from .training import QuantConfig, TrainConfig, train_run

__all__ = ["STUDY_CONFIGS", "StudyConfig", "run_study", "format_table", "write_json"]


@dataclass(frozen=True)
class StudyConfig:
    """One row of the study table: a name, what it is, and its quantization (None: FP32)."""

    name: str
    description: str
    quant: QuantConfig | None


STUDY_CONFIGS = (
    StudyConfig("fp32", "FP32 baseline (ReLU, float GEMMs)", None),
    StudyConfig("nibble", "4-bit: int4/uint4 fwd, radix-4 FP4 grads, TPR, per-tile exps, log rounding",
                QuantConfig()),
    StudyConfig("no_tpr", "nibble without TPR (dX and dW both use phase 0)", QuantConfig(tpr=False)),
    StudyConfig("radix2", "nibble with radix-2 FP4 gradients (step 2, no TPR)",
                QuantConfig(grad_kind="fp4r2")),
    StudyConfig("gradscale", "nibble with per-layer GradScale exponents instead of per-tile",
                QuantConfig(gradscale=True)),
    StudyConfig("linear", "nibble with linear instead of log FP4 rounding",
                QuantConfig(rounding="linear")),
    StudyConfig("stochastic", "nibble with unbiased stochastic FP4 rounding (both TPR phases)",
                QuantConfig(rounding="stochastic")),
    StudyConfig("radix2_stochastic", "radix-2 FP4 with stochastic rounding (LUQ's format, "
                "host-quantized)", QuantConfig(grad_kind="fp4r2", rounding="stochastic")),
)


class _Progress:
    """A one-line progress bar per run, redrawn each epoch (a plain line when not a tty)."""

    def __init__(self, stream=sys.stderr, width=24):
        self.stream, self.width = stream, width
        self.tty = stream.isatty()

    def __call__(self, label, epochs, epoch, result):
        done = epoch + 1
        bar = "#" * (self.width * done // epochs)
        line = (f"{label:<22} [{bar:<{self.width}}] epoch {done:>3}/{epochs} "
                f"loss {result.train_loss[-1]:.3f} test {result.test_curve[-1]:5.1f}%")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done == epochs else ""))
        elif done == epochs:
            self.stream.write(line + "\n")
        self.stream.flush()


def run_study(config: TrainConfig, seeds, configs=STUDY_CONFIGS, data=None, progress=True,
              runs_out: dict | None = None, model=None):
    """Train every configuration for every seed; return {name: summary dict}. If given,
    ``runs_out`` receives {name: [RunResult per seed]}; ``model`` is a
    :class:`nibble.nn.Sequential` (default the MLP of ``config.hidden``)."""
    data = data if data is not None else load_digits_split()
    bar = _Progress() if progress else None
    results = {}
    for sc in configs:
        runs = []
        for i, seed in enumerate(seeds):
            label = f"{sc.name} seed {seed} ({i + 1}/{len(seeds)})"
            cb = (lambda e, r, label=label: bar(label, config.epochs, e, r)) if bar else None
            runs.append(train_run(data, config, seed, sc.quant, progress=cb, model=model))
        if runs_out is not None:
            runs_out[sc.name] = runs
        results[sc.name] = {"description": sc.description, **summarize_runs(runs)}
    return results


def summarize_runs(runs) -> dict:
    """One configuration's row of a study or RTL run's JSON from its runs (one per seed):
    test accuracy mean, sample standard deviation over seeds (0 for one seed) and each
    seed's, the final training loss, the GEMM counts of one run, simulated cycles and
    wall seconds summed over the runs, and the curves."""
    accs = np.array([r.test_acc for r in runs])
    return {
        "test_acc_mean": float(accs.mean()),
        "test_acc_std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0,
        "test_accs": accs.tolist(),
        "final_train_loss_mean": float(np.mean([r.train_loss[-1] for r in runs])),
        "steps": runs[0].steps,
        "gemms": runs[0].gemms,
        "gemms_per_step": runs[0].gemms_per_step,
        "macs": runs[0].macs,
        "cycles": int(sum(r.cycles for r in runs)),
        "seconds": float(sum(r.seconds for r in runs)),
        "train_curves": [r.train_loss for r in runs],
        "test_curves": [r.test_curve for r in runs],
    }


def format_table(results) -> str:
    """Markdown table of test accuracy (mean +- std over seeds) and the gap to FP32."""
    ref = results.get("fp32", {}).get("test_acc_mean")
    rows = ["| config | test acc % (mean ± std) | Δ vs FP32 | final train loss | GEMMs/run | "
            "GEMMs/step | time s |",
            "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        delta = "" if ref is None or name == "fp32" else f"{r['test_acc_mean'] - ref:+.2f}"
        gemms = r["gemms"] or "—"
        per_step = r.get("gemms_per_step") or "—"       # older JSON files lack it
        rows.append(f"| {name} | {r['test_acc_mean']:.2f} ± {r['test_acc_std']:.2f} | {delta} | "
                    f"{r['final_train_loss_mean']:.3f} | {gemms} | {per_step} | "
                    f"{r['seconds']:.1f} |")
    return "\n".join(rows)


def write_json(path, results, config: TrainConfig, seeds, backend: str, *, model: str = "mlp",
               dataset: str = "digits", layers: str | None = None) -> None:
    doc = {
        "study": f"{dataset} {model.upper()}, FP32 vs nibble 4-bit",
        "model": model,
        "dataset": dataset,
        **({"layers": layers} if layers else {}),
        "backend": backend,
        "seeds": list(seeds),
        "config": {**{k: v for k, v in asdict(config).items() if k != "params"},
                   "tile": config.params.tile, "acc_bits": config.params.acc_bits,
                   "lanes": config.params.lanes},
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "measured": measurement_stamp(),
        "results": results,
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
