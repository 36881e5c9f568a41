"""The digit classifier: plumbing on small data, the checksummed cache, SVHN shapes, and the metrics' maths.

The full training (>= 99.0% MNIST test accuracy) is not run here; see docs/metrics.md for its command.
"""

import math

import pytest
import torch

from fgm import data, random
from fgm import nn as fnn
from fgm.metrics import classifier as C
from tests.svhn_fixture import svhn_root  # noqa: F401 - a pytest fixture, used by name

SMALL = C.TrainConfig(epochs=4, batch_size=64, learning_rate=3e-3, train_limit=512)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 30, 18)])
def test_any_image_shape_gives_logits_and_features(key, shape):
    clf = C.make_classifier(shape)
    params = fnn.init_params(clf.template, key)
    x = random.uniform(key, (5, *shape))
    logits, features = clf.apply(params, x)
    assert logits.shape == (5, 10) and features.shape == (5, C.FEATURE_DIM) and (features >= 0).all()
    levels = (x * 255).round().to(torch.uint8)
    torch.testing.assert_close(clf.apply(params, levels), clf.apply(params, levels.float() / 255))
    with pytest.raises(ValueError, match="takes images"):
        clf.apply(params, random.uniform(key, (2, shape[0], 8, 8)))


def test_outputs_in_batches_equal_one_pass(key):
    clf = C.make_classifier()
    params = fnn.init_params(clf.template, key)
    x = random.uniform(key, (23, 1, 28, 28))
    whole = C.classifier_outputs(clf, params, x, batch_size=100)
    for source in (x, [x[:10], (x[10:], None)]):
        parts = C.classifier_outputs(clf, params, source, batch_size=4)
        torch.testing.assert_close(parts.logits, whole.logits)
        torch.testing.assert_close(parts.features, whole.features)


def test_training_on_512_digits_is_deterministic_and_learns(mnist_root):
    train = data.load("mnist", "train", mnist_root)
    x, y = train.images[:512], train.labels[:512]
    clf = C.make_classifier()
    untrained = fnn.init_params(clf.template, random.split(random.key(SMALL.seed))[0])
    params = C.train_classifier(clf, x, y, SMALL)
    again = C.train_classifier(clf, x, y, SMALL)
    assert all(torch.equal(params[n], again[n]) for n in params)
    assert C.accuracy(clf, untrained, x, y) < 0.3 and C.accuracy(clf, params, x, y) > 0.8
    with pytest.raises(ValueError, match="fewer than one batch"):
        C.train_classifier(clf, x[:10], y[:10], SMALL)
    with pytest.raises(ValueError, match="labels must lie"):
        C.train_classifier(clf, x, y + 5, SMALL)


def test_cache_round_trip_trains_once(mnist_root, tmp_path, monkeypatch):
    kwargs = dict(config=SMALL, directory=tmp_path, data_dir=mnist_root, test_limit=300, progress=False)
    first = C.cached_classifier("mnist", **kwargs)
    assert first.path.parent == tmp_path and first.path.name.startswith("mnist-") and 0.3 < first.test_accuracy <= 1
    monkeypatch.setattr(C, "train_classifier", lambda *a, **k: pytest.fail("retrained although cached"))
    second = C.cached_classifier("mnist", **kwargs)
    assert second.path == first.path and second.test_accuracy == first.test_accuracy
    assert all(torch.equal(first.params[n], second.params[n]) for n in first.params)
    # another configuration is another file
    assert C.classifier_path(tmp_path, C.classifier_key("mnist", torch.zeros(512, 1, 28, 28), SMALL)) != first.path


