"""Features once: image_features, the feature cache, FID from features, pytorch-fid .npz statistics."""

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fgm import random
from fgm.metrics import fid as FID
from fgm.metrics import frechet as F
from tests.test_fid import DIM, INFO, fake_extractor, images


def test_image_features_are_the_extractor_output_in_order(key):
    k1, k2 = random.split(key)
    extract, x = fake_extractor(k1), images(k2, 103)
    expected = extract(x)
    for source in (x, [x[:40], x[40:]], [(x[:50], None), (x[50:], None)]):
        features = FID.image_features(source, extract, batch_size=7, progress=False)
        assert features.shape == (103, DIM)
        torch.testing.assert_close(features, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no images"):
        FID.image_features([], extract, progress=False)


def test_fid_from_features_equals_the_streaming_path(key):
    k1, k2, k3 = random.split(key, 3)
    extract, a, b = fake_extractor(k1), images(k2, 120), images(k3, 90) * 0.7
    streamed = FID.fid(a, b, extract, batch_size=16)
    from_features = FID.fid_from_features(FID.image_features(a, extract, progress=False), extract(b))
    assert from_features.value == pytest.approx(streamed.value, rel=1e-9)
    assert from_features[1:] == (120, 90, None)


def test_fid_result_carries_the_small_sample_warning(key):
    extract = fake_extractor(key)
    with pytest.warns(UserWarning, match="singular"):
        result = FID.fid_from_features(extract(images(key, 10)), extract(images(random.fold_in(key, 1), 40)))
    assert result.warning == (
        f"the first set has 10 feature vectors for {DIM} dimensions: its covariance is singular and the Fréchet "
        "distance is biased upwards; report N with the value"
    )


def test_feature_cache_round_trip_computes_once_beside_the_statistics(key, tmp_path):
    k1, k2 = random.split(key)
    extract, x = fake_extractor(k1), images(k2, 30)
    calls = []

    def compute():
        calls.append(1)
        return extract(x)

    cache_key = FID.statistics_key("mnist", "test", 30, INFO, images=x)
    first = FID.cached_features(tmp_path, cache_key, compute)
    second = FID.cached_features(tmp_path, dict(reversed(list(cache_key.items()))), compute)
    assert len(calls) == 1 and torch.equal(first, second) and torch.equal(first, extract(x))
    FID.cached_statistics(tmp_path, cache_key, lambda: F.stats_from_features(first))  # same key, its own file
    names = sorted(p.name for p in tmp_path.iterdir())
    paths = [FID.features_cache_path(tmp_path, cache_key), FID.cache_path(tmp_path, cache_key)]
    assert names == sorted(p.name for p in paths)
    assert names[0].startswith("features-") and names[1].startswith("fid-stats-")
    assert FID.cached_features(None, cache_key, compute) is not None and len(calls) == 2  # no cache: computes


def test_corrupt_or_mismatched_feature_cache_is_refused(key, tmp_path):
    extract, x = fake_extractor(key), images(key, 20)
    good_key = FID.statistics_key("mnist", "test", 20, INFO, images=x)
    other_key = FID.statistics_key("mnist", "test", 20, INFO, images=x.flip(0))
    FID.cached_features(tmp_path, good_key, lambda: extract(x))
    good, other = FID.features_cache_path(tmp_path, good_key), FID.features_cache_path(tmp_path, other_key)

    other.write_bytes(good.read_bytes())  # a file under the wrong name
    with pytest.raises(FID.StatisticsCacheError, match="another key"):
        FID.cached_features(tmp_path, other_key, lambda: extract(x))
    other.write_bytes(good.read_bytes()[:500])  # truncated
    with pytest.raises(FID.StatisticsCacheError, match="unreadable"):
        FID.cached_features(tmp_path, other_key, lambda: extract(x))

    blob = torch.load(good, weights_only=True)
    blob["features"][3, 5] += 1e-9  # one value changed; the stored checksum no longer fits
    torch.save(blob, good)
    with pytest.raises(FID.StatisticsCacheError, match="checksum"):
        FID.cached_features(tmp_path, good_key, lambda: extract(x))

    blob["features"] = blob["features"][:19]  # too few rows for the key
    torch.save(blob, good)
    with pytest.raises(FID.StatisticsCacheError, match="19 feature vectors"):
        FID.cached_features(tmp_path, good_key, lambda: extract(x))


def test_dataset_features_are_cached_under_the_images_key(mnist_root, tmp_path, key):
    from fgm import data
    from fgm.metrics import inception as I

    weight = random.normal(key, (49, DIM), dtype=torch.float64)
    calls = []

    def pooled(x):
        calls.append(x.shape[0])
        return torch.nn.functional.avg_pool2d(x.double(), 4).flatten(1) @ weight

    extract = I.FeatureExtractor(pooled, INFO)
    kwargs = dict(num_images=25, cache_dir=tmp_path, data_dir=mnist_root, progress=False)
    first = FID.dataset_features("mnist", "test", extract, batch_size=10, **kwargs)
    again = FID.dataset_features("mnist", "test", extract, **kwargs)
    assert calls == [10, 10, 5] and torch.equal(first, again) and first.shape == (25, DIM)
    real = data.load_images("mnist", "test", mnist_root)[:25]
    torch.testing.assert_close(first, pooled(real), rtol=1e-12, atol=1e-12)
    expected = FID.statistics_key("mnist", "test", 25, INFO, images=real)
    assert [p.name for p in tmp_path.iterdir()] == [FID.features_cache_path(tmp_path, expected).name]


# --------------------------------------------------------------------------- pytorch-fid .npz


def _stats(key, n, shift=0.0):
    return F.stats_from_features(random.normal(key, (n, DIM), dtype=torch.float64) + shift)


def test_npz_round_trip(key, tmp_path):
    stats = _stats(key, 80, 0.5)
    FID.save_npz(tmp_path / "a.npz", stats)
    loaded = FID.load_npz(tmp_path / "a.npz")
    mean, cov = F.mean_and_covariance(stats)
    assert torch.equal(loaded.mean, mean) and torch.equal(loaded.cov, cov) and loaded.count == 80
    back = loaded.to_stats()
    assert int(back.count) == 80
    torch.testing.assert_close(back.total, stats.total, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(back.outer, stats.outer, rtol=1e-12, atol=1e-10)


def test_pytorch_fid_reads_our_npz_and_gives_our_fid(key, tmp_path):
    fid_score = pytest.importorskip("pytorch_fid.fid_score", reason="pip install pytorch-fid (a dev dependency)")
    k1, k2 = random.split(key)
    a, b = _stats(k1, 200), _stats(k2, 300, 0.3)
    FID.save_npz(tmp_path / "a.npz", a)
    FID.save_npz(tmp_path / "b.npz", b)
    mu1, s1 = fid_score.compute_statistics_of_path(str(tmp_path / "a.npz"), None, 1, DIM, "cpu")
    mu2, s2 = fid_score.compute_statistics_of_path(str(tmp_path / "b.npz"), None, 1, DIM, "cpu")
    np.testing.assert_array_equal(mu1, F.mean_and_covariance(a)[0].numpy())
    ref = fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert FID.fid_from_stats(a, b).value == pytest.approx(ref, rel=1e-8)


def test_a_pytorch_fid_file_without_n_gives_mean_and_cov_only(key, tmp_path):
    stats = _stats(key, 50)
    mean, cov = F.mean_and_covariance(stats)
    np.savez_compressed(tmp_path / "theirs.npz", mu=mean.float().numpy(), sigma=cov.numpy())  # as save_fid_stats
    loaded = FID.load_npz(tmp_path / "theirs.npz")
    assert loaded.count is None and loaded.mean.dtype == torch.float64
    torch.testing.assert_close(loaded.mean, mean, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="does not record N"):
        loaded.to_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert F.frechet_distance(loaded.mean, loaded.cov, mean, cov) < 1e-9
    np.savez(tmp_path / "bad.npz", mu=mean.numpy())
    with pytest.raises(ValueError, match="'mu' and 'sigma'"):
        FID.load_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "bad2.npz", mu=mean.numpy(), sigma=cov[:3].numpy())
    with pytest.raises(ValueError, match="do not fit"):
        FID.load_npz(tmp_path / "bad2.npz")


# --------------------------------------------------------------------------- each check alone, with its own words


def _resave(path, blob):
    """Writes ``blob`` where the cache reads it (a readable torch file: torch.load alone accepts it)."""
    torch.save(blob, path)
    assert torch.load(path, weights_only=True).keys() == blob.keys()


def test_feature_cache_checksum_alone_refuses_a_changed_value(key, tmp_path):
    extract, x = fake_extractor(key), images(key, 20)
    cache_key = FID.statistics_key("mnist", "test", 20, INFO, images=x)
    FID.cached_features(tmp_path, cache_key, lambda: extract(x))
    path = FID.features_cache_path(tmp_path, cache_key)
    blob = torch.load(path, weights_only=True)
    blob["features"][7, 0] = blob["features"][7, 0] * (1 + 2**-40)  # the right count, a finite value, another bit
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError) as caught:
        FID.cached_features(tmp_path, cache_key, lambda: pytest.fail("a refused file is not recomputed silently"))
    assert str(caught.value) == (
        f"feature cache {path} fails its checksum (the features were modified or damaged); delete it to recompute"
    )


