"""The study report: real captions for its figures, p-values as the test can state them, ε as a fraction of 255,
each model in its training colour, a note where the models are not independent, and a page that works offline."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import json  # noqa: E402
import re  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from kstar_utils import models  # noqa: E402
from kstar_utils.pipeline.notebooks import offline_problems  # noqa: E402
from kstar_utils.plotting.style import TRAINING_COLORS  # noqa: E402
from kstar_utils.study import expand_jobs, report, study_from_dict  # noqa: E402
from kstar_utils.study.summary import study_correlations  # noqa: E402

NAMES = ["cifar-resnet:resnet20", "cifar-resnet:resnet56", "cifar-resnet:resnet20-pgd8", "abcrown:cnn-a-adv",
         "abcrown:cnn-a-mix", "abcrown:oval-wide", "convex:small-8px", "abcrown:marabou-small"]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    study = study_from_dict({"name": "r", "models": NAMES, "datasets": ["cifar10-sample"],
                             "layers": ["layer3", "penultimate"], "output_dir": str(out / "o"),
                             "cache_dir": str(out / "c"), "n_boot": 99, "figures": {"layer": "penultimate"}},
                            base_dir=out)
    jobs = expand_jobs(study)
    rng = np.random.default_rng(0)
    rows = []
    for i, m in enumerate(NAMES):
        g = 0.3 * i + rng.normal(0, 0.1)
        for layer in ("layer3", "penultimate"):
            if layer == "layer3" and not m.startswith("cifar-resnet"):
                continue
            rows.append({"model": m, "dataset": "cifar10-sample", "split": "test", "layer": layer,
                         "metric": "euclidean", "true_skewness": g + 0.2, "approx_skewness": g, "skew_spread": 0.5,
                         "n_classes": 10, "n_fractured": 5, "n_overlapped": 4, "n_clustered": 1,
                         "clean_acc": 0.9 - 0.05 * i, "robust_acc": 0.05 * i, "eval_eps": 1 / 255,
                         "robust_acc_linf_2_255": 0.06 * i + rng.normal(0, 0.02), "status": "ok",
                         # a ResNet's layer3 is its penultimate layer: the same features
                         "features_sha256": f"{m}/penultimate"})
    summary = pd.DataFrame(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = study_correlations(summary, n_boot=99)
    # eight models are tested exactly; one row as a random test at its floor (99 pairings), as more models give
    stats.loc[0, ["p_value", "p_exact", "p_min"]] = [0.01, False, 0.01]
    original = report._compare_pair
    report._compare_pair = lambda *a: None  # the side-by-side figure reads k* files: drawn in test_plotting
    try:
        figures = report.study_figures(study, jobs, summary, stats, out / "o" / "figures")
    finally:
        report._compare_pair = original
    index = report.write_index(study, jobs, {j.job_id: {"status": "ok"} for j in jobs}, summary, stats, figures,
                               out / "o" / "index.html")
    return {"figures": figures, "html": index.read_text(encoding="utf-8"), "stats": stats, "out": out / "o"}


def test_every_figure_has_a_real_caption(written):
    names = {p.name for p in written["figures"]}
    assert {"approx_skewness_vs_accuracy_cifar10-sample_penultimate.png", "true_vs_approx_skewness.png",
            "approx_skewness_within_families_cifar10-sample_penultimate.png"} <= names
    captions = json.loads((written["out"] / "figures" / "captions.json").read_text())
    assert set(captions) == names
    html = written["html"]
    for name, caption in captions.items():
        assert len(caption) > 80 and name.replace(".png", "").replace("_", " ") not in html  # not the file name
    assert "<figcaption>Γ (the skewness of all samples" in html
    assert "3 layers whose features are bitwise those of another layer of the same model (layer3 = penultimate) " \
           "are drawn and counted once" in html


def test_p_values_epsilon_and_subscripts(written):
    html = written["html"]
    assert re.search(r"p (&lt;|<) ", html) is None  # "p < x" would claim a p below what the test can show
    assert ">≤ 0.01<" in html  # 99 random pairings can show no p below 0.01
    assert "(exact)<" in html and "all 40,320 pairings" in html  # 8 models: every pairing counted
    assert 'title="p &lt;= 0.01 (the smallest 99 random pairings can give)"' in html
    assert "<td class=\"num\">1/255</td>" in html and "0.0039" not in html
    assert "spread of γ<sub>c</sub>" in html and "γ_c" not in html


def test_models_in_their_training_colour_and_the_note_on_dependence(written):
    html = written["html"]
    for kind in ("standard", "adversarial", "certified", "own-fine-tune"):
        assert f'background: {TRAINING_COLORS[kind]}' in html
    assert "<td class=\"\">own fine-tune</td>" in html and "<td class=\"\">cnn-a-wide</td>" in html
    note = report.independence_note(NAMES)
    assert note.startswith("The 8 models are not independent: 7 of them share an architecture family with another "
                           "(4 cnn-a-wide, 3 resnet), 1 is the workbook's fine-tuning of a published model, and most "
                           "recipes are one training run (one seed).")
    assert report.independence_note(["abcrown:cnn-a-adv", "cifar-resnet:resnet20"]) == ""  # no family repeats
    assert "not independent" in html and "one seed" in html


def test_the_page_works_offline(written):
    assert offline_problems(written["html"]) == []


def test_a_caption_falls_back_to_the_file_name(tmp_path):
    path = tmp_path / "depth_profile_digits.png"
    assert str(report._caption(path)) == "depth profile digits"
    (tmp_path / report.CAPTIONS).write_text(json.dumps({path.name: "Γ' layer by layer, γ_c <b>"}))
    assert str(report._caption(path)) == "Γ&#39; layer by layer, γ<sub>c</sub> &lt;b&gt;"  # escaped, γ_c as in print


def test_a_study_of_inner_layers_draws_its_depth_profile_against_depth(tmp_path):
    names = ["cifar-resnet:resnet20", "abcrown:cnn-a-adv"]
    study = study_from_dict({"name": "d", "models": names, "datasets": ["cifar10-sample"],
                             "layers": ["inner", "penultimate"], "output_dir": str(tmp_path / "o"),
                             "cache_dir": str(tmp_path / "c"), "n_boot": 9}, base_dir=tmp_path)
    jobs = expand_jobs(study)
    rows = []
    for m in names:
        layers = models.expand_layers(m, ["inner", "penultimate"])
        for i, layer in enumerate(layers):
            rows.append({"model": m, "dataset": "cifar10-sample", "split": "test", "layer": layer, "metric": "euclidean",
                         "depth": models.layer_depth(m, layer), "true_skewness": 2.0 - i, "approx_skewness": 1.5 - i,
                         "skew_spread": 0.5, "n_classes": 10, "n_fractured": 5, "n_overlapped": 4, "n_clustered": 1,
                         "clean_acc": 0.9, "status": "ok", "features_sha256": f"{m}/{layer}"})
    summary = pd.DataFrame(rows)
    original = report._compare_pair
    report._compare_pair = lambda *a: None
    try:
        figures = report.study_figures(study, jobs, summary, pd.DataFrame(), tmp_path / "o" / "figures")
    finally:
        report._compare_pair = original
    depth = [f for f in figures if "depth_profile" in str(f)]
    assert depth, "no depth profile for a study of inner layers (their names differ between the models)"
    captions = json.loads((tmp_path / "o" / "figures" / "captions.json").read_text())
    assert any("depth" in text and "first inner layer" in text for text in captions.values())
