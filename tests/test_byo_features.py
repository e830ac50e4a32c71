"""Bring-your-own features (`features:<file>`) held to the rules of compute_kstar: labels by value, class names
mapped by value, the features' own precision, and the file's one layer as a study's default.

Each label test goes through the whole chain a user runs (import -> k* -> skewness table) where the bug showed only
there: the per-class table must name every class rightly and keep every class apart.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kstar_utils.datasets import load_feature_file
from kstar_utils.method.kstar import compute_kstar
from kstar_utils.io import index
from kstar_utils.pipeline import stages
from kstar_utils.pipeline.features import extract_features, load_features, save_features


def _blobs(labels, d: int = 3, seed: int = 0) -> np.ndarray:
    """(N, d) float64 features: one Gaussian blob per distinct label, so k* is not trivial."""
    rng = np.random.default_rng(seed)
    _, codes = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    return rng.normal(size=(len(labels), d)) + 1.5 * codes.reshape(-1)[:, None]


def _npz(path: Path, labels, **extra) -> Path:
    np.savez(path, features=_blobs(labels), labels=labels, **extra)
    return path


def _per_class(src: Path, root: Path) -> pd.DataFrame:
    """The per-class skewness table of a features file, through the stages the notebooks run."""
    features_index = stages.extract_stage(["mine"], f"features:{src}", root=root, progress=False)
    kstar_index = stages.kstar_stage(features_index, root=root, progress=False)
    return stages.skewness_stage(kstar_index)[1]


def _named(path) -> np.ndarray:
    """(N,) the class name of every sample of a features file, as load_feature_file reports it."""
    _, codes, names = load_feature_file(path)
    return np.asarray(names)[codes]


# ---------------------------------------------------------------------------------------------- labels
def test_negative_labels_are_classes_of_their_own(tmp_path):
    labels = np.repeat([-1, 0, 1], 8)
    src = _npz(tmp_path / "neg.npz", labels)
    assert _named(src).tolist() == [str(v) for v in labels]
    table = _per_class(src, tmp_path / "out")
    assert dict(zip(table["label"].astype(str), table["n"])) == {"-1": 8, "0": 8, "1": 8}


def test_negative_labels_with_class_names_are_refused(tmp_path):
    src = _npz(tmp_path / "neg.npz", np.repeat([-1, 0, 1], 4), class_names=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"outside 0\.\.2.*-1"):
        load_feature_file(src)


def test_string_labels_keep_their_names_whatever_the_order_of_class_names(tmp_path):
    labels = np.array(["dog", "cat", "dog", "bird"] * 6)
    src = _npz(tmp_path / "pets.npz", labels, class_names=np.array(["dog", "cat", "bird"]))
    _, codes, names = load_feature_file(src)
    assert names == ("dog", "cat", "bird")  # the order of class_names is the class order
    assert np.asarray(names)[codes].tolist() == labels.tolist()
    table = _per_class(src, tmp_path / "out")
    assert dict(zip(table["label"], table["n"])) == {"dog": 12, "cat": 6, "bird": 6}


def test_integer_labels_are_named_by_value(tmp_path):
    labels = np.repeat([2, 0], 5)
    src = _npz(tmp_path / "sub.npz", labels, class_names=np.array(["ant", "bee", "cow"]))
    _, codes, names = load_feature_file(src)
    assert names == ("ant", "cow") and np.asarray(names)[codes].tolist() == ["cow"] * 5 + ["ant"] * 5
    src = _npz(tmp_path / "out_of_range.npz", np.repeat([0, 1, 5], 3), class_names=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"outside 0\.\.1.*\[5\]"):
        load_feature_file(src)


def test_labels_missing_from_class_names_are_refused(tmp_path):
    src = _npz(tmp_path / "pets.npz", np.array(["dog", "cat", "emu"] * 3), class_names=np.array(["dog", "cat"]))
    with pytest.raises(ValueError, match=r"not among the class_names.*'emu'"):
        load_feature_file(src)


@pytest.mark.parametrize("labels", [np.repeat([0, 1, 2], 3), np.array(["x", "y", "z"] * 3)])
def test_duplicate_class_names_are_refused(tmp_path, labels):
    src = _npz(tmp_path / "dup.npz", labels, class_names=np.array(["x", "y", "x"]))
    with pytest.raises(ValueError, match=r"class_names.*duplicate.*'x'"):
        load_feature_file(src)


def test_nan_labels_are_refused_naming_the_rows(tmp_path):
    labels = np.array([0.0, 1.0, np.nan, 0.0, 1.0, 1.0])
    src = _npz(tmp_path / "nan.npz", labels)
    with pytest.raises(ValueError, match=r"nan\.npz.*missing.*first rows: \[2\]"):
        load_feature_file(src)
    pytest.importorskip("pyarrow")
    df = pd.DataFrame(_blobs(labels), columns=["f0", "f1", "f2"]).assign(label=["a", "b", None, "a", "b", "b"])
    df.to_parquet(tmp_path / "none.parquet")
    with pytest.raises(ValueError, match=r"missing.*first rows: \[2\]"):
        load_feature_file(tmp_path / "none.parquet")


def test_bytes_and_bool_labels_are_named_by_value(tmp_path):
    """(Labels of mixed kinds cannot come from a file: .npz is read without pickle and parquet columns are typed.)"""
    src = _npz(tmp_path / "b.npz", np.array([b"no", b"yes"] * 4))
    assert _named(src).tolist() == ["no", "yes"] * 4
    src = _npz(tmp_path / "t.npz", np.array([True, False] * 4), class_names=np.array(["off", "on"]))
    assert _named(src).tolist() == ["on", "off"] * 4


@pytest.mark.slow  # importing open_clip takes most of its ~7 s
def test_imagenet_class_names_are_distinct():
    """open_clip's ImageNet names hold two "missile" and two "sunglasses": extracted ImageNet features would refuse
    them (save_features), and a table grouped by name would merge them."""
    pytest.importorskip("open_clip")
    import importlib.util

    if importlib.util.find_spec("robustbench") is None:  # its id lists are read as files, without importing it
        pytest.skip("robustbench (which ships the ImageNet id lists) is not installed")
    from kstar_utils.datasets import _imagenet_all_wnids, _imagenet_class_names

    names = _imagenet_class_names(sorted(_imagenet_all_wnids()))
    assert len(names) == len(set(names)) == 1000 and names[404] == "airliner"
    assert sum(n.startswith("missile") for n in names) == 2


@pytest.mark.parametrize("dtype", [np.uint8, np.uint64, np.int8, np.int64])
def test_integer_labels_of_any_width_are_mapped_by_value(tmp_path, dtype):
    top = np.iinfo(dtype).max
    labels = np.repeat(np.array([0, 1, top], dtype=dtype), 6)
    src = _npz(tmp_path / "wide.npz", labels)
    assert _named(src).tolist() == [str(v) for v in labels.tolist()]
    table = _per_class(src, tmp_path / "out")
    assert dict(zip(table["label"].astype(str), table["n"])) == {"0": 6, "1": 6, str(top): 6}


def test_one_class_is_refused_at_import(tmp_path):
    src = _npz(tmp_path / "one.npz", np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="at least 2 classes"):
        extract_features("mine", f"features:{src}", root=tmp_path / "out")


# ---------------------------------------------------------------------------------------------- precision
def _hard(scale: str) -> np.ndarray:
    """(40, 3) float64 features that float32 cannot hold: distinct only at 1e-12, at 1e-50, or beyond 3.4e38."""
    rng = np.random.default_rng(3)
    if scale == "1e-12 apart":
        return 1.0 + 1e-12 * rng.integers(0, 1000, size=(40, 3))
    return {"1e-50": 1e-50, "1e39": 1e39}[scale] * rng.normal(size=(40, 3))


@pytest.mark.parametrize("scale", ["1e-12 apart", "1e-50", "1e39"])
def test_float64_features_give_the_kstar_of_the_original_array(tmp_path, scale):
    X = _hard(scale)
    y = np.repeat(np.arange(4), 10)
    expected = compute_kstar(X, y)
    with np.errstate(over="ignore"):  # the check that this data needs float64 at all
        as32 = X.astype(np.float32)
    if np.isfinite(as32).all():
        assert not np.array_equal(compute_kstar(as32, y), expected)
    np.savez(tmp_path / "hard.npz", features=X, labels=y)
    path = extract_features("mine", f"features:{tmp_path / 'hard.npz'}", root=tmp_path / "out")["features"]
    fs = load_features(path)
    assert fs.features.dtype == np.float64 and fs.features.tobytes() == X.tobytes()
    k = index.load_kstar(stages.kstar_of_file(path, tmp_path / "out")).kstar
    np.testing.assert_array_equal(k, expected)


def test_the_open_checks_read_float64_features_in_full_precision(tmp_path):
    """Notebooks 05-08's readers of a features file: other metrics, latent noise, fracture and the gallery."""
    from kstar_utils.method.skewness import summarize_skewness
    from kstar_utils.pipeline import open_checks

    X = _hard("1e-12 apart")
    y = np.repeat(np.array(["a", "b", "c", "d"]), 10)
    np.savez(tmp_path / "hard.npz", features=X, labels=y)
    root = tmp_path / "out"
    features_index = stages.extract_stage(["mine"], f"features:{tmp_path / 'hard.npz'}", root=root, progress=False)
    kstar_index = stages.kstar_stage(features_index, root=root, progress=False)
    models, _ = open_checks.metric_sensitivity(features_index, layers="features", metrics=["euclidean", "manhattan"])
    for metric in ("euclidean", "manhattan"):
        expected = summarize_skewness(compute_kstar(X, y, metric=metric), y).to_dict()
        row = models[models["metric"] == metric].iloc[0]
        assert row["approx_skewness"] == pytest.approx(expected["approx_skewness"], nan_ok=True)
        assert row["true_skewness"] == pytest.approx(expected["true_skewness"], nan_ok=True)
    noise = open_checks.latent_noise_study(features_index, [0.0, 0.5], layer="features")
    assert noise["frac_kstar_changed"].tolist()[0] == 0.0 and noise["frac_kstar_changed"].tolist()[1] > 0
    fracture = open_checks.fracture_stage(kstar_index, layer="features")
    assert set(fracture["class"]) | set(fracture["enemy_class"]) <= {"a", "b", "c", "d"} and len(fracture) > 0
    table, images = open_checks.gallery(kstar_index, model="mine", layer="features", class_name="b", n=3)
    i, e = table["index"].to_numpy(), table["enemy"].to_numpy()
    # distances of about 1e-10: float32 would have made every sample the same point, every distance 0
    np.testing.assert_allclose(table["distance"], np.linalg.norm(X[i] - X[e], axis=1), rtol=1e-9)
    assert (table["distance"] > 0).all() and images == {}


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_features_keep_their_dtype(tmp_path, dtype):
    X = _blobs(range(12)).astype(dtype)
    np.savez(tmp_path / "f.npz", features=X, labels=np.arange(12) % 3)
    F, _, _ = load_feature_file(tmp_path / "f.npz")
    assert F.dtype == dtype and F.tobytes() == X.tobytes()
    fs = load_features(extract_features("mine", f"features:{tmp_path / 'f.npz'}", root=tmp_path / "out")["features"])
    assert fs.features.dtype == dtype and fs.features.tobytes() == X.tobytes()


