"""Datasets, fixed train/validation splits, batching and model-input transforms.

Two datasets are supported, both read from disk through ``torchvision``:

* ``mnist``: 1x28x28 grey-scale digits, modelled with a Bernoulli likelihood
  on *dynamically binarised* pixels (a fresh binarisation each time a batch is
  drawn, a fixed one for evaluation).
* ``svhn``: 3x32x32 colour digits (cropped-digit format), modelled with a
  discretised logistic likelihood over the 256 pixel levels.

Splits. ``"train"`` and ``"val"`` are carved from the *official training set*
by a fixed permutation (:func:`split_indices`): the first
``DatasetSpec.num_val`` (5,000) permuted indices are the validation set, the
rest the training set (MNIST 55,000 / 5,000; SVHN 68,257 / 5,000). ``"test"``
is the official test set and never contributes to either.

Where the data lives. :func:`resolve_data_dir` takes an explicit directory,
else the environment variable ``FGM_DATA_DIR``, else ``./data``. Inside it the
files are laid out as torchvision expects::

    <data_dir>/MNIST/raw/train-images-idx3-ubyte   (or the same name + .gz)
    <data_dir>/MNIST/raw/train-labels-idx1-ubyte
    <data_dir>/MNIST/raw/t10k-images-idx3-ubyte
    <data_dir>/MNIST/raw/t10k-labels-idx1-ubyte
    <data_dir>/train_32x32.mat                     (SVHN)
    <data_dir>/test_32x32.mat

Missing files are downloaded by torchvision when ``download=True`` and the
machine has internet; otherwise, and for corrupt files, :class:`DataError` is
raised with the exact files expected and the directory searched.

Typical training loop::

    train = fgm.data.load_images("mnist", "train")           # uint8 [55000, 1, 28, 28]
    for epoch in range(num_epochs):
        key, k_order, k_bin = fgm.random.split(key, 3)
        for i, xb in enumerate(fgm.data.batches(train, 128, k_order)):
            x = fgm.data.to_model_input("mnist", xb, fgm.random.fold_in(k_bin, i))
            ...
    x_test = fgm.data.to_eval_input("mnist", fgm.data.load_images("mnist", "test"))
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch
import torchvision

from . import random as fr

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetSpec",
    "ImageSet",
    "SPLITS",
    "SPLIT_SEED",
    "batches",
    "binarize",
    "clear_cache",
    "fixed_binarization",
    "get_spec",
    "load",
    "load_images",
    "num_batches",
    "resolve_data_dir",
    "split_indices",
    "to_eval_input",
    "to_model_input",
]


class DatasetSpec(NamedTuple):
    """Static description of a dataset.

    Attributes:
        name: Registry name (``"mnist"``, ``"svhn"``).
        shape: Image shape ``(C, H, W)``.
        num_val: Number of official training images held out as the fixed
            validation split.
        likelihood: Observation model the data is prepared for:
            ``"bernoulli"`` (binarised pixels in {0, 1}) or
            ``"discretized_logistic"`` (256 levels scaled to [-1, 1]).
        torchvision_class: The ``torchvision.datasets`` class that reads the files.
        raw_files: The files torchvision reads, relative to the data directory.
    """

    name: str
    shape: tuple[int, int, int]
    num_val: int
    likelihood: str
    torchvision_class: type
    raw_files: tuple[str, ...]


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        shape=(1, 28, 28),
        num_val=5000,
        likelihood="bernoulli",
        torchvision_class=torchvision.datasets.MNIST,
        raw_files=(
            "MNIST/raw/train-images-idx3-ubyte",
            "MNIST/raw/train-labels-idx1-ubyte",
            "MNIST/raw/t10k-images-idx3-ubyte",
            "MNIST/raw/t10k-labels-idx1-ubyte",
        ),
    ),
    "svhn": DatasetSpec(
        name="svhn",
        shape=(3, 32, 32),
        num_val=5000,
        likelihood="discretized_logistic",
        torchvision_class=torchvision.datasets.SVHN,
        raw_files=("train_32x32.mat", "test_32x32.mat"),
    ),
}

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Seed of the fixed train/validation permutation. Changing it changes every
# reported validation number, so it is a frozen constant, not a parameter.
SPLIT_SEED: int = 20_200_101

# Official split (torchvision's name for it) that each of our splits reads.
_OFFICIAL = {"train": "train", "val": "train", "test": "test"}

# Loaded splits keyed by (name, split, resolved data dir). Values are shared:
# callers must not modify the returned tensors in place.
_CACHE: dict[tuple[str, str, Path], "ImageSet"] = {}


class DataError(Exception):
    """Dataset files are missing, could not be downloaded, or are corrupt."""


class ImageSet(NamedTuple):
    """Images and labels of one split.

    Attributes:
        images: ``uint8 [N, C, H, W]`` raw pixel values 0..255.
        labels: ``int64 [N]`` class labels 0..9 (for SVHN, digit zero is 0).
    """

    images: torch.Tensor
    labels: torch.Tensor


# --------------------------------------------------------------------------- registry


def get_spec(name: str) -> DatasetSpec:
    """Returns the :class:`DatasetSpec` of a dataset.

    Raises:
        ValueError: If ``name`` is not in :data:`DATASETS`; the message lists the choices.
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}"
        ) from None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Chooses the data directory: ``data_dir``, else ``$FGM_DATA_DIR``, else ``./data``.

    Returns:
        An absolute path (it need not exist).
    """
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get("FGM_DATA_DIR") or "data"
    return Path(data_dir).expanduser().resolve()


def _dir_origin(data_dir: str | os.PathLike | None) -> str:
    if data_dir is not None and str(data_dir) != "":
        return "passed explicitly"
    if os.environ.get("FGM_DATA_DIR"):
        return "from FGM_DATA_DIR"
    return "the default ./data; FGM_DATA_DIR is not set"


# --------------------------------------------------------------------------- splits


def split_indices(num_total: int, num_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed train/validation partition of an official training set.

    A permutation drawn from ``fgm.random.key(SPLIT_SEED)``; its first
    ``num_val`` entries are the validation indices, the rest the training
    indices. Each part is sorted so that the split keeps the official order.

    Args:
        num_total: Size of the official training set.
        num_val: Size of the validation split (``0 < num_val < num_total``).

    Returns:
        ``(train_idx, val_idx)``: int64 tensors of lengths
        ``num_total - num_val`` and ``num_val``, disjoint, covering ``range(num_total)``.
    """
    if not 0 < num_val < num_total:
        raise ValueError(f"need 0 < num_val < num_total, got num_val={num_val}, num_total={num_total}")
    # Always on CPU: a CUDA generator would give a different permutation.
    perm = fr.permutation(fr.key(SPLIT_SEED), num_total, device="cpu")
    is_val = torch.zeros(num_total, dtype=torch.bool)
    is_val[perm[:num_val]] = True
    # nonzero() returns ascending indices: the sorted parts, without a sort.
    return (~is_val).nonzero().squeeze(1), is_val.nonzero().squeeze(1)


