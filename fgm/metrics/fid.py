"""FID of image sets: Inception statistics, a disk cache for them, and the distance.

Built on :mod:`fgm.metrics.frechet` (the streaming float64 statistics and the
robust Fréchet distance) and :mod:`fgm.metrics.inception` (the features)::

    extract = inception.make_feature_extractor()                  # TF FID weights
    real = dataset_statistics("mnist", "test", extract, cache_dir="~/.cache/fgm")
    result = fid(samples, real, extract)                          # samples: [N, C, H, W] in [0, 1]
    print(result)                                                 # FID 12.345 (N = 10000 vs 10000)

Statistics of real data are computed once per (dataset, split, number of
images, a hash of the images, weights, preprocessing, precision) and stored by
:func:`cached_statistics`; the file carries its key and a checksum and is
refused when the key, shapes, count or values do not fit. FID with few images is biased upwards (and
singular below 2048 images): compare values only at the same ``N``, which
:class:`FIDResult` always carries.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from fgm.metrics import inception
from fgm.metrics.frechet import (
    FeatureStats,
    frechet_distance_from_stats,
    init_stats,
    mean_and_covariance,
    sample_size_warning,
    stats_from_features,
    stats_from_mean_and_covariance,
    update_stats,
)

__all__ = [
    "FIDResult",
    "NpzStatistics",
    "StatisticsCacheError",
    "cached_features",
    "cached_statistics",
    "dataset_features",
    "dataset_statistics",
    "features_cache_path",
    "fid",
    "fid_from_features",
    "fid_from_stats",
    "image_features",
    "image_fingerprint",
    "image_statistics",
    "images_from_file",
    "load_npz",
    "save_npz",
    "statistics_key",
]

Images = torch.Tensor | Iterable[Any]
_CACHE_FORMAT = "fgm-feature-stats-v2"  # v2: with a checksum of the sums
_FEATURES_FORMAT = "fgm-features-v1"


class StatisticsCacheError(ValueError):
    """A statistics cache file is unreadable or does not match its key."""


class FIDResult(NamedTuple):
    """An FID value with the number of images of each set (always report both).

    ``warning`` is :func:`fgm.metrics.frechet.sample_size_warning`'s text when
    a set has ``N ≤ D`` (singular covariance, value biased upwards), else
    ``None``: store it with the value.
    """

    value: float
    num_a: int
    num_b: int
    warning: str | None = None

    def __str__(self) -> str:
        return f"FID {self.value:.3f} (N = {self.num_a} vs {self.num_b})"


def _batches(images: Images, batch_size: int):
    """Batches ``[n, C, H, W]`` of a tensor, or of an iterable of tensors / ``(images, labels)`` tuples."""
    if isinstance(images, torch.Tensor):
        yield from images.split(batch_size)
        return
    for batch in images:
        if isinstance(batch, (tuple, list)):  # DataLoader-style (images, labels)
            batch = batch[0]
        yield from batch.split(batch_size)


def image_statistics(
    images: Images,
    extractor: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 50,
    progress: bool = True,
    total: int | None = None,
    desc: str = "FID features",
) -> FeatureStats:
    """Feature statistics of an image set in one streaming pass (float64 sums).

    Args:
      images: ``[N, C, H, W]`` tensor, or an iterable of such batches (or of
        ``(images, labels)`` tuples); uint8 or float in ``[0, 1]``.
      extractor: ``images → [n, D]`` features, e.g. :func:`inception.make_feature_extractor`.
      batch_size: images per extractor call (larger batches are split).
      progress: show a tqdm bar (images, rate, ETA).
      total: number of images, for the bar's ETA when ``images`` is an iterable.
      desc: the bar's label.

    Returns:
      :class:`FeatureStats` (count, ``Σf``, ``Σ f fᵀ``); only these are kept,
      never the features.

    Raises:
      ValueError: no images.
    """
    stats = None
    for features in _feature_batches(images, extractor, batch_size, progress, total, desc):
        stats = update_stats(init_stats(features.shape[1]) if stats is None else stats, features)
    if stats is None:
        raise ValueError("no images to compute statistics of")
    return stats


def _feature_batches(images: Images, extractor, batch_size: int, progress: bool, total: int | None, desc: str):
    """The extractor's output batch by batch, with a tqdm bar over images."""
    if isinstance(images, torch.Tensor):
        total = images.shape[0]
    with tqdm(total=total, unit="img", desc=desc, disable=not progress, dynamic_ncols=True) as bar:
        for batch in _batches(images, batch_size):
            yield extractor(batch)
            bar.update(batch.shape[0])


