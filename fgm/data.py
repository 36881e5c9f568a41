"""Datasets, fixed train/validation splits, batching and model-input transforms.

A dataset is a :class:`DatasetSpec` registered with :func:`register_dataset`;
the registry ``DATASETS`` maps names to specs. The spec carries the dataset's
``loader``, the one function that reads its files, so adding a dataset is one
registration and the rest of this module (splits, caching, batching, model
inputs) works for it unchanged. Two datasets are registered, both read from
disk through ``torchvision``:

* ``mnist``: 1x28x28 grey-scale digits, modelled with a Bernoulli likelihood
  on *dynamically binarised* pixels (a fresh binarisation each time a batch is
  drawn, a fixed one for evaluation).
* ``svhn``: 3x32x32 colour digits (cropped-digit format), modelled with a
  discretised logistic likelihood over the 256 pixel levels.

How raw pixels become model inputs depends only on the spec's ``likelihood``
(:func:`to_model_input`, :func:`to_eval_input`): ``"bernoulli"`` binarises,
``"discretized_logistic"`` scales the 256 levels to [-1, 1].

A new dataset, with the signature of :data:`Loader`::

    def load_toy(root, split, download):           # split: "train" or "test"
        return torch.load(root / f"toy_{split}.pt")  # uint8 [N, 1, 16, 16]

    fgm.data.register_dataset(DatasetSpec(
        name="toy", shape=(1, 16, 16), num_val=100, likelihood="bernoulli", loader=load_toy,
    ))
    fgm.data.load_images("toy", "val")              # uint8 [100, 1, 16, 16]

The split names are ``SPLITS = ("train", "val", "test")``.

Splits. ``"train"`` and ``"val"`` are carved from the *official training set*
by a fixed permutation (:func:`split_indices`, seeded by the frozen constant
``SPLIT_SEED``): the first ``DatasetSpec.num_val`` (5,000) permuted indices
are the validation set, the rest the training set (MNIST 55,000 / 5,000; SVHN 68,257 / 5,000). ``"test"``
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
import operator
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torchvision

from . import random as fr

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetSpec",
    "ImageSet",
    "Loader",
    "SPLITS",
    "SPLIT_SEED",
    "batches",
    "binarize",
    "clear_cache",
    "fixed_binarization",
    "get_spec",
    "load",
    "load_images",
    "missing_files",
    "num_batches",
    "register_dataset",
    "resolve_data_dir",
    "split_indices",
    "to_eval_input",
    "to_model_input",
]

# A dataset's reader: ``loader(root, split, download)`` with ``root`` the resolved
# data directory (a Path), ``split`` the *official* split, "train" or "test", and
# ``download`` whether fetching missing files is allowed. It returns the images,
# ``uint8 [N, C, H, W]``, or ``(images, labels)`` with integer labels ``[N]``.
# A missing file is reported by raising FileNotFoundError (turned into a
# DataError naming the directory and how it was chosen); other problems by
# raising DataError.
Loader = Callable[[Path, str, bool], torch.Tensor | tuple[torch.Tensor, torch.Tensor]]


class DatasetSpec(NamedTuple):
    """Static description of a dataset, with the function that reads it.

    Attributes:
        name: Registry name (``"mnist"``, ``"svhn"``).
        shape: Image shape ``(C, H, W)``.
        num_val: Number of official training images held out as the fixed
            validation split.
        likelihood: Observation model the data is prepared for:
            ``"bernoulli"`` (binarised pixels in {0, 1}) or
            ``"discretized_logistic"`` (256 levels scaled to [-1, 1]).
        loader: The :data:`Loader` reading one official split from the data
            directory.
        torchvision_class: The ``torchvision.datasets`` class the loader reads
            the files with, if any.
        raw_files: The files the loader reads, relative to the data directory
            (listed in error messages; may be empty).
    """

    name: str
    shape: tuple[int, int, int]
    num_val: int
    likelihood: str
    loader: Loader
    torchvision_class: type | None = None
    raw_files: tuple[str, ...] = ()


# The registered datasets, name -> spec; filled by register_dataset (the
# built-in ones at the end of this module).
DATASETS: dict[str, DatasetSpec] = {}

SPLITS: tuple[str, ...] = ("train", "val", "test")

# Seed of the fixed train/validation permutation. Changing it changes every
# reported validation number, so it is a frozen constant, not a parameter.
SPLIT_SEED: int = 20_200_101

# Official split that each of our splits reads.
_OFFICIAL = {"train": "train", "val": "train", "test": "test"}

# Loaded splits keyed by (name, split, resolved data dir). Values are shared:
# callers must not modify the returned tensors in place.
_CACHE: dict[tuple[str, str, Path], ImageSet] = {}


class DataError(Exception):
    """Dataset files are missing, could not be downloaded, or are corrupt."""


class ImageSet(NamedTuple):
    """Images and labels of one split.

    Attributes:
        images: ``uint8 [N, C, H, W]`` raw pixel values 0..255.
        labels: ``int64 [N]`` class labels 0..9 (for SVHN, digit zero is 0);
            -1 for a dataset whose loader returns no labels.
    """

    images: torch.Tensor
    labels: torch.Tensor


# --------------------------------------------------------------------------- registry


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Makes a dataset loadable by name, here and in ``python -m experiments.run``.

    After registration :func:`load`, :func:`load_images`, the fixed
    train/validation split, :func:`to_model_input` and :func:`to_eval_input`
    work for ``spec.name`` as for the built-in datasets. The first ``num_val``
    images of a fixed permutation of the loader's ``"train"`` split become the
    validation split, so ``"train"`` must hold more than ``num_val`` images.

    Args:
        spec: The dataset; ``spec.loader`` reads it (see :data:`Loader`).
        replace: Allow replacing a dataset registered under the same name
            (e.g. when re-running a notebook cell); its cached splits are dropped.

    Returns:
        The registered spec (``shape`` normalised to a tuple of ints).

    Raises:
        ValueError: The name is taken (and ``replace`` is False), or the shape,
            ``num_val`` or likelihood is invalid.
        TypeError: ``spec`` is not a :class:`DatasetSpec` or its loader is not callable.
    """
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset expects a DatasetSpec, got {type(spec).__name__}")
    name = spec.name
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"dataset name must be a non-empty string without surrounding spaces, got {name!r}")
    if name in DATASETS and not replace:
        raise ValueError(
            f"dataset {name!r} is already registered (registered: {', '.join(DATASETS)}); "
            "choose another name, or pass replace=True to replace it"
        )
    try:
        shape, num_val = tuple(operator.index(n) for n in spec.shape), operator.index(spec.num_val)
    except TypeError:
        shape, num_val = (), 0
    if len(shape) != 3 or min(shape) < 1 or num_val < 1:
        raise ValueError(
            f"{name}: need shape = (C, H, W) of positive ints and a positive int num_val, "
            f"got shape={spec.shape!r}, num_val={spec.num_val!r}"
        )
    if spec.likelihood not in _INPUTS:
        raise ValueError(f"{name}: unknown likelihood {spec.likelihood!r}; choose from: {', '.join(_INPUTS)}")
    if not callable(spec.loader):
        raise TypeError(f"{name}: loader must be a function (root, split, download) -> images, got {spec.loader!r}")
    spec = spec._replace(shape=shape, num_val=num_val, raw_files=tuple(spec.raw_files))
    for cache_key in [k for k in _CACHE if k[0] == name]:
        del _CACHE[cache_key]  # splits read by a replaced loader
    DATASETS[name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    """Returns the :class:`DatasetSpec` of a dataset.

    Raises:
        ValueError: If ``name`` is not in :data:`DATASETS`; the message lists the choices.
    """
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}") from None


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