def test_integer_features_convert_exactly_or_are_refused_by_name(tmp_path):
    y = np.arange(6) % 2
    small = np.arange(18, dtype=np.int64).reshape(6, 3) + 2**53 - 20
    np.savez(tmp_path / "ints.npz", features=small, labels=y)
    F, _, _ = load_feature_file(tmp_path / "ints.npz")
    assert F.dtype == np.float64 and (F.astype(np.int64) == small).all()
    big = small.copy()
    big[4, 1] = 2**53 + 1  # float64 would round it to 2**53
    np.savez(tmp_path / "big.npz", features=big, labels=y)
    with pytest.raises(ValueError, match=r"big\.npz.*too large for float64.*first rows: \[4\]"):
        load_feature_file(tmp_path / "big.npz")
    np.savez(tmp_path / "cplx.npz", features=small.astype(np.complex128), labels=y)
    with pytest.raises(ValueError, match="complex128"):
        load_feature_file(tmp_path / "cplx.npz")
    bad = _blobs(y)
    bad[3, 0] = np.nan
    np.savez(tmp_path / "nan.npz", features=bad, labels=y)
    with pytest.raises(ValueError, match=r"NaN.*first bad rows: \[3\]"):
        load_feature_file(tmp_path / "nan.npz")


def test_save_features_keeps_float64_and_refuses_what_it_cannot_keep(tmp_path):
    X = _hard("1e-12 apart")
    y = np.repeat(np.arange(4), 10)
    path = save_features(tmp_path / "f.npz", X, y, ["a", "b", "c", "d"], {"spec": {}})
    fs = load_features(path)
    assert fs.features.dtype == np.float64 and fs.features.tobytes() == X.tobytes()
    assert fs.labels.dtype == np.int64 and fs.labels.tolist() == y.tolist()
    with pytest.raises(ValueError, match="duplicate.*'a'"):
        save_features(tmp_path / "g.npz", X, y, ["a", "b", "a", "d"], {"spec": {}})
    with pytest.raises(ValueError, match=r"outside 0\.\.3"):
        save_features(tmp_path / "g.npz", X, y + 1, ["a", "b", "c", "d"], {"spec": {}})
    with pytest.raises(ValueError, match="whole numbers|integer"):
        save_features(tmp_path / "g.npz", X, y + 0.5, ["a", "b", "c", "d"], {"spec": {}})
    with pytest.raises(ValueError, match="complex"):
        save_features(tmp_path / "g.npz", X.astype(np.complex128), y, ["a", "b", "c", "d"], {"spec": {}})
    assert not (tmp_path / "g.npz").exists()