def test_feature_cache_count_alone_refuses_a_file_of_other_images(key, tmp_path):
    extract, x = fake_extractor(key), images(key, 20)
    cache_key = FID.statistics_key("mnist", "test", 20, INFO, images=x)
    FID.cached_features(tmp_path, cache_key, lambda: extract(x))
    path = FID.features_cache_path(tmp_path, cache_key)
    blob = torch.load(path, weights_only=True)
    blob["features"] = blob["features"][:19].clone()
    blob["sha256"] = FID._tensor_sha256(blob["features"])  # a consistent file, of 19 images
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError) as caught:
        FID.cached_features(tmp_path, cache_key, lambda: extract(x))
    assert str(caught.value) == (
        f"feature cache {path} holds 19 feature vectors, the key says 20; delete it to recompute"
    )
    blob["features"] = blob["features"][0]  # not [N, D]
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError, match="lacks a floating-point \\[N, D\\] features tensor"):
        FID.cached_features(tmp_path, cache_key, lambda: extract(x))
    blob["features"] = (x.flatten(1)[:20] * 255).to(torch.uint8)  # integers
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError, match="lacks a floating-point \\[N, D\\] features tensor"):
        FID.cached_features(tmp_path, cache_key, lambda: extract(x))


def _stats_file(key, tmp_path, n=20):
    stats = F.stats_from_features(fake_extractor(key)(images(key, n)))
    cache_key = FID.statistics_key("mnist", "test", n, INFO)
    FID.cached_statistics(tmp_path, cache_key, lambda: stats)
    return cache_key, FID.cache_path(tmp_path, cache_key), stats


