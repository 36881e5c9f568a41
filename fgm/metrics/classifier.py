"""A digit classifier trained on the data set itself, and the sample metrics it gives.

ImageNet-Inception features are a questionable judge of digits; a classifier
trained on the data set measures what a digit model should get right:

* the **class histogram** of samples (argmax predictions): which digits the
  model draws, how often; :func:`class_statistics` reports
  ``KL(p_test ‖ q_samples)`` (the direction that punishes *missing* classes:
  it is ``inf`` when a class of the test set is never drawn), the share of
  the rarest and of the most common class, and the classes never drawn;
* the **mean max-softmax confidence**: how digit-like the samples look to the
  classifier (real test digits score close to 1);
* **features** of its penultimate layer (``FEATURE_DIM`` = 128), for FID and
  KID in a space fitted to the data (:mod:`fgm.metrics.evaluate`).

The network (:func:`make_classifier`) is a small CNN in fgm's functional
style (``fgm.nn.functional`` template + parameter dict, Adam from
:mod:`fgm.optim`) for any ``(C, H, W)`` input with 10 classes, so MNIST and
SVHN take the same code path::

    conv3×3(C→32) ReLU maxpool2  conv3×3(32→64) ReLU maxpool2  fc(64·⌊H/4⌋·⌊W/4⌋→128) ReLU  fc(128→10)

:func:`cached_classifier` trains it once per (data set, image shape,
training configuration, content of the training images) and stores the
parameters with :func:`fgm.checkpoint.save` (SHA-256 verified on load) under
``$FGM_CACHE_DIR/classifier`` (default ``~/.cache/fgm/classifier``); a missing,
corrupt or mismatched file is retrained, with a warning for the last two.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fgm import checkpoint, optim, random
from fgm import nn as fnn

__all__ = [
    "FEATURE_DIM",
    "ClassStatistics",
    "Classifier",
    "ClassifierCacheError",
    "ClassifierOutputs",
    "TrainConfig",
    "TrainedClassifier",
    "accuracy",
    "cache_dir",
    "cached_classifier",
    "class_distribution",
    "class_statistics",
    "classifier_key",
    "classifier_outputs",
    "classifier_path",
    "kl_divergence",
    "load_classifier",
    "make_classifier",
    "train_classifier",
]

FEATURE_DIM = 128  # penultimate layer width: the classifier-feature space of FID/KID
NUM_CLASSES = 10
# Bump when the architecture, input scaling or training loop changes: cached classifiers are keyed on it.
VERSION = 1


class ClassifierCacheError(ValueError):
    """A cached classifier is missing, corrupt, or was trained for something else."""


class _DigitCNN(nn.Module):
    """The CNN of the module docstring; ``forward`` returns ``(logits, penultimate features)``."""

    def __init__(self, image_shape: Sequence[int], num_classes: int, widths: tuple[int, int], hidden: int):
        super().__init__()
        c, h, w = image_shape
        self.conv1 = nn.Conv2d(c, widths[0], 3, padding=1)
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.fc1 = nn.Linear(widths[1] * (h // 4) * (w // 4), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        features = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(features), features


class Classifier(NamedTuple):
    """A classifier's template and pure apply function.

    Attributes:
      template: the module on the meta device (shapes only).
      apply: ``apply(params, images) -> (logits [N, classes], features [N, 128])``;
        ``images [N, C, H, W]`` uint8 or float in ``[0, 1]``.
      image_shape: ``(C, H, W)``.
      num_classes: number of classes.
    """

    template: nn.Module
    apply: Callable[[dict, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    image_shape: tuple[int, int, int]
    num_classes: int


def _scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 levels or ``[0, 1]`` floats → ``[-1, 1]`` float32."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return x * 2.0 - 1.0


def make_classifier(
    image_shape: Sequence[int] = (1, 28, 28),
    num_classes: int = NUM_CLASSES,
    widths: tuple[int, int] = (32, 64),
    hidden: int = FEATURE_DIM,
) -> Classifier:
    """The digit CNN for ``(C, H, W)`` images (``H, W ≥ 4``).

    Args:
      image_shape: ``(C, H, W)``, e.g. ``(1, 28, 28)`` (MNIST) or ``(3, 32, 32)`` (SVHN).
      num_classes: output classes.
      widths: channels of the two convolutions.
      hidden: width of the penultimate (feature) layer.

    Returns:
      :class:`Classifier`; initialise with ``fgm.nn.init_params(classifier.template, key)``.
    """
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[1] < 4 or shape[2] < 4:
        raise ValueError(f"image_shape must be (C, H, W) with H, W >= 4, got {tuple(image_shape)}")
    template, net = fnn.functional(lambda: _DigitCNN(shape, num_classes, tuple(widths), hidden))

    def apply(params: dict, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(images.shape[1:]) != shape:
            raise ValueError(f"the classifier takes images {shape}, got {tuple(images.shape[1:])}")
        return net(params, _scale(images))

    return Classifier(template, apply, shape, int(num_classes))


# --------------------------------------------------------------------------- training


class TrainConfig(NamedTuple):
    """How the classifier is trained (all of it keys the cache).

    Attributes:
      epochs: passes over the training images.
      batch_size: images per Adam step (the last partial batch of an epoch is dropped).
      learning_rate: Adam's initial rate, cosine-decayed to 0 over the run.
      train_limit: use only the first ``train_limit`` training images (``None``: all).
      seed: seed of the key for the initialisation and the batch order.
    """

    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 2e-3
    train_limit: int | None = None
    seed: int = 0


def _loss(classifier: Classifier, params: dict, x: torch.Tensor, y: torch.Tensor):
    logits, _ = classifier.apply(params, x)
    loss = F.cross_entropy(logits, y)
    return loss, loss.detach()


def train_classifier(
    classifier: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Trains the classifier with Adam on cross-entropy; deterministic given ``config.seed``.

    ``loss(θ) = -mean_i log softmax(f_θ(x_i))[y_i]``; the learning rate decays
    as ``η cos²``-style (:func:`fgm.optim.cosine_decay_schedule`) to 0.

    Args:
      classifier: from :func:`make_classifier`.
      images: ``[N, C, H, W]`` uint8 (or float in ``[0, 1]``).
      labels: ``int64 [N]`` in ``[0, num_classes)``.
      config: :class:`TrainConfig` (``train_limit`` is applied by the caller).
      progress: show a tqdm bar over steps.

    Returns:
      The trained parameters.
    """
    n = images.shape[0]
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{n} training images are fewer than one batch of {config.batch_size}")
    if labels.min() < 0 or labels.max() >= classifier.num_classes:
        raise ValueError(f"labels must lie in [0, {classifier.num_classes}), got [{labels.min()}, {labels.max()}]")
    k_init, k_order = random.split(random.key(config.seed))
    params = fnn.init_params(classifier.template, k_init)
    total = config.epochs * steps_per_epoch
    opt = optim.adam(optim.cosine_decay_schedule(config.learning_rate, total))
    opt_state = opt.init(params)
    grad_fn = torch.func.grad_and_value(lambda p, x, y: _loss(classifier, p, x, y), has_aux=True)
    with tqdm(total=total, desc="digit classifier", unit="step", disable=not progress, dynamic_ncols=True) as bar:
        for epoch in range(config.epochs):
            order = random.permutation(random.fold_in(k_order, epoch), n)
            for step in range(steps_per_epoch):
                idx = order[step * config.batch_size : (step + 1) * config.batch_size]
                grads, (_, loss) = grad_fn(params, images[idx], labels[idx])
                updates, opt_state = opt.update(grads, opt_state, params)
                params = optim.apply_updates(params, updates)
                bar.update(1)
                bar.set_postfix(loss=f"{float(loss):.4f}", refresh=False)
    return {name: p.detach() for name, p in params.items()}