def missing_files(dataset: str, data_dir: str | os.PathLike | None = None) -> tuple[Path, list[str]]:
    """``(data directory, the dataset's raw files absent from it, gzipped or not)``; reads nothing."""
    root = resolve_data_dir(data_dir)
    files = get_spec(dataset).raw_files
    return root, [f for f in files if not (root / f).is_file() and not (root / (f + ".gz")).is_file()]


def _dir_origin(data_dir: str | os.PathLike | None) -> str:
    if data_dir is not None and str(data_dir) != "":
        return "passed explicitly"
    if os.environ.get("FGM_DATA_DIR"):
        return "from FGM_DATA_DIR"
    return "the default ./data; FGM_DATA_DIR is not set"


# --------------------------------------------------------------------------- splits


def split_indices(num_total: int, num_val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed train/validation partition of an official training set.

    ``torch.randperm`` on ``fgm.random.generator(fgm.random.key(SPLIT_SEED))``
    (the legacy CPU generator, frozen on purpose); its first
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
    # The split is part of the dataset's definition, so it keeps the permutation it has always
    # had: torch.randperm on the legacy CPU generator (fgm.random.generator), not fgm.random's
    # Philox samplers, whose numbers changed once already.
    perm = torch.randperm(num_total, generator=fr.generator(fr.key(SPLIT_SEED)))
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
        download: If the files are missing, let the loader try to download them.

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
    """The images of one split; see :func:`load` for the arguments.

    Returns:
        ``uint8 [N, C, H, W]`` (shared with the cache: do not modify in place).
    """
    return load(name, split, data_dir, download).images


def clear_cache() -> None:
    """Forgets every loaded split (frees memory; the next load reads the files again)."""
    _CACHE.clear()


def _read_official(spec, official, root, data_dir, download) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs the spec's loader on an official split and checks what it returns: ``(uint8 [N,C,H,W], int64 [N])``."""
    try:
        out = spec.loader(root, official, download)
    except FileNotFoundError as e:
        raise DataError(_missing_message(spec, root, data_dir, download, e)) from (
            None if isinstance(e, _MissingFiles) else e
        )
    if isinstance(out, (torch.Tensor, np.ndarray)):
        images, labels = out, None
    elif isinstance(out, tuple) and len(out) == 2:  # (images, labels), an ImageSet included
        images, labels = out
    else:
        raise DataError(
            f"{spec.name}: the loader returned {type(out).__name__}; expected uint8 images [N, C, H, W] "
            "or a pair (images, labels)"
        )
    images = torch.as_tensor(images)
    if labels is None:
        labels = torch.full((images.shape[0] if images.dim() else 0,), -1, dtype=torch.int64)
    labels = torch.as_tensor(labels)
    if not labels.is_floating_point() and not labels.is_complex():
        labels = labels.to(torch.int64)
    if (
        images.dtype != torch.uint8
        or tuple(images.shape[1:]) != spec.shape
        or labels.dtype != torch.int64
        or labels.shape != (images.shape[0],)
    ):
        files = f" ({', '.join(spec.raw_files)})" if spec.raw_files else ""
        raise DataError(
            f"{spec.name}: the official {official} split read from {root}{files} holds unexpected arrays "
            f"(images {images.dtype} {tuple(images.shape)}, labels {labels.dtype} {tuple(labels.shape)}); "
            f"expected uint8 [N, {', '.join(map(str, spec.shape))}] and integer labels [N]"
        )
    return images.contiguous(), labels


class _MissingFiles(FileNotFoundError):
    """Raised by the built-in loaders: the files absent after a download attempt, if any."""

    def __init__(self, expected: list[str], missing: list[str], download_error: BaseException | None):
        super().__init__(f"missing: {', '.join(missing)}")
        self.expected, self.missing, self.download_error = expected, missing, download_error


def _missing_message(spec, root, data_dir, download, error: FileNotFoundError) -> str:
    if isinstance(error, _MissingFiles):
        expected, missing, download_error = error.expected, error.missing, error.download_error
    else:  # a loader of a registered dataset
        expected, missing, download_error = spec.raw_files, [str(error.filename or error)], None
    lines = [f"{spec.name} data not found in {root} ({_dir_origin(data_dir)})."]
    if expected:
        lines += ["Expected these files (relative to that directory):", *[f"  {f}" for f in expected]]
    lines.append(f"Missing: {', '.join(missing)}.")
    if not download:
        lines.append("Download was not attempted (download=False).")
    elif download_error is not None:
        lines.append(f"Download failed: {type(download_error).__name__}: {download_error}")
    lines.append(
        "Fix: set FGM_DATA_DIR (or pass --data-dir / data_dir=) to a directory holding these "
        "files, or run once with download=True on a machine with internet access."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- built-in loaders

_MNIST_FILES = tuple(
    f"MNIST/raw/{f}"
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
)
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _load_mnist(root: Path, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST's official ``split`` through torchvision: ``(uint8 [N, 1, 28, 28], int64 [N])``."""

    def construct(download):
        return torchvision.datasets.MNIST(str(root), train=(split == "train"), download=download)

    def missing():
        _extract_gz(_MNIST_FILES, root)
        return [f for f in _MNIST_FILES if not (root / f).is_file()]  # torchvision's MNIST checks all four files

    _require_files(missing, construct, download, expected=[f + "   (or .gz)" for f in _MNIST_FILES])
    files = [root / f for f in _MNIST_FILES]
    for path in files:
        _validate_idx(path)
    ds = _open_torchvision("mnist", construct, files, "could not be read")
    return ds.data.unsqueeze(1), ds.targets.to(torch.int64)  # [N, 28, 28] -> [N, 1, 28, 28]


def _load_svhn(root: Path, split: str, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """SVHN's official ``split`` (``.mat`` files) through torchvision: ``(uint8 [N, 3, 32, 32], int64 [N])``."""

    def construct(download):
        return torchvision.datasets.SVHN(str(root), split=split, download=download)

    needed = [f for f in _SVHN_FILES if f.startswith(split)]
    _require_files(
        lambda: [f for f in needed if not (root / f).is_file()], construct, download, expected=list(_SVHN_FILES)
    )
    ds = _open_torchvision(
        "svhn", construct, [root / f for f in needed], "failed torchvision's md5 check or could not be read"
    )
    # torchvision already transposed (H, W, C, N) -> (N, C, H, W) and mapped label 10 -> 0.
    return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(np.asarray(ds.labels, dtype=np.int64))


def _require_files(missing: Callable[[], list[str]], construct, download: bool, expected: list[str]) -> None:
    """Lets torchvision download what ``missing()`` lists (if allowed).

    Raises :class:`_MissingFiles` if the files are still absent.
    """
    absent = missing()
    if not absent:
        return
    download_error = None
    if download:
        try:
            construct(True)
        except Exception as e:
            download_error = e
        absent = missing()
        if absent and download_error is None:
            download_error = RuntimeError("torchvision reported success but files are absent")
    if absent:
        raise _MissingFiles(expected, absent, download_error)


def _open_torchvision(name: str, construct, files: list[Path], what: str):
    """The torchvision dataset over files known to exist; a :class:`DataError` if it cannot be read."""
    try:
        return construct(False)
    except Exception as e:
        raise DataError(
            f"{name}: {', '.join(map(str, files))} exists but {what}: the file is corrupt "
            f"or incomplete ({type(e).__name__}: {e}); delete it and fetch it again"
        ) from e


def _extract_gz(files: tuple[str, ...], root: Path) -> None:
    """Unpacks ``X.gz`` next to a missing ``X``, as torchvision's download step would, offline."""
    for rel in files:
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


# --------------------------------------------------------------------------- batching


def num_batches(n: int, batch_size: int, drop_last: bool = True) -> int:
    """Number of batches :func:`batches` yields for ``n`` items.

    Args:
        n: Number of items.
        batch_size: Items per batch, >= 1.
        drop_last: Whether an incomplete last batch is dropped.

    Returns:
        ``n // batch_size`` if ``drop_last``, else ``ceil(n / batch_size)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(
    images: torch.Tensor,
    batch_size: int,
    key: fr.Key | None,
    shuffle: bool = True,
    drop_last: bool = True,
    pin_memory: bool = False,
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
        pin_memory: Gather each batch of CPU ``images`` into page-locked memory, so
            that ``batch.to("cuda", non_blocking=True)`` copies asynchronously.

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
            if pin_memory:
                index = torch.arange(lo, hi) if order is None else order[lo:hi]
                out = torch.empty((hi - lo, *images.shape[1:]), dtype=images.dtype, pin_memory=True)
                yield torch.index_select(images, 0, index, out=out)
            else:
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


class _Inputs(NamedTuple):
    """How one likelihood's data is turned into model inputs."""

    train: Callable[[torch.Tensor, fr.Key | None], torch.Tensor]  # (uint8 batch, key) -> float batch
    eval: Callable[[torch.Tensor], torch.Tensor]  # uint8 set -> float set, deterministic
    needs_key: bool


# Model-input transforms per likelihood; a DatasetSpec's likelihood must be one of these keys.
_INPUTS: dict[str, _Inputs] = {
    "bernoulli": _Inputs(
        train=lambda images, key: binarize(key, images),
        eval=lambda images: fixed_binarization(images, seed=0),
        needs_key=True,
    ),
    "discretized_logistic": _Inputs(train=lambda images, key: _to_levels(images), eval=_to_levels, needs_key=False),
}


def to_model_input(name: str, images: torch.Tensor, key: fr.Key | None) -> torch.Tensor:
    """Turns a training batch of raw pixels into what the model's likelihood expects.

    The transform depends only on the dataset's ``likelihood``:

    * ``"bernoulli"`` (``mnist``): dynamic binarisation with ``key``, float 0./1.
    * ``"discretized_logistic"`` (``svhn``): deterministic scaling of the 256
      levels to [-1, 1], level ``k`` <-> ``k / 127.5 - 1`` (``key`` is unused).

    Args:
        name: Dataset name.
        images: ``uint8 [B, C, H, W]``.
        key: Random key (needed for ``"bernoulli"``; use a fresh one per batch).

    Returns:
        ``float32 [B, C, H, W]``.
    """
    spec = get_spec(name)
    inputs = _INPUTS[spec.likelihood]
    if inputs.needs_key and key is None:
        raise ValueError(f"{name}: dynamic binarisation needs a key")
    return inputs.train(images, key)


def to_eval_input(name: str, images: torch.Tensor) -> torch.Tensor:
    """Deterministic model input for evaluation sets (validation / test).

    * ``"bernoulli"`` (``mnist``): :func:`fixed_binarization` with seed 0 (call on the whole set).
    * ``"discretized_logistic"`` (``svhn``): the same scaling as
      :func:`to_model_input`, ``k / 127.5 - 1``.

    Args:
        name: Dataset name.
        images: ``uint8 [N, C, H, W]``.

    Returns:
        ``float32 [N, C, H, W]``; the same result on every call.
    """
    return _INPUTS[get_spec(name).likelihood].eval(images)


# --------------------------------------------------------------------------- built-in datasets
# Registered like any other dataset: each is a spec and a loader function.

register_dataset(
    DatasetSpec(
        name="mnist",
        shape=(1, 28, 28),
        num_val=5000,
        likelihood="bernoulli",
        loader=_load_mnist,
        torchvision_class=torchvision.datasets.MNIST,
        raw_files=_MNIST_FILES,
    )
)
register_dataset(
    DatasetSpec(
        name="svhn",
        shape=(3, 32, 32),
        num_val=5000,
        likelihood="discretized_logistic",
        loader=_load_svhn,
        torchvision_class=torchvision.datasets.SVHN,
        raw_files=_SVHN_FILES,
    )
)