def test_an_earlier_float32_import_is_not_reused(tmp_path):
    """An import made before the features kept their precision is another cache entry: the file is read again."""
    X = _hard("1e-12 apart")
    np.savez(tmp_path / "hard.npz", features=X, labels=np.repeat(np.arange(4), 10))
    path = extract_features("mine", f"features:{tmp_path / 'hard.npz'}", root=tmp_path / "out")["features"]
    spec = dict(load_features(path).meta["spec"])
    spec.pop("version")
    from kstar_utils.io import cache

    assert cache.artifact_path(tmp_path / "out", "features", spec, ".npz") != path


# ---------------------------------------------------------------------------------------------- round trips
def _write(kind: str, folder: Path, X: np.ndarray, labels: np.ndarray) -> Path:
    if kind == "npz":
        np.savez(folder / "e.npz", features=X, labels=labels)
        return folder / "e.npz"
    if kind == "npy":
        np.save(folder / "e.npy", X)
        np.save(folder / "e_labels.npy", labels)
        return folder / "e.npy"
    pytest.importorskip("pyarrow")
    if kind == "parquet columns":
        columns = pd.DataFrame(X, columns=[f"f{j}" for j in range(X.shape[1])])
        columns.assign(label=labels).to_parquet(folder / "e.parquet")
    else:
        pd.DataFrame({"features": list(X), "label": labels}).to_parquet(folder / "e.parquet")
    return folder / "e.parquet"


