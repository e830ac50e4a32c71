"""Loaders of data/: schema checks on the shipped files and on broken copies written to tmp_path."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kstar_utils.io import tables

LOADERS = {
    "openclip/openclip_results.csv": tables.load_openclip_results,
    "robustbench/leaderboard.csv": tables.load_robustbench_leaderboard,
    "paper/kdist_project_page_skews.csv": tables.load_published_skews,
}


def raw(relative: str) -> pd.DataFrame:
    return pd.read_csv(tables.data_dir() / relative)


def write(df: pd.DataFrame, tmp_path, name="table.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("relative", list(LOADERS))
def test_shipped_tables_load_and_sit_in_the_package_data_folder(relative):
    assert (tables.data_dir() / relative).is_file()
    df = LOADERS[relative]()
    assert len(df) == len(raw(relative))


def test_tables_are_read_from_the_shipped_data_folder(tmp_path, monkeypatch):
    (tmp_path / "paper").mkdir()
    raw("paper/kdist_project_page_skews.csv").head(4).to_csv(tmp_path / "paper/kdist_project_page_skews.csv", index=False)
    monkeypatch.setenv("KSTAR_SHIPPED_DATA", str(tmp_path))
    assert len(tables.load_published_skews()) == 4
    monkeypatch.setenv("KSTAR_SHIPPED_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="KSTAR_SHIPPED_DATA"):
        tables.load_openclip_results()


def test_openclip_scores_are_fractions_and_ids_unique_and_joinable():
    df = tables.load_openclip_results()
    scores = df[list(tables.OPENCLIP_DATASET_COLUMNS) + [tables.OPENCLIP_AVERAGE_COLUMN]].to_numpy()
    assert np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()
    assert df["model_id"].is_unique
    expected = "openclip:" + raw("openclip/openclip_results.csv")["name"] + "/" + raw("openclip/openclip_results.csv")["pretrained"]
    assert df["model_id"].tolist() == expected.tolist()


def test_robustbench_percents_become_fractions():
    src = raw("robustbench/leaderboard.csv")
    df = tables.load_robustbench_leaderboard()
    for c in tables.ROBUSTBENCH_ACCURACY_COLUMNS:
        v = df[c].dropna().to_numpy()
        assert ((v >= 0) & (v <= 1)).all(), c
        np.testing.assert_allclose(df[c].to_numpy(), src[c].to_numpy() / 100, equal_nan=True)
    # mean corruption error is not an accuracy: unchanged
    np.testing.assert_array_equal(df["corruptions_mce"].to_numpy(), src["corruptions_mce"].to_numpy())
    assert df["model_id"].is_unique
    row = src.iloc[7]
    assert df["model_id"].iloc[7] == f"robustbench:{row['dataset']}/{row['threat_model']}/{row['model_name']}"
    assert df["unreliable"].isna().sum() == src["unreliable"].isna().sum()


@pytest.mark.parametrize(
    "relative, column",
    [
        ("openclip/openclip_results.csv", "ImageNet 1k"),
        ("openclip/openclip_results.csv", "pretrained"),
        ("robustbench/leaderboard.csv", "clean_acc"),
        ("robustbench/leaderboard.csv", "threat_model"),
        ("paper/kdist_project_page_skews.csv", "adv_trained_resnet50_eps4"),
    ],
)
def test_missing_column_raises_naming_it(relative, column, tmp_path):
    path = write(raw(relative).drop(columns=[column]), tmp_path)
    with pytest.raises(ValueError, match="missing required column") as e:
        LOADERS[relative](path)
    assert column in str(e.value)


@pytest.mark.parametrize(
    "relative, column, value",
    [
        ("openclip/openclip_results.csv", "CIFAR-10", 98.8),  # a percent where a fraction belongs
        ("openclip/openclip_results.csv", "params (M)", -1.0),
        ("robustbench/leaderboard.csv", "robust_acc", 120.0),
        ("robustbench/leaderboard.csv", "clean_acc", -3.0),
        ("robustbench/leaderboard.csv", "dataset", "mnist"),
        ("paper/kdist_project_page_skews.csv", "standard_resnet50", np.inf),
    ],
)
def test_out_of_range_value_raises_naming_the_column(relative, column, value, tmp_path):
    df = raw(relative)
    df[column] = df[column].astype(object)
    df.loc[3, column] = value
    with pytest.raises(ValueError) as e:
        LOADERS[relative](write(df, tmp_path))
    assert repr(column) in str(e.value)


@pytest.mark.parametrize("relative", list(LOADERS))
def test_duplicate_key_raises(relative, tmp_path):
    df = raw(relative)
    df = pd.concat([df, df.iloc[[2]]], ignore_index=True)
    with pytest.raises(ValueError, match="unique"):
        LOADERS[relative](write(df, tmp_path))


def test_non_numeric_and_missing_cells_raise(tmp_path):
    df = raw("openclip/openclip_results.csv")
    df["MNIST"] = df["MNIST"].astype(object)
    df.loc[0, "MNIST"] = "83%"
    with pytest.raises(ValueError, match="numeric"):
        tables.load_openclip_results(write(df, tmp_path))
    df = raw("robustbench/leaderboard.csv")
    df.loc[5, "robust_acc"] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        tables.load_robustbench_leaderboard(write(df, tmp_path))


def test_robustbench_file_already_in_fractions_is_refused(tmp_path):
    df = raw("robustbench/leaderboard.csv")
    for c in tables.ROBUSTBENCH_ACCURACY_COLUMNS:
        df[c] = df[c] / 100
    with pytest.raises(ValueError, match="fractions"):
        tables.load_robustbench_leaderboard(write(df, tmp_path))


def test_openclip_average_must_match_the_columns(tmp_path):
    df = raw("openclip/openclip_results.csv")
    df.loc[4, "SVHN"] = max(0.0, df.loc[4, "SVHN"] - 0.5)
    with pytest.raises(ValueError, match="mean"):
        tables.load_openclip_results(write(df, tmp_path))


def test_empty_table_raises(tmp_path):
    df = raw("paper/kdist_project_page_skews.csv").iloc[:0]
    with pytest.raises(ValueError, match="no rows"):
        tables.load_published_skews(write(df, tmp_path))


def test_published_skews_match_the_documented_class_means():
    # docs: mean of the class skews 1.0056 (standard) and 2.6156 (adversarially trained), 16 ImageNet-16 classes
    df = tables.load_published_skews()
    assert len(df) == 16 and df["class"].is_unique
    assert df["standard_resnet50"].mean() == pytest.approx(1.0056, abs=1e-4)
    assert df["adv_trained_resnet50_eps4"].mean() == pytest.approx(2.6156, abs=1e-4)


def test_measured_metrics_are_checked_and_named_by_the_registry(tmp_path):
    zoo = tables.load_measured_metrics("zoo")
    assert zoo["model"].str.startswith("zoo:").all() and zoo["clean_acc"].between(0, 1).all()
    bad = raw("zoo/zoo_metrics.csv")
    bad.loc[0, "robust_acc"] = bad.loc[0, "clean_acc"] + 0.2
    bad.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="robust_acc exceeds clean_acc"):
        tables.load_measured_metrics("zoo", tmp_path / "m.csv")
    raw("zoo/zoo_metrics.csv").drop(columns=["eval_eps"]).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match="eval_eps"):
        tables.load_measured_metrics("zoo", tmp_path / "m.csv")
    with pytest.raises(FileNotFoundError, match="kstar zoo train --zoo digits"):
        tables.load_measured_metrics("zoo", tmp_path / "none.csv")
    with pytest.raises(ValueError, match="sources"):
        tables.load_measured_metrics("timm")


def test_model_accuracies_joins_every_source_on_its_own_dataset():
    from kstar_utils import models

    rb = "robustbench:cifar10/Linf/Carmon2019Unlabeled"
    oc = "openclip:ViT-B-32/laion2b_s34b_b79k"
    t = models.accuracies(["zoo:standard", rb, oc], ["digits", "cifar10"]).set_index(["model", "dataset"])
    assert 0.9 < t.loc[("zoo:standard", "digits"), "clean_acc"] <= 1 and t.loc[("zoo:standard", "digits"), "eval_eps"] == 0.1
    assert np.isnan(t.loc[("zoo:standard", "cifar10"), "clean_acc"])  # measured on digits only
    lb = tables.load_robustbench_leaderboard().set_index("model_id")
    assert t.loc[(rb, "cifar10"), "robust_acc"] == lb.at[rb, "robust_acc"]
    assert np.isnan(t.loc[(rb, "digits"), "robust_acc"])
    res = tables.load_openclip_results().set_index("model_id")
    assert t.loc[(oc, "cifar10"), "zeroshot_acc"] == res.at[oc, "CIFAR-10"]
    assert t.loc[(oc, "digits"), "zeroshot_avg"] == res.at[oc, tables.OPENCLIP_AVERAGE_COLUMN]

