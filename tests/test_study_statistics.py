"""The study's statistics beyond the pooled correlations: partial rank correlations given clean accuracy, and
correlations within architecture families and across family means."""
from __future__ import annotations

import numpy as np
import pandas as pd

from kstar_utils import models
from kstar_utils.analysis.correlate import partial_correlation
from kstar_utils.pipeline import stages

NAMES = [n for s in ("cifar-resnet", "abcrown", "convex", "chenyaofo") for n in models.known_model_names(s)]


def _study(seed=0):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.3, 0.95, len(NAMES))
    t = pd.DataFrame({"model": NAMES, "dataset": "cifar10-sample", "layer": "penultimate",
                      "approx_skewness": rng.normal(size=len(NAMES)), "clean_acc": clean,
                      "robust_acc_linf_2_255": 0.5 * clean + rng.uniform(0, 0.2, len(NAMES))})
    return stages.with_model_info(t)


def test_model_info_columns_come_from_the_sources():
    t = _study()
    row = t.set_index("model").loc["abcrown:oval-wide"]
    assert (row["short"], row["training"], row["family"]) == ("oval-wide", "certified", "cnn-a-wide")
    assert set(t["training"]) == {"standard", "adversarial", "certified", "own-fine-tune"}


def test_partial_stage_is_the_partial_correlation_per_layer():
    t = _study()
    out = stages.partial_stage(t, n_boot=200, n_perm=199)
    assert list(out["y"]) == ["robust_acc_linf_2_255"] and out["given"].iloc[0] == "clean_acc"
    ref = partial_correlation(t["approx_skewness"], t["robust_acc_linf_2_255"], t["clean_acc"], n_boot=200,
                              n_perm=199)
    assert out["statistic"].iloc[0] == ref["statistic"] and out["p_value"].iloc[0] == ref["p_value"]


def test_family_stage_holds_the_architecture_fixed_and_counts_families_once():
    t = _study()
    out = stages.family_stage(t, n_boot=200, n_perm=199)
    fams = set(out["family"])
    assert {"resnet", "cnn-a-wide", "all families (means)"} <= fams
    wide = out[(out["family"] == "cnn-a-wide") & (out["y"] == "clean_acc")].iloc[0]
    assert wide["n"] == 8 and bool(wide["p_exact"])  # 8! pairings: exact
    means = out[(out["family"] == "all families (means)") & (out["y"] == "clean_acc")].iloc[0]
    assert means["n"] == t["family"].nunique()