def image_features(
    images: Images,
    extractor: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 50,
    progress: bool = True,
    total: int | None = None,
    desc: str = "features",
) -> torch.Tensor:
    """All features of an image set, held in memory: the one pass every metric then reads.

    FID needs only :func:`fgm.metrics.frechet.stats_from_features` of the
    result (:func:`fid_from_features`); KID and precision/recall need the
    vectors themselves. 10,000 Inception features take 80 MB in float32.

    Args:
      images, extractor, batch_size, progress, total, desc: as in :func:`image_statistics`.

    Returns:
      ``[N, D]`` on the CPU, in the extractor's dtype (float32 for Inception).

    Raises:
      ValueError: no images.
    """
    chunks = [f.detach().cpu() for f in _feature_batches(images, extractor, batch_size, progress, total, desc)]
    if not chunks:
        raise ValueError("no images to compute features of")
    return torch.cat(chunks)


def image_fingerprint(images: torch.Tensor) -> str:
    """SHA-256 prefix of an image tensor's dtype, shape and values (not of its memory layout).

    One SHA-256 pass over the bytes: negligible next to an Inception pass
    over the same images, so it is computed on every cache lookup.

    Args:
      images: ``[N, C, H, W]``, any dtype and device.

    Returns:
      The first 16 hex digits of the digest.
    """
    flat = images.detach().cpu().contiguous().view(-1)
    h = hashlib.sha256(f"{flat.dtype}{tuple(images.shape)}".encode())
    h.update(flat.view(torch.uint8).numpy().data)  # the bytes as they are, without a copy
    return h.hexdigest()[:16]


def statistics_key(
    dataset: str,
    split: str,
    num_images: int,
    info: inception.FeatureInfo,
    *,
    images: torch.Tensor | None = None,
    **extra,
) -> dict:
    """The cache key of a data set's statistics: what the set is and what the features are.

    A name does not pin down content (a re-downloaded, re-ordered or edited
    split keeps its name), so give ``images`` whenever they are at hand: the
    key then holds their :func:`image_fingerprint` and another set of the
    same name and size gets its own cache entry.

    Args:
      dataset, split: e.g. ``"mnist"``, ``"test"``.
      num_images: how many images (the first ``num_images`` of the split).
      info: the extractor's :class:`inception.FeatureInfo` (weights
        fingerprint, preprocessing version, precision).
      images: ``[num_images, C, H, W]``, the images the statistics are of.
      **extra: anything else that changes the images (JSON scalars).

    Raises:
      ValueError: ``images`` does not hold ``num_images`` images.
    """
    key = {"dataset": dataset, "split": split, "num_images": int(num_images), **info.key(), **extra}
    if images is not None:
        if images.shape[0] != int(num_images):
            raise ValueError(f"the key is for {int(num_images)} images but {images.shape[0]} were given")
        key["images_sha256"] = image_fingerprint(images)
    return key


def _key_json(key: dict) -> str:
    try:
        return json.dumps(key, sort_keys=True, separators=(",", ":"))
    except TypeError as e:
        raise TypeError(f"cache key must hold JSON values only: {e}") from e


