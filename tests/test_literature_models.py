"""The twenty published CIFAR-10 models (abcrown:, convex:, chenyaofo:): exact loading, layers, accuracy."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from kstar_utils import models as registry
from kstar_utils.models import CorruptWeightsError, WeightsNotFoundError, abcrown, chenyaofo, convex_adversarial
from kstar_utils.models import published
from kstar_utils.pipeline.features import forward_layers

SOURCES = {"abcrown": abcrown, "convex": convex_adversarial, "chenyaofo": chenyaofo}
NAMES = [f"{s}:{n}" for s, mod in SOURCES.items() for n in mod.MODELS]
#: clean accuracy on the 846 exact test images from the quick check made when the files were recovered
#: (shared material's README); the loader must reproduce each within one point
README_CHECK = {
    "abcrown:cnn-a-adv": 0.656, "abcrown:cnn-a-adv-alt": 0.688, "abcrown:cnn-a-adv4": 0.563,
    "abcrown:cnn-a-mix": 0.759, "abcrown:cnn-a-mix4": 0.682, "abcrown:resnet2b": 0.686, "abcrown:resnet4b": 0.766,
    "abcrown:oval-base": 0.603, "abcrown:oval-wide": 0.624, "abcrown:oval-deep": 0.554,
    "abcrown:convsmall-pgd": 0.622, "abcrown:convsmall-sigmoid": 0.642, "abcrown:marabou-small": 0.619,
    "abcrown:marabou-medium": 0.699, "abcrown:marabou-large": 0.754, "convex:small-8px": 0.314,
    "convex:small-36px": 0.546, "chenyaofo:resnet20": 0.924, "chenyaofo:resnet56": 0.944,
    "chenyaofo:shufflenetv2-x0.5": 0.910,
}
#: one model per (architecture, checkpoint layout): every way a file is laid out and renamed
LAYOUTS = ["abcrown:cnn-a-adv", "abcrown:resnet2b", "abcrown:resnet4b", "abcrown:oval-base", "abcrown:oval-deep",
           "abcrown:convsmall-sigmoid", "abcrown:marabou-small", "convex:small-36px", "chenyaofo:resnet20",
           "chenyaofo:shufflenetv2-x0.5"]


def entry_of(name: str) -> published.PublishedModel:
    source, rest = name.split(":", 1)
    return SOURCES[source].MODELS[rest]


def test_the_registry_lists_the_twenty_models():
    assert sorted(NAMES) == sorted(README_CHECK)
    assert len(registry.known_model_names("abcrown")) == 15
    assert registry.known_model_names("convex") == ["convex:small-8px", "convex:small-36px"]
    assert registry.known_model_names("chenyaofo") == ["chenyaofo:resnet20", "chenyaofo:resnet56",
                                                       "chenyaofo:shufflenetv2-x0.5"]
    with pytest.raises(ValueError, match="cnn-a-adv"):
        registry.check_model_name("abcrown:cnn-a-adw")


def test_the_tables_describe_every_model():
    for name in NAMES:
        e = entry_of(name)
        assert e.training.kind in ("standard", "adversarial", "certified")
        assert (e.training.norm is None) == (e.training.kind == "standard")
        assert len(e.sha256) == 64 and e.paper and e.upstream and e.family
        assert e.inner_layers, name
    wide = [n for n in NAMES if entry_of(n).family == "cnn-a-wide"]
    assert len(wide) == 8  # five CNN-A, OVAL wide, the two of Wong et al.
    assert {entry_of(n).training.kind for n in wide} == {"adversarial", "certified"}


def test_every_shipped_file_is_the_published_one():
    from kstar_utils.io.cache import sha256_file

    for name in NAMES:
        e = entry_of(name)
        assert sha256_file(published.weights_file(e)) == e.sha256, name


@pytest.mark.parametrize("name", NAMES)
def test_every_model_loads_strictly_with_its_tag_and_normalisation(name):
    loaded = registry.load_model(name)
    e = entry_of(name)
    assert loaded.pretrained == f"{name}@{e.sha256[:12]}" == registry.model_pretrained_tag(name)
    assert loaded.weights_file == published.weights_file(e)
    assert not loaded.module.training
    # normalisation lives in non-persistent buffers: never in the state dict, always in the module
    assert not any(k.startswith("normalize") for k in loaded.module.state_dict())
    assert torch.allclose(loaded.module.normalize.mean.flatten(), torch.tensor(e.normalization.mean))
    req = registry.weights_requirements(name)[0]
    assert req.present and req.path == published.weights_file(e)


@pytest.mark.parametrize("name", NAMES)
def test_architecture_builds_random_weights_without_reading_a_file(name, monkeypatch):
    def no_read(*args, **kwargs):
        raise AssertionError("architecture() read a file")

    source, rest = name.split(":", 1)
    monkeypatch.setattr(torch, "load", no_read)
    arch = SOURCES[source].architecture(rest)
    assert arch.pretrained == "random" and arch.weights_file is None and arch.name == name
    monkeypatch.undo()
    assert set(arch.module.state_dict()) == set(registry.load_model(name).module.state_dict())


def _tamper(name, tmp_path, edit):
    """A copy of the model's checkpoint, in its own layout, with `edit` applied to its state dict."""
    e = entry_of(name)
    checkpoint = torch.load(published.weights_file(e), map_location="cpu", weights_only=True)
    state = checkpoint
    for step in e.layout:
        state = state[step]
    edit(state)
    path = tmp_path / e.file
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return e, path


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_checkpoint_missing_a_key_fails_naming_the_file(name, tmp_path):
    e, path = _tamper(name, tmp_path, lambda s: s.pop(sorted(s)[0]))
    with pytest.raises(CorruptWeightsError, match=str(path)) as err:
        published.load_exact(e, path, check_sha256=False)
    assert "Missing key" in str(err.value)


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_checkpoint_with_a_renamed_key_fails_naming_the_file(name, tmp_path):
    def rename(s):
        key = sorted(s)[-1]
        s[key + "_renamed"] = s.pop(key)

    e, path = _tamper(name, tmp_path, rename)
    with pytest.raises(CorruptWeightsError, match=str(path)):
        published.load_exact(e, path, check_sha256=False)


