"""The notebook stages end to end on two zoo models, in a temporary output folder."""
import os

import numpy as np
import pandas as pd
import pytest

from kstar_utils import compute_kstar, summarize_skewness

from kstar_utils.io import index
from kstar_utils.pipeline import stages
from kstar_utils.pipeline.features import load_features

MODELS = ["zoo:standard", "zoo:pgd-0.1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    feats = stages.extract_stage(MODELS, "digits", layers=["penultimate", "logits"], root=root, progress=False)
    kidx = stages.kstar_stage(feats, root=root, progress=False)
    models_table, per_class = stages.skewness_stage(kidx)
    return root, feats, kidx, models_table, per_class


def test_indexes_have_one_row_per_model_and_layer(run):
    _, feats, kidx, models_table, per_class = run
    assert len(feats) == len(kidx) == len(models_table) == 4
    assert set(feats["d"]) == {64, 10} and set(feats["n"]) == {899}
    assert len(per_class) == 4 * 10


def test_kstar_files_hold_the_engine_result_on_the_feature_files(run):
    _, _, kidx, models_table, _ = run
    for row in kidx.itertuples():
        fs = load_features(row.features_path)
        res = index.load_kstar(row.kstar_path)
        np.testing.assert_array_equal(res.kstar, compute_kstar(fs.features, fs.labels))
        s = summarize_skewness(res.kstar, res.named_labels)
        got = index.select(models_table, model=row.model, layer=row.layer).iloc[0]
        assert got["approx_skewness"] == pytest.approx(s.approx_skewness)
        assert got["true_skewness"] == pytest.approx(s.true_skewness)


def test_finished_work_is_reused_and_force_recomputes(run):
    root, feats, kidx, _, _ = run
    path = kidx["kstar_path"].iloc[0]
    before = os.path.getmtime(path)
    again = stages.kstar_stage(feats, root=root, progress=False)
    assert list(again["kstar_path"]) == list(kidx["kstar_path"])
    assert os.path.getmtime(path) == before
    cosine = stages.kstar_stage(feats.iloc[:1], root=root, metric="cosine", progress=False)
    assert cosine["kstar_path"].iloc[0] != path  # another metric is another artefact


def test_tables_round_trip_and_accuracy_join(run, tmp_path):
    _, _, _, models_table, _ = run
    path = index.write_table(models_table, tmp_path / "t.csv")
    study = stages.join_accuracy(path, "auto")
    assert study["robust_acc"].between(0, 1).all() and len(study) == 4
    with pytest.raises(ValueError, match="no accuracy known for model"):
        stages.join_accuracy(path, pd.DataFrame({"model": ["zoo:standard"], "clean_acc": [0.9], "robust_acc": [0.5]}))
    with pytest.raises(ValueError, match="fractions"):
        stages.join_accuracy(path, pd.DataFrame({"model": ["m"], "clean_acc": [95.0], "robust_acc": [50.0]}))
    with pytest.raises(ValueError, match="unsupported table format"):
        index.write_table(models_table, tmp_path / "t.xlsx")


def test_select_names_missing_values(run):
    _, _, _, models_table, _ = run
    with pytest.raises(ValueError, match="no rows"):
        index.select(models_table, model="zoo:nope")
    with pytest.raises(ValueError, match="no column"):
        index.select(models_table, colour="red")


def test_missing_index_points_to_the_previous_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="previous notebook"):
        stages.kstar_stage(tmp_path / "nope.csv", root=tmp_path)


def test_feature_cache_is_keyed_by_the_zoo_weights(tmp_path):
    import shutil

    from kstar_utils.models import digits_zoo as zoo
    from kstar_utils.pipeline.features import extract_features

    for name in ("standard", "untrained"):
        shutil.copy(zoo.weights_path(name), tmp_path / f"{name}.pt")
    a = extract_features("zoo:standard", "digits", layers=["logits"], root=tmp_path / "out", progress=False,
                         weights_dir=tmp_path)
    shutil.copy(tmp_path / "untrained.pt", tmp_path / "standard.pt")  # "retrained" weights under the same name
    b = extract_features("zoo:standard", "digits", layers=["logits"], root=tmp_path / "out", progress=False,
                         weights_dir=tmp_path)
    assert a["logits"] != b["logits"]
    assert not np.array_equal(load_features(a["logits"]).features, load_features(b["logits"]).features)


def test_common_layers_are_those_every_model_has():
    t = pd.DataFrame({"model": ["a", "a", "a", "b", "b"], "layer": ["s1", "penultimate", "logits", "act1", "logits"]})
    assert stages.common_layers(t) == ["logits"]
    assert stages.common_layers(t[t["model"] == "a"]) == ["s1", "penultimate", "logits"]


def test_an_accuracy_table_with_a_model_twice_is_refused_by_name(tmp_path):
    sk = pd.DataFrame({"model": ["m1", "m2"], "dataset": "d", "layer": "l", "approx_skewness": [0.1, 0.2],
                       "true_skewness": [0.1, 0.2]})
    acc = pd.DataFrame({"model": ["m1", "m1", "m2"], "clean_acc": [0.9, 0.8, 0.7]})
    with pytest.raises(ValueError, match=r"more than one row for model\(s\) \['m1'\]"):
        stages.join_accuracy(sk, acc)


def test_a_model_without_accuracy_is_an_error_or_left_out_by_name():
    sk = pd.DataFrame({"model": ["m1", "m2"], "dataset": "d", "layer": "l", "approx_skewness": [0.1, 0.2],
                       "true_skewness": [0.1, 0.2]})
    acc = pd.DataFrame({"model": ["m1"], "clean_acc": [0.9]})
    with pytest.raises(ValueError, match=r"no accuracy known for model\(s\) \['m2'\]"):
        stages.join_accuracy(sk, acc)
    with pytest.warns(UserWarning, match="1 model\\(s\\), left out: m2"):
        out = stages.join_accuracy(sk, acc, without="leave out")
    assert out["model"].tolist() == ["m1"]
    with pytest.raises(ValueError, match="without must be"):
        stages.join_accuracy(sk, acc, without="drop")