@pytest.mark.parametrize("kind", ["npz", "npy", "parquet columns", "parquet list"])
def test_round_trip_keeps_values_names_and_dtype(tmp_path, kind):
    labels = np.array(["zebra", "ant", "moth"] * 7)
    X = _hard("1e-12 apart")[:21]
    src = _write(kind, tmp_path, X, labels)
    path = extract_features("mine", f"features:{src}", root=tmp_path / "out")["features"]
    fs = load_features(path)
    assert fs.features.dtype == np.float64 and fs.features.tobytes() == X.tobytes()
    assert np.asarray(fs.class_names)[fs.labels].tolist() == labels.tolist()
    assert fs.class_names == ("ant", "moth", "zebra")  # without class_names: sorted
    assert fs.meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest() or kind == "npy"
    k = index.load_kstar(stages.kstar_of_file(path, tmp_path / "out")).kstar
    np.testing.assert_array_equal(k, compute_kstar(X, labels))


def test_parquet_columns_of_mixed_dtypes_convert_exactly(tmp_path):
    pytest.importorskip("pyarrow")
    y = np.arange(6) % 2
    df = pd.DataFrame({"a": np.arange(6, dtype=np.int64) + 2**53 - 10, "b": np.linspace(0, 1, 6).astype(np.float32),
                       "label": y})
    df.to_parquet(tmp_path / "m.parquet")
    F, _, _ = load_feature_file(tmp_path / "m.parquet")
    assert F.dtype == np.float64 and (F[:, 0].astype(np.int64) == df["a"].to_numpy()).all()
    df.loc[2, "a"] = 2**53 + 1  # int64 + float32 columns: numpy would round this to 2**53 without a word
    df.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(ValueError, match=r"column 'a'.*too large for float64.*first rows: \[2\]"):
        load_feature_file(tmp_path / "m.parquet")


