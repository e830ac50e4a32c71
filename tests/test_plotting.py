"""Every figure: drawn from precomputed results, one width, no overlapping text, accuracy bands inside [0, 1], saved;
readable with the thirty CIFAR-10 models of the study (colour by training kind, marker by family, two compact
legend sections, a few named points); one colour scale per quantity; repeated layers drawn once."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.text import Annotation  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from kstar_utils import compute_kstar, models, plotting, summarize_skewness  # noqa: E402
from kstar_utils.analysis.fracture import fracture_difference, fracture_matrix, samples_behind  # noqa: E402
from kstar_utils.plotting import study as sp  # noqa: E402
from kstar_utils.plotting.style import DPI, SKEW_LIMIT, TRAINING_COLORS, WIDTH, labelled, model_looks  # noqa: E402
from kstar_utils.study.summary import average_over_datasets, study_correlations  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_SOURCES = ("cifar-resnet", "abcrown", "convex", "chenyaofo")
YS = ["clean_acc", "robust_acc_linf_2_255", "robust_acc_linf_8_255", "corruption_acc", "jpeg_acc"]


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


def _thirty_names() -> list[str]:
    return [n for s in CIFAR_SOURCES for n in models.known_model_names(s)]


@pytest.fixture(scope="module")
def thirty():
    """The thirty CIFAR-10 models of the study under their registry names, with made-up Γ' and five accuracies."""
    names = _thirty_names()
    assert len(names) == 30
    info = {n: models.describe(n) for n in names}
    rng = np.random.default_rng(3)
    base = {"standard": 0.2, "adversarial": 1.5, "certified": 1.8, "own-fine-tune": 1.2}
    g = np.array([base[info[n].training] for n in names]) + rng.normal(0, 0.4, 30)
    clean = np.clip(0.9 - 0.15 * g + rng.normal(0, 0.03, 30), 0, 1)
    robust = np.clip(np.where([info[n].training == "standard" for n in names], 0.0, 0.5) + rng.normal(0, 0.04, 30),
                     0, 1)
    return pd.DataFrame({"model": names, "dataset": "cifar10-sample", "layer": "penultimate",
                         "approx_skewness": g, "true_skewness": g + rng.normal(0.2, 0.1, 30), "clean_acc": clean,
                         "robust_acc_linf_2_255": robust, "robust_acc_linf_8_255": robust / 2,
                         "corruption_acc": clean - 0.1, "jpeg_acc": clean - 0.05,
                         "family": [info[n].family for n in names]})


def _stats(ys, *, p=0.0001, exact=False, p_min=0.0001, n=30, stat=0.5, lo=0.2, hi=0.8, group="pooled"):
    return pd.DataFrame({"x": "approx_skewness", "y": list(ys), "group": group, "method": "spearman",
                         "statistic": stat, "ci_low": lo, "ci_high": hi, "p_value": p, "p_exact": exact,
                         "p_min": p_min, "n": n})


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


def _legend_texts(fig) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def _named(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if isinstance(t, Annotation)]


def test_scatter_of_crowded_models_has_no_overlapping_text_and_clipped_bands(models_table, tmp_path):
    stats = pd.DataFrame({"y": ["clean_acc", "robust_acc"], "method": "spearman", "statistic": [-0.5, -0.9],
                          "ci_low": [-0.9, -1.0], "ci_high": [0.2, -0.6], "n": 10})
    fig = plotting.plot_metric_vs_accuracy(models_table, "approx_skewness",
                                           {"clean_acc": "clean accuracy", "robust_acc": "robust accuracy"},
                                           stats=stats, title="Γ' vs accuracy")
    for ax in fig.axes[:2]:
        lo, hi = ax.get_ylim()
        assert -0.03 <= lo and hi <= 1.03  # at most a marker's breadth beyond accuracy's range
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert bands
        for band in bands:
            ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
            assert ys.min() >= 0 and ys.max() <= 1  # the trend band stays within accuracy's range
        assert sorted(_named(ax)) == sorted(models.short_name(m) for m in models_table["model"])  # ten: all named
    assert "Spearman ρ = -0.90" in fig.axes[1].get_title()
    eps = plotting.plot_metric_vs_accuracy(models_table.assign(eval_eps=1 / 255), "approx_skewness", ["robust_acc"])
    assert eps.axes[0].get_title() == "robust accuracy (ε = 1/255)"  # not 0.0039
    legend = _legend_texts(fig)
    # one entry per training kind and per family, not one per model
    assert {"training", "standard", "own fine-tune", "architecture", "resnet"} <= set(legend)
    assert "resnet20-pgd8" not in legend
    check(fig, tmp_path)


