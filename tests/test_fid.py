"""FID API: streaming statistics, the disk cache, FIDResult; a fake linear extractor keeps it fast."""

import warnings

import pytest
import torch

from fgm import random
from fgm.metrics import fid as FID
from fgm.metrics import frechet as F
from fgm.metrics import inception as I

DIM = 16


def fake_extractor(key):
    """A fixed random linear map of the flattened images: cheap, deterministic features."""
    weight = random.normal(key, (64, DIM), dtype=torch.float64)

    def extract(images):  # float64, so batching does not change the features' rounding
        return images.double().flatten(1) @ weight

    return extract


def images(key, n):
    return random.uniform(key, (n, 1, 8, 8))


INFO = I.FeatureInfo("tf-fid", "0123456789abcdef", I.Preprocess(), "fp32")


def test_streaming_statistics_equal_one_shot(key):
    k1, k2 = random.split(key)
    extract, x = fake_extractor(k1), images(k2, 103)
    one_shot = F.update_stats(F.init_stats(DIM), extract(x))
    for source in (x, [x[:40], x[40:]], [(x[:50], None), (x[50:], None)]):  # tensor, batches, (x, y) pairs
        stats = FID.image_statistics(source, extract, batch_size=7, progress=False)
        assert int(stats.count) == 103
        torch.testing.assert_close(stats.total, one_shot.total, rtol=1e-12, atol=1e-9)
        torch.testing.assert_close(stats.outer, one_shot.outer, rtol=1e-12, atol=1e-9)
        assert stats.outer.dtype == torch.float64


def test_no_images_is_an_error(key):
    with pytest.raises(ValueError, match="no images"):
        FID.image_statistics([], fake_extractor(key), progress=False)


def test_cache_round_trip_computes_once(key, tmp_path):
    k1, k2 = random.split(key)
    calls = []

    def compute():
        calls.append(1)
        return FID.image_statistics(images(k2, 50), fake_extractor(k1), progress=False)

    cache_key = FID.statistics_key("mnist", "test", 50, INFO)
    first = FID.cached_statistics(tmp_path, cache_key, compute)
    second = FID.cached_statistics(tmp_path, dict(reversed(list(cache_key.items()))), compute)  # order-free
    assert len(calls) == 1
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert [p.name for p in tmp_path.iterdir()] == [FID.cache_path(tmp_path, cache_key).name]  # no temp files left


def test_cache_keys_separate_what_changes_the_features(key, tmp_path):
    compute = lambda: FID.image_statistics(images(key, 20), fake_extractor(key), progress=False)  # noqa: E731 - a one-line function beside its only use
    keys = [
        FID.statistics_key("mnist", "test", 20, INFO),
        FID.statistics_key("mnist", "train", 20, INFO),
        FID.statistics_key("svhn", "test", 20, INFO),
        FID.statistics_key("mnist", "test", 20, INFO._replace(fingerprint="fedcba9876543210")),
        FID.statistics_key("mnist", "test", 20, INFO._replace(preprocess=I.Preprocess(convention="pytorch-fid"))),
        FID.statistics_key("mnist", "test", 20, INFO._replace(precision="bf16")),
    ]
    for k in keys:
        FID.cached_statistics(tmp_path, k, compute)
    assert len({FID.cache_path(tmp_path, k) for k in keys}) == len(keys) == len(list(tmp_path.iterdir()))


def test_corrupt_or_mismatched_cache_is_refused(key, tmp_path):
    compute = lambda: FID.image_statistics(images(key, 20), fake_extractor(key), progress=False)  # noqa: E731 - a one-line function beside its only use
    good_key = FID.statistics_key("mnist", "test", 20, INFO)
    other_key = FID.statistics_key("mnist", "test", 30, INFO)
    FID.cached_statistics(tmp_path, good_key, compute)
    good = FID.cache_path(tmp_path, good_key)
    other = FID.cache_path(tmp_path, other_key)

    other.write_bytes(good.read_bytes())  # a file under the wrong name
    with pytest.raises(FID.StatisticsCacheError, match="another key"):
        FID.cached_statistics(tmp_path, other_key, compute)

    other.write_bytes(good.read_bytes()[:1000])  # truncated
    with pytest.raises(FID.StatisticsCacheError, match="unreadable"):
        FID.cached_statistics(tmp_path, other_key, compute)

    blob = torch.load(good, weights_only=True)
    blob["outer"] = blob["outer"] * float("nan")
    torch.save(blob, good)
    with pytest.raises(FID.StatisticsCacheError, match="non-finite"):
        FID.cached_statistics(tmp_path, good_key, compute)


def test_failed_compute_leaves_no_file(tmp_path):
    def boom():
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        FID.cached_statistics(tmp_path, {"a": 1}, boom)
    assert list(tmp_path.iterdir()) == []


def test_no_cache_dir_just_computes(key):
    stats = FID.cached_statistics(None, {"a": 1}, lambda: F.update_stats(F.init_stats(2), torch.ones(3, 2)))
    assert int(stats.count) == 3


