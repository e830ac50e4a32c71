"""One recipe type and one resumable builder for the workbook's own models (the digits CNNs, the CIFAR fine-tunings)."""
from __future__ import annotations

import pandas as pd
import pytest
from torch import nn

from kstar_utils.models import cifar_zoo, digits_zoo
from kstar_utils.models.training import Recipe, build_zoo, find_recipe


def _builder(tmp_path, recipes, calls):
    def make(r):
        calls.append(r.name)
        return nn.Linear(2, 2)

    def save(r, model):
        (tmp_path / f"{r.name}.w").write_text("weights")

    return dict(make=make, save=save, built=lambda r: r.kind == "pretrained" or (tmp_path / f"{r.name}.w").exists(),
                measure=lambda model: {"clean_acc": 0.5})


def test_the_builder_resumes_and_rebuilds_only_what_changed(tmp_path):
    recipes = [Recipe("a", "clean"), Recipe("b", "pgd", eps=0.1), Recipe("p", "pretrained", base="p")]
    table, calls = tmp_path / "t.csv", []
    first = build_zoo(recipes, table, evaluation={"eval_eps": 0.1}, **_builder(tmp_path, recipes, calls))
    assert calls == ["a", "b", "p"] and list(first["model"]) == ["a", "b", "p"]
    assert first.set_index("model").at["p", "recipe"] == "pretrained"
    assert first.set_index("model").at["b", "recipe"] == repr(recipes[1])
    calls.clear()
    build_zoo(recipes, table, evaluation={"eval_eps": 0.1}, **_builder(tmp_path, recipes, calls))
    assert calls == []  # everything built with the same recipe and evaluation: kept
    (tmp_path / "a.w").unlink()  # weights gone
    recipes[1] = Recipe("b", "pgd", eps=0.2)  # another recipe under the same name
    build_zoo(recipes, table, evaluation={"eval_eps": 0.1}, **_builder(tmp_path, recipes, calls))
    assert calls == ["a", "b"]
    calls.clear()
    build_zoo(recipes, table, evaluation={"eval_eps": 0.2}, **_builder(tmp_path, recipes, calls))  # new evaluation
    assert calls == ["a", "b", "p"]
    calls.clear()
    out = build_zoo(recipes, table, evaluation={"eval_eps": 0.2}, names=["b"], force=True,
                    **_builder(tmp_path, recipes, calls))
    assert calls == ["b"] and len(out) == 3 and (pd.read_csv(table)["eval_eps"] == 0.2).all()
    with pytest.raises(ValueError, match="unknown model 'c'; closest"):
        build_zoo(recipes, table, evaluation={}, names=["c"], **_builder(tmp_path, recipes, calls))


def test_both_zoos_use_the_one_recipe_type():
    assert all(isinstance(r, Recipe) for r in digits_zoo.RECIPES + cifar_zoo.RECIPES)
    assert digits_zoo.recipe("pgd-0.1").eps == 0.1 and cifar_zoo.recipe("resnet20-pgd8").base == "resnet20"
    with pytest.raises(ValueError, match="unknown zoo model 'standart'; closest"):
        digits_zoo.recipe("standart")
    with pytest.raises(ValueError, match="kind must be one of"):
        Recipe("x", "mixup")
    assert find_recipe(cifar_zoo.RECIPES, "resnet56", "model").kind == "pretrained"


def test_the_shipped_tables_record_the_recipes_they_were_built_from():
    """A rebuild keeps every shipped fine-tuning: their rows name exactly the recipes of today's code."""
    from kstar_utils.models.cifar_resnet import weights_dir

    table = pd.read_csv(weights_dir() / cifar_zoo.METRICS_FILE).set_index("model")
    for r in cifar_zoo.RECIPES:
        assert table.at[r.name, "recipe"] == ("pretrained" if r.kind == "pretrained" else repr(r))