# --------------------------------------------------------------------------- loading


def load(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageSet:
    """Loads one split of a dataset.

    Results are cached per ``(name, split, resolved data_dir)``, so repeated
    calls are free. The returned tensors are shared with the cache: do not
    modify them in place.

    Args:
        name: Dataset name, one of :data:`DATASETS`.
        split: ``"train"``, ``"val"`` (both from the official training set, see
            :func:`split_indices`) or ``"test"`` (the official test set).
        data_dir: Data directory; see :func:`resolve_data_dir`.
        download: If the files are missing, let torchvision try to download them.

    Returns:
        :class:`ImageSet` of ``images`` ``uint8 [N, C, H, W]`` and ``labels`` ``int64 [N]``.

    Raises:
        ValueError: Unknown ``name`` or ``split``.
        DataError: Files missing (and not downloadable) or corrupt.
    """
    spec = get_spec(name)
    _check_split(split)
    root = resolve_data_dir(data_dir)
    cache_key = (spec.name, split, root)
    if cache_key not in _CACHE:
        official = _OFFICIAL[split]
        images, labels = _read_official(spec, official, root, data_dir, download)
        if official == "test":
            _CACHE[cache_key] = ImageSet(images, labels)
        else:
            # Carve both train and val at once; the full official array is then dropped.
            if images.shape[0] <= spec.num_val:
                raise DataError(
                    f"{spec.name}: the training set in {root} has only {images.shape[0]} images, "
                    f"not enough for a {spec.num_val}-image validation split"
                )
            train_idx, val_idx = split_indices(images.shape[0], spec.num_val)
            _CACHE[(spec.name, "train", root)] = ImageSet(images[train_idx], labels[train_idx])
            _CACHE[(spec.name, "val", root)] = ImageSet(images[val_idx], labels[val_idx])
    return _CACHE[cache_key]


def load_images(
    name: str,
    split: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> torch.Tensor:
    """The images of one split, ``uint8 [N, C, H, W]``; see :func:`load`."""
    return load(name, split, data_dir, download).images


def clear_cache() -> None:
    """Forgets every loaded split (frees memory; the next load reads the files again)."""
    _CACHE.clear()


def _missing_files(spec: DatasetSpec, root: Path, official: str) -> list[str]:
    """Files (relative to ``root``) that ``official`` needs and that are absent."""
    if spec.name == "mnist":
        needed = spec.raw_files  # torchvision's MNIST checks all four files.
        _extract_mnist_gz(spec, root)
    else:
        needed = tuple(f for f in spec.raw_files if f.startswith(official))
    return [f for f in needed if not (root / f).is_file()]


def _extract_mnist_gz(spec: DatasetSpec, root: Path) -> None:
    """Unpacks ``X.gz`` next to a missing ``X``, as torchvision's download step would, offline."""
    for rel in spec.raw_files:
        path, gz = root / rel, root / (rel + ".gz")
        if path.is_file() or not gz.is_file():
            continue
        try:
            with gzip.open(gz, "rb") as src, open(path.with_name(path.name + ".part"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            path.with_name(path.name + ".part").replace(path)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            path.with_name(path.name + ".part").unlink(missing_ok=True)
            raise DataError(f"{gz} could not be decompressed (corrupt or not writable): {e}") from e


def _missing_message(spec, root, missing, data_dir, download_error) -> str:
    lines = [
        f"{spec.name} data not found in {root} ({_dir_origin(data_dir)}).",
        "Expected these files (relative to that directory):",
        *[f"  {f}" + ("   (or .gz)" if spec.name == "mnist" else "") for f in spec.raw_files],
        f"Missing: {', '.join(missing)}.",
    ]
    if download_error is None:
        lines.append("Download was not attempted (download=False).")
    else:
        lines.append(f"Download failed: {type(download_error).__name__}: {download_error}")
    lines.append(
        "Fix: set FGM_DATA_DIR (or pass --data-dir / data_dir=) to a directory holding these "
        "files, or run once with download=True on a machine with internet access."
    )
    return "\n".join(lines)


def _validate_idx(path: Path) -> None:
    """Checks an idx (MNIST) file's header against its size, to name a truncated file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
                raise ValueError("bad magic number (expected unsigned-byte idx data)")
            ndim = head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise ValueError("truncated header")
        dims = [int.from_bytes(dims_raw[4 * i : 4 * i + 4], "big") for i in range(ndim)]
        expected = 4 * (ndim + 1) + math.prod(dims)
        if size != expected:
            raise ValueError(f"size {size} bytes, header {dims} implies {expected} bytes")
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is corrupt or unreadable ({e}); delete it and fetch it again") from e


def _read_official(spec, official, root, data_dir, download):
    """Reads an official split with torchvision: ``(uint8 [N,C,H,W], int64 [N])``."""
    missing = _missing_files(spec, root, official)
    if missing:
        download_error = None
        if download:
            try:
                _construct(spec, root, official, download=True)
            except Exception as e:  # noqa: BLE001 - offline failures come in many types
                download_error = e
            missing = _missing_files(spec, root, official)
            if missing and download_error is None:
                download_error = RuntimeError("torchvision reported success but files are absent")
        if missing:
            raise DataError(_missing_message(spec, root, missing, data_dir, download_error))

    files = [root / f for f in spec.raw_files if spec.name == "mnist" or f.startswith(official)]
    if spec.name == "mnist":
        for path in files:
            _validate_idx(path)
    try:
        ds = _construct(spec, root, official, download=False)
    except Exception as e:  # noqa: BLE001
        what = "failed torchvision's md5 check or could not be read" if spec.name == "svhn" else "could not be read"
        raise DataError(
            f"{spec.name}: {', '.join(map(str, files))} exists but {what}: the file is corrupt "
            f"or incomplete ({type(e).__name__}: {e}); delete it and fetch it again"
        ) from e

    if spec.name == "mnist":
        images = ds.data.unsqueeze(1)  # [N, 28, 28] -> [N, 1, 28, 28]
        labels = ds.targets.to(torch.int64)
    else:
        # torchvision already transposed (H, W, C, N) -> (N, C, H, W) and mapped label 10 -> 0.
        images = torch.from_numpy(np.ascontiguousarray(ds.data))
        labels = torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))
    if (
        images.dtype != torch.uint8
        or tuple(images.shape[1:]) != spec.shape
        or labels.shape != (images.shape[0],)
    ):
        raise DataError(
            f"{spec.name}: {', '.join(map(str, files))} hold unexpected arrays "
            f"(images {images.dtype} {tuple(images.shape)}, labels {tuple(labels.shape)}); "
            f"expected uint8 [N, {', '.join(map(str, spec.shape))}] and [N]"
        )
    return images.contiguous(), labels


def _construct(spec, root, official, download):
    if spec.name == "mnist":
        return spec.torchvision_class(str(root), train=(official == "train"), download=download)
    return spec.torchvision_class(str(root), split=official, download=download)


# --------------------------------------------------------------------------- batching


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches :func:`batches` yields for ``n`` items."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    images: torch.Tensor,
    batch_size: int,
    key: fr.Key | None,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Iterator[torch.Tensor]:
    """Iterates over one epoch of mini-batches.

    Args:
        images: ``[N, ...]`` tensor (typically ``uint8 [N, C, H, W]``).
        batch_size: Items per batch.
        key: Order key: the epoch visits ``fgm.random.permutation(key, N)``. Use a
            new key per epoch. May be ``None`` when ``shuffle=False``.
        shuffle: If False, the data order is kept.
        drop_last: If True, a final incomplete batch is skipped (constant batch
            shape); if False it is yielded, so every item is visited exactly once.

    Returns:
        An iterator of ``[B, ...]`` tensors of ``images.dtype``, ``B <= batch_size``;
        :func:`num_batches` of them.
    """
    n = images.shape[0]
    count = num_batches(n, batch_size, drop_last)  # validates batch_size eagerly
    if shuffle:
        if key is None:
            raise ValueError("batches(shuffle=True) needs a key")
        # The permutation is drawn on CPU so the order does not depend on the device.
        order = fr.permutation(key, n, device="cpu").to(images.device)
    else:
        order = None

    def _iter() -> Iterator[torch.Tensor]:
        for b in range(count):
            lo, hi = b * batch_size, min((b + 1) * batch_size, n)
            yield images[lo:hi] if order is None else images[order[lo:hi]]

    return _iter()


# --------------------------------------------------------------------------- transforms


def binarize(key: fr.Key, images: torch.Tensor) -> torch.Tensor:
    """Dynamic binarisation: each pixel is 1 with probability ``pixel / 255``.

    A fresh key per drawn batch gives a fresh binarisation, which regularises
    models of binarised MNIST (the standard "dynamically binarised" protocol).

    Args:
        key: Random key.
        images: ``uint8 [..., H, W]`` pixels 0..255.

    Returns:
        ``float32`` tensor of the same shape with values 0. and 1.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"binarize expects uint8 pixels, got {images.dtype}")
    return fr.bernoulli(key, images.to(torch.float32) / 255.0)


def fixed_binarization(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A fixed, reproducible binarisation of an evaluation set.

    Call it once on the *whole* evaluation set and batch the result: each
    position of the input gets its own noise, so binarising batches separately
    would reuse the same noise pattern in every batch. The draw is made on CPU,
    so the result is identical whatever the device of ``images``.

    Args:
        images: ``uint8 [N, C, H, W]`` pixels.
        seed: Seed of the binarisation (0 is the library's evaluation convention).

    Returns:
        ``float32 [N, C, H, W]`` of 0./1., on ``images.device``.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"fixed_binarization expects uint8 pixels, got {images.dtype}")
    return binarize(fr.key(seed), images.cpu()).to(images.device)


def _to_levels(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {images.dtype}")
    # Level k in 0..255 <-> k / 127.5 - 1 in [-1, 1]; bin width 2/255. The
    # discretised logistic likelihood puts its bin edges at +-1/255 around these.
    return images.to(torch.float32) / 127.5 - 1.0


def to_model_input(name: str, images: torch.Tensor, key: fr.Key | None) -> torch.Tensor:
    """Turns a training batch of raw pixels into what the model's likelihood expects.

    * ``mnist`` (``"bernoulli"``): dynamic binarisation with ``key``, float 0./1.
    * ``svhn`` (``"discretized_logistic"``): deterministic scaling of the 256
      levels to [-1, 1], level ``k`` <-> ``k / 127.5 - 1`` (``key`` is unused).

    Args:
        name: Dataset name.
        images: ``uint8 [B, C, H, W]``.
        key: Random key (needed for ``mnist``; use a fresh one per batch).

    Returns:
        ``float32 [B, C, H, W]``.
    """
    spec = get_spec(name)
    if spec.likelihood == "bernoulli":
        if key is None:
            raise ValueError(f"{name}: dynamic binarisation needs a key")
        return binarize(key, images)
    return _to_levels(images)


def to_eval_input(name: str, images: torch.Tensor) -> torch.Tensor:
    """Deterministic model input for evaluation sets (validation / test).

    * ``mnist``: :func:`fixed_binarization` with seed 0 (call on the whole set).
    * ``svhn``: the same scaling as :func:`to_model_input`, ``k / 127.5 - 1``.

    Args:
        name: Dataset name.
        images: ``uint8 [N, C, H, W]``.

    Returns:
        ``float32 [N, C, H, W]``; the same result on every call.
    """
    spec = get_spec(name)
    if spec.likelihood == "bernoulli":
        return fixed_binarization(images, seed=0)
    return _to_levels(images)
