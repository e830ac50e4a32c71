"""Every figure: drawn from precomputed results, one width, no overlapping text, accuracy bands inside [0, 1], saved."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from kstar_utils import compute_kstar, plotting, summarize_skewness  # noqa: E402
from kstar_utils.analysis.fracture import fracture_difference, fracture_matrix, samples_behind  # noqa: E402
from kstar_utils.plotting import study as sp  # noqa: E402
from kstar_utils.plotting.style import DPI, WIDTH  # noqa: E402
from kstar_utils.study.summary import average_over_datasets, study_correlations  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture()
def models_table():
    """Ten models whose accuracies crowd together near 0.92 (the case where point labels used to pile up)."""
    rng = np.random.default_rng(0)
    names = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet20-ft", "resnet20-noise", "resnet20-pgd1",
             "resnet20-pgd2", "resnet20-pgd4", "resnet20-pgd8"]
    g = np.linspace(-0.3, 0.4, 10) + rng.normal(0, 0.01, 10)
    return pd.DataFrame({"model": [f"cifar-resnet:{n}" for n in names], "layer": "penultimate",
                         "dataset": "cifar10-sample", "approx_skewness": g, "true_skewness": g + 0.2,
                         "clean_acc": 0.92 + rng.normal(0, 0.004, 10).clip(-0.01, 0.01),
                         "robust_acc": np.linspace(0.1, 0.6, 10)[::-1] + rng.normal(0, 0.01, 10)})


@pytest.fixture()
def kstar_results():
    rng = np.random.default_rng(1)
    out = {}
    for m in ("resnet20", "resnet20-pgd8", "resnet32"):
        y = np.repeat(np.arange(10), 30)
        X = rng.normal(size=(300, 8)) + rng.normal(size=(10, 8))[y] * 1.5
        k = compute_kstar(X, np.asarray(CLASSES)[y])
        out[m] = (k, np.asarray(CLASSES)[y], summarize_skewness(k, np.asarray(CLASSES)[y]))
    return out


def check(fig, tmp_path, name="f.png"):
    """The common contract: no overlapping text, the one width, a file."""
    assert plotting.text_overlaps(fig) == [], plotting.text_overlaps(fig)
    assert fig.get_figwidth() == WIDTH
    path = plotting.save_figure(fig, tmp_path / name)
    with Image.open(path) as im:
        assert im.size[0] == round(WIDTH * DPI)
    return path


def test_scatter_of_crowded_models_has_no_overlapping_text_and_clipped_bands(models_table, tmp_path):
    stats = pd.DataFrame({"y": ["clean_acc", "robust_acc"], "method": "spearman", "statistic": [-0.5, -0.9],
                          "ci_low": [-0.9, -1.0], "ci_high": [0.2, -0.6], "n": 10})
    fig = plotting.plot_metric_vs_accuracy(models_table, "approx_skewness",
                                           {"clean_acc": "clean accuracy", "robust_acc": "robust accuracy"},
                                           stats=stats, title="Γ' vs accuracy")
    for ax in fig.axes[:2]:
        lo, hi = ax.get_ylim()
        assert 0 <= lo and hi <= 1
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert bands
        for band in bands:
            ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
            assert ys.min() >= 0 and ys.max() <= 1  # the trend band stays within accuracy's range
    assert "Spearman ρ = -0.90" in fig.axes[1].get_title()
    legend_names = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "resnet20-pgd8" in legend_names and len(legend_names) == 10
    check(fig, tmp_path)


def test_few_models_are_flagged_in_the_title(models_table, tmp_path):
    stats = pd.DataFrame({"y": ["robust_acc"], "method": "spearman", "statistic": [-1.0], "ci_low": [-1.0],
                          "ci_high": [-1.0], "n": [3]})
    fig = plotting.plot_metric_vs_accuracy(models_table.head(3), "approx_skewness", {"robust_acc": "robust"},
                                           stats=stats)
    assert "cannot be trusted" in fig.axes[0].get_title()
    check(fig, tmp_path)


def test_distributions(kstar_results, tmp_path):
    k, labels, s = kstar_results["resnet20"]
    fig = plotting.plot_kstar_distribution(k, labels, s, title="resnet20")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 10 and all(t.startswith("γ=") for t in texts)
    assert fig.axes[0].get_xlim()[1] < 1.05  # the γ column stays clear of a violin ending at 1
    check(fig, tmp_path, "one.png")
    pair = {m: kstar_results[m] for m in ("resnet20", "resnet20-pgd8")}
    check(plotting.plot_kstar_side_by_side(pair, title="before / after"), tmp_path, "pair.png")
    fig = plotting.plot_kstar_grid(kstar_results, ncols=3)
    assert sum(ax.get_visible() for ax in fig.axes) == 3
    check(fig, tmp_path, "grid.png")
    with pytest.raises(ValueError, match="1 to 3"):
        plotting.plot_kstar_side_by_side({str(i): kstar_results["resnet20"] for i in range(4)})


def test_depth_profile_and_heatmaps(tmp_path):
    rows = []
    for m in ("cifar-resnet:resnet20", "cifar-resnet:resnet20-pgd8"):
        for i, layer in enumerate(("layer1", "layer2", "layer3", "penultimate", "logits")):
            rows.append({"model": m, "layer": layer, "approx_skewness": 0.5 - 0.2 * i, "n_fractured": 4 - i,
                         "n_overlapped": 3, "n_clustered": 3 + i})
    layers = ["layer1", "layer2", "layer3", "penultimate", "logits"]  # long names side by side in the heatmap
    fig = plotting.plot_depth_profile(pd.DataFrame(rows), layers=layers)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == layers
    fig.canvas.draw()  # the model legend below the panels lies in one row, not a tall column
    assert len({round(t.get_window_extent().y0) for t in fig.legends[-1].get_texts()}) == 1
    check(fig, tmp_path, "depth.png")
    per_class = pd.DataFrame({"model": np.repeat(["a", "b"], 3), "label": ["x", "y", "z"] * 2,
                              "skew": [0.1, np.inf, -0.7, 1.0, 0.2, -np.inf]})
    fig = plotting.plot_class_skew_heatmap(per_class)
    assert {t.get_text() for t in fig.axes[0].texts} >= {"+inf", "-inf", "+0.10"}
    check(fig, tmp_path, "skews.png")


def test_fracture_figures(tmp_path):
    labels = np.repeat(np.arange(3), 4)
    enemy = np.array([1, 1, 2, 1, 0, 0, 0, 2, 0, 1, 1, 1])
    khat = np.linspace(0.1, 1, 12)
    a = fracture_matrix(labels, enemy, khat, ["cat", "dog", "ship"])
    b = fracture_matrix(labels, np.array([2, 2, 2, 1, 2, 0, 0, 2, 0, 1, 1, 1]), khat, ["cat", "dog", "ship"])
    fig = plotting.plot_fracture_matrix(a, title="who fractures whom")
    assert np.ma.count_masked(fig.axes[0].collections[0].get_array()) == 3  # the diagonal is blank
    check(fig, tmp_path, "fm.png")
    check(plotting.plot_fracture_difference(fracture_difference(a, b), names=("standard", "robust")), tmp_path, "d.png")
    kstar = np.array([1, 3, 2, 2, 1, 4, 1, 1, 2, 3, 1, 2])
    t = samples_behind(kstar, labels, np.array([4, 5, 8, 9, 0, 1, 2, 3, 0, 1, 2, 3]), 0, n=2,
                       class_names=["cat", "dog", "ship"]).assign(distance=1.5)
    images = {i: np.random.default_rng(i).random((3, 8, 8)) for i in range(12)}
    fig = plotting.plot_sample_gallery(t, images, title="cat")
    assert sum(ax.get_visible() for ax in fig.axes) == 8
    check(fig, tmp_path, "gallery.png")


def test_study_figures_from_a_summary(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for d, shift in (("cifar10", 0.0), ("cifar100", 0.3)):
        for i in range(6):
            g = -0.5 + 0.3 * i + shift
            rows.append({"model": f"openclip:m{i}", "dataset": d, "layer": "embedding", "status": "ok",
                         "approx_skewness": g, "true_skewness": g + rng.normal(0, 0.1),
                         "zeroshot_acc": 0.9 - 0.1 * i + rng.normal(0, 0.02), "zeroshot_avg": 0.7 - 0.05 * i,
                         "clean_acc": np.nan, "robust_acc": np.nan})
    summary = pd.DataFrame(rows)
    stats = study_correlations(summary, n_boot=100)
    figs = sp.plot_skewness_vs_accuracy_by_dataset(summary, ["zeroshot_acc", "clean_acc"], layer="embedding",
                                                   stats=stats)
    assert set(figs) == {"cifar10", "cifar100"} and len(figs["cifar10"].axes) == 1  # clean_acc has no values
    assert "Spearman ρ = -" in figs["cifar10"].axes[0].get_title()
    for f in figs.values():
        check(f, tmp_path)
    avg = average_over_datasets(summary, layer="embedding")
    assert len(avg) == 6 and (avg["n_datasets"] == 2).all()
    fig = sp.plot_skewness_heatmap(summary.iloc[:-1], layer="embedding")  # one missing (model, dataset) pair
    assert np.ma.count_masked(fig.axes[0].collections[0].get_array()) == 1  # blank, not 0
    check(fig, tmp_path, "h.png")
    fig = plotting.plot_gamma_vs_gamma_prime(summary, agreement={"spearman": 0.9, "mean_abs_diff": 0.1, "n": 12})
    assert "Spearman ρ = +0.90" in fig.axes[0].get_title()
    check(fig, tmp_path, "gg.png")
    plt.close("all")


def test_rotated_text_overlap_uses_the_rotated_box():
    fig, ax = plt.subplots(figsize=(4, 3))
    # two slanted labels side by side: their upright boxes overlap, the labels themselves do not
    ax.text(0.3, 0.5, "resnet20-noise", rotation=40, transform=ax.transAxes)
    ax.text(0.38, 0.5, "resnet20-pgd1", rotation=40, transform=ax.transAxes)
    assert plotting.text_overlaps(fig) == []
    ax.text(0.32, 0.52, "crossing", rotation=-40, transform=ax.transAxes)  # cuts through both
    assert {"crossing"} <= {t for pair in plotting.text_overlaps(fig) for t in pair}
    plt.close(fig)


def test_metric_sensitivity_correlation_matrix_noise_and_class_view(models_table, tmp_path):
    metrics = ["euclidean", "cosine", "mahalanobis", "manhattan", "chebyshev", "minkowski(p=3)"]
    table = pd.concat([models_table.assign(metric=m, approx_skewness=models_table["approx_skewness"] + 0.1 * i)
                       for i, m in enumerate(metrics)])
    check(plotting.plot_metric_sensitivity(table, title="Γ' by distance · penultimate"), tmp_path, "ms.png")
    names = models_table["model"].tolist()
    rho = pd.DataFrame(np.corrcoef(np.random.default_rng(0).normal(size=(10, 12))), index=names, columns=names)
    check(plotting.plot_correlation_matrix(rho, title="class skews · penultimate"), tmp_path, "cm.png")
    noise = pd.DataFrame([{"model": m, "strength": s, "approx_skewness": 0.3 + s, "frac_kstar_changed": min(1, 3 * s),
                           "accuracy": 0.9 - s} for m in names[:3] for s in (0.0, 0.02, 0.05, 0.1)])
    fig = plotting.plot_perturbation_curves(noise, ys=("approx_skewness", "frac_kstar_changed", "accuracy"),
                                            xlabel="input noise (pixel std)", title="input noise · penultimate")
    check(fig, tmp_path, "noise.png")
    from kstar_utils.plotting.fracture import plot_class_view

    labels = np.repeat(np.arange(10), 5)
    tidy = fracture_matrix(labels, (labels + 1) % 10, np.linspace(0.02, 1, 50), CLASSES)
    check(plot_class_view(np.linspace(0.02, 1, 5), tidy[tidy["class"] == "cat"], title="cat · resnet20 · penultimate"),
          tmp_path, "view.png")
    plt.close("all")