def test_thirty_models_against_five_accuracies(thirty, tmp_path):
    stats = _stats(YS)
    named = ["resnet20", "cifar-resnet:resnet20-pgd8", "cnn-a-adv", "chenyaofo-shufflenetv2-x0.5"]
    fig = plotting.plot_metric_vs_accuracy(thirty, "approx_skewness", YS, stats=stats, label=named,
                                           title="Γ' vs accuracy · penultimate")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 5
    titles = [ax.get_title() for ax in panels]
    assert titles[1].startswith("robust accuracy (L∞ 2/255)") and titles[2].startswith("robust accuracy (L∞ 8/255)")
    for t in titles:
        assert "p ≤ 0.0001, n = 30" in t and "p <" not in t  # the floor of 9,999 pairings, not below it
    for ax in panels:
        assert sorted(_named(ax)) == sorted(["resnet20", "resnet20-pgd8", "cnn-a-adv", "chenyaofo-shufflenetv2-x0.5"])
        points = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(points) == 30
    legend = _legend_texts(fig)
    looks = model_looks(thirty["model"])
    assert set(legend) >= {"standard", "adversarial", "certified", "own fine-tune"}
    assert set(legend) >= {lk.family for lk in looks.values()}
    assert len(legend) <= 4 + 8 + 3 + 3  # kinds, families, headings, the trend: compact at thirty models
    check(fig, tmp_path)


def test_a_model_looks_the_same_in_every_figure(thirty):
    looks = model_looks(thirty["model"])
    again = model_looks(list(reversed(thirty["model"])))
    assert all(looks[m] == again[m] for m in looks)  # not the position in the list
    assert looks["abcrown:cnn-a-adv"].color == TRAINING_COLORS["adversarial"]
    assert looks["cifar-resnet:resnet20-pgd8"].color == TRAINING_COLORS["own-fine-tune"]
    assert looks["abcrown:cnn-a-adv"].marker == looks["convex:small-8px"].marker  # one family, one marker
    assert looks["abcrown:cnn-a-adv"].marker != looks["cifar-resnet:resnet20"].marker
    assert model_looks(["made:up"])["made:up"].family == "other"  # imported features still get a look
    assert labelled(thirty["model"], None) == []  # thirty: none named unless asked
    assert labelled(thirty["model"][:3], None) == list(thirty["model"][:3])
    with pytest.raises(ValueError, match="not a model of this figure"):
        labelled(thirty["model"], ["resnet1000"])


def test_within_family_highlights_and_panels(thirty, tmp_path):
    stats = pd.concat([_stats(YS[:2]), _stats(YS[:2], group="cnn-a-wide", n=8, exact=True, p=0.24, p_min=1 / 40320,
                                              stat=-0.48, lo=-1.0, hi=0.36)])
    fig = plotting.plot_metric_vs_accuracy(thirty, "approx_skewness", YS[:2], stats=stats,
                                           families=["cnn-a-wide", "resnet"])
    title = fig.axes[0].get_title()
    assert "within cnn-a-wide (8 models)" in title and "p = 0.24 (exact)" in title
    ax = fig.axes[0]
    alphas = [c.get_facecolor()[0][3] for c in ax.collections if isinstance(c, PathCollection)]
    assert sorted(set(np.round(alphas, 2))) == [0.3, 1.0]  # the other families faded
    assert sum(a == 1.0 for a in alphas) == 8 + 12
    check(fig, tmp_path, "families.png")
    fig = plotting.plot_family_panels(thirty, "approx_skewness", "robust_acc_linf_2_255",
                                      families=["cnn-a-wide", "resnet"], stats=stats.assign(y="robust_acc_linf_2_255"),
                                      title="Γ' vs robust accuracy (L∞ 2/255) within architecture families · "
                                            "cifar10-sample · penultimate")
    visible = [a for a in fig.axes if a.get_visible()]
    assert [a.get_title().splitlines()[0] for a in visible] == ["cnn-a-wide (8 models)", "resnet (12 models)"]
    assert sorted(_named(visible[0])) == sorted(models.short_name(m) for m in thirty["model"]
                                                if models.describe(m).family == "cnn-a-wide")
    check(fig, tmp_path, "panels.png")  # the long title is wrapped clear of the legend
    with pytest.raises(ValueError, match="no model in the table"):
        plotting.plot_family_panels(thirty, "approx_skewness", "clean_acc", families=["vit"])


