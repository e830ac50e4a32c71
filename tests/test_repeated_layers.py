"""Layers that are the same features under two names are counted once (a ResNet's layer3 = its penultimate layer)."""
import pandas as pd

from kstar_utils.analysis.layers import distinct_layers, repeated_layers


def _table():
    rows = []
    for m in ("c:r20", "c:r56"):
        for layer, sha in (("layer2", "a"), ("layer3", "p"), ("penultimate", "p"), ("logits", "l")):
            rows.append({"model": m, "dataset": "d", "layer": layer, "features_sha256": f"{m}/{sha}"})
    rows.append({"model": "c:cnn", "dataset": "d", "layer": "act3", "features_sha256": "c:cnn/p"})
    rows.append({"model": "c:cnn", "dataset": "d", "layer": "penultimate", "features_sha256": "c:cnn/p"})
    rows.append({"model": "c:cnn", "dataset": "d", "layer": "conv1", "features_sha256": None})
    return pd.DataFrame(rows)


def test_a_repeated_layer_is_kept_once_under_the_name_every_model_has():
    t = _table()
    kept = distinct_layers(t)
    assert len(kept) == len(t) - 3
    assert set(kept.loc[kept["model"] == "c:r20", "layer"]) == {"layer2", "penultimate", "logits"}
    assert set(kept.loc[kept["model"] == "c:cnn", "layer"]) == {"penultimate", "conv1"}  # no hash: kept
    assert list(kept.index) == sorted(kept.index)  # the table's order
    rep = repeated_layers(t)
    assert rep[["model", "layer", "same_as"]].values.tolist() == [
        ["c:r20", "layer3", "penultimate"], ["c:r56", "layer3", "penultimate"], ["c:cnn", "act3", "penultimate"]]


def test_only_within_one_model_and_dataset_and_without_hashes_nothing_changes():
    t = _table()
    other = t.assign(dataset="e")
    both = pd.concat([t, other], ignore_index=True)
    assert len(distinct_layers(both)) == 2 * (len(t) - 3)  # the same hash on two datasets is two results
    across = pd.DataFrame({"model": ["a", "b"], "layer": ["penultimate", "penultimate"], "features_sha256": "x"})
    assert len(distinct_layers(across)) == 2  # two models that happen to share a file are two models
    plain = t.drop(columns="features_sha256")
    assert distinct_layers(plain).equals(plain) and repeated_layers(plain).empty


def test_the_kstar_hash_serves_where_the_features_hash_is_missing():
    t = _table().rename(columns={"features_sha256": "kstar_sha256"})
    assert len(distinct_layers(t)) == len(t) - 3
    first = _table().assign(layer=lambda d: d["layer"].replace({"penultimate": "pen2"}))
    assert set(distinct_layers(first).query("model == 'c:r20'")["layer"]) == {"layer2", "layer3", "logits"}
