"""The explorer: its drop-downs drive what it shows (model, layer, class), from a k* index or a study folder."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kstar_utils.explorer import Explorer, explorer_rows  # noqa: E402
from kstar_utils.pipeline import stages  # noqa: E402


@pytest.fixture(scope="module")
def kstar_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("explorer")
    # logits first: the explorer must still open on the penultimate layer
    features = stages.extract_stage(["zoo:standard", "zoo:pgd-0.1"], "digits", layers=["logits", "penultimate"],
                                    root=root, progress=False)
    return stages.kstar_stage(features, root=root, progress=False)


def test_callbacks_follow_the_drop_downs(kstar_index):
    ex = Explorer(kstar_index, n=2)
    assert ex.state["model"] == "zoo:standard" and ex.state["layer"] == "penultimate" and ex.state["class"] == "0"
    assert list(ex.cls.options) == [str(i) for i in range(10)]
    ex.cls.value = "8"
    assert ex.state["class"] == "8"
    assert (ex.state["samples"]["label"] == "8").all() and len(ex.state["samples"]) == 4
    row = ex.state["fracture_row"]
    assert (row["class"] == "8").all() and row["share"].sum() == pytest.approx(1.0)
    first = ex.state["samples"].copy()
    ex.model.value = "zoo:pgd-0.1"
    assert ex.state["model"] == "zoo:pgd-0.1" and ex.state["class"] == "8"  # the class is kept across models
    ex.layer.value = "logits"
    assert ex.state["layer"] == "logits"
    assert not ex.state["samples"].equals(first)
    assert np.all((ex.state["khat"] > 0) & (ex.state["khat"] <= 1))
    assert ex.state["images"] == 8  # four samples and their four enemies: digits have images


def test_a_study_folder_is_a_source(kstar_index, tmp_path):
    summary = kstar_index.assign(status=["ok", "ok", "failed", "ok"])
    summary.to_csv(tmp_path / "summary.csv", index=False)
    rows = explorer_rows(tmp_path)
    assert len(rows) == 3  # the failed row is not offered
    with pytest.raises(FileNotFoundError, match="summary.csv"):
        (tmp_path / "empty").mkdir()
        explorer_rows(tmp_path / "empty")
    with pytest.raises(ValueError, match="lacks columns"):
        explorer_rows(pd.DataFrame({"model": ["m"]}))


def test_the_explorer_opens_on_the_penultimate_layer(kstar_index):
    assert kstar_index["layer"].iloc[0] == "logits"  # the index lists another layer first
    ex = Explorer(kstar_index, n=1)
    assert ex.layer.value == "penultimate" and ex.state["layer"] == "penultimate"
    assert Explorer(kstar_index, n=1, layer="logits").state["layer"] == "logits"
    only_logits = kstar_index[kstar_index["layer"] == "logits"]
    assert Explorer(only_logits, n=1).state["layer"] == "logits"  # a model without it opens on its own first layer
