"""The digits dataset (scikit-learn's bundled 8x8 images) with a fixed, seeded split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Digits", "load_digits_split"]

SPLIT_SEED = 0
TEST_FRACTION = 0.25


@dataclass(frozen=True)
class Digits:
    """Train and test arrays. Pixels are scaled from 0..16 to 0..1 (float64)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_classes(self) -> int:
        return 10


def load_digits_split(limit: int | None = None) -> Digits:
    """Load the 1797 digits and split them 75/25 with a fixed permutation (seed 0).

    ``limit`` keeps only the first ``limit`` training and test samples (for quick tests).
    """
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    data = load_digits()
    x = data.data.astype(np.float64) / 16.0
    y = data.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_test = int(round(len(y) * TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        train, test = train[:limit], test[:limit]
    return Digits(x[train], y[train], x[test], y[test])