# ---------------------------------------------------------------------------------------------- studies
def _features_study(folder: Path, **extra) -> Path:
    labels = np.repeat(np.array(["ant", "bee", "cow"]), 12)
    np.savez(folder / "emb.npz", features=_blobs(labels), labels=labels)
    # an absolute path: how a relative one resolves is the study file's rule, not this file's subject
    study = {"name": "byo", "models": ["zoo:standard"], "datasets": [f"features:{folder / 'emb.npz'}"],
             "output_dir": "out", "cache_dir": "cache", "n_boot": 50, **extra}
    path = folder / "byo.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_features_dataset_runs_the_files_layer_by_default(tmp_path):
    from kstar_utils.study import check_jobs, expand_jobs, load_study

    study = load_study(_features_study(tmp_path))
    (job,) = expand_jobs(study)
    assert job.layers == ("features",) and job.plot_layer == "features"
    check_jobs([job], study.output_dir, require_present=True)  # what `kstar plan` and `kstar run` check first
    # a grid of features and images without layers: each dataset gets its own default
    byo = f"features:{tmp_path / 'emb.npz'}"
    mixed = load_study(_features_study(tmp_path, datasets=["digits", byo]))
    assert {j.dataset: j.layers for j in expand_jobs(mixed)} == {"digits": ("penultimate", "logits"),
                                                                 byo: ("features",)}


@pytest.mark.parametrize("layers", [["penultimate"], ["features", "logits"]])
def test_another_layer_of_a_features_dataset_is_refused_by_plan(tmp_path, capsys, layers):
    from kstar_utils import cli

    path = _features_study(tmp_path)
    raw = yaml.safe_load(path.read_text())
    if layers == ["penultimate"]:  # the study's layers
        raw["layers"] = layers
    else:  # a grid's own
        raw["grids"] = [{"models": raw.pop("models"), "datasets": raw.pop("datasets"), "layers": layers}]
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kstar: error: ") and err.count("\n") == 1, err
    wrong = "penultimate" if layers == ["penultimate"] else "logits"
    assert f"layer '{wrong}'" in err and f"features:{tmp_path / 'emb.npz'}" in err and "'features'" in err


def test_the_runner_refuses_a_features_job_at_another_layer(tmp_path):
    import dataclasses

    from kstar_utils.study import check_jobs, expand_jobs, load_study

    study = load_study(_features_study(tmp_path))
    (job,) = expand_jobs(study)
    wrong = dataclasses.replace(job, layers=("penultimate",))
    with pytest.raises(ValueError, match=r"layer 'penultimate'.*features:.*emb\.npz.*'features'"):
        check_jobs([wrong], study.output_dir)


@pytest.mark.slow
def test_a_study_of_a_features_file_runs_the_notebooks(tmp_path):
    """The notebooks 01-03 of a job whose only layer is the file's (`kstar run --threads`)."""
    pytest.importorskip("papermill")
    from kstar_utils import cli

    path = _features_study(tmp_path)
    assert cli.main(["run", str(path), "--threads", "--workers", "1", "--retries", "0"]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["layer"].tolist() == ["features"] and summary["status"].tolist() == ["ok"]
    (job_dir,) = (tmp_path / "out" / "jobs").iterdir()
    per_class = pd.read_csv(job_dir / "tables" / "skewness_per_class.csv")
    assert dict(zip(per_class["label"], per_class["n"])) == {"ant": 12, "bee": 12, "cow": 12}
    assert sorted(p.name for p in (job_dir / "executed").iterdir()) == [
        "01_extract_features.ipynb", "02_kstar.ipynb", "03_skewness.ipynb"]
    assert any("features" in p.name for p in (job_dir / "figures").iterdir())