class ClassifierOutputs(NamedTuple):
    """One pass of the classifier over an image set: every classifier metric reads these.

    Attributes:
      logits: ``[N, classes]``.
      features: ``[N, 128]`` penultimate-layer activations.
    """

    logits: torch.Tensor
    features: torch.Tensor


def classifier_outputs(
    classifier: Classifier,
    params: dict,
    images: torch.Tensor | Iterable[Any],
    batch_size: int = 500,
) -> ClassifierOutputs:
    """Logits and features of an image set, in batches, without gradients.

    Args:
      classifier, params: the trained classifier.
      images: ``[N, C, H, W]`` (uint8 or ``[0, 1]`` floats), or an iterable of
        such batches or of ``(images, labels)`` tuples.
      batch_size: images per forward pass.

    Returns:
      :class:`ClassifierOutputs`, float32 on the CPU; the network runs on the
      parameters' device, where each batch is moved.
    """
    device = next(iter(params.values())).device
    batches = images.split(batch_size) if isinstance(images, torch.Tensor) else images
    logits, features = [], []
    with torch.no_grad():
        for batch in batches:
            if isinstance(batch, (tuple, list)):
                batch = batch[0]
            for part in batch.split(batch_size):
                out, feat = classifier.apply(params, part.to(device))
                logits.append(out.float().cpu())
                features.append(feat.float().cpu())
    if not logits:
        raise ValueError("no images to classify")
    return ClassifierOutputs(torch.cat(logits), torch.cat(features))


