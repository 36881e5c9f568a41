"""Tests for fgm.data: registry, fixed splits, loading errors, batching, transforms.

Real MNIST is read from ``$FGM_DATA_DIR`` or ``../shared/data`` (beside the
repository); SVHN uses the format-exact fixture of ``tests/svhn_fixture.py``.
"""

from __future__ import annotations

import gzip
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision

import fgm.random as fr
from fgm import data
from tests.svhn_fixture import NUM_TEST, NUM_TRAIN, sample_path, svhn_root, write_svhn_mat  # noqa: F401 - svhn_root is a pytest fixture, used by name

MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]
# Official per-class counts (shared/data/README.md).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _mnist_dir() -> Path:
    env = os.environ.get("FGM_DATA_DIR")
    return Path(env) if env else (Path(__file__).parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    root = _mnist_dir()
    if not all((root / "MNIST" / "raw" / f).is_file() for f in MNIST_FILES):
        # Fail, not skip: CI must not go green without the real data (as tests/conftest.py).
        pytest.fail(f"real MNIST not found under {root}/MNIST/raw; set FGM_DATA_DIR")
    return root


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    """All three MNIST splits, loaded once per module."""
    return {s: data.load("mnist", s, mnist_dir, download=False) for s in data.SPLITS}


@pytest.fixture(scope="module")
def mnist_official(mnist_dir):
    """The official MNIST training set read directly by torchvision: uint8 [60000, 28, 28]."""
    return torchvision.datasets.MNIST(str(mnist_dir), train=True, download=False)


# ----------------------------------------------------------------------------- registry


def test_registry():
    assert set(data.DATASETS) == {"mnist", "svhn"}
    m, s = data.get_spec("mnist"), data.get_spec("svhn")
    assert (m.shape, m.num_val, m.likelihood) == ((1, 28, 28), 5000, "bernoulli")
    assert (s.shape, s.num_val, s.likelihood) == ((3, 32, 32), 5000, "discretized_logistic")
    assert m.torchvision_class is torchvision.datasets.MNIST
    assert s.torchvision_class is torchvision.datasets.SVHN
    assert m.raw_files == tuple(f"MNIST/raw/{f}" for f in MNIST_FILES)
    assert s.raw_files == ("train_32x32.mat", "test_32x32.mat")
    assert callable(m.loader) and callable(s.loader)  # registered like any other dataset


def test_unknown_name_and_split_list_choices(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; choose from: mnist, svhn"):
        data.get_spec("cifar")
    with pytest.raises(ValueError, match=r"choose from: mnist, svhn"):
        data.load("cifar", "train", tmp_path)
    with pytest.raises(ValueError, match=r"unknown split 'valid'; choose from: train, val, test"):
        data.load("mnist", "valid", tmp_path)
    with pytest.raises(ValueError, match=r"choose from: mnist, svhn"):
        data.to_model_input("cifar", torch.zeros(1, 1, 2, 2, dtype=torch.uint8), fr.key(0))


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("FGM_DATA_DIR", str(tmp_path / "env"))
    assert data.resolve_data_dir(tmp_path / "explicit") == (tmp_path / "explicit").resolve()
    assert data.resolve_data_dir(str(tmp_path / "explicit")) == (tmp_path / "explicit").resolve()
    assert data.resolve_data_dir(None) == (tmp_path / "env").resolve()
    monkeypatch.delenv("FGM_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert data.resolve_data_dir() == (tmp_path / "data").resolve()


@pytest.fixture
def restore_datasets():
    """Undoes the test's dataset registrations (and drops their cached splits)."""
    saved = dict(data.DATASETS)
    yield
    data.DATASETS.clear()
    data.DATASETS.update(saved)
    data.clear_cache()


def _toy_loader(calls: list, labelled: bool = False, num_train: int = 40, num_test: int = 8):
    """A loader of deterministic 1x4x4 images; image i of a split has every pixel = i (train) or 200 + i (test)."""

    def loader(root, split, download):
        calls.append((root, split, download))
        n, offset = (num_train, 0) if split == "train" else (num_test, 200)
        images = (torch.arange(n, dtype=torch.uint8) + offset).view(n, 1, 1, 1).expand(n, 1, 4, 4).clone()
        return (images, torch.arange(n) % 3) if labelled else images

    return loader


def _toy_spec(loader, name="toy", **overrides):
    return data.DatasetSpec(
        **{"name": name, "shape": (1, 4, 4), "num_val": 10, "likelihood": "bernoulli", "loader": loader, **overrides}
    )


def test_registered_dataset_loads_through_load_images(tmp_path, restore_datasets):
    calls = []
    spec = data.register_dataset(_toy_spec(_toy_loader(calls)))
    assert data.get_spec("toy") is spec and list(data.DATASETS) == ["mnist", "svhn", "toy"]
    val = data.load_images("toy", "val", tmp_path, download=False)
    train, test = data.load("toy", "train", tmp_path), data.load("toy", "test", tmp_path)
    assert calls == [(tmp_path.resolve(), "train", False), (tmp_path.resolve(), "test", True)]  # one read per split
    train_idx, val_idx = data.split_indices(40, 10)  # the same fixed split as the built-in datasets
    assert torch.equal(val[:, 0, 0, 0], val_idx.to(torch.uint8)) and val.shape == (10, 1, 4, 4)
    assert torch.equal(train.images[:, 0, 0, 0], train_idx.to(torch.uint8))
    assert test.images.shape == (8, 1, 4, 4) and test.images[0, 0, 0, 0] == 200
    assert train.labels.dtype == torch.int64 and (train.labels == -1).all()  # images only: no labels
    # The likelihood, not the name, decides the model inputs.
    x = data.to_model_input("toy", test.images, fr.key(0))
    assert torch.equal(x, data.binarize(fr.key(0), test.images))
    assert torch.equal(data.to_eval_input("toy", test.images), data.fixed_binarization(test.images))


def test_registered_dataset_with_labels_and_levels(tmp_path, restore_datasets):
    data.register_dataset(
        _toy_spec(_toy_loader([], labelled=True), name="toy_levels", shape=[1, 4, 4], likelihood="discretized_logistic")
    )
    assert data.get_spec("toy_levels").shape == (1, 4, 4)  # normalised to a tuple
    test = data.load("toy_levels", "test", tmp_path)
    assert test.labels.tolist() == [i % 3 for i in range(8)]
    assert torch.equal(data.to_model_input("toy_levels", test.images, None), test.images.float() / 127.5 - 1)


def test_duplicate_dataset_name_is_refused(tmp_path, restore_datasets):
    with pytest.raises(ValueError, match=r"dataset 'mnist' is already registered.*replace=True"):
        data.register_dataset(data.get_spec("mnist")._replace(num_val=10))
    assert data.get_spec("mnist").num_val == 5000
    data.register_dataset(_toy_spec(_toy_loader([])))
    with pytest.raises(ValueError, match=r"'toy' is already registered \(registered: mnist, svhn, toy\)"):
        data.register_dataset(_toy_spec(_toy_loader([])))
    # replace=True replaces it and forgets the splits the old loader read.
    old = data.load_images("toy", "test", tmp_path)
    calls = []
    data.register_dataset(_toy_spec(_toy_loader(calls, num_test=5)), replace=True)
    assert data.load_images("toy", "test", tmp_path).shape[0] == 5 and old.shape[0] == 8 and len(calls) == 1


def test_unknown_dataset_lists_registered_names(restore_datasets):
    data.register_dataset(_toy_spec(_toy_loader([])))
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar'; choose from: mnist, svhn, toy"):
        data.get_spec("cifar")
    with pytest.raises(ValueError, match=r"choose from: mnist, svhn, toy"):
        data.load_images("cifar", "train")


def test_register_dataset_validates_the_spec(restore_datasets):
    loader = _toy_loader([])
    with pytest.raises(
        ValueError, match=r"unknown likelihood 'gaussian'; choose from: bernoulli, discretized_logistic"
    ):
        data.register_dataset(_toy_spec(loader, likelihood="gaussian"))
    with pytest.raises(ValueError, match=r"shape = \(C, H, W\).*shape=\(16, 16\)"):
        data.register_dataset(_toy_spec(loader, shape=(16, 16)))
    with pytest.raises(ValueError, match=r"num_val=0"):
        data.register_dataset(_toy_spec(loader, num_val=0))
    with pytest.raises(ValueError, match="non-empty string"):
        data.register_dataset(_toy_spec(loader, name=""))
    with pytest.raises(TypeError, match="loader must be a function"):
        data.register_dataset(_toy_spec("toy.pt"))
    with pytest.raises(TypeError, match="expects a DatasetSpec"):
        data.register_dataset({"name": "toy"})
    assert set(data.DATASETS) == {"mnist", "svhn"}  # nothing half-registered


def test_registered_dataset_errors(tmp_path, monkeypatch, restore_datasets):
    def missing(root, split, download):
        return torch.load(root / "toy" / f"{split}.pt")

    data.register_dataset(_toy_spec(missing, raw_files=("toy/train.pt", "toy/test.pt")))
    monkeypatch.setenv("FGM_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError) as e:
        data.load("toy", "test", download=False)
    _assert_missing_message(
        e.value, tmp_path.resolve(), ["toy/train.pt", "toy/test.pt", str(tmp_path / "toy" / "test.pt")]
    )
    assert "from FGM_DATA_DIR" in str(e.value) and "download=False" in str(e.value)

    data.register_dataset(_toy_spec(_toy_loader([]), name="toy_rgb", shape=(3, 4, 4)))
    with pytest.raises(data.DataError, match=r"toy_rgb: .*unexpected arrays.*\(40, 1, 4, 4\).*uint8 \[N, 3, 4, 4\]"):
        data.load("toy_rgb", "train", tmp_path)
    data.register_dataset(_toy_spec(lambda root, split, download: None, name="toy_none"))
    with pytest.raises(data.DataError, match=r"toy_none: the loader returned NoneType; expected uint8 images"):
        data.load("toy_none", "test", tmp_path)
    data.register_dataset(_toy_spec(_toy_loader([]), name="toy_small", num_val=40))
    with pytest.raises(data.DataError, match="only 40 images, not enough for a 40-image validation split"):
        data.load("toy_small", "val", tmp_path)


# ----------------------------------------------------------------------------- MNIST splits


def test_mnist_split_sizes_shapes_dtypes(mnist):
    for split, n in (("train", 55000), ("val", 5000), ("test", 10000)):
        images, labels = mnist[split]
        assert images.shape == (n, 1, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert images.is_contiguous()
    train_val = torch.cat([mnist["train"].labels, mnist["val"].labels])
    assert torch.bincount(train_val, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist["test"].labels, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_split_indices_partition_and_frozen():
    train_idx, val_idx = data.split_indices(60000, 5000)
    assert len(train_idx) == 55000 and len(val_idx) == 5000
    # Disjoint and covering: every official index lands in exactly one part.
    assert torch.bincount(torch.cat([train_idx, val_idx]), minlength=60000).eq(1).all()
    assert (train_idx.diff() > 0).all() and (val_idx.diff() > 0).all()  # official order kept
    again = data.split_indices(60000, 5000)
    assert torch.equal(again[0], train_idx) and torch.equal(again[1], val_idx)
    # Frozen: if torch.randperm or fgm.random changed, reported validation
    # numbers would silently refer to a different split.
    assert val_idx[:8].tolist() == [2, 15, 28, 30, 67, 74, 81, 95]
    with pytest.raises(ValueError):
        data.split_indices(5000, 5000)


def test_mnist_train_val_are_indexed_official_training_images(mnist, mnist_official):
    train_idx, val_idx = data.split_indices(60000, 5000)
    official = mnist_official.data.unsqueeze(1)
    assert torch.equal(mnist["train"].images, official[train_idx])
    assert torch.equal(mnist["val"].images, official[val_idx])
    assert torch.equal(mnist["val"].labels, mnist_official.targets[val_idx])


def test_mnist_split_is_fixed_across_calls(mnist, mnist_dir):
    assert data.load("mnist", "val", mnist_dir) is mnist["val"]  # cached
    data.clear_cache()
    fresh = data.load("mnist", "val", str(mnist_dir), download=False)  # str path, same key
    assert fresh is not mnist["val"]
    assert torch.equal(fresh.images, mnist["val"].images)
    assert torch.equal(fresh.labels, mnist["val"].labels)


def test_mnist_val_and_train_never_contain_test_images(mnist):
    test_rows = {bytes(r) for r in mnist["test"].images.flatten(1).numpy()}
    for split in ("val", "train"):
        rows = mnist[split].images.flatten(1).numpy()
        assert not any(bytes(r) in test_rows for r in rows), split


# ----------------------------------------------------------------------------- transforms


def test_dynamic_binarization(mnist):
    x = mnist["val"].images
    a = data.binarize(fr.key(1), x)
    b = data.binarize(fr.key(2), x)
    assert a.dtype == torch.float32 and a.shape == x.shape
    assert ((a == 0) | (a == 1)).all()
    assert torch.equal(a, data.binarize(fr.key(1), x))
    assert not torch.equal(a, b)
    # Pixels strictly between 0 and 255 are the only ones that can differ.
    mid = (x > 0) & (x < 255)
    assert (a != b)[~mid].sum() == 0 and (a != b)[mid].float().mean() > 0.1
    target = x.float().mean().item() / 255
    assert abs(a.mean().item() - target) < 2e-3 and abs(b.mean().item() - target) < 2e-3
    assert torch.equal(data.to_model_input("mnist", x, fr.key(1)), a)


def test_fixed_binarization_reproducible(mnist):
    x = mnist["test"].images
    a = data.fixed_binarization(x)
    assert torch.equal(a, data.fixed_binarization(x, seed=0))
    assert torch.equal(a, data.to_eval_input("mnist", x))
    assert not torch.equal(a, data.fixed_binarization(x, seed=1))
    assert ((a == 0) | (a == 1)).all()


def test_svhn_scaling():
    levels = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    y = data.to_model_input("svhn", levels, None)
    assert y.dtype == torch.float32
    assert torch.allclose(y, levels.float() / 127.5 - 1)
    assert y.min().item() == -1.0 and y.max().item() == 1.0
    assert torch.equal(data.to_eval_input("svhn", levels), y)


def test_transforms_reject_float_input():
    with pytest.raises(TypeError):
        data.binarize(fr.key(0), torch.rand(2, 1, 4, 4))
    with pytest.raises(TypeError):
        data.to_eval_input("svhn", torch.rand(2, 3, 4, 4))


def test_library_does_not_touch_global_rng(mnist):
    state = torch.get_rng_state()
    data.binarize(fr.key(3), mnist["val"].images[:10])
    list(data.batches(mnist["val"].images, 100, fr.key(4)))
    data.split_indices(100, 10)
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------- batching


def test_batches_cover_each_index_once():
    n, bs = 1003, 64
    idx = torch.arange(n)
    out = list(data.batches(idx, bs, fr.key(7), drop_last=False))
    assert len(out) == data.num_batches(n, bs, drop_last=False) == 16
    assert [len(b) for b in out] == [64] * 15 + [43]
    assert torch.equal(torch.cat(out).sort().values, idx)
    assert torch.equal(torch.cat(out), fr.permutation(fr.key(7), n))
    same = list(data.batches(idx, bs, fr.key(7), drop_last=False))
    assert all(torch.equal(p, q) for p, q in zip(out, same, strict=True))
    other = torch.cat(list(data.batches(idx, bs, fr.key(8), drop_last=False)))
    assert not torch.equal(torch.cat(out), other)


def test_batches_drop_last_and_no_shuffle():
    idx = torch.arange(1003)
    dropped = list(data.batches(idx, 64, fr.key(7)))
    assert len(dropped) == data.num_batches(1003, 64) == 15
    assert all(len(b) == 64 for b in dropped)
    assert len(set(torch.cat(dropped).tolist())) == 960
    ordered = list(data.batches(idx, 100, None, shuffle=False, drop_last=False))
    assert torch.equal(torch.cat(ordered), idx)
    assert data.num_batches(10, 20, drop_last=True) == 0
    with pytest.raises(ValueError):
        data.batches(idx, 0, fr.key(0))
    with pytest.raises(ValueError):
        data.batches(idx, 10, None)


def test_batches_of_uint8_images(mnist):
    x = mnist["val"].images
    b = next(data.batches(x, 32, fr.key(0)))
    assert b.shape == (32, 1, 28, 28) and b.dtype == torch.uint8
    assert torch.equal(b, x[fr.permutation(fr.key(0), len(x))[:32]])


# ----------------------------------------------------------------------------- errors


def _assert_missing_message(err: data.DataError, root: Path, names):
    msg = str(err)
    assert str(root) in msg
    for name in names:
        assert name in msg
    assert "FGM_DATA_DIR" in msg


def test_missing_mnist_without_download(tmp_path):
    root = tmp_path / "empty"
    with pytest.raises(data.DataError) as e:
        data.load_images("mnist", "train", root, download=False)
    _assert_missing_message(e.value, root.resolve(), MNIST_FILES)
    assert "download=False" in str(e.value)


def test_missing_data_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("FGM_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataError) as e:
        data.load("svhn", "test", download=False)
    _assert_missing_message(e.value, tmp_path.resolve(), ["train_32x32.mat", "test_32x32.mat"])
    assert "FGM_DATA_DIR" in str(e.value)


def test_missing_mnist_download_fails_offline(tmp_path, monkeypatch):
    # Simulate the offline failure instead of touching the network: on some
    # machines a blocked connection hangs rather than failing at once.
    calls = []

    def offline(self):
        calls.append(self.root)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error offline>")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(data.DataError) as e:
        data.load_images("mnist", "test", tmp_path, download=True)
    assert len(calls) == 1
    _assert_missing_message(e.value, tmp_path.resolve(), MNIST_FILES)
    assert "Download failed" in str(e.value) and "offline" in str(e.value)


def test_missing_svhn_download_fails_offline(tmp_path, monkeypatch):
    def offline(self):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(torchvision.datasets.SVHN, "download", offline)
    with pytest.raises(data.DataError) as e:
        data.load_images("svhn", "val", tmp_path, download=True)
    _assert_missing_message(e.value, tmp_path.resolve(), ["train_32x32.mat"])
    assert "Download failed" in str(e.value)


def _mnist_copy(mnist_dir: Path, dst: Path) -> Path:
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_FILES:
        (raw / f).symlink_to(mnist_dir / "MNIST" / "raw" / f)
    return raw


@pytest.mark.parametrize("which", ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
def test_truncated_mnist_file_is_corrupt(mnist_dir, tmp_path, which):
    raw = _mnist_copy(mnist_dir, tmp_path)
    src = (raw / which).resolve()
    (raw / which).unlink()
    (raw / which).write_bytes(src.read_bytes()[:-100])
    with pytest.raises(data.DataError, match="corrupt") as e:
        data.load("mnist", "test", tmp_path, download=False)
    assert which in str(e.value)


def test_mnist_bad_magic_is_corrupt(mnist_dir, tmp_path):
    raw = _mnist_copy(mnist_dir, tmp_path)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.*corrupt"):
        data.load("mnist", "test", tmp_path, download=True)


def test_mnist_gz_files_are_accepted(mnist_dir, mnist, tmp_path):
    raw = _mnist_copy(mnist_dir, tmp_path)
    name = "t10k-labels-idx1-ubyte"
    content = (raw / name).read_bytes()
    (raw / name).unlink()
    with gzip.open(raw / (name + ".gz"), "wb") as f:
        f.write(content)
    test = data.load("mnist", "test", tmp_path, download=False)
    assert torch.equal(test.labels, mnist["test"].labels)
    assert (raw / name).read_bytes() == content


# ----------------------------------------------------------------------------- SVHN


@pytest.fixture(scope="module")
def svhn_sample():
    with np.load(sample_path()) as z:
        return {k: z[k] for k in z.files}


def test_svhn_fixture_is_in_official_layout(svhn_root):
    train = scipy.io.loadmat(str(svhn_root / "train_32x32.mat"))
    assert train["X"].shape == (32, 32, 3, NUM_TRAIN) and train["X"].dtype == np.uint8
    assert train["y"].shape == (NUM_TRAIN, 1)
    assert 1 <= train["y"].min() and train["y"].max() <= 10


def test_svhn_shapes_and_splits(svhn_root):
    sizes = {"train": NUM_TRAIN - 5000, "val": 5000, "test": NUM_TEST}
    for split, n in sizes.items():
        images, labels = data.load("svhn", split, svhn_root, download=False)
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert 0 <= labels.min() and labels.max() <= 9


def test_svhn_pixels_and_labels_match_npz(svhn_root, svhn_sample):
    X_test, y_test = svhn_sample["X_test"], svhn_sample["y_test"]  # (2, 32, 32, 3) HWC
    images, labels = data.load("svhn", "test", svhn_root)
    # Pixel-exact, one pixel by hand: CHW [c, h, w] is HWC [h, w, c].
    assert images[1, 2, 5, 17].item() == X_test[1, 5, 17, 2]
    assert images[1, 0, 31, 0].item() == X_test[1, 31, 0, 0]
    for i in range(len(images)):
        assert np.array_equal(images[i].numpy(), X_test[i % 2].transpose(2, 0, 1))
    assert labels.tolist() == [int(y_test[i % 2]) for i in range(NUM_TEST)] and labels[:2].tolist() == [6, 7]

    X_train, y_train = svhn_sample["X_train"], svhn_sample["y_train"]
    train_idx, val_idx = data.split_indices(NUM_TRAIN, 5000)
    for split, idx in (("train", train_idx), ("val", val_idx)):
        images, labels = data.load("svhn", split, svhn_root)
        src = idx.numpy() % len(X_train)  # the fixture tiles the 15 real images
        assert np.array_equal(labels.numpy(), y_train[src])
        assert np.array_equal(images.numpy(), X_train[src].transpose(0, 3, 1, 2))


def test_svhn_digit_zero_stored_as_10_loads_as_0(svhn_root, svhn_sample, tmp_path):
    # The 17 real images hold no zero; relabel them to exercise the 10 -> 0 mapping.
    write_svhn_mat(tmp_path / "test_32x32.mat", svhn_sample["X_test"], np.array([0, 7]))
    assert scipy.io.loadmat(str(tmp_path / "test_32x32.mat"))["y"].ravel().tolist() == [10, 7]
    assert data.load("svhn", "test", tmp_path).labels.tolist() == [0, 7]


def test_svhn_model_input(svhn_root):
    x = data.load_images("svhn", "val", svhn_root)[:16]
    y = data.to_model_input("svhn", x, fr.key(0))
    assert y.shape == (16, 3, 32, 32) and y.dtype == torch.float32
    # Level k <-> k / 127.5 - 1: the inverse map recovers the levels (up to float rounding).
    assert torch.equal(((y + 1) * 127.5).round().to(torch.uint8), x)


def test_svhn_md5_check_is_not_bypassed(svhn_root, tmp_path, monkeypatch):
    # Without the test-only patch, torchvision's md5 check rejects the fixture.
    shutil.copy(svhn_root / "test_32x32.mat", tmp_path / "test_32x32.mat")
    monkeypatch.undo()
    with pytest.raises(data.DataError, match=r"test_32x32\.mat.*md5"):
        data.load("svhn", "test", tmp_path, download=False)


def test_svhn_bad_mat_is_corrupt(svhn_root, tmp_path):
    (tmp_path / "train_32x32.mat").write_bytes(b"MATLAB 5.0 garbage" * 10)
    with pytest.raises(data.DataError, match=r"train_32x32\.mat.*corrupt"):
        data.load("svhn", "train", tmp_path, download=False)
