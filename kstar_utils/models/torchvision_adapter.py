"""Adapter for torchvision classifiers: ``torchvision:<name>[@<weights tag>]``, e.g. ``torchvision:resnet50@IMAGENET1K_V2``.

Without a tag the architecture gets random weights (tests, dry runs); ``@DEFAULT`` picks torchvision's default
weights. Weight files are read from the torch hub cache (``torch.hub.get_dir()/checkpoints``, moved by ``$TORCH_HOME``)
or from ``weights_path``; nothing is downloaded unless ``allow_download=True``. Files are read as weights only unless
``trust_checkpoint=True`` (models._common.load_checkpoint). Preprocessing is the weights' own ``transforms()``; for
random weights the standard ImageNet resize-256 / crop-224 / normalise.
"""
from __future__ import annotations

import os
from pathlib import Path

from kstar_utils.models import LoadedModel, ModelInfo, WeightsNotFoundError, WeightsRequirement
from kstar_utils.models._common import load_checkpoint, pil_transform, reading_checkpoint

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _split(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition("@")
    return arch, (tag or None)


def _archs() -> list[str]:
    import torchvision.models as tvm

    return list(tvm.list_models(module=tvm))


def known_names() -> list[str]:
    """Architectures, then architecture@TAG for every weights tag torchvision knows (for suggestions)."""
    import torchvision.models as tvm

    tagged = [f"{a}@{w.name}" for a in _archs() for w in tvm.get_model_weights(a)]
    return _archs() + tagged


def _weights(arch: str, tag: str):
    import torchvision.models as tvm

    enum = tvm.get_model_weights(arch)
    return enum.DEFAULT if tag == "DEFAULT" else enum[tag]


def is_valid(name: str) -> bool:
    arch, tag = _split(name)
    if arch not in _archs():
        return False
    if tag is None:
        return True
    try:
        _weights(arch, tag)
        return True
    except (KeyError, ValueError):
        return False


def pretrained_tag(name: str, weights_path=None, **options) -> str:
    arch, tag = _split(name)
    if weights_path is not None:
        return f"file:{Path(weights_path).name}"
    return str(_weights(arch, tag)).split(".", 1)[-1] if tag else "random"


def _hub_file(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def requirements(name: str, weights_path=None, **options) -> list[WeightsRequirement]:
    arch, tag = _split(name)
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        return [WeightsRequirement(f"torchvision:{name}", p, p.is_file(), "check the weights_path you passed")]
    if tag is None:
        return [WeightsRequirement(f"torchvision:{name}", None, True, "random weights: nothing needed")]
    w = _weights(arch, tag)
    path = _hub_file(w.url)
    return [WeightsRequirement(f"torchvision:{name}", path, path.is_file(),
                               f"download {w.url} to {path} (torch hub cache; set TORCH_HOME to move it), "
                               f"pass weights_path=<file>, or allow_download=True")]


def last_linear(module) -> str | None:
    """Qualified name of the last nn.Linear registered in `module` (the classifier head of torchvision/timm nets)."""
    from torch import nn

    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    return names[-1] if names else None


def _standard_transform():
    from torchvision import transforms as T

    return T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _build(arch: str, tag: str | None):
    """The architecture with random weights, with as many classes as the tag's weights have."""
    import torchvision.models as tvm

    w = _weights(arch, tag) if tag else None
    num_classes = len(w.meta["categories"]) if w is not None else None
    return tvm.get_model(arch, weights=None, **({"num_classes": num_classes} if num_classes else {})), w


def load(name: str, weights_path=None, allow_download: bool = False, trust_checkpoint: bool = False,
         **options) -> LoadedModel:
    arch, tag = _split(name)
    file = None
    model, w = _build(arch, tag)
    if tag is None and weights_path is None:
        tf = _standard_transform()
    else:
        req = requirements(name, weights_path=weights_path)[0]
        if not req.present and not allow_download:
            raise WeightsNotFoundError(f"weights for torchvision:{name} not found: searched {req.path}. "
                                       f"To provide them: {req.how_to_provide}")
        file = req.path if req.present else None
        if file is not None:
            model.load_state_dict(load_checkpoint(file, trust=trust_checkpoint))
        else:  # allow_download: torch hub fetches the file (its name carries a sha256 prefix, checked) and reads it
            with reading_checkpoint(w.url, trust=trust_checkpoint):
                state = w.get_state_dict(progress=False, check_hash=True, weights_only=not trust_checkpoint)
            model.load_state_dict(state)
        # the weights' own transforms (they accept PIL images and tensors)
        tf = w.transforms() if w is not None else _standard_transform()
    return _loaded(name, model, tf, pretrained_tag(name, weights_path), file)


def architecture(name: str, **options) -> LoadedModel:
    """The architecture with random weights (as many classes as the tag's weights); no file is read."""
    arch, tag = _split(name)
    model, w = _build(arch, tag)
    return _loaded(name, model, w.transforms() if w is not None else _standard_transform(), "random", None)


def _loaded(name: str, model, tf, pretrained: str, file: Path | None) -> LoadedModel:
    model.eval()
    return LoadedModel(
        name=f"torchvision:{name}", module=model, preprocess=pil_transform(tf), run=model, output_layer="logits",
        head_module=last_linear(model), pretrained=pretrained, weights_file=file,
        preprocessing={"transform": repr(tf)},
    )


def describe(name: str) -> ModelInfo:
    """Standard (ImageNet) training where a weights tag is named, else random weights."""
    tagged = _split(name)[1] is not None
    return ModelInfo(f"torchvision:{name}", name, "torchvision", _split(name)[0], "standard" if tagged else "random", None, None,
                     "torchvision weights" if tagged else "random initialisation")


def accuracies(names, dataset: str) -> list[dict]:
    """The workbook ships no accuracy table for torchvision models."""
    return []
