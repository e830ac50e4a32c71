"""Registry adapter for ``cifar-resnet:<name>``: the pretrained CIFAR-10 ResNets and the fine-tuned ResNet-20s.

Names:
- ``resnet20``, ``resnet32``, ``resnet44``, ``resnet56``: the pretrained models (models.cifar_resnet);
- ``resnet20-ft``, ``resnet20-noise``, ``resnet20-pgd1`` ... ``resnet20-pgd8``: ResNet-20 fine-tuned by this project
  on the shipped CIFAR-10 training images (models.cifar_zoo).
Layers: ``layer1``, ``layer2``, ``layer3`` (stage outputs, globally average-pooled), ``penultimate`` (the (B, 64) input
of ``linear``, equal to pooled layer3), ``logits`` and any module name.
"""
from __future__ import annotations

from pathlib import Path

from kstar_utils.models import LoadedModel, ModelInfo, WeightsNotFoundError, WeightsRequirement
from kstar_utils.models.cifar_resnet import MEAN, PRETRAINED, STD, UPSTREAM_URL, build, load_weights, weights_file


def _finetuned_names() -> dict[str, str]:
    from kstar_utils.models import cifar_zoo

    return {r.name: r.base for r in cifar_zoo.FINETUNED}


def known_names() -> list[str]:
    return list(PRETRAINED) + list(_finetuned_names())


def is_valid(name: str) -> bool:
    return name in known_names()


def base_of(name: str) -> str:
    """The pretrained architecture a name is built on ("resnet20-pgd8" -> "resnet20")."""
    return name if name in PRETRAINED else _finetuned_names()[name]


def load_model(name: str, weights_dir_opt=None, *, trust: bool = False):
    """The pretrained or fine-tuned model `name` in eval mode, on the CPU (weights read as weights only unless
    `trust`)."""
    if not is_valid(name):
        import difflib

        close = difflib.get_close_matches(name, known_names(), n=3, cutoff=0.4)
        raise ValueError(f"unknown CIFAR ResNet {name!r}; closest: {close or known_names()}")
    path = weights_file(name, weights_dir_opt)
    if not path.is_file():
        req = requirements(name, weights_dir_opt)[0]
        raise WeightsNotFoundError(f"weights for cifar-resnet:{name} not found: searched {path}. "
                                   f"To provide them: {req.how_to_provide}")
    return load_weights(base_of(name), path, trust=trust)


# ---------------------------------------------------------------------------------------------- registry adapter
def pretrained_tag(name: str, weights_dir=None, **options) -> str:
    """"<name>@<sha256 prefix of its weights file>": retrained weights change every cache key built on them."""
    from kstar_utils.models._common import sha256_file

    path = weights_file(name, weights_dir)
    return f"cifar-resnet:{name}@{sha256_file(path)[:12]}" if path.is_file() else f"cifar-resnet:{name}"


def requirements(name: str, weights_dir=None, **options) -> list[WeightsRequirement]:
    path = weights_file(name, weights_dir)
    if name in PRETRAINED:
        how = (f"shipped in data/cifar_resnets/; upstream: {UPSTREAM_URL.format(file=PRETRAINED[name][0])} "
               f"(or allow_download=True)")
    else:
        how = "shipped in data/cifar_resnets/finetuned/; rebuild with `kstar zoo train --zoo cifar`"
    return [WeightsRequirement(f"cifar-resnet:{name}", path, path.is_file(), how)]


def _download(name: str, path: Path) -> None:
    import torch

    if name not in PRETRAINED:
        raise WeightsNotFoundError(f"cifar-resnet:{name} is made by this project and cannot be downloaded; "
                                   "rebuild it with `kstar zoo train --zoo cifar`")
    path.parent.mkdir(parents=True, exist_ok=True)
    file = PRETRAINED[name][0]
    # the upstream names end in the first 8 hex digits of the file's sha256: torch checks them before keeping it
    torch.hub.download_url_to_file(UPSTREAM_URL.format(file=file), str(path), hash_prefix=file.rsplit("-", 1)[1][:8],
                                   progress=False)


def load(name: str, weights_dir=None, allow_download: bool = False, trust_checkpoint: bool = False,
         **options) -> LoadedModel:
    if options.get("weights_path"):
        raise ValueError(f"{name}: this source reads its weights by name from weights_dir (a folder), not from a "
                         f"weights_path file; got weights_path={options['weights_path']!r}")
    path = weights_file(name, weights_dir)
    if not path.is_file() and allow_download:
        _download(name, path)
    module = load_model(name, weights_dir, trust=trust_checkpoint)
    return _loaded(name, module, pretrained_tag(name, weights_dir), path)


def architecture(name: str, **options) -> LoadedModel:
    """`name`'s architecture (its base ResNet) with random weights; no file is read."""
    return _loaded(name, build(base_of(name)).eval(), "random", None)


def _loaded(name: str, module, pretrained: str, weights_file: Path | None) -> LoadedModel:
    from kstar_utils.models._common import to_tensor_if_needed

    return LoadedModel(
        name=f"cifar-resnet:{name}", module=module, preprocess=to_tensor_if_needed, run=module,
        output_layer="logits", head_module="linear", pretrained=pretrained,
        weights_file=weights_file, preprocessing={"input": "(3, 32, 32) float32 in [0, 1], no resize",
                                                  "normalisation": f"inside the model: mean {MEAN}, std {STD}"},
        extra={"penultimate_dim": 64, "base": base_of(name)},
    )


#: the residual stages before the last, globally average-pooled (layer3 pooled is `penultimate` itself)
INNER_LAYERS = ("layer1", "layer2")


def describe(name: str) -> ModelInfo:
    """The pretrained ResNets are standard training (Y. Idelbayev's); every fine-tuning is the workbook's own, on
    4,660 training images, whatever its recipe (plain, Gaussian noise, PGD)."""
    if name in PRETRAINED:
        return ModelInfo(f"cifar-resnet:{name}", name, "cifar-resnet", "resnet", "standard", None, 0.0,
                         "pretrained CIFAR ResNet of Y. Idelbayev (akamaster/pytorch_resnet_cifar10)", INNER_LAYERS)
    from kstar_utils.models import cifar_zoo

    r = cifar_zoo.recipe(name)
    norm = {"pgd": "Linf", "noise": "gaussian"}.get(r.kind)
    return ModelInfo(f"cifar-resnet:{name}", name, "cifar-resnet", "resnet", "own-fine-tune", norm,
                     r.eps if r.kind != "clean" else 0.0,
                     f"{r.kind} fine-tuning of {r.base}, {r.epochs} epochs on 4,660 CIFAR-10 training images",
                     INNER_LAYERS)


def accuracies(names, dataset: str) -> list[dict]:
    """The three accuracy axes the workbook measured (models.evaluation, data/cifar_accuracies/)."""
    from kstar_utils.models.evaluation import accuracy_rows

    return accuracy_rows("cifar-resnet", names, dataset)
