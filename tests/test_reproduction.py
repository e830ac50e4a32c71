"""Reproduction of published numbers with real weights and data (marked `weights`; skipped without them).

ImageNet-16 (16 coarse classes of ImageNet val), torchvision ResNet-50 with the IMAGENET1K_V1 weights (the standard
ResNet-50 of the predecessor paper), logits, Euclidean k*, the test split: each class's skew must match the value
read off the project page (data/paper/kdist_project_page_skews.csv, column standard_resnet50) within 0.02.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from kstar_utils import datasets, models

from kstar_utils.io import tables
from kstar_utils.pipeline.features import extract_features, load_features
from kstar_utils.method.kstar import compute_kstar
from kstar_utils.method.skewness import summarize_skewness

MODEL = "torchvision:resnet50@IMAGENET1K_V1"
TOLERANCE = 0.02  # the published skews are rounded to 2 decimals and read off figures
ROOT = Path(__file__).resolve().parents[1] / "outputs"  # the shared cache: a second run reuses the features


def _missing() -> list[str]:
    out = []
    for r in models.weights_requirements(MODEL):
        if not r.present:
            out.append(f"weights of {MODEL} not in the torch hub cache (searched {r.path}; {r.how_to_provide})")
    for r in datasets.requirements("imagenet16", "test"):
        if not r.present:
            out.append(f"ImageNet val not found at {r.path} (set KSTAR_DATASETS; {r.how_to_provide})")
    return out


@pytest.mark.weights
def test_imagenet16_resnet50_class_skews_match_the_project_page():
    missing = _missing()
    if missing:
        pytest.skip("; ".join(missing))
    path = extract_features(MODEL, "imagenet16", split="test", layers=("logits",), root=ROOT)["logits"]
    fs = load_features(path)
    k = compute_kstar(fs.features, fs.labels, metric="euclidean")
    labels = np.asarray(fs.class_names)[fs.labels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = summarize_skewness(k, labels).per_class.set_index("label")["skew"]
    got.index = got.index.str.lower()
    published = tables.load_published_skews().set_index("class")["standard_resnet50"]
    published.index = published.index.str.lower()
    assert set(got.index) == set(published.index), (sorted(got.index), sorted(published.index))
    diff = (got[published.index] - published).abs()
    bad = diff[diff > TOLERANCE]
    assert bad.empty, "class skews differ from the project page by more than 0.02:\n" + "\n".join(
        f"  {c}: ours {got[c]:+.3f}, published {published[c]:+.2f}" for c in bad.index)