@pytest.mark.parametrize("name", LAYOUTS)
def test_a_checkpoint_with_an_extra_or_unknown_key_fails_naming_the_file(name, tmp_path):
    e, path = _tamper(name, tmp_path, lambda s: s.__setitem__("extra_module.weight", torch.zeros(1)))
    with pytest.raises(CorruptWeightsError, match=rf"{path}.*extra_module.weight"):
        published.load_exact(e, path, check_sha256=False)


def test_an_unchanged_copy_loads_and_a_mis_shaped_one_fails(tmp_path):
    e, path = _tamper("abcrown:cnn-a-adv", tmp_path, lambda s: None)
    m = published.load_exact(e, path, check_sha256=False)
    assert torch.equal(m.linear.weight, registry.load_model("abcrown:cnn-a-adv").module.linear.weight)
    e, path = _tamper("abcrown:cnn-a-adv", tmp_path, lambda s: s.__setitem__("7.weight", torch.zeros(10, 99)))
    with pytest.raises(CorruptWeightsError, match=rf"{path}.*size mismatch"):
        published.load_exact(e, path, check_sha256=False)


def test_a_file_other_than_the_published_one_is_refused_by_name(tmp_path):
    # a folder laid out like data/cifar_models_public/ whose file differs from the published one
    e, path = _tamper("abcrown:cnn-a-adv", tmp_path, lambda s: s["0.bias"].add_(1.0))
    with pytest.raises(CorruptWeightsError, match=rf"{path}.*sha256"):
        registry.load_model("abcrown:cnn-a-adv", weights_dir=tmp_path)
    with pytest.raises(WeightsNotFoundError, match="cifar_small_8px.pth"):
        registry.load_model("convex:small-8px", weights_dir=tmp_path)
    assert not registry.weights_requirements("convex:small-8px", weights_dir=tmp_path)[0].present
    assert registry.model_pretrained_tag("convex:small-8px", weights_dir=tmp_path) == "convex:small-8px"


