"""No code runs from a checkpoint unless the user explicitly trusts it.

Every crafted file below is a working checkpoint (the right weights for its model) that also carries a pickled
payload: unpickling it calls os.makedirs(<marker>), so a full unpickle anywhere leaves the marker folder behind. Each
loader must refuse such a file by default, with an error naming the file and the opt-in (`trust_checkpoint`), and
`kstar plan` / `kstar preflight` must not read it at all; with `trust_checkpoint=True` the same file loads.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import pytest
import torch
import yaml

from kstar_utils import cli
from kstar_utils.models import UntrustedCheckpointError, load_model
from kstar_utils.pipeline.features import extract_features

RB = "cifar10/Linf/Ding2020MMA"  # WideResNet-28-4: the cheapest RobustBench model to build


class Payload:
    """Pickled as a call of os.makedirs(marker): unpickling it creates the marker folder."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _save_crafted(path, content, marker):
    """torch.save `content` (a mapping) with the payload riding along as an attribute of the saved mapping: a full
    unpickle returns a normal checkpoint, and runs the payload on the way."""
    checkpoint = OrderedDict(content)
    if hasattr(content, "_metadata"):
        checkpoint._metadata = content._metadata  # the module versions a state dict carries
    checkpoint.payload = Payload(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(autouse=True)
def torch_home(tmp_path, monkeypatch):
    """A torch hub cache of each test's own (torchvision reads tagged weights from it)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@lru_cache(maxsize=None)
def _reference(kind: str):
    """A random-weights module of each model used below (built once per test session)."""
    if kind in ("cifar-resnet", "zoo"):
        from kstar_utils.models.cifar_resnet import build
        from kstar_utils.models.digits_zoo import SmallCNN

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            return (build("resnet20") if kind == "cifar-resnet" else SmallCNN()).eval()
    names = {"torchvision": "torchvision:squeezenet1_1", "robustbench": f"robustbench:{RB}",
             "timm": "timm:test_vit", "openclip": "openclip:ViT-S-32-alt"}
    options = {"pretrained": False} if kind == "robustbench" else {}
    return load_model(names[kind], **options).module


def _prefixed(state, prefix="module."):
    return {f"{prefix}{k}": v for k, v in state.items()}


def _case(kind: str, where, marker):
    """(model name, loader options, crafted file) for one loading path, the file written under `where`."""
    state = _reference(kind.removesuffix("-dir").removesuffix("-hub")).state_dict()
    if kind == "cifar-resnet":  # found by name in weights_dir, in the upstream layout
        f = _save_crafted(where / "weights" / "resnet20-12fca82f.th", {"state_dict": _prefixed(state)}, marker)
        return "cifar-resnet:resnet20", {"weights_dir": str(f.parent)}, f
    if kind == "zoo":  # found by name in weights_dir
        f = _save_crafted(where / "weights" / "standard.pt", state, marker)
        return "zoo:standard", {"weights_dir": str(f.parent)}, f
    if kind == "torchvision":
        f = _save_crafted(where / "squeezenet.pth", state, marker)
        return "torchvision:squeezenet1_1", {"weights_path": str(f)}, f
    if kind == "torchvision-hub":  # a tag's file, found in the torch hub cache
        f = _save_crafted(Path(torch.hub.get_dir()) / "checkpoints" / "squeezenet1_1-b8a52dc0.pth", state, marker)
        return "torchvision:squeezenet1_1@IMAGENET1K_V1", {}, f
    if kind == "robustbench":
        f = _save_crafted(where / "wrn.pt", {"state_dict": _prefixed(state)}, marker)
        return f"robustbench:{RB}", {"weights_path": str(f)}, f
    if kind == "robustbench-dir":  # RobustBench's own layout, read by RobustBench's own loader
        f = _save_crafted(where / "rb" / "cifar10" / "Linf" / "Ding2020MMA.pt", {"state_dict": _prefixed(state)},
                          marker)
        return f"robustbench:{RB}", {"model_dir": str(where / "rb")}, f
    if kind == "timm":
        f = _save_crafted(where / "test_vit.pth", state, marker)
        return "timm:test_vit", {"weights_path": str(f)}, f
    if kind == "openclip":
        f = _save_crafted(where / "clip.pt", state, marker)
        return "openclip:ViT-S-32-alt", {"weights_path": str(f)}, f
    raise AssertionError(kind)


KINDS = ["cifar-resnet", "zoo", "torchvision", "torchvision-hub", "robustbench", "robustbench-dir", "timm", "openclip"]


def _assert_refused(error, path, marker):
    assert not marker.exists(), "code from the checkpoint ran"
    assert isinstance(error, UntrustedCheckpointError) and isinstance(error, ValueError), repr(error)
    msg = str(error)
    assert str(path) in msg and "trust_checkpoint" in msg and "\n" not in msg, msg


@pytest.mark.parametrize("kind", KINDS)
def test_load_model_refuses_a_checkpoint_that_runs_code(kind, tmp_path):
    marker = tmp_path / "marker"
    name, options, path = _case(kind, tmp_path, marker)
    with pytest.raises(Exception) as e:  # noqa: PT011 -- the type is checked below, after the marker
        load_model(name, **options)
    _assert_refused(e.value, path, marker)


@pytest.mark.parametrize("kind", KINDS)
def test_extract_features_refuses_a_checkpoint_that_runs_code(kind, tmp_path):
    marker = tmp_path / "marker"
    name, options, path = _case(kind, tmp_path, marker)
    with pytest.raises(Exception) as e:  # noqa: PT011
        extract_features(name, "digits", layers=("logits",), root=tmp_path / "cache", progress=False, **options)
    _assert_refused(e.value, path, marker)
    assert not list((tmp_path / "cache").rglob("*.npz"))


def test_robustbench_loader_refuses_even_when_the_environment_forces_full_unpickling(tmp_path, monkeypatch):
    # torch honours TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD in any torch.load that does not say weights_only itself, as
    # RobustBench's loader does not: a setting in the user's shell must not turn into trust
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    name, options, path = _case("robustbench-dir", tmp_path, marker)
    with pytest.raises(Exception) as e:  # noqa: PT011
        load_model(name, **options)
    _assert_refused(e.value, path, marker)
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # the user's setting is back as it was


@pytest.mark.parametrize("kind", ["cifar-resnet", "zoo", "torchvision", "robustbench-dir"])
def test_a_trusted_checkpoint_loads_fully(kind, tmp_path):
    marker = tmp_path / "marker"
    name, options, path = _case(kind, tmp_path, marker)
    with pytest.raises(UntrustedCheckpointError):
        load_model(name, **options)
    assert not marker.exists()
    loaded = load_model(name, trust_checkpoint=True, **options)
    assert marker.is_dir()  # trusted: unpickled in full, payload included
    assert loaded.weights_file == path
    ref = _reference(kind.removesuffix("-dir").removesuffix("-hub"))
    x = torch.rand(2, *((1, 8, 8) if kind == "zoo" else (3, 32, 32)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), ref(x))
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ and "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ


def test_trust_is_not_part_of_the_features_cache_key(tmp_path):
    marker = tmp_path / "marker"
    name, options, _ = _case("cifar-resnet", tmp_path, marker)
    kw = dict(layers=("penultimate",), root=tmp_path / "cache", progress=False, n_per_class=1, **options)
    trusted = extract_features(name, "cifar10-sample", trust_checkpoint=True, **kw)
    assert marker.is_dir() and trusted["penultimate"].is_file()
    os.rmdir(marker)
    # the same features: served from the cache without reading the checkpoint again
    assert extract_features(name, "cifar10-sample", **kw) == trusted and not marker.exists()


@pytest.mark.parametrize("value", ["true", "false", 1, None])
def test_trust_must_be_said_with_a_boolean(value, tmp_path):
    marker = tmp_path / "marker"
    name, options, _ = _case("cifar-resnet", tmp_path, marker)
    with pytest.raises(ValueError, match="trust_checkpoint must be true or false"):
        load_model(name, trust_checkpoint=value, **options)
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- commands
def _crafted_weights_dir(tmp_path, marker):
    """One folder holding crafted weights for cifar-resnet:resnet20 and zoo:standard."""
    _case("cifar-resnet", tmp_path, marker)
    _, _, zoo = _case("zoo", tmp_path, marker)
    return zoo.parent


def _study(tmp_path, models, layers, **extract_options):
    datasets = {"cifar-resnet:resnet20": "cifar10-sample", "zoo:standard": "digits"}
    study = {"name": "trust", "layers": layers, "output_dir": str(tmp_path / "out"),
             "cache_dir": str(tmp_path / "cache"),
             "grids": [{"models": [m], "datasets": [datasets[m]], "extract_options": dict(extract_options)}
                       for m in models]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_plan_reads_no_weights_file(tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = _crafted_weights_dir(tmp_path, marker)
    path = _study(tmp_path, ["cifar-resnet:resnet20", "zoo:standard"], ["penultimate", "logits"],
                  weights_dir=str(folder))
    assert cli.main(["plan", str(path)]) == 0
    assert not marker.exists()
    out = capsys.readouterr().out
    assert str(folder / "resnet20-12fca82f.th") in out and str(folder / "standard.pt") in out


def test_plan_checks_layers_from_the_architecture_alone(tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = _crafted_weights_dir(tmp_path, marker)
    path = _study(tmp_path, ["cifar-resnet:resnet20"], ["layer4"], weights_dir=str(folder))
    assert cli.main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown layer 'layer4' for model 'cifar-resnet:resnet20'" in err and "'layer3'" in err
    assert not marker.exists()
    # and without any weights in place: the layers are still checked (the architecture needs no file)
    (tmp_path / "empty").mkdir()
    path = _study(tmp_path, ["cifar-resnet:resnet20"], ["layer4"], weights_dir=str(tmp_path / "empty"))
    assert cli.main(["plan", str(path)]) == 2
    assert "unknown layer 'layer4'" in capsys.readouterr().err


def test_plan_with_trust_still_reads_no_weights_file(tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = _crafted_weights_dir(tmp_path, marker)
    path = _study(tmp_path, ["cifar-resnet:resnet20"], ["penultimate"], weights_dir=str(folder),
                  trust_checkpoint=True)
    assert cli.main(["plan", str(path)]) == 0
    assert not marker.exists()
    from kstar_utils.study import expand_jobs, load_study

    # the opt-in reaches the jobs as written, and only where written
    (job,) = expand_jobs(load_study(path))
    assert job.extract_options["trust_checkpoint"] is True
    path = _study(tmp_path, ["cifar-resnet:resnet20"], ["penultimate"], weights_dir=str(folder))
    (job,) = expand_jobs(load_study(path))
    assert "trust_checkpoint" not in job.extract_options


def test_preflight_reads_no_weights_file(tmp_path, capsys):
    marker = tmp_path / "marker"
    folder = _crafted_weights_dir(tmp_path, marker)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"models": ["cifar-resnet:resnet20", "zoo:standard"], "dataset": "digits",
                                      "extract_options": {"weights_dir": str(folder)}}))
    assert cli.main(["preflight", "--params", str(params)]) == 0
    assert not marker.exists()
    out = capsys.readouterr().out
    # the weights searched are the ones in the params' weights_dir
    assert str(folder / "resnet20-12fca82f.th") in out and str(folder / "standard.pt") in out


# ---------------------------------------------------------------------------------------------- plain files
def test_a_safetensors_file_needs_no_trust(tmp_path):
    from safetensors.torch import save_file

    ref = _reference("torchvision")
    path = tmp_path / "squeezenet.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    loaded = load_model("torchvision:squeezenet1_1", weights_path=path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module(x), ref(x))


@pytest.mark.parametrize("damage", ["html", "truncated"])
def test_a_broken_file_still_fails_fast_naming_it(damage, tmp_path):
    from kstar_utils.models import CorruptWeightsError

    name, options, path = _case("cifar-resnet", tmp_path, tmp_path / "marker")
    if damage == "html":
        path.write_text("<!DOCTYPE html><html><title>Quota exceeded</title></html>")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for trust in (False, True):
        with pytest.raises(CorruptWeightsError, match=str(path)):
            load_model(name, trust_checkpoint=trust, **options)
    assert not (tmp_path / "marker").exists()