def test_panel_titles_state_p_as_the_test_can_and_flag_weak_evidence(models_table, tmp_path):
    exact = _stats(["clean_acc"], p=0.067, exact=True, p_min=1 / 3628800, n=10, lo=0.04, hi=0.87)
    fig = plotting.plot_metric_vs_accuracy(models_table, "approx_skewness", ["clean_acc"], stats=exact)
    title = fig.axes[0].get_title()
    assert "p = 0.067 (exact), n = 10" in title
    assert "interval and p disagree" in title  # [+0.04, +0.87] excludes 0, p = 0.067 does not reach 0.05
    few = _stats(["robust_acc"], p=0.33, exact=True, p_min=1 / 6, n=3, stat=-1.0, lo=-1.0, hi=-1.0)
    fig = plotting.plot_metric_vs_accuracy(models_table.head(3), "approx_skewness", ["robust_acc"], stats=few)
    assert "only 3 models: too few to trust" in fig.axes[0].get_title()
    check(fig, tmp_path)


def test_distributions_on_a_log_axis_of_khat(kstar_results, tmp_path):
    k, labels, s = kstar_results["resnet20"]
    fig = plotting.plot_kstar_distribution(k, labels, s, title="resnet20")
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 10 and all(t.startswith(r"$\gamma_c$ = ") for t in texts)  # a subscript, not "γ_c"
    assert ax.get_xscale() == "log"
    lo, hi = ax.get_xlim()
    assert lo == pytest.approx(1 / 30 / 1.25) and hi == pytest.approx(1.25)  # from 1/n_c to 1
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "0.1" in ticks and "1" in ticks and not any("^" in t or "10" in t for t in ticks)  # in k̂*, not 10^-1
    check(fig, tmp_path, "one.png")
    fig = plotting.plot_kstar_distribution(k, labels, s, scale="linear")
    assert fig.axes[0].get_xscale() == "linear" and fig.axes[0].get_xlim()[1] < 1.05
    with pytest.raises(ValueError, match="scale"):
        plotting.plot_kstar_distribution(k, labels, s, scale="sqrt")
    pair = {m: kstar_results[m] for m in ("resnet20", "resnet20-pgd8")}
    fig = plotting.plot_kstar_side_by_side(pair, title="before / after")
    assert fig.axes[0].get_xlim() == fig.axes[1].get_xlim()
    check(fig, tmp_path, "pair.png")
    fig = plotting.plot_kstar_grid(kstar_results, ncols=3)
    assert sum(ax.get_visible() for ax in fig.axes) == 3 and fig.axes[0].get_xscale() == "log"
    check(fig, tmp_path, "grid.png")
    with pytest.raises(ValueError, match="1 to 3"):
        plotting.plot_kstar_side_by_side({str(i): kstar_results["resnet20"] for i in range(4)})


@pytest.mark.slow
def test_kstar_grid_of_thirty_models(kstar_results, tmp_path):
    names = _thirty_names()
    many = {m: kstar_results[list(kstar_results)[i % 3]] for i, m in enumerate(names)}
    fig = plotting.plot_kstar_grid(many, title="k̂* per class · penultimate")
    assert sum(ax.get_visible() for ax in fig.axes) == 30
    check(fig, tmp_path, "grid30.png")
    plt.close("all")


