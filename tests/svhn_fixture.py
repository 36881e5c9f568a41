"""A format-exact SVHN fixture built from 17 real SVHN images.

The official SVHN files (``train_32x32.mat``, ``test_32x32.mat``) are not
available offline. ``shared/data/svhn-sample/svhn_real_sample.npz`` holds 17
real SVHN images with their official labels (15 from the training set, 2 from
the test set). :func:`write_svhn_fixture` writes them in the official ``.mat``
layout that ``torchvision.datasets.SVHN`` reads:

* ``X``: ``uint8 (32, 32, 3, N)`` (height, width, channel, image),
* ``y``: ``(N, 1)``, with the digit zero stored as 10.

``fgm.data`` keeps the validation split at a fixed 5,000 images, so the
training file needs more than 5,000 images: the 15 real training images are
*tiled* (image ``i`` of the file is real image ``i % 15``) to 5,120 images. The
test file tiles the 2 real test images to 64. This is tiled real data, not new
data: it checks the file format, the transposition and the label mapping, not
statistics.

torchvision checks the md5 of the official files, which a fixture cannot
match; the :func:`svhn_root` pytest fixture therefore patches
``torchvision.datasets.SVHN._check_integrity`` for the duration of one test
(the library itself never bypasses the check). Use it with::

    from tests.svhn_fixture import svhn_root  # noqa: F401 - a pytest fixture, used by name
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision

NUM_TRAIN = 5120  # > fgm.data's fixed 5,000-image validation split
NUM_TEST = 64

SAMPLE_RELPATH = Path("svhn-sample") / "svhn_real_sample.npz"


def sample_path() -> Path:
    """Location of the real-image sample: under ``$FGM_DATA_DIR``, else ``../shared/data``."""
    candidates = []
    if os.environ.get("FGM_DATA_DIR"):
        candidates.append(Path(os.environ["FGM_DATA_DIR"]) / SAMPLE_RELPATH)
    candidates.append((Path(__file__).parents[1] / ".." / "shared" / "data" / SAMPLE_RELPATH).resolve())
    for path in candidates:
        if path.is_file():
            return path
    return candidates[-1]


def write_svhn_mat(path: Path, images_nhwc: np.ndarray, labels: np.ndarray) -> None:
    """Writes one ``.mat`` file in the official SVHN layout.

    Args:
        path: Output file.
        images_nhwc: ``uint8 (N, 32, 32, 3)`` images (the npz layout).
        labels: ``(N,)`` labels 0..9 with digit zero as 0; stored as 10 as in the
            official files.
    """
    images_nhwc = np.asarray(images_nhwc)
    labels = np.asarray(labels)
    assert images_nhwc.dtype == np.uint8 and images_nhwc.shape[1:] == (32, 32, 3)
    assert labels.shape == (images_nhwc.shape[0],) and labels.min() >= 0 and labels.max() <= 9
    X = np.ascontiguousarray(np.transpose(images_nhwc, (1, 2, 3, 0)))  # (N,H,W,C) -> (H,W,C,N)
    y = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(str(path), {"X": X, "y": y})


def write_svhn_fixture(root: Path, sample: Path | None = None) -> dict:
    """Writes ``train_32x32.mat`` and ``test_32x32.mat`` into ``root``.

    Args:
        root: Directory to write into (created if needed); it plays the role of
            the data directory, as torchvision's SVHN expects the files directly in it.
        sample: The npz of real images; defaults to :func:`sample_path`.

    Returns:
        Dict with ``root`` and, per split ``s`` in ``("train", "test")``,
        ``{s}_images`` ``uint8 (N, 32, 32, 3)`` and ``{s}_labels`` ``int64 (N,)``
        (digit zero as 0) exactly as written, and ``{s}_source`` ``(N,)``: the
        index into the npz's ``X_{s}`` each written image copies.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with np.load(sample or sample_path()) as z:
        real = {"train": (z["X_train"], z["y_train"]), "test": (z["X_test"], z["y_test"])}
    info: dict = {"root": root}
    for split, n in (("train", NUM_TRAIN), ("test", NUM_TEST)):
        X, y = real[split]
        source = np.arange(n) % len(X)  # plain tiling of the real images
        images, labels = X[source], y[source].astype(np.int64)
        write_svhn_mat(root / f"{split}_32x32.mat", images, labels)
        info.update({f"{split}_images": images, f"{split}_labels": labels, f"{split}_source": source})
    return info


_WRITTEN: dict[str, Path] = {}


@pytest.fixture
def svhn_root(tmp_path_factory, monkeypatch) -> Path:
    """Data directory holding the SVHN fixture, with torchvision's md5 check patched.

    The files are written once per session; the patch lasts for one test.
    """
    if not sample_path().is_file():
        pytest.fail(f"SVHN sample not found at {sample_path()}")
    if "root" not in _WRITTEN or not (_WRITTEN["root"] / "test_32x32.mat").is_file():
        _WRITTEN["root"] = write_svhn_fixture(tmp_path_factory.mktemp("svhn"))["root"]
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    return _WRITTEN["root"]
