"""Feature extraction: shapes, cache reuse, layers, resume after an interruption, bring-your-own features.

A stand-in zoo (a tiny CNN on random 8x8 images, same contract as kstar_utils.models.digits_zoo) keeps these tests independent of
the zoo's trained weights and fast.
"""
from __future__ import annotations

import hashlib
import types

import numpy as np
import pytest

import kstar_utils.pipeline.features as features_module
import torch
from torch import nn

from kstar_utils.datasets import load_digits
from kstar_utils.io import cache
from kstar_utils.pipeline.features import extract_features, load_features, pool_output
from kstar_utils.models import zoo_adapter


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 12),
                                      nn.ReLU())
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        return self.fc(self.features(x))


@pytest.fixture
def stand_in_zoo(monkeypatch, tmp_path):
    """A fake kstar_utils.models.digits_zoo: models 'tiny' and 'tiny2'; 'digits' = 130 random images, 13 per class."""
    rng = np.random.default_rng(0)
    images = rng.random((130, 1, 8, 8), dtype=np.float32)
    labels = np.repeat(np.arange(10), 13).astype(np.int64)
    calls = {"load": 0, "forward": 0}

    def load_zoo_model(name, weights_dir=None, trust=False):
        calls["load"] += 1
        torch.manual_seed(0 if name == "tiny" else 1)
        m = TinyCNN().eval()
        m.register_forward_pre_hook(lambda mod, args: calls.__setitem__("forward", calls["forward"] + 1))
        return m

    fake = types.SimpleNamespace(
        ZOO_MODELS=("tiny", "tiny2"), load_zoo_model=load_zoo_model,
        load_digits=lambda split="test": (images.copy(), labels.copy()),
        weights_path=lambda name, weights_dir=None: tmp_path / f"{name}.pt",
    )
    import kstar_utils.datasets as datasets_module

    monkeypatch.setattr(zoo_adapter, "_zoo", lambda: fake)
    monkeypatch.setattr(datasets_module, "load_digits", fake.load_digits)
    fake.calls = calls
    return fake


def test_extract_shapes_labels_and_sidecar(stand_in_zoo, tmp_path):
    paths = extract_features("zoo:tiny", "digits", root=tmp_path, progress=False)
    assert set(paths) == {"penultimate", "logits"}
    pen, logits = load_features(paths["penultimate"]), load_features(paths["logits"])
    assert pen.features.shape == (130, 12) and pen.features.dtype == np.float32
    assert logits.features.shape == (130, 10)
    np.testing.assert_array_equal(pen.labels, np.repeat(np.arange(10), 13))
    assert pen.class_names == tuple(str(i) for i in range(10))
    # penultimate is the input of fc: fc(penultimate) reproduces the logits
    fc = stand_in_zoo.load_zoo_model("tiny").fc
    with torch.no_grad():
        np.testing.assert_allclose(fc(torch.from_numpy(pen.features)).numpy(), logits.features, atol=1e-5)
    meta = pen.meta
    for key in ("spec", "created", "versions", "model", "pretrained", "dataset", "split", "layer", "preprocessing",
                "n", "d", "weights_sha256"):
        assert key in meta, key
    assert (meta["model"], meta["dataset"], meta["layer"], meta["n"], meta["d"]) == ("zoo:tiny", "digits",
                                                                                       "penultimate", 130, 12)
    assert "torch" in meta["versions"]


def test_same_spec_is_reused_and_force_rebuilds(stand_in_zoo, tmp_path):
    p1 = extract_features("zoo:tiny", "digits", root=tmp_path, progress=False)
    loads = stand_in_zoo.calls["load"]
    p2 = extract_features("zoo:tiny", "digits", root=tmp_path, progress=False)
    assert p1 == p2 and stand_in_zoo.calls["load"] == loads  # nothing was loaded or run again
    p3 = extract_features("zoo:tiny", "digits", root=tmp_path, progress=False, force=True)
    assert p3 == p1 and stand_in_zoo.calls["load"] == loads + 1
    # a different model, layer set or sampling gets a different file
    p4 = extract_features("zoo:tiny2", "digits", root=tmp_path, progress=False, layers=("logits",))
    p5 = extract_features("zoo:tiny", "digits", root=tmp_path, progress=False, layers="logits", n_per_class=5)
    assert len({p1["logits"], p4["logits"], p5["logits"]}) == 3
    assert load_features(p5["logits"]).features.shape == (50, 10)
    assert np.bincount(load_features(p5["logits"]).labels).tolist() == [5] * 10


