"""Every model source owns its knowledge through one protocol: nothing outside models/ asks which source a name is
from."""
from __future__ import annotations

import importlib
import inspect

import pytest

from kstar_utils import models
from kstar_utils.io.tables import ACCURACY_COLUMNS

REQUIRED = ("known_names", "is_valid", "pretrained_tag", "requirements", "load", "architecture", "describe",
            "accuracies")
SHIPPED = ("zoo", "cifar-resnet", "abcrown", "convex", "chenyaofo")


@pytest.mark.parametrize("source", list(models.SOURCES))
def test_every_source_implements_the_protocol(source):
    adapter = importlib.import_module(models.SOURCES[source])
    missing = [f for f in REQUIRED if not callable(getattr(adapter, f, None))]
    assert not missing, f"{models.SOURCES[source]} lacks {missing}"
    protocol = {n for n, _ in inspect.getmembers(models.ModelSource, inspect.isfunction) if not n.startswith("_")}
    assert set(REQUIRED) == protocol


@pytest.mark.parametrize("source", SHIPPED)
def test_shipped_models_describe_themselves(source):
    names = models.known_model_names(source)
    assert names
    for name in names:
        info = models.describe(name)
        assert info.name == name and info.source == source and info.family and info.training in models.TRAINING_KINDS
        assert models.short_name(name) == info.short


def test_short_names_are_unique_among_the_shipped_models():
    shorts = [models.short_name(n) for s in SHIPPED for n in models.known_model_names(s)]
    assert len(shorts) == len(set(shorts))
    assert models.short_name("cifar-resnet:resnet20") != models.short_name("chenyaofo:resnet20")
    assert models.short_name("external:features") == "features"  # a label no source knows keeps its name part


def test_the_cifar_study_knows_every_training_kind_it_compares():
    kinds = {models.describe(n).training for s in ("cifar-resnet", "abcrown", "convex", "chenyaofo")
             for n in models.known_model_names(s)}
    assert kinds == {"standard", "adversarial", "certified", "own-fine-tune"}
    wide = [n for s in ("abcrown", "convex") for n in models.known_model_names(s)
            if models.describe(n).family == "cnn-a-wide"]
    assert len(wide) == 8  # the models that share one architecture


def test_accuracies_come_from_each_source_and_only_for_its_datasets():
    t = models.accuracies(["zoo:standard", "abcrown:cnn-a-adv"], ["digits", "cifar10-sample"])
    assert list(t.columns[:2]) == ["model", "dataset"] and set(ACCURACY_COLUMNS) <= set(t.columns)
    t = t.set_index(["model", "dataset"])
    assert 0.9 < t.loc[("zoo:standard", "digits"), "clean_acc"] <= 1
    assert t.loc[("zoo:standard", "cifar10-sample")].drop(["eval_eps", "accuracy_source"]).isna().all()
    assert t.loc[("abcrown:cnn-a-adv", "digits")].drop(["eval_eps", "accuracy_source"]).isna().all()


def test_what_changes_features_and_who_classifies_by_prompts_is_the_sources_knowledge():
    assert models.feature_key("zoo:standard") == {}
    assert models.feature_key("openclip:RN50", normalize=False) == {"normalize": False}
    assert models.supports_zero_shot("openclip:RN50") and not models.supports_zero_shot("cifar-resnet:resnet20")
    with pytest.raises(ValueError, match="unknown model"):
        models.describe("abcrown:cnn-b")


def test_inner_stands_for_each_models_own_inner_layers_and_depth_orders_them():
    assert models.expand_layers("cifar-resnet:resnet20", ["inner", "penultimate", "logits"]) == \
        ("layer1", "layer2", "penultimate", "logits")
    assert models.expand_layers("abcrown:oval-deep", ["penultimate", "inner", "act1"]) == \
        ("penultimate", "act1", "act2", "act3", "act4")
    assert models.expand_layers("openclip:RN50", "inner") == ()
    depths = [models.layer_depth("abcrown:oval-deep", layer) for layer in ("act1", "act3", "penultimate", "logits")]
    assert depths == [0.0, 0.4, 0.8, 1.0]
    assert models.layer_depth("cifar-resnet:resnet20", "layer3.2") != models.layer_depth("cifar-resnet:resnet20",
                                                                                           "layer3.2")  # NaN
    for source in ("cifar-resnet", "abcrown", "convex", "chenyaofo"):
        for name in models.known_model_names(source):
            inner = models.describe(name).inner_layers
            assert inner and "penultimate" not in inner
            names = set(models.build_architecture(name).layer_names())
            assert set(inner) <= names, name
