"""Model registry and adapters, offline: random-weight architectures on a few tiny images.

Real weights are never downloaded: loading paths are exercised with checkpoints saved from random weights, and the
error paths with missing, HTML and truncated files. Tests that need real pretrained weights are marked `weights`.
"""
from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from kstar_utils.pipeline.features import forward_layers
from kstar_utils.models import (CorruptWeightsError, WeightsNotFoundError, check_model_name, load_model,
                                weights_requirements)


def batch(loaded, n=2, size=32, seed=0):
    """n random RGB images (C, H, W) in [0, 1], passed through the model's own preprocessing."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([loaded.preprocess(torch.rand(3, size, size, generator=g)) for _ in range(n)])


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test: missing or damaged weights are reported from the
    local cache, never by trying (and waiting on) a download."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_random_weights_are_the_same_on_every_load():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a, b = (load_model("torchvision:resnet18").module.state_dict() for _ in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone


# ---------------------------------------------------------------------------------------------- OpenCLIP
@pytest.fixture(scope="module")
def vit():
    return load_model("openclip:ViT-B-32")


def test_openclip_vit_embedding_and_named_block(vit):
    assert vit.output_layer == "embedding" and vit.pretrained == "random"
    assert "visual.transformer.resblocks.11" in vit.layer_names()
    x = batch(vit)
    assert x.shape == (2, 3, 224, 224)
    out = forward_layers(vit, x, ("embedding", "visual.transformer.resblocks.11", "visual.ln_post"))
    assert out["embedding"].shape == (2, 512)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(2))  # L2-normalised by default
    assert out["visual.transformer.resblocks.11"].shape == (2, 768)  # token outputs averaged
    with torch.no_grad():
        raw = vit.module.encode_image(x, normalize=False)
    assert not torch.allclose(raw.norm(dim=1), torch.ones(2))
    with pytest.raises(ValueError, match="penultimate"):
        vit.check_layers(("penultimate",))  # no linear head: not a valid layer, said early
    assert "transformer.resblocks.0" not in vit.layer_names()  # the text tower does not run on images
    with pytest.raises(ValueError, match="unknown layer 'transformer.resblocks.0'.*visual.transformer.resblocks.0"):
        vit.check_layers(("transformer.resblocks.0",))


def test_openclip_resnet():
    rn = load_model("openclip:RN50")
    out = forward_layers(rn, batch(rn), ("embedding", "visual.layer4"))
    assert out["embedding"].shape == (2, 1024) and out["visual.layer4"].shape == (2, 2048)


def test_openclip_preprocessing_comes_from_the_tag():
    from kstar_utils.models.openclip_adapter import create_kwargs

    siglip = create_kwargs("ViT-B-16-SigLIP", "webli")
    assert siglip["image_mean"] == (0.5, 0.5, 0.5) and siglip["image_resize_mode"] == "squash"
    assert create_kwargs("ViT-B-32", "openai")["force_quick_gelu"] is True
    assert create_kwargs("ViT-B-32", "laion2b_s34b_b79k")["image_mean"][0] == pytest.approx(0.48145466)


def test_openclip_missing_weights_name_the_cache(tmp_path, offline):
    with pytest.raises(WeightsNotFoundError, match=r"searched .*models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"):
        load_model("openclip:ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)
    req = weights_requirements("openclip:ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)[0]
    assert not req.present and "huggingface-cli download" in req.how_to_provide


def test_openclip_html_file_in_hf_cache_is_reported(tmp_path, offline):
    # a Hugging Face cache entry whose weights file is an error page saved by a failed download
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    bad = snap / "open_clip_pytorch_model.bin"
    bad.write_text("<!DOCTYPE html><html><body>Too many requests</body></html>")
    assert weights_requirements("openclip:ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)[0].present
    with pytest.raises(CorruptWeightsError, match="open_clip_pytorch_model.bin.*HTML"):
        load_model("openclip:ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)


@pytest.mark.slow
def test_zero_shot_on_random_weights_is_a_valid_fraction(tmp_path):
    from kstar_utils.pipeline.zeroshot import zero_shot_accuracy

    acc = zero_shot_accuracy("openclip:RN50", "digits", root=tmp_path, n_per_class=2, progress=False,
                             class_names=[f"the digit {i}" for i in range(10)], templates=["a photo of {}."])
    assert 0.0 <= acc <= 1.0


def test_zero_shot_helpers():
    from kstar_utils.pipeline.zeroshot import get_templates, zero_shot_predict

    W = torch.eye(3)
    X = np.array([[0.1, 2.0, 0.0], [5.0, 0.0, 1.0]], dtype=np.float32)
    assert zero_shot_predict(X, W).tolist() == [1, 0]
    assert get_templates(["a {}"])[0]("cat") == "a cat"
    assert len(get_templates("openai")) == 80
    with pytest.raises(ValueError):
        get_templates("fancy")


# ---------------------------------------------------------------------------------------------- RobustBench
def test_compat_aliases_autoattack_in_a_fresh_interpreter():
    code = ("import sys; from kstar_utils.compat import import_robustbench as f; rb = f(); import pyautoattack, "
            "robustbench.eval; assert sys.modules['autoattack'] is pyautoattack; "
            "assert sys.modules['autoattack.state'] is sys.modules['pyautoattack.state']; assert f() is rb; print('ok')")
    res = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "ok"


@pytest.mark.parametrize("name, head, width", [
    ("robustbench:cifar10/Linf/Carmon2019Unlabeled", "fc", 640),  # WideResNet-28-10
    ("robustbench:cifar10/Linf/Andriushchenko2020Understanding", "linear", 512),  # PreActResNet-18
])
def test_robustbench_architectures_random_weights(name, head, width):
    m = load_model(name, pretrained=False)
    assert m.head_module == head and m.pretrained == "random" and m.extra["penultimate_dim"] == width
    out = forward_layers(m, batch(m), ("penultimate", "logits"))
    assert out["penultimate"].shape == (2, width) and out["logits"].shape == (2, 10)


SMALL_WRN = "cifar10/Linf/Ding2020MMA"  # WideResNet-28-4, 5.9 M parameters: cheap to save and load


def _save_random_checkpoint(model_dir):
    m = load_model(f"robustbench:{SMALL_WRN}", pretrained=False).module
    path = model_dir / "cifar10" / "Linf" / "Ding2020MMA.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in m.state_dict().items()}}, path)
    return m, path


def test_robustbench_loads_a_cached_checkpoint_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("KSTAR_ROBUSTBENCH_DIR", str(tmp_path))
    ref, path = _save_random_checkpoint(tmp_path)
    assert weights_requirements(f"robustbench:{SMALL_WRN}")[0].present
    m = load_model(f"robustbench:{SMALL_WRN}")
    assert m.weights_file == path and m.pretrained == f"robustbench:{SMALL_WRN}"
    x = batch(m)
    with torch.no_grad():
        torch.testing.assert_close(m.module(x), ref.eval()(x))


def test_robustbench_missing_weights_name_path_and_remedy(tmp_path):
    with pytest.raises(WeightsNotFoundError) as e:
        load_model(f"robustbench:{SMALL_WRN}", model_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "cifar10" / "Linf" / "Ding2020MMA.pt") in msg and "KSTAR_ROBUSTBENCH_DIR" in msg
    assert isinstance(e.value, FileNotFoundError)


@pytest.mark.parametrize("damage", ["html", "truncated", "truncated-legacy", "empty"])
def test_robustbench_corrupt_checkpoint_is_reported_without_a_download(tmp_path, damage, offline):
    ref, path = _save_random_checkpoint(tmp_path)
    if damage == "truncated-legacy":  # pre-1.6 torch.save format: a plain pickle stream, cut short
        torch.save({"state_dict": ref.state_dict()}, path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "html":
        path.write_text("<html><head><title>Google Drive - Virus scan warning</title></head></html>")
    elif damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(b"")
    with pytest.raises(CorruptWeightsError, match="Ding2020MMA.pt"):
        load_model(f"robustbench:{SMALL_WRN}", model_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- torchvision / timm
def test_torchvision_named_intermediate_layer_and_weights_file(tmp_path):
    m = load_model("torchvision:resnet18")
    assert m.head_module == "fc"
    x = batch(m, size=40)
    out = forward_layers(m, x, ("layer2", "layer4.1.conv2", "penultimate", "logits"))
    assert out["layer2"].shape == (2, 128) and out["layer4.1.conv2"].shape == (2, 512)
    assert out["penultimate"].shape == (2, 512) and out["logits"].shape == (2, 1000)
    # the same weights through an explicit file give the same outputs
    f = tmp_path / "r18.pth"
    torch.save(m.module.state_dict(), f)
    m2 = load_model("torchvision:resnet18", weights_path=f)
    assert m2.pretrained == "file:r18.pth"
    with torch.no_grad():
        torch.testing.assert_close(m2.module(x), m.module(x))


def test_torchvision_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match=r"resnet18-f37072fd\.pth"):
        load_model("torchvision:resnet18@IMAGENET1K_V1")


def test_timm_random_weights():
    m = load_model("timm:resnet18")
    out = forward_layers(m, batch(m, size=40), ("penultimate", "logits", "layer3"))
    assert out["penultimate"].shape == (2, 512) and out["logits"].shape == (2, 1000)


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("bad, expected", [
    ("robustbench:cifar10/Linf/Carmon2019Unlabelled", "robustbench:cifar10/Linf/Carmon2019Unlabeled"),
    ("openclip:ViT-B-32/laion2b_s34b_b79", "openclip:ViT-B-32/laion2b_s34b_b79k"),
    ("torchvision:resnet5", "torchvision:resnet50"),
    ("timm:resnet18.nope", "timm:resnet18"),
    ("openclp:ViT-B-32", "openclip"),
    ("ViT-B-32", "<source>:<name>"),
])
def test_unknown_names_suggest_close_ones(bad, expected):
    with pytest.raises(ValueError, match=expected.replace(".", r"\.").replace("<", ".").replace(">", ".")):
        check_model_name(bad)


def test_unknown_layer_suggests_close_ones():
    m = load_model("robustbench:cifar10/Linf/Andriushchenko2020Understanding", pretrained=False)
    with pytest.raises(ValueError, match="layer4"):
        m.check_layers(("layer_4",))


# ---------------------------------------------------------------------------------------------- real weights
@pytest.mark.weights
def test_real_openclip_weights_if_cached():
    req = weights_requirements("openclip:ViT-B-32/laion2b_s34b_b79k")[0]
    if not req.present:
        pytest.skip(f"real weights not in the local cache ({req.path}); see docs/models_and_data.md")
    m = load_model("openclip:ViT-B-32/laion2b_s34b_b79k")
    assert forward_layers(m, batch(m), ("embedding",))["embedding"].shape == (2, 512)


def test_robustbench_checkpoint_rejected_by_weights_only_loads_when_trusted(tmp_path):
    # research checkpoints often pickle extra objects (here a numpy scalar), which torch>=2.6's weights_only refuses;
    # a full unpickle can run code from the file, so it takes the user's explicit trust
    from kstar_utils.models import UntrustedCheckpointError

    m = load_model(f"robustbench:{SMALL_WRN}", pretrained=False).module
    path = tmp_path / "cifar10" / "Linf" / "Ding2020MMA.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": m.state_dict(), "best_acc": np.float64(0.5), "args": {"lr": np.array([0.1])}}, path)
    with pytest.raises(UntrustedCheckpointError, match="numpy.*trust_checkpoint"):
        load_model(f"robustbench:{SMALL_WRN}", model_dir=tmp_path)
    loaded = load_model(f"robustbench:{SMALL_WRN}", model_dir=tmp_path, trust_checkpoint=True)
    x = batch(loaded)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), m.eval()(x))
    import os

    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ  # the override was scoped to that one load


@pytest.mark.slow
def test_openclip_tag_loads_from_a_filled_hf_cache(tmp_path):
    """The real loading path for a tag: a (random) checkpoint in the hub cache layout, loaded with the tag's
    preprocessing."""
    ref = load_model("openclip:RN50")
    snap = tmp_path / "models--timm--resnet50_clip.openai" / "snapshots" / ("1" * 40)
    snap.mkdir(parents=True)
    (tmp_path / "models--timm--resnet50_clip.openai" / "refs").mkdir()
    (tmp_path / "models--timm--resnet50_clip.openai" / "refs" / "main").write_text("1" * 40)
    torch.save(ref.module.state_dict(), snap / "open_clip_pytorch_model.bin")
    m = load_model("openclip:RN50/openai", cache_dir=tmp_path)
    assert m.pretrained == "openai" and m.weights_file.name == "open_clip_pytorch_model.bin"
    assert m.extra["quick_gelu"] and m.preprocessing["mean"][0] == pytest.approx(0.48145466)
    x = batch(ref)
    with torch.no_grad():
        # same weights, same image tower (the RN50 image tower uses ReLU; QuickGELU only touches the text tower)
        torch.testing.assert_close(m.run(x), ref.run(x))
