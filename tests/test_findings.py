"""The sentences the notebooks print: they state what the numbers say, including when they say little."""
import numpy as np
import pandas as pd

from kstar_utils.analysis import findings


def _stats(**over):
    row = {"x": "approx_skewness", "y": "robust_acc", "group": "penultimate", "method": "spearman",
           "statistic": 0.62, "ci_low": 0.04, "ci_high": 0.87, "p_value": 0.067, "p_exact": True,
           "p_min": 1 / 3628800, "n": 10}
    row.update(over)
    return pd.DataFrame([row])


def test_p_is_written_as_the_test_can_state_it():
    assert findings.format_p(0.067, True, 1 / 3628800) == "p = 0.067 (exact, all 3,628,800 pairings)"
    # at the floor of a random test: at most that value, never "p < floor"
    assert findings.format_p(1 / 10000, False, 1 / 10000) == \
        "p <= 0.0001 (the smallest 9,999 random pairings can give)"
    assert findings.format_p(1 / 1000, False, 1 / 1000) == "p <= 0.001 (the smallest 999 random pairings can give)"
    assert findings.format_p(1 / 301, False, 1 / 301).startswith("p <= 0.0034 ")  # the floor rounded up, not down
    assert findings.format_p(0.0021, False, 1 / 10000) == "p = 0.0021 (9,999 random pairings)"
    assert findings.format_p(0.0021) == "p = 0.0021"  # an older table without p_exact / p_min
    assert findings.format_p(np.nan, False, 1e-4) == ""
    assert findings.format_p(1 / 10000, False, 1 / 10000, short=True) == "p ≤ 0.0001"
    assert findings.format_p(0.067, True, 1 / 3628800, short=True) == "p = 0.067 (exact)"
    assert findings.p_cell(1 / 10000, False, 1 / 10000) == "≤ 0.0001"
    assert findings.p_cell(0.067, True, 1 / 3628800) == "0.067 (exact)"
    for n_perm in (99, 999, 9999):
        text = findings.format_p(1 / (n_perm + 1), False, 1 / (n_perm + 1))
        assert "<" not in text.replace("<=", "")


def test_epsilon_is_written_as_a_fraction_of_255():
    assert [findings.format_eps(e) for e in (1 / 255, 2 / 255, 8 / 255, 36 / 255)] == \
        ["1/255", "2/255", "8/255", "36/255"]
    assert findings.format_eps(0.0) == "0" and findings.format_eps(0.1) == "0.1"
    assert findings.format_eps(np.nan) == "" and findings.format_eps(None) == ""


def test_correlation_sentence_says_when_the_interval_and_p_disagree():
    text = findings.describe_correlations(_stats())
    assert text == ("penultimate: as Γ' rises, robust accuracy rises (Spearman ρ = +0.62 [+0.04, +0.87], n = 10); "
                    "the percentile interval excludes 0 but p = 0.067 (exact, all 3,628,800 pairings) is not below "
                    "0.05: the two disagree, so the evidence is weak")
    assert "excludes 0 and" not in text  # the old sentence claimed it beside p = 0.067
    other = findings.describe_correlations(_stats(ci_low=-0.1, p_value=0.03, p_exact=False, p_min=1e-4))
    assert other.endswith("p = 0.03 (9,999 random pairings) is below 0.05 but the interval includes 0: the two "
                          "disagree, so the evidence is weak")


def test_correlation_sentence_when_interval_and_p_agree():
    text = findings.describe_correlations(_stats(ci_low=0.3, p_value=1e-4, p_exact=False, p_min=1e-4, n=30))
    assert text.endswith("the interval excludes 0 and p <= 0.0001 (the smallest 9,999 random pairings can give)")
    text = findings.describe_correlations(_stats(ci_low=-0.3, p_value=0.4))
    assert "the interval includes 0 and p = 0.4 (exact, all 3,628,800 pairings)" in text


def test_correlation_sentence_says_when_the_interval_includes_zero_and_when_models_are_few():
    text = findings.describe_correlations(_stats(statistic=-0.3, ci_low=-0.9, ci_high=0.4, p_value=0.75,
                                                 p_min=1 / 24, n=4))
    assert "robust accuracy falls" in text
    assert "the interval includes 0" in text
    assert "p = 0.75 (exact, all 24 pairings)" in text
    assert "only 4 models, too few for the interval or the test to say much" in text


def test_correlation_sentence_without_a_p_value_or_a_statistic():
    assert "p =" not in findings.describe_correlations(_stats().drop(columns=["p_value", "p_exact", "p_min"]))
    assert findings.describe_correlations(_stats(statistic=np.nan, n=2)) == (
        "penultimate: Γ' vs robust accuracy: not computable (n = 2)")


def test_partial_correlation_in_one_sentence():
    row = {"method": "spearman_partial", "statistic": 0.22, "ci_low": -0.45, "ci_high": 0.78, "p_value": 0.55,
           "p_exact": True, "p_min": 1 / 3628800, "n": 10}
    assert findings.describe_partial(row) == (
        "Γ' and robust accuracy, controlling for clean accuracy: partial Spearman ρ = +0.22 [-0.45, +0.78], n = 10; "
        "the interval includes 0 and p = 0.55 (exact, all 3,628,800 pairings), so no association beyond what clean "
        "accuracy explains is shown.")
    strong = findings.describe_partial({**row, "statistic": 0.6, "ci_low": 0.3, "ci_high": 0.8, "p_value": 1e-4,
                                        "p_exact": False, "p_min": 1e-4, "n": 30},
                                       y="robust_acc_linf_2_255")
    assert strong.endswith("so Γ' goes with robust accuracy at L∞ 2/255 beyond what clean accuracy explains.")
    weak = findings.describe_partial({**row, "ci_low": 0.05})
    assert "the two disagree, so the evidence is weak." in weak and " so " not in weak.split("weak")[1]
    assert "only 4 models" in findings.describe_partial({**row, "n": 4, "p_min": 1 / 24})
    assert findings.describe_partial(pd.Series({**row, "statistic": np.nan})).endswith("not computable (n = 10)")


