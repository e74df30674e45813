"""Local dataset folders in torchvision's layout: read, and refused clearly when malformed."""

import gzip
import pickle

import numpy as np
import pytest

from studies.data import load_dataset


def _idx(path, array, magic, gz=False):
    head = np.array([magic, *array.shape], dtype=">u4").tobytes()
    data = head + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _mnist(root, name="MNIST", n=(30, 10), gz=False):
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", n[0]), ("t10k", n[1])):
        _idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)), 2051, gz)
        _idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, count), 2049, gz)
    return raw


@pytest.mark.parametrize("name, gz", [("MNIST", False), ("MNIST", True), ("FashionMNIST", False)])
def test_mnist_layout_is_read(tmp_path, name, gz):
    raw = _mnist(tmp_path, name, gz=gz)
    ds = load_dataset(str(tmp_path))
    assert ds.name == name
    assert ds.x_train.shape == (30, 1, 28, 28) and ds.x_test.shape == (10, 1, 28, 28)
    assert float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1
    suffix = ".gz" if gz else ""
    first = np.frombuffer(gzip.decompress((raw / f"train-images-idx3-ubyte{suffix}").read_bytes()) if gz
                          else (raw / "train-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
    np.testing.assert_allclose(ds.x_train.numpy().ravel(), first / 255.0, rtol=1e-6)
    assert load_dataset(str(raw)).x_train.shape == ds.x_train.shape  # the raw folder itself


def test_cifar10_layout_is_read(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"labels": list(rng.integers(0, 10, 4))}
        (folder / f).write_bytes(pickle.dumps(d))
    ds = load_dataset(str(tmp_path))
    assert ds.name == "CIFAR-10" and ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)


def test_malformed_folders_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no dataset in torchvision's layout"):
        load_dataset(str(tmp_path))
    raw = _mnist(tmp_path / "a")
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte .* is missing"):
        load_dataset(str(tmp_path / "a"))
    raw = _mnist(tmp_path / "b")
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is malformed"):
        load_dataset(str(tmp_path / "b"))
    raw = _mnist(tmp_path / "c")
    data = (raw / "train-images-idx3-ubyte").read_bytes()
    (raw / "train-images-idx3-ubyte").write_bytes(data[:-100])  # truncated
    with pytest.raises(ValueError, match="header says"):
        load_dataset(str(tmp_path / "c"))
    folder = tmp_path / "d" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(FileNotFoundError, match="data_batch_1 is missing"):
        load_dataset(str(tmp_path / "d"))


def test_subsets_of_a_dataset_stored_by_class_take_the_classes_in_turn():
    """The embedded sets are stored by class: a test subset (``--n-test``) and the
    conversion's activation sample take every class alike, from a permutation of the
    whole split (nothing repeated, nothing lost)."""
    import torch

    from studies.data import class_round_robin, test_batches

    data = load_dataset("mnist5k")
    assert (data.y_test[:100] == 0).all()  # the premise: stored by class
    order = class_round_robin(data.y_train)
    assert torch.equal(order.sort().values, torch.arange(len(data.y_train)))
    assert (np.bincount(data.y_train[order[:1000]].numpy()) == 100).all()
    (x, y), = test_batches(data, 500, 500)
    assert (np.bincount(y.numpy(), minlength=10) == 50).all()
    assert all(bool((data.x_test == xi).flatten(1).all(1).any()) for xi in x[:20])
    assert sum(len(b[1]) for b in test_batches(data, None, 300)) == len(data.y_test)
