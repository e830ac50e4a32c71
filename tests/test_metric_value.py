"""One metric value: every spelling of a distance and its options is one canonical Metric, built once where it enters
(study file, notebook parameter, compute_kstar) and carried whole into cache keys, labels and tables."""
import json

import numpy as np
import pytest

from kstar_utils import compute_kstar
from kstar_utils.method.metrics import METRICS, Metric, standard_metrics


@pytest.mark.parametrize("spelling", ["minkowski(p=3)", "minkowski(p=3.0)", "minkowski( p = 3 )", "MINKOWSKI(p=3)",
                                      {"name": "minkowski", "p": 3}, {"name": "minkowski", "p": 3.0},
                                      {"name": "minkowski", "p": "3"}])
def test_every_spelling_of_one_metric_is_one_value(spelling):
    m = Metric.parse(spelling)
    assert m == Metric("minkowski", p=3) == Metric.parse("minkowski", p="3")
    assert hash(m) == hash(Metric("minkowski", p=3.0))
    assert m.label == "minkowski(p=3)"
    assert m.spec == {"metric": "minkowski", "p": 3.0}


@pytest.mark.parametrize("text", ["euclidean", "cosine", "manhattan", "chebyshev", "mahalanobis", "minkowski(p=2.5)",
                                  "minkowski(p=inf)", "minkowski(p=256)", "mahalanobis(cov=total)",
                                  "mahalanobis(shrinkage=0.1)", "mahalanobis(cov=total, shrinkage=0)"])
def test_label_and_spec_give_the_metric_back(text):
    m = Metric.parse(text)
    assert Metric.parse(m.label) == m
    assert Metric.from_spec(json.loads(json.dumps(m.spec))) == m  # the spec survives a JSON sidecar


def test_defaults_are_one_value_whether_written_or_not():
    assert Metric.parse("mahalanobis(cov=pooled, shrinkage=auto)") == Metric("mahalanobis")
    assert Metric("mahalanobis").label == "mahalanobis" and Metric("mahalanobis").spec == {"metric": "mahalanobis"}
    assert Metric.parse(None) == Metric() == Metric("euclidean")
    assert Metric.parse(Metric("cosine")) == Metric("cosine")


def test_a_given_covariance_is_keyed_by_its_content():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    sigma = a @ a.T + np.eye(4)
    m1, m2 = Metric.parse("mahalanobis", cov=sigma), Metric("mahalanobis", cov=sigma.copy())
    assert m1 == m2 and m1.cov.startswith("given:sha256:") and m1.shrinkage == 0.0
    assert Metric("mahalanobis", cov=sigma + np.eye(4)) != m1
    sigma[0, 0] += 1  # the caller's array changes afterwards: the metric keeps what it was given
    assert m1 == m2 and m1.matrix[0, 0] != sigma[0, 0]
    back = Metric.parse(m1.label)  # a record of the metric knows the matrix by its digest only
    assert back == m1 and back.needs_matrix and not m1.needs_matrix
    with pytest.raises(ValueError, match="by its digest only"):
        compute_kstar(rng.normal(size=(20, 4)), np.repeat([0, 1], 10), metric=back)
    with pytest.raises(ValueError, match="applies to estimated covariances"):
        Metric("mahalanobis", cov=np.eye(4), shrinkage="auto")


@pytest.mark.parametrize("bad, message", [
    ("eucldean", "unknown metric 'eucldean'; choose one of .* \\(did you mean 'euclidean'\\?\\)"),
    ("minkowski", "needs p"),
    ("minkowski(p=0.5)", "p must lie in \\[1, 256\\]"),
    ("minkowski(p=300)", "p must lie in \\[1, 256\\]"),
    ("minkowski(p=abc)", "p must be a number"),
    ("cosine(p=3)", "p applies to metric 'minkowski' only, not 'cosine'"),
    ("euclidean(shrinkage=0.1)", "shrinkage applies to metric 'mahalanobis' only"),
    ("mahalanobis(cov=diagonal)", "cov must be one of \\['pooled', 'total'\\]"),
    ("mahalanobis(shrinkage=2)", "shrinkage must be 'auto' or a number in \\[0, 1\\]"),
    ("minkowski(q=3)", "unknown metric option\\(s\\) \\['q'\\]"),
    ("minkowski(p=3, p=4)", "given twice"),
    ("minkowski(p)", "write name=value"),
    ({"p": 3}, "needs a 'name'"),
    (3, "a metric is a name"),
    (["minkowski", {"p": 3}], "a metric is a name"),
])
def test_bad_metrics_are_refused_naming_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        Metric.parse(bad)


def test_keyword_options_join_the_value_and_may_not_contradict_it():
    assert Metric.parse("minkowski", p=3) == Metric.parse("minkowski(p=3)", p=3.0)
    with pytest.raises(ValueError, match="given p=.* and p=4"):
        Metric.parse("minkowski(p=3)", p=4)
    with pytest.raises(ValueError, match="p applies to metric 'minkowski' only"):
        compute_kstar(np.eye(4), [0, 0, 1, 1], metric="cosine", p=3)


def test_one_list_of_names_and_the_standard_set():
    assert [m.name for m in standard_metrics()] == list(METRICS)
    assert [m.label for m in standard_metrics()][-1] == "minkowski(p=3)"


def test_the_k_star_cache_has_one_entry_per_metric_value(tmp_path):
    """p = 3, 3.0 and "3" used to make three cache entries and three labels for one result."""
    from kstar_utils.pipeline.features import save_features
    from kstar_utils.pipeline.stages import kstar_stage
    from kstar_utils.io import cache

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(60, 5)).astype(np.float32), np.repeat(np.arange(3), 20)
    spec = {"kind": "features", "model": "m", "dataset": "d", "split": "test", "layer": "l"}
    path = cache.artifact_path(tmp_path, "features", spec, ".npz")
    save_features(path, X, y, ["a", "b", "c"], cache.provenance(spec, model="m", dataset="d", split="test", layer="l",
                                                                 n=60, d=5))
    index = tmp_path / "features_index.csv"
    index.write_text(f"model,dataset,split,layer,features_path\nm,d,test,l,{path}\n")
    tables = [kstar_stage(index, root=tmp_path, metric=m, progress=False)
              for m in ("minkowski(p=3)", {"name": "minkowski", "p": 3.0}, Metric.parse("minkowski", p="3"))]
    assert {t["kstar_path"].iloc[0] for t in tables} == {tables[0]["kstar_path"].iloc[0]}
    assert {t["metric"].iloc[0] for t in tables} == {"minkowski(p=3)"}
    assert len(list((tmp_path / "kstar").glob("*.npz"))) == 1


def test_a_matrix_that_is_no_covariance_is_called_so():
    """A given matrix with a negative eigenvalue is not a covariance at all: the message says so rather than blaming
    constant or collinear feature dimensions (which is what a singular estimate means)."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(40, 3)), np.repeat([0, 1], 20)
    with pytest.raises(ValueError, match="not positive definite: it has 1 negative eigenvalue\\(s\\) \\(smallest -1\\)"
                                         ".* not a covariance matrix"):
        compute_kstar(X, y, metric="mahalanobis", cov=np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(ValueError, match="singular \\(rank 2 of 3: constant or collinear"):
        compute_kstar(X, y, metric="mahalanobis", cov=np.diag([1.0, 0.0, 1.0]))
