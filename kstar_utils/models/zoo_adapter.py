"""Adapter for the embedded digits zoo (``zoo:<name>``): small CNNs on 8x8 digits, weights shipped with the package.

models.digits_zoo provides ZOO_MODELS and load_zoo_model(name, weights_dir=None) (eval mode, input (B, 1, 8, 8) in
[0, 1], output logits (B, 10), final Linear named ``fc``).
"""
from __future__ import annotations

from pathlib import Path

from kstar_utils.models import LoadedModel, WeightsRequirement
from kstar_utils.models._common import sha256_file, to_tensor_if_needed


def _zoo():
    from kstar_utils.models import digits_zoo

    return digits_zoo


def known_names() -> list[str]:
    try:
        return list(_zoo().ZOO_MODELS)
    except ImportError:
        return []


def is_valid(name: str) -> bool:
    return name in known_names()


def pretrained_tag(name: str, weights_dir=None, **options) -> str:
    """"zoo:<name>@<sha256 prefix of its weights file>": retraining the zoo (`make zoo`) changes the tag and so the
    cache key of every feature file made from it, instead of silently reusing features of the old weights."""
    path = _weights_file(name, weights_dir)
    if path is None or not path.exists():
        return f"zoo:{name}"
    return f"zoo:{name}@{sha256_file(path)[:12]}"


def _weights_file(name: str, weights_dir=None) -> Path | None:
    zoo = _zoo()
    return Path(zoo.weights_path(name, weights_dir)) if hasattr(zoo, "weights_path") else None


def requirements(name: str, weights_dir=None, **options) -> list[WeightsRequirement]:
    # the zoo's weights ship with the project in data/zoo/ and are rebuilt offline by `kstar zoo train --zoo digits`
    path = _weights_file(name, weights_dir)
    present = path is None or path.exists()
    return [WeightsRequirement(f"zoo:{name}", path, present,
                               "shipped in data/zoo/; rebuild with `kstar zoo train --zoo digits`")]


def load(name: str, weights_dir=None, trust_checkpoint: bool = False, **options) -> LoadedModel:
    if options.get("weights_path"):
        raise ValueError(f"{name}: this source reads its weights by name from weights_dir (a folder), not from a "
                         f"weights_path file; got weights_path={options['weights_path']!r}")
    module = _zoo().load_zoo_model(name, weights_dir=weights_dir, trust=trust_checkpoint)
    return _loaded(name, module, pretrained_tag(name, weights_dir), _weights_file(name, weights_dir))


def architecture(name: str, **options) -> LoadedModel:
    """The zoo's CNN with random weights; no file is read."""
    _zoo().recipe(name)  # an unknown name fails here, with the closest names
    return _loaded(name, _zoo().SmallCNN(), "random", None)


def _loaded(name: str, module, pretrained: str, weights_file: Path | None) -> LoadedModel:
    module.eval()
    return LoadedModel(
        name=f"zoo:{name}", module=module, preprocess=to_tensor_if_needed, run=module, output_layer="logits",
        head_module="fc", pretrained=pretrained, weights_file=weights_file,
        preprocessing={"input": "(1, 8, 8) float32 in [0, 1]", "normalisation": "none"},
    )
