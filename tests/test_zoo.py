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


def _nearest_mean_classifier():
    """A linear digits classifier (nearest class mean): scores W x + b with W the class means (10, 64) and
    b = -||mean||^2 / 2. Its exact robust accuracy is known (below)."""
    Xtr, ytr = load_digits("train")
    means = np.stack([Xtr[ytr == c].reshape(-1, 64).mean(0) for c in range(10)]).astype(np.float64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.copy_(torch.from_numpy(means))
        model[1].bias.copy_(torch.from_numpy(-0.5 * (means**2).sum(1)))
    return model.eval(), means


def _exact_linear_robust_accuracy(means, X, y, eps):
    """The share of images whose class wins against every other class for every image within L-inf eps that stays in
    [0, 1]: for a linear score the worst image takes, per pixel, the end of its interval that lowers the margin."""
    x = X.reshape(len(X), -1).astype(np.float64)
    lo, hi = np.clip(x - eps, 0, 1), np.clip(x + eps, 0, 1)
    bias = -0.5 * (means**2).sum(1)
    robust = []
    for xi, l, h, c in zip(x, lo, hi, y):
        w = means[c] - means  # (10, 64): the margin of class c over each class j is w_j . x + (b_c - b_j)
        worst = np.where(w > 0, l, h)
        margins = np.einsum("jd,jd->j", w, worst) + bias[c] - bias
        robust.append(np.delete(margins, c).min() > 0)
    return float(np.mean(robust))


def test_autoattack_finds_the_exact_robust_accuracy_of_a_linear_model():
    """On a linear model the attack's result is known exactly: it cannot break an image whose worst case still wins
    (a lower bound), and it should break every other one (APGD-CE and APGD-T find the worst corner of a linear
    score; one image of slack for a margin within rounding of 0)."""
    X, y = load_digits("test")
    X, y = X[:40], y[:40]
    model, means = _nearest_mean_classifier()
    clean = accuracy(model, X, y)
    exact = _exact_linear_robust_accuracy(means, X, y, eps=0.05)
    robust = robust_accuracy(model, X, y, eps=0.05, n_restarts=1, n_target_classes=1)
    assert 0 < exact < clean
    assert exact <= robust <= exact + 1 / len(y)


@pytest.mark.slow
def test_autoattack_is_stronger_than_pgd_on_the_standard_model():
    """AutoAttack at its standard strength (5 APGD-CE restarts, APGD-T on 9 targets) on the CNN leaves no more images
    correct than a 10-step PGD of the same budget, and fewer than without attack."""
    X, y = load_digits("test")
    model = zoo.load_zoo_model("standard")
    x, t = torch.from_numpy(X[:100]), torch.from_numpy(y[:100])
    clean = accuracy(model, x, t)
    pgd = accuracy(model, pgd_linf(model, x, t, eps=0.1, steps=10, gen=torch.Generator().manual_seed(0)), t)
    robust = robust_accuracy(model, X[:100], y[:100], eps=0.1)
    assert 0 <= robust <= pgd < clean


def test_unknown_model_and_missing_weights_are_clear(tmp_path):
    with pytest.raises(ValueError, match="closest"):
        zoo.load_zoo_model("standart")
    with pytest.raises(FileNotFoundError, match="kstar zoo train --zoo digits"):
        zoo.load_zoo_model("standard", weights_dir=tmp_path)