def test_named_layers_in_one_pass_and_unknown_layer(stand_in_zoo, tmp_path):
    paths = extract_features("zoo:tiny", "digits", root=tmp_path, progress=False, batch_size=200,
                             layers=("features.0", "features.3", "logits"))
    assert load_features(paths["features.0"]).features.shape == (130, 4)  # conv map averaged over H, W
    assert load_features(paths["features.3"]).features.shape == (130, 12)
    assert stand_in_zoo.calls["forward"] == 1  # three layers, one batch, one forward pass
    with pytest.raises(ValueError, match=r"unknown layer 'features\.9'.*features\.0"):
        extract_features("zoo:tiny", "digits", root=tmp_path, progress=False, layers=("features.9",))


def test_unknown_model_dataset_and_option(stand_in_zoo, tmp_path):
    with pytest.raises(ValueError, match="zoo:tiny"):
        extract_features("zoo:tinny", "digits", root=tmp_path)
    with pytest.raises(ValueError, match="digits"):
        extract_features("zoo:tiny", "digit", root=tmp_path)
    with pytest.raises(ValueError, match="unknown option 'n_per_klass'; did you mean \\['n_per_class'\\]"):
        extract_features("zoo:tiny", "digits", root=tmp_path, n_per_klass=3)
    for bad, message in [({"pool": "bogus"}, "pool must be one of"), ({"n_per_class": "abc"}, "n_per_class must be"),
                         ({"batch_size": 0}, "batch_size must be a whole number >= 1; got 0"),
                         ({"amp": "yes"}, "amp must be true or false")]:
        with pytest.raises(ValueError, match=message):
            extract_features("zoo:tiny", "digits", root=tmp_path, **bad)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_interrupted_run_resumes_and_matches_uninterrupted(stand_in_zoo, tmp_path):
    opts = dict(batch_size=16, chunk_batches=1, progress=False)  # 130 images -> 9 chunks
    ref = extract_features("zoo:tiny", "digits", root=tmp_path / "ref", **opts)

    class Killed(RuntimeError):
        pass

    def kill_after_three(i, n_chunks):
        assert n_chunks == 9
        if i == 2:
            raise Killed

    with pytest.raises(Killed), pytest.MonkeyPatch.context() as mp:
        mp.setattr(features_module, "_chunk_saved", kill_after_three)
        extract_features("zoo:tiny", "digits", root=tmp_path / "run", **opts)
    assert not any(cache.sidecar_path(p).exists() for p in (tmp_path / "run" / "features").glob("*.npz"))
    parts = list((tmp_path / "run" / "features_parts").glob("*/chunk_*.npz"))
    assert len(parts) == 3

    seen = []
    stand_in_zoo.calls["forward"] = 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(features_module, "_chunk_saved", lambda i, n: seen.append(i))
        out = extract_features("zoo:tiny", "digits", root=tmp_path / "run", **opts)
    assert seen == list(range(3, 9))  # resumed at the first missing chunk
    assert stand_in_zoo.calls["forward"] == 6
    for layer in ref:
        assert out[layer].name == ref[layer].name
        assert _sha(out[layer]) == _sha(ref[layer])  # byte-identical file
    assert not (tmp_path / "run" / "features_parts").exists() or not any((tmp_path / "run" / "features_parts").iterdir())


def test_bring_your_own_features(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 7)).astype(np.float32)
    y = np.array(["cat", "dog"] * 20)
    src = tmp_path / "text_embeddings.npz"
    np.savez(src, features=X, labels=y)
    paths = extract_features("none", f"features:{src}", root=tmp_path / "out")
    fs = load_features(paths["features"])
    np.testing.assert_array_equal(fs.features, X)
    assert fs.class_names == ("cat", "dog") and fs.labels.tolist() == [0, 1] * 20
    assert fs.meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


def test_pool_output_shapes():
    assert pool_output(torch.zeros(2, 3, 4, 5)).shape == (2, 3)
    assert pool_output(torch.zeros(2, 3, 4, 5), "flatten").shape == (2, 60)
    tokens = torch.arange(24.0).reshape(2, 3, 4)
    assert pool_output(tokens, "cls").tolist() == tokens[:, 0].tolist()
    assert pool_output(tokens).shape == (2, 4)


def test_real_zoo_if_present(tmp_path):
    zoo = pytest.importorskip("kstar_utils.models.digits_zoo")
    if not zoo.weights_path("standard").exists():
        pytest.skip("zoo weights not built (kstar zoo train --zoo digits)")
    paths = extract_features("zoo:standard", "digits", root=tmp_path, progress=False)
    pen = load_features(paths["penultimate"])
    assert pen.features.shape[1] == 64 and pen.n == len(load_digits("test")[1])
    assert len(pen.meta["weights_sha256"]) == 64