def _depth_rows(models_, layers, *, fractured=None):
    rows = []
    for m in models_:
        for i, layer in enumerate(layers):
            nf = fractured if fractured is not None else 4 - min(i, 4)
            # a ResNet's layer3, pooled, is its penultimate layer: the same features file
            sha = f"{m}/penultimate" if layer in ("layer3", "penultimate") else f"{m}/{layer}"
            rows.append({"model": m, "layer": layer, "approx_skewness": 0.5 - 0.2 * i, "n_fractured": nf,
                         "n_overlapped": 10 - nf, "n_clustered": 0, "n_classes": 10, "features_sha256": sha})
    return pd.DataFrame(rows)


def test_depth_profile_shares_one_colour_scale_and_draws_repeated_layers_once(tmp_path):
    layers = ["layer1", "layer2", "layer3", "penultimate", "logits"]
    rows = _depth_rows(["cifar-resnet:resnet20", "cifar-resnet:resnet20-pgd8"], layers)
    fig = plotting.plot_depth_profile(rows, layers=layers)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == layers
    lines = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 2]
    assert [list(ln.get_xdata()) for ln in lines] == [[0, 1, 3, 4]] * 2  # layer3 = penultimate: drawn once
    assert "same as\npenultimate" in [t.get_text() for t in fig.axes[1].texts]
    assert fig.axes[1].collections[0].get_clim() == (0, 10)
    check(fig, tmp_path, "depth.png")
    # one job whose classes are all Fractured at every layer: the top of the same 0..10 scale, not a scale of its own
    one = _depth_rows(["cifar-resnet:resnet20-pgd8"], layers, fractured=10)
    fig = plotting.plot_depth_profile(one, layers=layers)
    assert fig.axes[1].collections[0].get_clim() == (0, 10)
    check(fig, tmp_path, "depth1.png")
    fig = plotting.plot_depth_profile(_depth_rows(_thirty_names(), ["penultimate", "logits"]),
                                      layers=["penultimate", "logits"], label=["resnet20", "cnn-a-adv"])
    assert sorted(_named(fig.axes[0])) == ["cnn-a-adv", "resnet20"]
    check(fig, tmp_path, "depth30.png")
    plt.close("all")


def test_depth_profile_of_different_architectures_lines_them_up_by_depth(tmp_path):
    resnet = _depth_rows(["cifar-resnet:resnet20"], ["layer1", "layer2", "penultimate", "logits"]).assign(
        depth=[0.0, 1 / 3, 2 / 3, 1.0])
    cnn = _depth_rows(["abcrown:cnn-a-adv"], ["act1", "act2", "act3", "penultimate", "logits"]).assign(
        depth=[0.0, 0.25, 0.5, 0.75, 1.0])
    fig = plotting.plot_depth_profile(pd.concat([resnet, cnn], ignore_index=True), layers=None)
    lines = sorted((list(np.round(ln.get_xdata(), 3)) for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) > 2),
                   key=len)
    assert lines == [[0.0, 0.333, 0.667, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0]]  # each model at its own depths
    cols = [t.get_text() for t in fig.axes[1].get_xticklabels()]
    assert cols == ["inner 1", "inner 2", "inner 3", "penultimate", "logits"]  # inner layers counted from the input
    annotated = {t.get_text() for t in fig.axes[1].texts}
    assert {"4/6/0", "3/7/0", "2/8/0"} <= annotated  # the counts of every slot: inner 1, inner 2, inner 3
    check(fig, tmp_path, "depth_mixed.png")
    plt.close("all")