def test_fid_reports_n_and_is_zero_for_a_set_with_itself(key):
    k1, k2, k3 = random.split(key, 3)
    extract = fake_extractor(k1)
    a, b = images(k2, 200), images(k3, 150) * 0.5
    same = FID.fid(a, a, extract)
    assert same == (pytest.approx(0.0, abs=1e-8), 200, 200, None)  # N > D: no warning
    result = FID.fid(a, b, extract, batch_size=64)
    assert result.num_a == 200 and result.num_b == 150 and result.value > 1
    # precomputed statistics are accepted on either side
    stats_b = FID.image_statistics(b, extract, progress=False)
    assert FID.fid(a, stats_b, extract).value == pytest.approx(result.value, rel=1e-9)
    assert str(result).startswith("FID ") and "N = 200 vs 150" in str(result)


def test_few_samples_warn_but_give_a_finite_value(key):
    extract = fake_extractor(key)
    with pytest.warns(UserWarning, match="singular"):
        result = FID.fid(images(key, 10), images(random.fold_in(key, 1), 12), extract)
    assert result.num_a == 10 and torch.isfinite(torch.tensor(result.value))


@pytest.mark.skipif(I._fid_helper_file() is None, reason=f"TF FID weights not installed ({I.FID_HELPER_PIP})")
def test_real_inception_smoke(mnist_root, tmp_path):
    """Real features on 3 MNIST digits: cached dataset statistics and an FID value (N far below 2048)."""
    extract = I.make_feature_extractor()
    calls = []
    counting = I.FeatureExtractor(lambda x: calls.append(len(x)) or extract(x), extract.info)
    kwargs = dict(num_images=3, cache_dir=tmp_path, data_dir=mnist_root, progress=False)
    real = FID.dataset_statistics("mnist", "test", counting, **kwargs)
    again = FID.dataset_statistics("mnist", "test", counting, **kwargs)
    assert calls == [3] and torch.equal(real.outer, again.outer)
    assert real.total.shape == (2048,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # N ≤ 2048: singular covariance, expected here
        noise = FID.fid(torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0)), real, extract)
        self_distance = FID.fid(real, again)
    assert noise.num_a == noise.num_b == 3 and noise.value > 1
    # rank-2 covariances in 2048 dimensions: zero up to eigenvalue rounding
    assert abs(self_distance.value) < 1e-5 * noise.value


def test_image_fingerprint_depends_on_content_only():
    a = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    same_values = a.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2)  # other memory layout
    assert not same_values.is_contiguous()
    assert FID.image_fingerprint(a) == FID.image_fingerprint(same_values) == FID.image_fingerprint(a.clone())
    b = a.clone()
    b[1, 0, 3, 3] += 1  # one pixel of one image
    others = [b, a.float() / 255, a.view(2, 1, 2, 8), a[:1]]  # values, dtype, shape, count
    assert len({FID.image_fingerprint(t) for t in [a, *others]}) == 1 + len(others)
    assert len(FID.image_fingerprint(a)) == 16 and int(FID.image_fingerprint(a), 16) >= 0


def test_cache_key_holds_the_images_content(key, tmp_path):
    """Two image sets under one (dataset, split, N) name must not share a cache entry."""
    k1, k2, k3 = random.split(key, 3)
    extract, a, b = fake_extractor(k1), images(k2, 20), images(k3, 20)
    key_a = FID.statistics_key("mnist", "test", 20, INFO, images=a)
    key_b = FID.statistics_key("mnist", "test", 20, INFO, images=b)
    assert key_a != key_b and key_a == FID.statistics_key("mnist", "test", 20, INFO, images=a.clone())
    assert key_a["images_sha256"] == FID.image_fingerprint(a)
    stats_a = FID.cached_statistics(tmp_path, key_a, lambda: FID.image_statistics(a, extract, progress=False))
    stats_b = FID.cached_statistics(tmp_path, key_b, lambda: FID.image_statistics(b, extract, progress=False))
    assert not torch.equal(stats_a.total, stats_b.total) and len(list(tmp_path.iterdir())) == 2
    with pytest.raises(ValueError, match="20 images.*19"):
        FID.statistics_key("mnist", "test", 20, INFO, images=a[:19])
    # without images the key is what it was (callers that name their data by other means)
    assert "images_sha256" not in FID.statistics_key("mnist", "test", 20, INFO)


def test_dataset_statistics_key_the_loaded_images(mnist_root, tmp_path, key):
    from fgm import data

    weight = random.normal(key, (49, DIM), dtype=torch.float64)
    pooled = lambda x: torch.nn.functional.avg_pool2d(x.double(), 4).flatten(1) @ weight  # noqa: E731 - a one-line function beside its only use
    extract = I.FeatureExtractor(pooled, INFO)
    FID.dataset_statistics(
        "mnist", "test", extract, num_images=20, cache_dir=tmp_path, data_dir=mnist_root, progress=False
    )
    first20 = data.load_images("mnist", "test", mnist_root)[:20]
    expected = FID.statistics_key("mnist", "test", 20, INFO, images=first20)
    assert [p.name for p in tmp_path.iterdir()] == [FID.cache_path(tmp_path, expected).name]