def test_corrupt_file_is_refused_and_retrained(mnist_root, tmp_path):
    kwargs = dict(config=SMALL, directory=tmp_path, data_dir=mnist_root, test_limit=100, progress=False)
    first = C.cached_classifier("mnist", **kwargs)
    raw = bytearray(first.path.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte inside the payload
    first.path.write_bytes(bytes(raw))
    images = data.load("mnist", "train", mnist_root).images[:512]
    key = C.classifier_key("mnist", images, SMALL)
    with pytest.raises(C.ClassifierCacheError, match="checksum"):
        C.load_classifier(first.path, first.classifier, key)
    with pytest.warns(UserWarning, match="retraining the mnist classifier.*checksum"):
        again = C.cached_classifier("mnist", **kwargs)
    assert all(torch.equal(first.params[n], again.params[n]) for n in first.params)  # deterministic retraining
    C.load_classifier(first.path, first.classifier, key)  # the file is whole again
    with pytest.raises(C.ClassifierCacheError, match="trained for"):
        C.load_classifier(first.path, first.classifier, {**key, "num_train": 513})
    with pytest.raises(C.ClassifierCacheError, match="no checkpoint"):
        C.load_classifier(tmp_path / "absent.ckpt", first.classifier, key)


def test_svhn_takes_the_same_path(svhn_root, tmp_path):  # noqa: F811 - the fixture, used by name
    config = C.TrainConfig(epochs=1, batch_size=32, train_limit=96)
    trained = C.cached_classifier("svhn", config=config, directory=tmp_path, data_dir=svhn_root, progress=False)
    assert trained.classifier.image_shape == (3, 32, 32) and trained.path.name.startswith("svhn-")
    test = data.load("svhn", "test", svhn_root, download=False)
    outputs = C.classifier_outputs(trained.classifier, trained.params, test.images)
    assert outputs.logits.shape == (test.images.shape[0], 10) and outputs.features.shape[1] == C.FEATURE_DIM


# --------------------------------------------------------------------------- the metrics' maths


def _logits_for(classes, num_classes=10):
    """Logits with argmax ``classes``: 5 for the class, 0 for the others."""
    logits = torch.zeros(len(classes), num_classes)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = 5.0
    return logits


def test_class_statistics_by_hand():
    # 10 samples over 3 classes: q = (0.5, 0.3, 0.2); the reference is uniform over those 3 classes
    logits = _logits_for([0] * 5 + [1] * 3 + [2] * 2, num_classes=3)
    reference = torch.tensor([1 / 3, 1 / 3, 1 / 3], dtype=torch.float64)
    stats = C.class_statistics(logits, reference)
    expected_kl = sum(1 / 3 * math.log((1 / 3) / q) for q in (0.5, 0.3, 0.2))
    assert stats.histogram == [5, 3, 2] and stats.num_samples == 10
    assert stats.kl_to_samples == pytest.approx(expected_kl, rel=1e-12)
    assert (stats.rarest_share, stats.most_common_share, stats.missing_classes) == (0.2, 0.5, [])
    # softmax of (5, 0, 0): e⁵ / (e⁵ + 2)
    assert stats.confidence == pytest.approx(math.exp(5) / (math.exp(5) + 2), rel=1e-12)


def test_confidence_is_the_mean_largest_probability():
    logits = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)  # softmax maxima 3/4 and 1/2
    stats = C.class_statistics(logits, torch.tensor([0.5, 0.5]))
    assert stats.confidence == pytest.approx(0.625, rel=1e-12)
    assert stats.histogram == [2, 0]  # a tie goes to the first class (argmax)


def test_a_missing_class_gives_infinite_kl_and_is_named():
    stats = C.class_statistics(_logits_for([0, 0, 2, 2]), C.class_distribution(torch.arange(10)))
    assert stats.kl_to_samples == math.inf and stats.missing_classes == [1, 3, 4, 5, 6, 7, 8, 9]
    assert (stats.rarest_share, stats.most_common_share) == (0.0, 0.5)


def test_kl_divergence_direction_and_zero_terms():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.25, 0.25, 0.5])
    assert C.kl_divergence(p, q) == pytest.approx(math.log(2), rel=1e-12)  # the p = 0 term adds nothing
    assert C.kl_divergence(q, p) == math.inf  # the other direction: q has mass where p has none
    assert C.kl_divergence(q, q) == 0.0


def test_class_distribution_of_labels():
    dist = C.class_distribution(torch.tensor([0, 1, 1, 3]), num_classes=4)
    assert dist.tolist() == [0.25, 0.5, 0.0, 0.25] and dist.dtype == torch.float64
    with pytest.raises(ValueError, match="labels must lie"):
        C.class_distribution(torch.tensor([0, 4]), num_classes=4)
    with pytest.raises(ValueError, match="reference must have 10"):
        C.class_statistics(torch.zeros(3, 10), torch.ones(9) / 9)
