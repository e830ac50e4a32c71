"""The sentences the notebooks print: they state what the numbers say, including when they say little."""
import numpy as np
import pandas as pd

from kstar_utils.analysis import findings


def _stats(**over):
    row = {"x": "approx_skewness", "y": "robust_acc", "group": "penultimate", "method": "spearman",
           "statistic": 0.62, "ci_low": 0.34, "ci_high": 0.96, "p_value": 0.067, "n": 10}
    row.update(over)
    return pd.DataFrame([row])


def test_correlation_sentence_gives_direction_interval_and_permutation_p():
    text = findings.describe_correlations(_stats())
    assert text == ("penultimate: as Γ' rises, robust accuracy rises (Spearman ρ = +0.62 [+0.34, +0.96], "
                    "the interval excludes 0, permutation p = 0.067, n = 10)")


def test_correlation_sentence_says_when_the_interval_includes_zero_and_when_models_are_few():
    text = findings.describe_correlations(_stats(statistic=-0.3, ci_low=-0.9, ci_high=0.4, p_value=0.0004, n=4))
    assert "robust accuracy falls" in text
    assert "the interval includes 0" in text
    assert "permutation p < 0.001" in text
    assert "only 4 models, too few to trust the interval" in text


def test_correlation_sentence_without_a_p_value_or_a_statistic():
    assert "permutation" not in findings.describe_correlations(_stats().drop(columns="p_value"))
    assert findings.describe_correlations(_stats(statistic=np.nan, n=2)) == (
        "penultimate: Γ' vs robust accuracy: not computable (n = 2)")


def test_skewness_summary_names_the_extremes_and_the_depth_trend():
    models = pd.DataFrame({"model": ["z:a", "z:b"] * 2, "layer": ["l1", "l1", "l2", "l2"],
                           "approx_skewness": [1.0, 2.0, 0.1, 2.5]})
    per_class = pd.DataFrame({"model": ["z:a", "z:a", "z:b", "z:b"], "layer": "l2", "label": ["cat", "dog"] * 2,
                              "pattern": ["Fractured", "Clustered", "Fractured", "Overlapped"]})
    text = findings.describe_skewness(models, per_class, layer="l2", layers=["l1", "l2"])
    assert text.splitlines() == [
        "l2: lowest Γ' +0.10 (a), highest +2.50 (b), over 2 models.",
        "Most often Fractured: cat (in 2 of 2 models); never Fractured: dog.",
        "From l1 to l2, Γ' falls in 1 of 2 models (mean +1.50 -> +1.30).",
    ]


def test_finetuning_compares_each_derived_model_with_its_base_only():
    t = pd.DataFrame({"model": ["c:r20", "c:r20-pgd8", "c:r56"], "layer": "pen",
                      "approx_skewness": [0.4, 2.0, -0.1], "clean_acc": [0.9, 0.3, 0.93],
                      "robust_acc": [0.1, 0.3, 0.16]})
    lines = findings.describe_finetuning(t, base="c:r20", layer="pen").splitlines()
    assert lines == ["pen, against r20 (Γ' +0.40, clean 0.900, robust 0.100):",
                     "  r20-pgd8: Γ' +1.60, clean -0.600, robust +0.200"]
    assert findings.describe_finetuning(t, base="c:missing", layer="pen") == "missing is not in the table at pen"