def test_skew_heatmaps_share_one_fixed_scale(tmp_path):
    mild = pd.DataFrame({"model": np.repeat(["a", "b"], 3), "label": ["x", "y", "z"] * 2,
                         "skew": [0.1, np.inf, -0.7, 1.0, 0.2, -np.inf]})
    strong = mild.assign(skew=[5.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    figs = [plotting.plot_class_skew_heatmap(t) for t in (mild, strong)]
    assert [f.axes[0].collections[0].get_clim() for f in figs] == [(-SKEW_LIMIT, SKEW_LIMIT)] * 2
    assert {t.get_text() for t in figs[0].axes[0].texts} >= {"+inf", "-inf", "+0.10"}
    assert "+5.00" in {t.get_text() for t in figs[1].axes[0].texts}  # beyond the scale: still written out
    assert r"$\gamma_c$" in figs[0].axes[1].get_ylabel()  # the colour bar
    for i, f in enumerate(figs):
        check(f, tmp_path, f"skews{i}.png")
    pc = pd.DataFrame([{"model": m, "label": c, "skew": 0.3} for m in _thirty_names() for c in CLASSES])
    fig = plotting.plot_class_skew_heatmap(pc)
    colours = {to_hex(t.get_color()) for t in fig.axes[0].get_yticklabels()}
    assert colours == {to_hex(TRAINING_COLORS[k]) for k in ("standard", "adversarial", "certified", "own-fine-tune")}
    check(fig, tmp_path, "skews30.png")
    plt.close("all")


def test_fracture_figures(tmp_path):
    labels = np.repeat(np.arange(3), 4)
    enemy = np.array([1, 1, 2, 1, 0, 0, 0, 2, 0, 1, 1, 1])
    khat = np.linspace(0.1, 1, 12)
    a = fracture_matrix(labels, enemy, khat, ["cat", "dog", "ship"])
    b = fracture_matrix(labels, np.array([2, 2, 2, 1, 2, 0, 0, 2, 0, 1, 1, 1]), khat, ["cat", "dog", "ship"])
    fig = plotting.plot_fracture_matrix(a, title="who fractures whom")
    ax = fig.axes[0]
    assert np.ma.count_masked(ax.collections[0].get_array()) == 3  # the diagonal is blank
    assert not any(g.get_visible() for g in ax.get_xgridlines() + ax.get_ygridlines())  # no grid through it
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
    assert fig.axes[0].collections[0].get_clim() == (-SKEW_LIMIT, SKEW_LIMIT)
    check(fig, tmp_path, "h.png")
    fig = plotting.plot_gamma_vs_gamma_prime(summary, agreement={"spearman": 0.9, "mean_abs_diff": 0.1, "n": 12})
    assert "Spearman ρ = +0.90" in fig._suptitle.get_text()
    check(fig, tmp_path, "gg.png")
    plt.close("all")


def test_gamma_vs_gamma_prime_counts_repeated_layers_once(thirty, tmp_path):
    rows = []
    for layer in ("layer3", "penultimate", "logits"):
        for m in thirty["model"]:
            if layer == "layer3" and not m.startswith("cifar-resnet"):
                continue  # only the ResNets have a layer3, and it is their penultimate layer
            rows.append({"model": m, "dataset": "cifar10-sample", "layer": layer, "approx_skewness": 0.1,
                         "true_skewness": 0.2,
                         "features_sha256": f"{m}/{'penultimate' if layer == 'layer3' else layer}"})
    fig = plotting.plot_gamma_vs_gamma_prime(pd.DataFrame(rows))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["penultimate (30 models)", "logits (30 models)"]
    drawn = sum(len(c.get_offsets()) for ax in panels for c in ax.collections if isinstance(c, PathCollection))
    assert drawn == 60  # not 70: the ten layer3 rows repeat the penultimate ones
    assert "10 repeated layers drawn once (layer3 = penultimate)" in fig._suptitle.get_text()
    check(fig, tmp_path)


def test_rotated_text_overlap_uses_the_rotated_box():
    fig, ax = plt.subplots(figsize=(4, 3))
    # two slanted labels side by side: their upright boxes overlap, the labels themselves do not
    ax.text(0.3, 0.5, "resnet20-noise", rotation=40, transform=ax.transAxes)
    ax.text(0.38, 0.5, "resnet20-pgd1", rotation=40, transform=ax.transAxes)
    assert plotting.text_overlaps(fig) == []
    ax.text(0.32, 0.52, "crossing", rotation=-40, transform=ax.transAxes)  # cuts through both
    assert {"crossing"} <= {t for pair in plotting.text_overlaps(fig) for t in pair}
    plt.close(fig)


def test_named_points_keep_clear_of_each_other_even_when_stacked(tmp_path):
    from kstar_utils.plotting.style import figure, place_labels

    fig, axes = figure(3.5)
    ax = axes[0, 0]
    ax.scatter(np.full(8, 0.5), np.full(8, 0.5))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    place_labels(ax, [(0.5, 0.5, f"model-{i}") for i in range(8)])  # eight models on one spot
    assert len(_named(ax)) == 8
    check(fig, tmp_path)


def test_metric_sensitivity_correlation_matrix_noise_and_class_view(models_table, tmp_path):
    metrics = ["euclidean", "cosine", "mahalanobis", "manhattan", "chebyshev", "minkowski(p=3)"]
    table = pd.concat([models_table.assign(metric=m, approx_skewness=models_table["approx_skewness"] + 0.1 * i)
                       for i, m in enumerate(metrics)])
    check(plotting.plot_metric_sensitivity(table, title="Γ' by distance · penultimate"), tmp_path, "ms.png")
    names = models_table["model"].tolist()
    rho = pd.DataFrame(np.corrcoef(np.random.default_rng(0).normal(size=(10, 12))), index=names, columns=names)
    fig = plotting.plot_correlation_matrix(rho, title="class skews · penultimate")
    assert len(fig.axes[0].texts) == 100  # ten models: the values are written
    check(fig, tmp_path, "cm.png")
    noise = pd.DataFrame([{"model": m, "strength": s, "approx_skewness": 0.3 + s, "frac_kstar_changed": min(1, 3 * s),
                           "accuracy": 0.9 - s} for m in names[:3] for s in (0.0, 0.02, 0.05, 0.1)])
    fig = plotting.plot_perturbation_curves(noise, ys=("approx_skewness", "frac_kstar_changed", "accuracy"),
                                            xlabel="input noise (pixel std)", title="input noise · penultimate")
    assert all(sorted(_named(ax)) == sorted(models.short_name(m) for m in names[:3]) for ax in fig.axes[:3])
    check(fig, tmp_path, "noise.png")
    from kstar_utils.plotting.fracture import plot_class_view

    labels = np.repeat(np.arange(10), 5)
    tidy = fracture_matrix(labels, (labels + 1) % 10, np.linspace(0.02, 1, 50), CLASSES)
    fig = plot_class_view(np.linspace(0.02, 1, 5), tidy[tidy["class"] == "cat"], title="cat · resnet20 · penultimate")
    assert fig.axes[0].get_xscale() == "log"
    check(fig, tmp_path, "view.png")
    plt.close("all")


def test_across_model_figures_stay_readable_with_thirty_models(thirty, tmp_path):
    names = thirty["model"].tolist()
    metrics = ["euclidean", "cosine", "mahalanobis"]
    table = pd.concat([thirty.assign(metric=m, approx_skewness=thirty["approx_skewness"] + 0.1 * i)
                       for i, m in enumerate(metrics)])
    check(plotting.plot_metric_sensitivity(table, title="Γ' by distance · penultimate"), tmp_path, "ms30.png")
    rho = pd.DataFrame(np.corrcoef(np.random.default_rng(0).normal(size=(30, 12))), index=names, columns=names)
    fig = plotting.plot_correlation_matrix(rho, title="class skews · penultimate")
    assert not fig.axes[0].texts  # thirty by thirty values would not fit
    check(fig, tmp_path, "cm30.png")
    noise = pd.DataFrame([{"model": m, "strength": s, "approx_skewness": g + s, "frac_kstar_changed": min(1, s)}
                          for m, g in zip(names, thirty["approx_skewness"]) for s in (0.0, 0.5, 1.0)])
    fig = plotting.plot_perturbation_curves(noise, title="latent noise · penultimate", label=["resnet20"])
    assert _named(fig.axes[0]) == ["resnet20"]
    check(fig, tmp_path, "noise30.png")
    summary = pd.concat([thirty.assign(dataset=d, status="ok") for d in ("cifar10-sample", "cifar10-jpeg")])
    check(sp.plot_skewness_heatmap(summary, layer="penultimate"), tmp_path, "h30.png")
    plt.close("all")