def cache_path(cache_dir: str | os.PathLike, key: dict) -> Path:
    """``<cache_dir>/fid-stats-<sha256(key)[:16]>.pt``."""
    digest = hashlib.sha256(_key_json(key).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"fid-stats-{digest}.pt"


def _open_cache(path: Path, key: dict, fmt: str, what: str) -> tuple[dict, Callable[[str], StatisticsCacheError]]:
    """A cache file's dict, checked for its format and key, and the error maker for the caller's own checks."""

    def refuse(reason: str) -> StatisticsCacheError:
        return StatisticsCacheError(f"{what} {path} {reason}; delete it to recompute")

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise refuse(f"is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise refuse(f"is not a {fmt} file")
    if blob.get("key") != _key_json(key):
        raise refuse(f"was written for another key: {blob.get('key')} (wanted {_key_json(key)})")
    return blob, refuse


def _read_cache(path: Path, key: dict) -> FeatureStats:
    """Loads and verifies one cache file; any problem is a :class:`StatisticsCacheError`."""

    blob, refuse = _open_cache(path, key, _CACHE_FORMAT, "statistics cache")
    count, total, outer = blob.get("count"), blob.get("total"), blob.get("outer")
    if not all(isinstance(t, torch.Tensor) for t in (count, total, outer)):
        raise refuse("lacks count/total/outer tensors")
    dim = total.shape[0] if total.dim() == 1 else -1
    if count.dim() != 0 or outer.shape != (dim, dim) or total.dtype != torch.float64 or outer.dtype != torch.float64:
        raise refuse(f"has malformed statistics (total {tuple(total.shape)}, outer {tuple(outer.shape)})")
    if int(count) < 1 or not (torch.isfinite(total).all() and torch.isfinite(outer).all()):
        raise refuse("has an empty count or non-finite sums")
    if "num_images" in key and int(count) != int(key["num_images"]):
        raise refuse(f"holds {int(count)} images, the key says {key['num_images']}")
    if blob.get("sha256") != _stats_sha256(count, total, outer):
        raise refuse("fails its checksum (the statistics were modified or damaged)")
    return FeatureStats(count.to(torch.int64), total, outer)


def cached_statistics(
    cache_dir: str | os.PathLike | None,
    key: dict,
    compute: Callable[[], FeatureStats],
) -> FeatureStats:
    """Statistics from ``cache_dir`` if stored under ``key``, else ``compute()`` and store them.

    The file name is a hash of ``key`` and the file repeats the key, so a
    collision or a copied file is detected; a SHA-256 of the sums, verified
    on every read, refuses a modified or damaged file. Writes go to a temporary file in
    the same directory and are moved into place with ``os.replace``: a crash
    never leaves a half-written cache, and concurrent writers agree.

    Args:
      cache_dir: the cache folder (created if needed); ``None`` disables caching.
      key: JSON-able dict identifying the statistics (see :func:`statistics_key`).
      compute: produces the statistics on a miss.

    Raises:
      StatisticsCacheError: the cached file is corrupt or was written for
        another key (it is never silently overwritten).
    """
    if cache_dir is None:
        return compute()
    path = cache_path(cache_dir, key)
    if path.exists():
        return _read_cache(path, key)
    stats = compute()
    count, total, outer = stats.count.to(torch.int64), stats.total.to(torch.float64), stats.outer.to(torch.float64)
    blob = {
        "format": _CACHE_FORMAT,
        "key": _key_json(key),
        "count": count,
        "total": total,
        "outer": outer,
        "sha256": _stats_sha256(count, total, outer),
    }
    _atomic_save(blob, path)
    return stats


def _atomic_save(blob: dict, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace`` (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and values."""
    flat = t.detach().cpu().contiguous().view(-1)
    h = hashlib.sha256(f"{flat.dtype}{tuple(t.shape)}".encode())
    h.update(flat.view(torch.uint8).numpy().data)
    return h.hexdigest()


def _stats_sha256(*tensors: torch.Tensor) -> str:
    """SHA-256 over the :func:`_tensor_sha256` of each tensor, in order."""
    return hashlib.sha256("".join(_tensor_sha256(t) for t in tensors).encode()).hexdigest()


def features_cache_path(cache_dir: str | os.PathLike, key: dict) -> Path:
    """``<cache_dir>/features-<sha256(key)[:16]>.pt``: the statistics' key, another file."""
    stats_path = cache_path(cache_dir, key)
    return stats_path.with_name(stats_path.name.replace("fid-stats-", "features-", 1))


def _read_features(path: Path, key: dict) -> torch.Tensor:
    """Loads and verifies one feature cache file; any problem is a :class:`StatisticsCacheError`."""

    blob, refuse = _open_cache(path, key, _FEATURES_FORMAT, "feature cache")
    features = blob.get("features")
    if not isinstance(features, torch.Tensor) or features.dim() != 2 or not features.is_floating_point():
        raise refuse("lacks a floating-point [N, D] features tensor")
    if "num_images" in key and features.shape[0] != int(key["num_images"]):
        raise refuse(f"holds {features.shape[0]} feature vectors, the key says {key['num_images']}")
    if blob.get("sha256") != _tensor_sha256(features):
        raise refuse("fails its checksum (the features were modified or damaged)")
    return features


def cached_features(
    cache_dir: str | os.PathLike | None,
    key: dict,
    compute: Callable[[], torch.Tensor],
) -> torch.Tensor:
    """Features from ``cache_dir`` if stored under ``key``, else ``compute()`` and store them.

    Like :func:`cached_statistics` (file name from a hash of the key, the key
    repeated inside, atomic writes), plus a SHA-256 of the feature values that
    is verified on every read: KID and precision/recall read the vectors
    themselves, so a damaged file must not pass.

    Args:
      cache_dir: the cache folder (created if needed); ``None`` disables caching.
      key: JSON-able dict identifying the features (see :func:`statistics_key`).
      compute: produces ``[N, D]`` features on a miss.

    Returns:
      ``[N, D]`` features on the CPU.

    Raises:
      StatisticsCacheError: the cached file is corrupt or was written for another key.
    """
    if cache_dir is None:
        return compute()
    path = features_cache_path(cache_dir, key)
    if path.exists():
        return _read_features(path, key)
    features = compute().detach().cpu().contiguous()
    blob = {"format": _FEATURES_FORMAT, "key": _key_json(key), "features": features, "sha256": _tensor_sha256(features)}
    _atomic_save(blob, path)
    return features


def _dataset_images(dataset: str, split: str, extractor, num_images: int | None, data_dir) -> tuple[torch.Tensor, dict]:
    """The first ``num_images`` images of a split (checked: 2 <= N <= the split) and their cache key."""
    from fgm import data  # local: fgm.data pulls in torchvision datasets, unneeded for the maths

    images = data.load_images(dataset, split, data_dir)
    n = images.shape[0] if num_images is None else int(num_images)
    if not 2 <= n <= images.shape[0]:
        raise ValueError(f"num_images must be in [2, {images.shape[0]}] for {dataset}/{split}, got {n}")
    return images[:n], statistics_key(dataset, split, n, extractor.info, images=images[:n])


def dataset_statistics(
    dataset: str,
    split: str,
    extractor: inception.FeatureExtractor,
    *,
    num_images: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> FeatureStats:
    """Statistics of the first ``num_images`` images of a data split, cached on disk.

    Args:
      dataset, split: as in :func:`fgm.data.load_images` (``"test"`` is the
        official test set in its official order).
      extractor: a :class:`inception.FeatureExtractor` (its ``info`` keys the cache).
      num_images: ``None`` for the whole split.
      cache_dir: statistics cache folder; ``None`` computes without caching.
      data_dir: data folder (default ``$FGM_DATA_DIR``, see :mod:`fgm.data`).
      batch_size, progress: see :func:`image_statistics`.
    """
    images, key = _dataset_images(dataset, split, extractor, num_images, data_dir)
    desc = f"{dataset}/{split} features"
    compute = lambda: image_statistics(images, extractor, batch_size, progress, desc=desc)  # noqa: E731
    return cached_statistics(cache_dir, key, compute)


def dataset_features(
    dataset: str,
    split: str,
    extractor: inception.FeatureExtractor,
    *,
    num_images: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 50,
    progress: bool = True,
) -> torch.Tensor:
    """Features ``[N, D]`` of the first ``num_images`` images of a data split, cached on disk.

    The key is :func:`dataset_statistics`' (dataset, split, N, the images'
    fingerprint, the extractor's weights, preprocessing and precision); the
    features go to their own file (:func:`features_cache_path`). Arguments as
    in :func:`dataset_statistics`.
    """
    images, key = _dataset_images(dataset, split, extractor, num_images, data_dir)
    desc = f"{dataset}/{split} features"
    return cached_features(cache_dir, key, lambda: image_features(images, extractor, batch_size, progress, desc=desc))


def fid_from_features(features_a: torch.Tensor, features_b: torch.Tensor) -> FIDResult:
    """:class:`FIDResult` of two feature matrices ``[N_a, D]`` and ``[N_b, D]`` (statistics in float64)."""
    return fid_from_stats(stats_from_features(features_a), stats_from_features(features_b))


def fid_from_stats(stats_a: FeatureStats, stats_b: FeatureStats) -> FIDResult:
    """:class:`FIDResult` of two sets' statistics (warns when a set has ``N ≤ D``, and says so in ``warning``)."""
    value = frechet_distance_from_stats(stats_a, stats_b)
    return FIDResult(value, int(stats_a.count), int(stats_b.count), sample_size_warning(stats_a, stats_b))


def fid(
    images_a: Images | FeatureStats,
    images_b: Images | FeatureStats,
    extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    batch_size: int = 50,
    progress: bool = False,
) -> FIDResult:
    """Fréchet Inception Distance between two image sets.

    ``FID = ‖μ_a - μ_b‖² + Tr(Σ_a + Σ_b - 2 (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2})`` over
    the sets' pool3 features (:func:`fgm.metrics.frechet.frechet_distance`).

    Args:
      images_a, images_b: ``[N, C, H, W]`` tensors in ``[0, 1]`` (or uint8),
        iterables of batches, or precomputed :class:`FeatureStats` (e.g.
        cached real-data statistics, which must come from the same extractor).
      extractor: the feature extractor; default
        :func:`inception.make_feature_extractor` ``()`` (TF FID weights).
      batch_size, progress: see :func:`image_statistics`.

    Returns:
      ``FIDResult(value, num_a, num_b)``.
    """

    def stats_of(images):
        nonlocal extractor
        if isinstance(images, FeatureStats):
            return images
        if extractor is None:
            extractor = inception.make_feature_extractor()
        return image_statistics(images, extractor, batch_size, progress)

    return fid_from_stats(stats_of(images_a), stats_of(images_b))


# ---------------------------------------------------------------------------------------------
# pytorch-fid's .npz statistics


class NpzStatistics(NamedTuple):
    """Statistics as pytorch-fid stores them: ``mu [D]``, ``sigma [D, D]`` (float64), and N when recorded."""

    mean: torch.Tensor
    cov: torch.Tensor
    count: int | None

    def to_stats(self) -> FeatureStats:
        """The :class:`FeatureStats` these came from (needs ``count``)."""
        if self.count is None:
            raise ValueError("this .npz file does not record N (pytorch-fid's own files do not): use mean and cov")
        return stats_from_mean_and_covariance(self.mean, self.cov, self.count)


def save_npz(path: str | os.PathLike, stats: FeatureStats) -> None:
    """Writes ``mu``, ``sigma`` and ``num_images`` in pytorch-fid's ``.npz`` format.

    ``python -m pytorch_fid a.npz b.npz`` reads such files (it ignores
    ``num_images``), so values can be cross-checked with that tool; with
    features of its own it also needs the same preprocessing (pytorch-fid
    resizes with ``F.interpolate``: ``Preprocess(convention="pytorch-fid")``).
    ``sigma`` is the unbiased covariance (``N - 1``), as ``np.cov`` gives.

    Args:
      path: destination (numpy appends ``.npz`` when missing).
      stats: the statistics.
    """
    mean, cov = mean_and_covariance(stats)
    np.savez(path, mu=mean.numpy(), sigma=cov.numpy(), num_images=np.int64(int(stats.count)))


def load_npz(path: str | os.PathLike) -> NpzStatistics:
    """Reads ``mu`` and ``sigma`` from a pytorch-fid ``.npz`` file (and ``num_images`` when present).

    Args:
      path: the file.

    Returns:
      :class:`NpzStatistics` in float64; ``count`` is ``None`` for files
      written by pytorch-fid itself.

    Raises:
      ValueError: ``mu`` or ``sigma`` is missing, or their shapes do not fit.
    """
    with np.load(path) as archive:
        if "mu" not in archive.files or "sigma" not in archive.files:
            raise ValueError(f"{path}: a pytorch-fid statistics file holds 'mu' and 'sigma', found {archive.files}")
        mean = torch.from_numpy(archive["mu"].astype(np.float64))
        cov = torch.from_numpy(archive["sigma"].astype(np.float64))
        count = int(archive["num_images"]) if "num_images" in archive.files else None
    if mean.dim() != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
        raise ValueError(f"{path}: mu {tuple(mean.shape)} and sigma {tuple(cov.shape)} do not fit [D] and [D, D]")
    return NpzStatistics(mean, cov, count)


def images_from_file(path: Path) -> torch.Tensor:
    """Images from ``.npy``/``.npz``/``.pt`` as ``float [N, C, H, W]`` in ``[0, 1]``."""
    if path.suffix == ".pt":
        array = torch.load(path, map_location="cpu", weights_only=True)
    elif path.suffix == ".npy":
        array = torch.from_numpy(np.load(path))
    elif path.suffix == ".npz":
        with np.load(path) as archive:
            array = torch.from_numpy(archive[archive.files[0]])
    else:
        raise ValueError(f"{path}: unsupported image file (use .npy, .npz or .pt)")
    if not isinstance(array, torch.Tensor):
        raise ValueError(f"{path}: expected a tensor of images, got {type(array).__name__}")
    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise ValueError(f"{path}: expected images [N, C, H, W], [N, H, W, C] or [N, H, W], got {tuple(array.shape)}")
    if array.shape[1] not in (1, 3) and array.shape[-1] in (1, 3):
        array = array.permute(0, 3, 1, 2)
    if array.dtype == torch.uint8:
        return array.float() / 255.0
    array = array.float()
    if array.min() < 0 or array.max() > 1:
        raise ValueError(f"{path}: float images must lie in [0, 1] (got [{array.min():.3g}, {array.max():.3g}])")
    return array
