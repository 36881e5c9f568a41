"""All feature-based metrics of one pair of feature sets: FID, KID, precision and recall.

Features are extracted once per image set (:func:`fgm.metrics.fid.image_features`
for Inception, :func:`fgm.metrics.classifier.classifier_outputs` for the digit
classifier; real features cached with :func:`fgm.metrics.fid.dataset_features`)
and every metric reads the same matrices::

    gen = fid.image_features(samples, extract)                     # [10000, 2048]
    real = fid.dataset_features("mnist", "test", extract, cache_dir=...)
    report = feature_metrics(gen, real, random.key(0))
    print(report)                                                   # FID, KID, precision/recall, each with N
    results.update(report.as_dict("inception_"))                   # flat JSON for results.json
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from tqdm.auto import tqdm

from fgm import random
from fgm.metrics import kid as kid_lib
from fgm.metrics import precision_recall as pr_lib
from fgm.metrics.fid import FIDResult, fid_from_features

__all__ = ["FeatureMetrics", "feature_metrics", "split_means"]


class FeatureMetrics(NamedTuple):
    """FID, KID and (optionally) precision/recall of generated against real features."""

    fid: FIDResult
    kid: kid_lib.KIDResult
    precision_recall: pr_lib.PrecisionRecall | None

    def __str__(self) -> str:
        lines = [str(self.fid), str(self.kid)]
        if self.precision_recall is not None:
            lines.append(str(self.precision_recall))
        if self.fid.warning:
            lines.append(f"warning: {self.fid.warning}")
        return "\n".join(lines)

    def as_dict(self, prefix: str = "") -> dict:
        """Flat JSON-able values, each key starting with ``prefix`` (e.g. ``"inception_"``).

        Keys: ``fid``, ``fid_warning`` (``None`` or the N ≤ D text), ``kid_mean``,
        ``kid_std``, ``kid_subsets``, ``kid_subset_size``, ``precision``,
        ``recall``, ``pr_k`` (when computed), ``num_generated``, ``num_real``.
        """
        out = {
            "fid": self.fid.value,
            "fid_warning": self.fid.warning,
            "kid_mean": self.kid.mean,
            "kid_std": self.kid.std,
            "kid_subsets": self.kid.num_subsets,
            "kid_subset_size": self.kid.subset_size,
            "num_generated": self.fid.num_a,
            "num_real": self.fid.num_b,
        }
        if self.precision_recall is not None:
            out.update(
                precision=self.precision_recall.precision,
                recall=self.precision_recall.recall,
                pr_k=self.precision_recall.k,
            )
        return {prefix + name: value for name, value in out.items()}


def feature_metrics(
    generated: torch.Tensor,
    real: torch.Tensor,
    k: random.Key,
    *,
    kid_subsets: int = kid_lib.DEFAULT_SUBSETS,
    kid_subset_size: int = kid_lib.DEFAULT_SUBSET_SIZE,
    pr_k: int = pr_lib.DEFAULT_K,
    with_precision_recall: bool = True,
) -> FeatureMetrics:
    """FID, KID and precision/recall of two feature matrices.

    Args:
      generated: ``[N_g, d]`` features of the samples.
      real: ``[N_r, d]`` features of the reference data (same extractor).
      k: key for KID's subsets.
      kid_subsets, kid_subset_size: see :func:`fgm.metrics.kid.kid`.
      pr_k: precision/recall neighbourhood (:func:`fgm.metrics.precision_recall.precision_recall`).
      with_precision_recall: skip the ``O(N²d)`` precision/recall when ``False``.

    Returns:
      :class:`FeatureMetrics` (FID warns, and says so in ``fid.warning``, when a set has ``N ≤ d``).
    """
    fid_result = fid_from_features(generated, real)
    kid_result = kid_lib.kid(generated, real, k, kid_subsets, kid_subset_size)
    pr = pr_lib.precision_recall(generated, real, pr_k) if with_precision_recall else None
    return FeatureMetrics(fid_result, kid_result, pr)


def split_means(
    evaluate: Callable[[Any, torch.Tensor, random.Key], dict[str, torch.Tensor]],
    params: Any,
    inputs: torch.Tensor,
    key: random.Key,
    batch_size: int,
    desc: str | None = None,
) -> dict[str, float]:
    """Per-example values averaged over a whole split: ``evaluate(params, x_i, fold_in(key, i)) -> {name: [B]}``.

    Batch ``i`` of ``inputs`` (rows ``i·batch_size`` on) gets the key
    ``fold_in(key, i)``, so the result depends on the key and the batch size
    only; sums are float64. ``desc`` shows a progress bar with that title.
    """
    totals: dict[str, float] = {}
    starts = range(0, inputs.shape[0], batch_size)
    for i, start in enumerate(tqdm(starts, disable=desc is None, desc=desc, unit="batch")):
        for name, v in evaluate(params, inputs[start : start + batch_size], random.fold_in(key, i)).items():
            totals[name] = totals.get(name, 0.0) + float(v.double().sum())
    return {name: total / inputs.shape[0] for name, total in totals.items()}