def test_statistics_cache_round_trip_is_exact(key, tmp_path):
    cache_key, _, stats = _stats_file(key, tmp_path)
    again = FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("read from the cache"))
    assert all(torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(again, stats, strict=True))


def test_statistics_cache_checksum_refuses_a_changed_sum(key, tmp_path):
    cache_key, path, _ = _stats_file(key, tmp_path)
    blob = torch.load(path, weights_only=True)
    blob["total"][2] += 1e-6  # still finite and of the right shape: only the checksum sees it
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError) as caught:
        FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("not recomputed"))
    assert str(caught.value) == (
        f"statistics cache {path} fails its checksum (the statistics were modified or damaged); delete it to recompute"
    )
    del blob["sha256"]  # a file of the format before the checksum
    blob["format"] = "fgm-feature-stats-v1"
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError, match="is not a fgm-feature-stats-v2 file; delete it to recompute"):
        FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("not recomputed"))


def test_statistics_cache_count_refuses_a_file_of_other_images(key, tmp_path):
    cache_key, path, _ = _stats_file(key, tmp_path)
    blob = torch.load(path, weights_only=True)
    blob["count"] = torch.tensor(19)
    blob["sha256"] = FID._stats_sha256(blob["count"], blob["total"], blob["outer"])  # consistent, for 19 images
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError) as caught:
        FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("not recomputed"))
    assert str(caught.value) == f"statistics cache {path} holds 19 images, the key says 20; delete it to recompute"


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda b: b.pop("outer"), "lacks count/total/outer tensors"),
        (lambda b: b.update(count=3), "lacks count/total/outer tensors"),
        (lambda b: b.update(total=b["total"].float()), "has malformed statistics"),
        (lambda b: b.update(outer=b["outer"].float()), "has malformed statistics"),
        (lambda b: b.update(outer=b["outer"][:-1]), "has malformed statistics"),
        (lambda b: b.update(total=b["total"][None]), "has malformed statistics"),
        (lambda b: b.update(count=b["count"][None]), "has malformed statistics"),
        (lambda b: b.update(count=torch.tensor(0)), "has an empty count or non-finite sums"),
        (lambda b: b["total"].__setitem__(0, float("inf")), "has an empty count or non-finite sums"),
        (lambda b: b.update(format="fgm-features-v1"), "is not a fgm-feature-stats-v2 file"),
        (lambda b: b.update(key="{}"), "was written for another key: {}"),
    ],
)
def test_statistics_cache_malformed_files_are_refused(key, tmp_path, change, reason):
    cache_key, path, _ = _stats_file(key, tmp_path)
    blob = torch.load(path, weights_only=True)
    change(blob)
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError) as caught:
        FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("not recomputed"))
    assert str(caught.value).startswith(f"statistics cache {path} {reason}")
    assert str(caught.value).endswith("; delete it to recompute")