def accuracy(classifier: Classifier, params: dict, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` whose argmax prediction equals ``labels``."""
    predictions = classifier_outputs(classifier, params, images).logits.argmax(1)
    return float((predictions == labels).double().mean())


# --------------------------------------------------------------------------- the cache


class TrainedClassifier(NamedTuple):
    """A trained classifier with its test accuracy and where it is stored."""

    classifier: Classifier
    params: dict
    test_accuracy: float
    path: Path | None


def cache_dir() -> Path:
    """``$FGM_CACHE_DIR/classifier``, else ``~/.cache/fgm/classifier``."""
    root = os.environ.get("FGM_CACHE_DIR") or Path.home() / ".cache" / "fgm"
    return Path(root) / "classifier"


def classifier_key(dataset: str, images: torch.Tensor, config: TrainConfig) -> dict:
    """What determines a trained classifier: data set, image shape and content, training configuration, version.

    Args:
      dataset: the data set's name.
      images: ``[N, C, H, W]`` the training images (after ``train_limit``); their
        SHA-256 (:func:`fgm.metrics.fid.image_fingerprint`) is part of the key.
      config: :class:`TrainConfig`.
    """
    from fgm.metrics.fid import image_fingerprint  # fid pulls in the Inception module (torchvision)

    return {
        "dataset": dataset,
        "image_shape": list(images.shape[1:]),
        "num_train": int(images.shape[0]),
        "train_sha256": image_fingerprint(images),
        "config": config._asdict(),
        "version": VERSION,
    }


def classifier_path(directory: str | os.PathLike, key: dict) -> Path:
    """``<directory>/<dataset>-<sha256(key)[:16]>.ckpt``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(directory).expanduser() / f"{key['dataset']}-{digest}.ckpt"


def load_classifier(path: str | os.PathLike, classifier: Classifier, key: dict) -> tuple[dict, dict]:
    """Parameters and metadata of a stored classifier, verified (checksum, key, shapes).

    Raises:
      ClassifierCacheError: missing, corrupt (checksum), another key, or
        parameters that do not fit ``classifier``.
    """
    template = fnn.init_params(classifier.template, random.key(0))
    try:
        params, metadata = checkpoint.load(path, template)
    except checkpoint.CheckpointError as e:
        raise ClassifierCacheError(str(e)) from e
    if metadata.get("key") != key:
        raise ClassifierCacheError(f"{path} was trained for {metadata.get('key')}, not {key}")
    return params, metadata


def cached_classifier(
    dataset: str,
    *,
    config: TrainConfig = TrainConfig(),
    directory: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    test_limit: int | None = None,
    progress: bool = True,
) -> TrainedClassifier:
    """The data set's classifier: loaded from the cache, else trained on its train split and stored.

    The test accuracy (on the official test split) is measured after
    training and stored with the parameters. A corrupt file or one written for
    another key is retrained and replaced, with a warning.

    Args:
      dataset: a name known to :mod:`fgm.data` (``"mnist"``, ``"svhn"``, ...).
      config: :class:`TrainConfig`.
      directory: the cache folder (default :func:`cache_dir`).
      data_dir: the data folder (default ``$FGM_DATA_DIR``).
      test_limit: measure the stored test accuracy on the first ``test_limit``
        test images only (quick checks; ``None``: all).
      progress: show training progress.

    Returns:
      :class:`TrainedClassifier`.
    """
    from fgm import data  # local: fgm.data pulls in torchvision datasets, unneeded for the maths

    train = data.load(dataset, "train", data_dir)
    n = train.images.shape[0] if config.train_limit is None else min(int(config.train_limit), train.images.shape[0])
    images, labels = train.images[:n], train.labels[:n]
    classifier = make_classifier(tuple(images.shape[1:]), NUM_CLASSES)
    key = classifier_key(dataset, images, config)
    path = classifier_path(cache_dir() if directory is None else directory, key)
    if path.exists():
        try:
            params, metadata = load_classifier(path, classifier, key)
            return TrainedClassifier(classifier, params, float(metadata["test_accuracy"]), path)
        except ClassifierCacheError as e:
            warnings.warn(f"retraining the {dataset} classifier: {e}", stacklevel=2)
    start = time.perf_counter()
    params = train_classifier(classifier, images, labels, config, progress)
    seconds = time.perf_counter() - start
    test = data.load(dataset, "test", data_dir)
    test_images, test_labels = test.images[:test_limit], test.labels[:test_limit]
    test_accuracy = accuracy(classifier, params, test_images, test_labels)
    metadata = {"key": key, "test_accuracy": test_accuracy, "num_test": int(test_images.shape[0]), "seconds": seconds}
    checkpoint.save(path, params, metadata)
    return TrainedClassifier(classifier, params, test_accuracy, path)


# --------------------------------------------------------------------------- metrics


def class_distribution(labels: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Relative class frequencies ``[num_classes]`` float64 of integer labels (e.g. the test set's)."""
    counts = torch.bincount(labels.long().flatten(), minlength=num_classes)
    if counts.numel() != num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got a maximum of {int(labels.max())}")
    return counts.double() / counts.sum()


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """``KL(p ‖ q) = Σᵢ pᵢ log(pᵢ / qᵢ)`` in nats; terms with ``pᵢ = 0`` are 0, ``inf`` where ``qᵢ = 0 < pᵢ``.

    Args:
      p, q: ``[K]`` probability vectors.
    """
    p, q = p.double(), q.double()
    if ((q == 0) & (p > 0)).any():
        return math.inf
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())


class ClassStatistics(NamedTuple):
    """What the classifier says about a set of samples.

    Attributes:
      histogram: predicted-class counts, one per class.
      num_samples: ``N``.
      kl_to_samples: ``KL(p_ref ‖ q)`` nats, ``p_ref`` the reference (test-set)
        class distribution, ``q = histogram / N``; ``inf`` when a class is never predicted.
      rarest_share, most_common_share: ``min(q)``, ``max(q)`` (uniform over 10 classes: 0.1 each).
      missing_classes: classes never predicted.
      confidence: mean over samples of the largest softmax probability.
    """

    histogram: list[int]
    num_samples: int
    kl_to_samples: float
    rarest_share: float
    most_common_share: float
    missing_classes: list[int]
    confidence: float


def class_statistics(logits: torch.Tensor, reference: torch.Tensor) -> ClassStatistics:
    """Class histogram, KL to the reference distribution, extreme shares and confidence of samples.

    Args:
      logits: ``[N, K]`` classifier logits of the samples (:func:`classifier_outputs`).
      reference: ``[K]`` the reference class distribution (:func:`class_distribution`
        of the test labels).

    Returns:
      :class:`ClassStatistics`.
    """
    n, num_classes = logits.shape
    if reference.shape != (num_classes,):
        raise ValueError(f"reference must have {num_classes} entries, got {tuple(reference.shape)}")
    counts = torch.bincount(logits.argmax(1), minlength=num_classes)
    q = counts.double() / n
    confidence = logits.double().softmax(1).max(1).values.mean()
    return ClassStatistics(
        histogram=counts.tolist(),
        num_samples=int(n),
        kl_to_samples=kl_divergence(reference, q),
        rarest_share=float(q.min()),
        most_common_share=float(q.max()),
        missing_classes=[int(c) for c in torch.nonzero(counts == 0).flatten()],
        confidence=float(confidence),
    )
