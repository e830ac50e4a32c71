"""Study figures on a synthetic summary table: each returns a Figure with the expected panels, and saves."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from kstar_utils.plotting import study as sp
from kstar_utils.plotting import save_figure
from kstar_utils.study.summary import study_correlations


@pytest.fixture()
def summary():
    rng = np.random.default_rng(0)
    rows = []
    for d, shift in (("cifar10", 0.0), ("cifar100", 0.3)):
        for i in range(6):
            g = -0.5 + 0.3 * i + shift
            rows.append({"model": f"openclip:m{i}", "dataset": d, "layer": "embedding", "status": "ok",
                         "approx_skewness": g, "true_skewness": g + rng.normal(0, 0.1),
                         "zeroshot_acc": 0.9 - 0.1 * i + rng.normal(0, 0.02), "zeroshot_avg": 0.7 - 0.05 * i,
                         "clean_acc": np.nan, "robust_acc": np.nan})
    rows.append({**rows[0], "dataset": "imagenet", "status": "failed", "approx_skewness": np.nan})
    return pd.DataFrame(rows)


def test_by_dataset_has_correlation_in_legend(summary):
    stats = study_correlations(summary, n_boot=100)
    figs = sp.plot_skewness_vs_accuracy_by_dataset(summary, ["zeroshot_acc"], layer="embedding", stats=stats)
    assert set(figs) == {"cifar10", "cifar100"}  # the failed imagenet row is not drawn
    title = figs["cifar10"].axes[0].get_title()
    assert "Spearman ρ=-" in title
    for f in figs.values():
        plt.close(f)


def test_averaged_over_datasets(summary):
    avg = sp.average_over_datasets(summary, layer="embedding")
    assert len(avg) == 6 and (avg["n_datasets"] == 2).all()
    np.testing.assert_allclose(avg.set_index("model").loc["openclip:m0", "approx_skewness"], -0.35)
    fig = sp.plot_coefficient_vs_accuracy(avg, ["zeroshot_acc", "zeroshot_avg", "clean_acc"])
    assert len(fig.axes) == 2  # clean_acc has no values and is left out
    plt.close(fig)


def test_gamma_heatmap_and_side_by_side(summary, tmp_path):
    fig = sp.plot_gamma_vs_gamma_prime(summary)
    assert "Spearman" in fig.axes[0].get_title()
    assert save_figure(fig, tmp_path / "g.png").stat().st_size > 0
    plt.close(fig)
    fig = sp.plot_skewness_heatmap(summary.iloc[:-2], layer="embedding")  # one missing (model, dataset) pair
    assert fig.axes[0].get_xlabel() == "dataset"
    assert np.ma.count_masked(fig.axes[0].collections[0].get_array()) == 1  # the missing pair is blank, not 0
    plt.close(fig)
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 10)
    k = np.concatenate([rng.integers(1, 11, 10) for _ in range(4)])
    fig = sp.plot_kstar_side_by_side({"a": (k, labels), "b": (np.maximum(1, k - 3), labels)}, title="t")
    assert [ax.get_title().split()[0] for ax in fig.axes[:2]] == ["a", "b"]
    plt.close(fig)


def test_no_finished_rows_is_an_error(summary):
    with pytest.raises(ValueError, match="no finished rows"):
        sp.plot_skewness_heatmap(summary, layer="penultimate")