def test_the_same_file_with_another_layout_is_refused(tmp_path):
    e = entry_of("abcrown:oval-wide")
    src = published.weights_file(e)
    state = torch.load(src, map_location="cpu", weights_only=True)["state_dict"][0]
    path = tmp_path / "flat.pth"
    torch.save(state, path)  # the state dict without its ["state_dict"][0] wrapper
    with pytest.raises(CorruptWeightsError, match=rf"{path}.*'state_dict'"):
        published.load_exact(e, path, check_sha256=False)


def test_a_pickle_with_code_is_refused(tmp_path):
    e = entry_of("abcrown:cnn-a-adv")
    path = tmp_path / "code.pth"
    torch.save({"x": np.random.default_rng(0)}, path)  # an object weights_only=True will not build
    with pytest.raises(CorruptWeightsError, match=rf"{path}.*weights_only"):
        published.load_exact(e, path, check_sha256=False)


def test_weights_path_is_refused_for_a_shipped_source():
    with pytest.raises(ValueError, match="weights_dir"):
        registry.load_model("chenyaofo:resnet20", weights_path="/tmp/x.pt")


@pytest.mark.parametrize("name", NAMES)
def test_penultimate_logits_and_inner_layers(name):
    source, rest = name.split(":", 1)
    loaded = SOURCES[source].architecture(rest)
    e = entry_of(name)
    layers = ("penultimate", "logits") + e.inner_layers
    assert set(layers) <= set(loaded.layer_names())
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = forward_layers(loaded, x, layers)
        assert out["logits"].shape == (3, 10)
        assert out["penultimate"].shape == (3, loaded.module.linear.in_features)
        # "penultimate" is the input of the last Linear: the head applied to it gives the logits
        assert torch.allclose(loaded.module.linear(out["penultimate"]), out["logits"], atol=1e-5)
        assert torch.allclose(out["logits"], loaded.module(x), atol=1e-6)
        for layer in e.inner_layers:  # conv maps are averaged over space
            assert out[layer].ndim == 2 and out[layer].shape[0] == 3, layer
            assert not torch.allclose(out[layer], torch.zeros_like(out[layer]))


def test_features_of_a_published_model_through_extract_features(tmp_path):
    from kstar_utils.pipeline.features import extract_features, load_features

    paths = extract_features("abcrown:cnn-a-adv", "cifar10-sample", split="test", layers=("penultimate", "act1"),
                             n_per_class=3, seed=0, root=tmp_path, progress=False)
    fs = load_features(paths["penultimate"])
    assert fs.features.shape == (30, 100) and fs.meta["spec"]["pretrained"].startswith("abcrown:cnn-a-adv@e45d79e6")
    assert load_features(paths["act1"]).features.shape == (30, 16)


def _accuracy_case(name):
    slow = name.startswith("chenyaofo:")  # the ResNets and the ShuffleNet take tens of seconds on 2 CPU cores
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


@pytest.mark.parametrize("name", [_accuracy_case(n) for n in NAMES])
def test_clean_accuracy_on_the_846_exact_images_matches_the_check(name):
    from kstar_utils.models.cifar_zoo import load_images
    from kstar_utils.models.training import accuracy

    X, y = load_images("test")
    acc = accuracy(registry.load_model(name).module, X, y)
    assert abs(acc - README_CHECK[name]) <= 0.01, (name, acc)


def test_copying_the_shipped_folder_keeps_the_models_loadable(tmp_path):
    e = entry_of("abcrown:oval-base")
    dst = tmp_path / e.file
    dst.parent.mkdir(parents=True)
    shutil.copy(published.weights_file(e), dst)
    a = registry.load_model("abcrown:oval-base", weights_dir=tmp_path)
    b = registry.load_model("abcrown:oval-base")
    assert a.pretrained == b.pretrained and a.weights_file == dst
