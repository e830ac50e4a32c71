"""Dataset loaders (tiny fake folders), per-class sampling, bring-your-own features, missing data, pre-flight."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from kstar_utils import datasets
from kstar_utils.datasets import DatasetNotFoundError, load_dataset, load_digits, load_feature_file, subsample_per_class
from kstar_utils.cli import main as kstar
from kstar_utils.pipeline.preflight import format_report, preflight


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 5, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def image_folder(tmp_path):
    for c, cls in enumerate(["ant", "bee", "cow"]):
        for i in range(4):
            _png(tmp_path / "folder" / "test" / cls / f"{i}.png", 10 * c + i)
    return tmp_path / "folder"


def test_image_folder_with_split_and_subsampling(image_folder):
    ds = load_dataset(f"folder:{image_folder}", "test")
    assert len(ds) == 12 and ds.class_names == ("ant", "bee", "cow")
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    img, y = ds.dataset[5]
    assert isinstance(img, Image.Image) and y == 1
    sub = load_dataset(f"folder:{image_folder}", "test", n_per_class=2, seed=3)
    assert np.bincount(sub.labels).tolist() == [2, 2, 2] and len(sub.dataset) == 6
    again = load_dataset(f"folder:{image_folder}", "test", n_per_class=2, seed=3)
    assert [again.dataset[i][0].getpixel((0, 0)) for i in range(6)] == [sub.dataset[i][0].getpixel((0, 0))
                                                                          for i in range(6)]


def test_subsample_per_class_is_seeded_and_capped():
    y = np.array([0] * 5 + [1] * 2 + [2] * 9)
    a, b = subsample_per_class(y, 3, seed=1), subsample_per_class(y, 3, seed=1)
    np.testing.assert_array_equal(a, b)
    assert np.bincount(y[a]).tolist() == [3, 2, 3] and (np.diff(a) > 0).all()
    assert not np.array_equal(a, subsample_per_class(y, 3, seed=2))
    np.testing.assert_array_equal(subsample_per_class(y, None), np.arange(y.size))


def _fake_imagenet(root):
    # airliner (airplane), brown bear (bear), tench (not in ImageNet-16)
    for wnid in ("n02690373", "n02132136", "n01440764"):
        for i in range(2):
            _png(root / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG", i)


def test_imagenet_labels_are_standard_indices(tmp_path):
    _fake_imagenet(tmp_path)
    ds = load_dataset("imagenet", "val", data_root=tmp_path)
    assert sorted(set(ds.labels.tolist())) == [0, 294, 404]
    assert len(ds.class_names) == 1000 and ds.class_names[404] == "airliner"


def test_imagenet16_maps_to_coarse_classes(tmp_path):
    _fake_imagenet(tmp_path)
    ds = load_dataset("imagenet16", "test", data_root=tmp_path)
    assert len(ds.class_names) == 16 and ds.class_names[0] == "airplane"
    assert len(ds) == 4  # the tench images are not part of ImageNet-16
    assert sorted(ds.class_names[i] for i in set(ds.labels.tolist())) == ["airplane", "bear"]


def test_imagenet16_mapping_file():
    from kstar_utils.io.paths import shipped

    with open(shipped("imagenet16", "imagenet16_classes.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 207 and len({r["wnid"] for r in rows}) == 207
    assert len({r["category"] for r in rows}) == 16
    assert datasets.imagenet16_mapping()["n02690373"] == "airplane"


def test_robustbench_imagenet_subset_list_and_missing_images(tmp_path):
    ids = datasets._robustbench_ids()
    assert len(ids) == 5000 and ids[0].count("/") == 1 and ids[0].startswith("n")
    _fake_imagenet(tmp_path)
    with pytest.raises(DatasetNotFoundError, match="RobustBench's ImageNet subset"):
        load_dataset("imagenet", data_root=tmp_path, subset="robustbench")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet"])
def test_missing_data_names_path_and_remedy(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset(name, data_root=tmp_path)
    assert str(tmp_path) in str(e.value) and "To provide it" in str(e.value)


def test_data_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("KSTAR_DATASETS", str(tmp_path))
    assert datasets.resolve_data_root() == tmp_path
    assert datasets.requirements("cifar10")[0].path == tmp_path / "cifar-10-batches-py"


def test_unknown_dataset_suggests():
    with pytest.raises(ValueError, match="cifar100"):
        load_dataset("cifar-100")


def test_digits_dataset_is_the_embedded_split():
    ds = load_dataset("digits", "test", n_per_class=3)
    x, y = ds.dataset[0]
    assert tuple(x.shape) == (1, 8, 8) and ds.class_names[0] == "0" and len(ds) == 30
    assert len(load_dataset("digits", "train")) == len(load_digits("train")[1])


def test_feature_files_npz_npy_parquet(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 3)).astype(np.float32)
    np.savez(tmp_path / "a.npz", features=X, labels=np.array([2, 0, 1, 2, 0, 1]))
    F, y, names = load_feature_file(tmp_path / "a.npz")
    np.testing.assert_array_equal(F, X)
    assert y.tolist() == [2, 0, 1, 2, 0, 1] and names == ("0", "1", "2")
    np.save(tmp_path / "b.npy", X)
    np.save(tmp_path / "b_labels.npy", np.array(["x", "y"] * 3))
    F, y, names = load_feature_file(tmp_path / "b.npy")
    assert names == ("x", "y") and y.tolist() == [0, 1] * 3
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    df = pd.DataFrame(X, columns=["f0", "f1", "f2"]).assign(label=["a", "b", "a", "b", "a", "b"])
    df.to_parquet(tmp_path / "c.parquet")
    F, y, names = load_feature_file(tmp_path / "c.parquet")
    np.testing.assert_allclose(F, X)
    assert names == ("a", "b")
    np.save(tmp_path / "b2.npy", X)  # no labels beside it
    with pytest.raises(DatasetNotFoundError, match="b2_labels.npy"):
        load_feature_file(tmp_path / "b2.npy")


def test_preflight_lists_everything_with_paths(tmp_path, image_folder, capsys):
    items = preflight(["robustbench:cifar10/Linf/Carmon2019Unlabeled", "torchvision:resnet18"],
                      ["cifar10", f"folder:{image_folder}"], data_root=tmp_path, model_dir=tmp_path / "rb")
    by_name = {it.name: it for it in items}
    rb = by_name["robustbench:cifar10/Linf/Carmon2019Unlabeled"]
    assert not rb.present and rb.path.endswith("rb/cifar10/Linf/Carmon2019Unlabeled.pt")
    assert by_name["torchvision:resnet18"].present  # random weights need nothing
    assert not by_name["cifar10 (test)"].present
    assert by_name[f"folder:{image_folder} (test)"].present
    report = format_report(items)
    assert "MISSING" in report and "KSTAR_ROBUSTBENCH_DIR" in report
    assert kstar(["preflight", "--model", "torchvision:resnet18", "--dataset", f"folder:{image_folder}"]) == 0
    assert kstar(["preflight", "--dataset", "cifar10", "--data-root", str(tmp_path)]) == 1
    assert kstar(["preflight", "--model", "zoo:nonexistent-model"]) == 2
    assert "closest" in capsys.readouterr().err
    (tmp_path / "bad.yaml").write_text("models: [zoo:standard\n")
    (tmp_path / "list.yaml").write_text("- zoo:standard\n")
    assert kstar(["preflight", "--params", str(tmp_path / "bad.yaml")]) == 2
    assert kstar(["preflight", "--params", str(tmp_path / "list.yaml")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml is not valid YAML" in err and "list.yaml must be a YAML mapping" in err and "Traceback" not in err


def test_preflight_reads_the_example_params():
    import pathlib

    import yaml

    from kstar_utils.pipeline.preflight import plan_from_params

    root = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "params"
    files = sorted(root.glob("*.yaml"))
    assert files, f"no example parameter files in {root}"
    for f in files:
        plan = plan_from_params(yaml.safe_load(f.read_text()))
        items = preflight(plan["models"], plan["datasets"], split=plan["split"], data_root=plan["data_root"])
        assert {it.kind for it in items} == {"weights", "data"}, f.name


def test_cached_features_follow_the_images_of_a_folder(image_folder, tmp_path):
    """Features are reused while the folder is unchanged; replacing one image re-extracts them."""
    from kstar_utils.pipeline.features import extract_features, load_features

    def extract():
        return extract_features("torchvision:resnet18", f"folder:{image_folder}", layers="logits",
                                root=tmp_path / "cache", progress=False)["logits"]

    path = extract()
    before = load_features(path)
    assert before.meta["inputs"]["data"]["path"] == str(image_folder / "test")
    stamp = path.stat().st_mtime_ns
    assert extract() == path and path.stat().st_mtime_ns == stamp  # reused, not rewritten
    _png(image_folder / "test" / "ant" / "0.png", 250)  # the same size and name, another image
    assert extract() == path and path.stat().st_mtime_ns != stamp
    after = load_features(path)
    assert after.meta["inputs"]["data"]["sha256"] != before.meta["inputs"]["data"]["sha256"]
    assert not np.array_equal(after.features[0], before.features[0])
    np.testing.assert_array_equal(after.features[1:], before.features[1:])
