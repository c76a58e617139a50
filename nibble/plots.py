"""PNG plots of a training run (matplotlib, the optional ``plot`` extra).

* ``training_curves.png``: train loss and test accuracy per epoch for each run.
* ``grad_histogram.png``: one layer's output gradient against the FP4 grid, both TPR
  phases: a histogram of log2|g| relative to each element's tile exponent, with the
  values phase 0 and phase 1 can represent drawn as lines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from golden.formats import FP4_EXP_MASK, fp4_values

__all__ = ["write_plots"]

LABELS = {"fp32": "FP32", "nibble": "4-bit golden", "rtl": "4-bit RTL", "axi": "4-bit RTL (AXI)",
          "serial": "4-bit board"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--plot needs matplotlib: pip install -e \".[plot]\"") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def training_curves(results: dict, path: Path) -> Path:
    """Mean train loss and test accuracy per epoch of every run in ``results``."""
    plt = _pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {"rtl": dict(linestyle="--", linewidth=2.5), "serial": dict(linestyle="--")}
    for name, r in results.items():
        if name.startswith("_"):
            continue
        epochs = np.arange(1, len(r["train_curves"][0]) + 1)
        label = LABELS.get(name, name)
        loss_ax.plot(epochs, np.mean(r["train_curves"], axis=0), label=label, **styles.get(name, {}))
        acc_ax.plot(epochs, np.mean(r["test_curves"], axis=0), label=label, **styles.get(name, {}))
    loss_ax.set(xlabel="epoch", ylabel="train loss (cross-entropy)", yscale="log",
                title="digits MLP: training loss")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    acc_ax.set_ylim(bottom=max(0.0, acc_ax.get_ylim()[0]))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gradient_histogram(probe: dict, path: Path) -> Path:
    """Histogram of the float gradient and of its fp4 codes against the FP4 grid."""
    plt = _pyplot()
    g = np.asarray(probe["g"])
    fig, axes = plt.subplots(1, len(probe["dy"]), figsize=(5 * len(probe["dy"]), 3.8),
                             squeeze=False)
    for ax, (phase, q) in zip(axes[0], sorted(probe["dy"].items())):
        tile_exp = q.element_exps() - q.phase          # the tile exponent E per element
        nz = g != 0
        rel = np.log2(np.abs(g[nz])) - tile_exp[nz]
        values = q.dequantize()
        qnz = values != 0
        rel_q = np.log2(np.abs(values[qnz])) - tile_exp[qnz]
        bins = np.arange(np.floor(rel.min()) - 1, np.ceil(rel.max()) + 2, 0.25)
        ax.hist(rel, bins=bins, alpha=0.6, label="gradient (float)")
        ax.hist(rel_q, bins=bins, alpha=0.6, label=f"FP4 phase {phase}")
        grid = np.log2(fp4_values(np.arange(1, FP4_EXP_MASK + 1))) + phase
        for i, x in enumerate(grid):
            ax.axvline(x, color="k", linewidth=0.8, linestyle=":",
                       label="FP4 grid" if i == 0 else None)
        ax.set(xlabel="log2 |value| - tile exponent E", ylabel="elements",
               title=f"layer {probe['layer']} output gradient, TPR phase {phase}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(results: dict, runs: dict, out_dir) -> list:
    """Write the PNGs into ``out_dir``; ``runs`` maps run names to RunResult lists (the
    gradient histogram uses the hardware run's probe if there is one, else golden's)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [training_curves(results, out / "training_curves.png")]
    for name in ("rtl", "serial", "nibble"):
        probe = runs.get(name, [None])[0].grad_probe if runs.get(name) else None
        if probe is not None:
            written.append(gradient_histogram(probe, out / "grad_histogram.png"))
            break
    return written