def test_within_family_comparison_in_one_sentence():
    rows = [("pooled", 0.45, 0.1, 0.7, 0.012, False, 1e-4, 30), ("cnn-a-wide", -0.48, -1.0, 0.36, 0.24, True,
                                                                  1 / 40320, 8),
            ("resnet", 0.88, 0.44, 0.98, 1e-4, False, 1e-4, 12), ("marabou", 0.5, -1.0, 1.0, 1.0, True, 1 / 6, 3)]
    stats = pd.DataFrame([{"x": "approx_skewness", "y": "robust_acc", "group": g, "method": "spearman",
                           "statistic": s, "ci_low": lo, "ci_high": hi, "p_value": p, "p_exact": e, "p_min": m,
                           "n": n} for g, s, lo, hi, p, e, m, n in rows])
    text = findings.describe_within_family(stats, families=["cnn-a-wide", "resnet", "marabou"])
    assert text.count("\n") == 0
    assert text.startswith("Γ' vs robust accuracy: pooled over 30 models Spearman ρ = +0.45 [+0.10, +0.70], "
                           "p = 0.012 (9,999 random pairings); within cnn-a-wide (8 models) Spearman ρ = -0.48 "
                           "[-1.00, +0.36], p = 0.24 (exact, all 40,320 pairings); within resnet (12 models)")
    assert "within marabou (3 models) Spearman ρ = +0.50 [-1.00, +1.00], p = 1 (exact, all 6 pairings), too few " \
           "models to say much" in text
    assert "the sign differs between groups" in text and "not independent" in text
    same = findings.describe_within_family(stats[stats["group"] != "cnn-a-wide"])
    assert "the same sign in every group" in same


def test_noise_claims_hold_for_the_curve():
    t = pd.DataFrame({"model": ["z:a"] * 3 + ["z:b"] * 3, "strength": [0.0, 0.5, 1.0] * 2,
                      "approx_skewness": [0.1, 0.5, 0.9, 0.4, 0.2, 0.6], "frac_kstar_changed": [0, 0.5, 0.9] * 2})
    lines = findings.describe_noise(t, what="latent").splitlines()
    assert lines[0] == ("latent noise, strength 0 -> 1: Γ' is higher at 1 than without noise in 2 of 2 models, "
                        "rising at every step in 1 of them.")
    assert "(rising at every step)" in lines[1] and "(higher at the end, not monotonically)" in lines[2]


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
    three = pd.concat([models.assign(layer=models["layer"].map({"l1": "l0", "l2": "l1"}),
                                     approx_skewness=[0.5, 3.0, 1.0, 2.0]), models])
    last = findings.describe_skewness(three, per_class, layer="l2", layers=["l0", "l1", "l2"]).splitlines()[-1]
    # a falls 0.5 -> 1.0 -> 0.1: lower at the end, not at every layer; b: 3.0 -> 2.0 -> 2.5
    assert last == "From l0 to l2, Γ' falls in 2 of 2 models, at every layer in 0 (mean +1.75 -> +1.30)."


def test_finetuning_compares_each_derived_model_with_its_base_only():
    t = pd.DataFrame({"model": ["c:r20", "c:r20-pgd8", "c:r56"], "layer": "pen",
                      "approx_skewness": [0.4, 2.0, -0.1], "clean_acc": [0.9, 0.3, 0.93],
                      "robust_acc": [0.1, 0.3, 0.16]})
    lines = findings.describe_finetuning(t, base="c:r20", layer="pen").splitlines()
    assert lines == ["pen, against r20 (Γ' +0.40, clean accuracy 0.900, robust accuracy 0.100):",
                     "  r20-pgd8: Γ' +1.60, clean accuracy -0.600, robust accuracy +0.200"]
    only = findings.describe_finetuning(t, base="c:r20", layer="pen", accuracies=["robust_acc", "missing_acc"])
    assert only.splitlines()[1] == "  r20-pgd8: Γ' +1.60, robust accuracy +0.200"
    assert findings.describe_finetuning(t, base="c:missing", layer="pen") == "missing is not in the table at pen"


def test_depth_trend_of_models_with_different_layers_goes_by_depth():
    # two architectures, no layer name in common but the output: each model's first and last layer by depth
    models = pd.DataFrame({"model": ["z:a"] * 3 + ["z:b"] * 2, "layer": ["s1", "s2", "logits", "act1", "logits"],
                           "depth": [0.0, 0.5, 1.0, 0.0, 1.0], "approx_skewness": [2.0, 2.5, 0.5, 1.0, 1.5]})
    per_class = pd.DataFrame({"model": ["z:a", "z:b"], "layer": "logits", "label": ["cat", "cat"],
                              "pattern": ["Fractured", "Overlapped"]})
    last = findings.describe_skewness(models, per_class, layer="logits", layers=None).splitlines()[-1]
    # a: 2.0 -> 2.5 -> 0.5 falls overall, not at every layer; b: 1.0 -> 1.5 rises
    assert last == ("From each model's first inner layer to its output, Γ' falls in 1 of 2 models, at every layer in 0 "
                    "(mean +1.50 -> +1.00).")
