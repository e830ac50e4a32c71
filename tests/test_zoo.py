"""The embedded zoo: data split, shipped weights reproducing their measured accuracy, seeded training, the attack."""
import numpy as np
import pytest
import torch

from kstar_utils.datasets import load_digits
from kstar_utils.io.tables import load_measured_metrics
from kstar_utils.models import digits_zoo as zoo
from kstar_utils.models.training import accuracy, pgd_linf, robust_accuracy


def test_digits_split_is_stratified_disjoint_and_in_unit_range():
    Xtr, ytr = load_digits("train")
    Xte, yte = load_digits("test")
    assert Xtr.shape[1:] == (1, 8, 8) and Xte.dtype == np.float32
    assert len(Xtr) + len(Xte) == 1797
    assert Xte.min() >= 0 and Xte.max() <= 1
    assert set(np.unique(yte)) == set(range(10))
    # stratified: every class holds about half its images in each split
    assert np.abs(np.bincount(ytr) - np.bincount(yte)).max() <= 1
    train_rows = {x.tobytes() for x in Xtr}
    assert sum(x.tobytes() in train_rows for x in Xte) < 10  # only genuine duplicate images may repeat
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")


def test_shipped_weights_reproduce_the_measured_clean_accuracy():
    table = load_measured_metrics("zoo").set_index("model")
    assert sorted(table.index) == sorted(f"zoo:{m}" for m in zoo.ZOO_MODELS)
    X, y = load_digits("test")
    for name in zoo.ZOO_MODELS:
        acc = accuracy(zoo.load_zoo_model(name), X, y)
        assert acc == pytest.approx(table.loc[f"zoo:{name}", "clean_acc"], abs=1.5e-3), name


def test_zoo_spans_robustness():
    table = load_measured_metrics("zoo").set_index("model")
    assert table.loc["zoo:standard", "clean_acc"] > 0.9
    assert table.loc["zoo:untrained", "clean_acc"] < 0.3
    pgd = table[table["kind"] == "pgd"]
    assert pgd["robust_acc"].max() > table.loc["zoo:standard", "robust_acc"] + 0.1
    assert ((table["robust_acc"] >= 0) & (table["robust_acc"] <= table["clean_acc"] + 1e-9)).all()


def test_training_is_seeded():
    X, y = load_digits("train")
    r = zoo.Recipe("tiny", "clean", epochs=1)
    a, b = zoo.train(r, X[:128], y[:128]), zoo.train(r, X[:128], y[:128])
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_pgd_stays_in_the_budget_and_the_image_range():
    X, y = load_digits("test")
    model = zoo.load_zoo_model("standard")
    x, t = torch.from_numpy(X[:64]), torch.from_numpy(y[:64])
    adv = pgd_linf(model, x, t, eps=0.1, steps=5, gen=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= 0.1 + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert accuracy(model, adv, t) < accuracy(model, x, t)


def test_autoattack_lowers_accuracy_of_the_standard_model():
    X, y = load_digits("test")
    model = zoo.load_zoo_model("standard")
    clean = accuracy(model, X[:100], y[:100])
    robust = robust_accuracy(model, X[:100], y[:100], eps=0.1)
    assert 0 <= robust < clean


def test_unknown_model_and_missing_weights_are_clear(tmp_path):
    with pytest.raises(ValueError, match="closest"):
        zoo.load_zoo_model("standart")
    with pytest.raises(FileNotFoundError, match="kstar zoo train --zoo digits"):
        zoo.load_zoo_model("standard", weights_dir=tmp_path)
