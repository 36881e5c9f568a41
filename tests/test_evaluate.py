"""feature_metrics: FID, KID and precision/recall from one pair of feature matrices, as flat JSON."""

import json
import warnings

import pytest
import torch

from fgm import random
from fgm.metrics import evaluate as E
from fgm.metrics import fid as FID
from fgm.metrics import kid as K
from fgm.metrics import precision_recall as P


def test_each_metric_equals_its_own_function(key):
    k1, k2, k3 = random.split(key, 3)
    gen = random.normal(k1, (300, 8), dtype=torch.float64) + 0.3
    real = random.normal(k2, (250, 8), dtype=torch.float64)
    report = E.feature_metrics(gen, real, k3, kid_subsets=10, kid_subset_size=100)
    assert report.fid == FID.fid_from_features(gen, real)
    assert report.kid == K.kid(gen, real, k3, 10, 100)
    assert report.precision_recall == P.precision_recall(gen, real)
    flat = report.as_dict("inception_")
    assert flat["inception_fid"] == report.fid.value and flat["inception_fid_warning"] is None
    assert (flat["inception_num_generated"], flat["inception_num_real"]) == (300, 250)
    pr = report.precision_recall
    assert (flat["inception_precision"], flat["inception_recall"], flat["inception_pr_k"]) == pr[:3]
    assert (flat["inception_kid_mean"], flat["inception_kid_subset_size"]) == (report.kid.mean, 100)
    assert json.loads(json.dumps(flat)) == flat
    assert "FID" in str(report) and "KID" in str(report) and "precision" in str(report)


def test_small_sets_carry_the_warning_and_precision_recall_can_be_skipped(key):
    gen, real = random.normal(key, (20, 32)), random.normal(random.fold_in(key, 1), (30, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = E.feature_metrics(gen, real, key, kid_subsets=3, with_precision_recall=False)
    assert report.precision_recall is None and "precision" not in report.as_dict()
    assert "20 feature vectors for 32 dimensions" in report.as_dict()["fid_warning"]
    assert "warning:" in str(report) and report.kid.subset_size == 20
    with pytest.warns(UserWarning, match="singular"):
        E.feature_metrics(gen, real, key, kid_subsets=2, with_precision_recall=False)