# --------------------------------------------------------------------------- names and formats on disk, pinned
# A cache is found again by its file name and its key: a change to either silently recomputes every cache
# (12 minutes of Inception features per data set), so both are pinned here.


def test_cache_keys_and_file_names_are_pinned():
    cache_key = FID.statistics_key("mnist", "test", 50, INFO)
    assert cache_key == {
        "dataset": "mnist",
        "split": "test",
        "num_images": 50,
        "weights": "tf-fid",
        "weights_sha256": "0123456789abcdef",
        "preprocess": "v1-tf-pre32-q1",
        "precision": "fp32",
    }
    text = (
        '{"dataset":"mnist","num_images":50,"precision":"fp32","preprocess":"v1-tf-pre32-q1","split":"test",'
        '"weights":"tf-fid","weights_sha256":"0123456789abcdef"}'
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    assert digest == "fa110df5d88d20e8"
    assert FID.cache_path("/c", cache_key) == Path(f"/c/fid-stats-{digest}.pt")
    assert FID.features_cache_path("/c", cache_key) == Path(f"/c/features-{digest}.pt")
    with pytest.raises(TypeError) as caught:
        FID.cache_path("/c", {"a": torch.zeros(1)})
    assert str(caught.value) == "cache key must hold JSON values only: Object of type Tensor is not JSON serializable"


def test_a_cache_holding_arbitrary_objects_is_refused_unread(key, tmp_path, capsys):
    from tests.test_checkpoint import Payload

    cache_key, path, _ = _stats_file(key, tmp_path)
    torch.save({"format": "fgm-feature-stats-v2", "key": Payload()}, path)
    with pytest.raises(FID.StatisticsCacheError) as caught:
        FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("not recomputed"))
    assert str(caught.value).startswith(f"statistics cache {path} is unreadable (UnpicklingError: Weights only load")
    assert "ran code" not in capsys.readouterr().out


def test_a_cache_for_another_key_names_both_keys(key, tmp_path):
    cache_key, path, _ = _stats_file(key, tmp_path)
    other = FID.statistics_key("mnist", "test", 20, INFO._replace(precision="bf16"))
    FID.cache_path(tmp_path, other).write_bytes(path.read_bytes())
    with pytest.raises(FID.StatisticsCacheError) as caught:
        FID.cached_statistics(tmp_path, other, lambda: pytest.fail("not recomputed"))
    assert str(caught.value) == (
        f"statistics cache {FID.cache_path(tmp_path, other)} was written for another key: {FID._key_json(cache_key)} "
        f"(wanted {FID._key_json(other)}); delete it to recompute"
    )


