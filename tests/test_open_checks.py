"""The open checks behind notebooks 05-08, run on files: input and latent noise, distance sensitivity, class skews."""
from __future__ import annotations

import numpy as np
import pytest

from kstar_utils.datasets import load_digits
from kstar_utils.pipeline import open_checks, stages


def test_input_noise_is_seeded_clipped_and_absent_at_zero():
    X, y = open_checks.dataset_images("digits")
    assert np.array_equal(X, load_digits("test")[0]) and np.array_equal(y, load_digits("test")[1])
    assert open_checks.add_noise(X, 0.0) is X
    a = open_checks.add_noise(X, 0.3, seed=1)
    np.testing.assert_array_equal(a, open_checks.add_noise(X, 0.3, seed=1))
    assert a.min() >= 0 and a.max() <= 1 and not np.array_equal(a, X)
    with pytest.raises(ValueError, match="strength"):
        open_checks.add_noise(X, -0.1)


def test_features_of_images_match_extract_features(tmp_path):
    X, y = load_digits("test")
    f, pred = open_checks.features_of_images("zoo:standard", X, "penultimate")
    index = stages.extract_stage(["zoo:standard"], "digits", layers=["penultimate"], root=tmp_path, progress=False)
    from kstar_utils.pipeline.features import load_features

    fs = load_features(index["features_path"].iloc[0])
    np.testing.assert_allclose(f, fs.features, rtol=1e-5, atol=1e-5)
    assert f.shape == (len(y), 64) and np.mean(pred == y) > 0.9


def test_input_noise_study_rows():
    t = open_checks.input_noise_study(["zoo:standard"], [0.0, 0.3], dataset="digits", layer="logits")
    assert list(t["strength"]) == [0.0, 0.3]
    assert t["frac_kstar_changed"].iloc[0] == 0 and t["frac_kstar_changed"].iloc[1] > 0
    assert t["accuracy"].iloc[1] < t["accuracy"].iloc[0]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_checks")
    table = stages.extract_stage(["zoo:untrained", "zoo:standard", "zoo:pgd-0.1"], "digits", layers=["logits"],
                                 root=root, progress=False)
    table.attrs["root"] = root
    return table


def test_metric_sensitivity_and_ranking(index):
    table, per_class = open_checks.metric_sensitivity(index, layers=["logits"])
    assert set(table["metric"]) == {"euclidean", "cosine", "mahalanobis", "manhattan", "chebyshev", "minkowski(p=3)"}
    assert len(table) == 18 and len(per_class) == 18 * 10
    changes = open_checks.ranking_changes(table, n_boot=50)
    assert set(changes["metric"]) == {"cosine", "mahalanobis", "manhattan", "chebyshev", "minkowski(p=3)"}
    assert (changes["n"] == 3).all()
    with pytest.raises(ValueError, match="penultimate"):
        open_checks.metric_sensitivity(index, layers=["penultimate"])


def test_class_skew_pairs_matrix(index):
    _, per_class = stages.skewness_stage(stages.kstar_stage(index, root=index.attrs["root"], progress=False))
    pairs = open_checks.class_skew_pairs(per_class, n_boot=50)
    assert len(pairs) == 3
    m = open_checks.pair_matrix(pairs, layer="logits")
    assert m.shape == (3, 3) and np.allclose(np.diag(m), 1) and np.allclose(m, m.T)
    classes = open_checks.mean_class_skew(per_class, layer="logits")
    assert len(classes) == 10 and (classes["n_models"] == 3).all()


def test_latent_noise_study(index):
    t = open_checks.latent_noise_study(index, [0.0, 0.5], layer="logits")
    assert len(t) == 6 and (t.loc[t["strength"] == 0, "frac_kstar_changed"] == 0).all()
    assert list(t.columns[:3]) == ["model", "layer", "strength"]
    assert t.loc[t["strength"] == 0.5, "frac_kstar_changed"].gt(0).all()


def test_gallery_distances_and_a_covariance_it_cannot_reproduce(index, tmp_path):
    kidx = stages.kstar_stage(index, root=index.attrs["root"], metric="mahalanobis", progress=False)
    table, images = open_checks.gallery(kidx, model="zoo:standard", layer="logits", class_name="3", n=2)
    assert len(table) == 4 and set(images) == set(table["index"]) | set(table["enemy"])
    assert (table["distance"] > 0).all()
    given = stages.kstar_stage(index, root=tmp_path, metric="mahalanobis", cov=np.eye(10), progress=False)
    with pytest.raises(ValueError, match="covariance matrix given by the caller"):
        open_checks.gallery(given, model="zoo:standard", layer="logits", class_name="3")
    # the k* file is read against the sha256 the index recorded
    bad = kidx.assign(kstar_sha256="0" * 64)
    with pytest.raises(ValueError, match="is not the file the k\\* index records"):
        open_checks.gallery(bad, model="zoo:standard", layer="logits", class_name="3")