def test_statistics_of_any_dtype_are_stored_as_int64_and_float64(key, tmp_path):
    """A ``compute`` may return float32 sums: they are stored (and read back) in float64."""
    features = fake_extractor(key)(images(key, 5)).float()
    stats = F.FeatureStats(torch.tensor(5, dtype=torch.int32), features.sum(0), features.T @ features)
    cache_key = {"what": "float32 sums"}
    FID.cached_statistics(tmp_path, cache_key, lambda: stats)
    again = FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("read from the cache"))
    assert (again.count.dtype, again.total.dtype, again.outer.dtype) == (torch.int64, torch.float64, torch.float64)
    assert int(again.count) == 5 and torch.equal(again.total, stats.total.double())


def test_a_cache_of_one_image_is_a_cache(key, tmp_path):
    stats = F.stats_from_features(fake_extractor(key)(images(key, 1)))
    cache_key = FID.statistics_key("mnist", "test", 1, INFO)
    FID.cached_statistics(tmp_path, cache_key, lambda: stats)
    again = FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("read from the cache"))
    assert int(again.count) == 1 and torch.equal(again.outer, stats.outer)


def test_one_dimensional_features_with_a_two_dimensional_sum_are_malformed(tmp_path):
    stats = F.stats_from_features(torch.arange(4.0, dtype=torch.float64)[:, None])  # D = 1
    cache_key = {"d": 1}
    FID.cached_statistics(tmp_path, cache_key, lambda: stats)
    path = FID.cache_path(tmp_path, cache_key)
    blob = torch.load(path, weights_only=True)
    blob["total"] = blob["total"][None]  # [1, 1]: the shape of ``outer``, not of a sum
    blob["sha256"] = FID._stats_sha256(blob["count"], blob["total"], blob["outer"])
    _resave(path, blob)
    with pytest.raises(FID.StatisticsCacheError, match=r"has malformed statistics \(total \(1, 1\), outer \(1, 1\)\)"):
        FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("not recomputed"))


def test_a_count_of_another_integer_dtype_is_read_as_int64(key, tmp_path):
    cache_key, path, _ = _stats_file(key, tmp_path)
    blob = torch.load(path, weights_only=True)
    blob["count"] = blob["count"].to(torch.int32)
    blob["sha256"] = FID._stats_sha256(blob["count"], blob["total"], blob["outer"])
    _resave(path, blob)
    assert FID.cached_statistics(tmp_path, cache_key, lambda: pytest.fail("read")).count.dtype == torch.int64


@pytest.mark.parametrize("writer", ["statistics", "features"])
def test_cache_files_are_written_beside_their_name_in_new_folders(key, tmp_path, monkeypatch, writer):
    moves = []
    original = os.replace

    def replace(src, dst):
        moves.append((Path(src), Path(dst)))
        original(src, dst)

    monkeypatch.setattr(FID.os, "replace", replace)
    folder = tmp_path / "new" / "cache"
    x = images(key, 4)
    if writer == "statistics":
        FID.cached_statistics(folder, {"a": 1}, lambda: F.stats_from_features(fake_extractor(key)(x)))
    else:
        FID.cached_features(folder, {"a": 1}, lambda: fake_extractor(key)(x))
    ((src, dst),) = moves
    assert dst.parent == folder and src.parent == folder and dst.exists()
    assert src.name.startswith(dst.name) and src.name.endswith(".tmp") and src.name != dst.name + ".tmp"


def test_a_failed_write_raises_its_own_error_and_leaves_nothing(key, tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(FID.torch, "save", full)
    with pytest.raises(OSError, match="^disk full$"):
        FID.cached_features(tmp_path, {"a": 1}, lambda: fake_extractor(key)(images(key, 4)))
    assert list(tmp_path.iterdir()) == []


def test_a_feature_cache_of_the_wrong_shape_says_so(key, tmp_path):
    x = images(key, 20)
    cache_key = FID.statistics_key("mnist", "test", 20, INFO, images=x)
    FID.cached_features(tmp_path, cache_key, lambda: fake_extractor(key)(x))
    path = FID.features_cache_path(tmp_path, cache_key)
    _resave(path, {**torch.load(path, weights_only=True), "features": torch.zeros(20)})
    with pytest.raises(FID.StatisticsCacheError) as caught:
        FID.cached_features(tmp_path, cache_key, lambda: pytest.fail("not recomputed"))
    assert str(caught.value) == (
        f"feature cache {path} lacks a floating-point [N, D] features tensor; delete it to recompute"
    )
