"""Adapter for the embedded digits zoo (``zoo:<name>``): small CNNs on 8x8 digits, weights shipped with the package.

models.digits_zoo provides ZOO_MODELS and load_zoo_model(name, weights_dir=None) (eval mode, input (B, 1, 8, 8) in
[0, 1], output logits (B, 10), final Linear named ``fc``).
"""
from __future__ import annotations

from pathlib import Path

from kstar_utils.models import LoadedModel, ModelInfo, WeightsRequirement
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


def describe(name: str) -> ModelInfo:
    """Small CNNs the workbook trains from scratch on the digits (`untrained` keeps its random initialisation)."""
    r = next(r for r in _zoo().RECIPES if r.name == name)
    norm = {"pgd": "Linf", "noise": "gaussian"}.get(r.kind)
    return ModelInfo(f"zoo:{name}", name, "zoo", "small-cnn", "random" if r.kind == "none" else "own-training", norm,
                     r.eps if norm else (0.0 if r.kind == "clean" else None),
                     f"{r.kind} training on scikit-learn's digits, {r.epochs} epochs" if r.kind != "none" else
                     "random initialisation", ("features.1", "features.3"))


def accuracies(names, dataset: str) -> list[dict]:
    """Clean and robust accuracy measured when the zoo was trained (data/zoo/zoo_metrics.csv), on the digits."""
    if dataset != "digits":
        return []
    from kstar_utils.io.tables import load_measured_metrics

    table = load_measured_metrics("zoo").set_index("model")
    return [{"model": n, "clean_acc": float(table.at[f"zoo:{n}", "clean_acc"]),
             "robust_acc": float(table.at[f"zoo:{n}", "robust_acc"]),
             "eval_eps": float(table.at[f"zoo:{n}", "eval_eps"]), "accuracy_source": "data/zoo/zoo_metrics.csv (measured)"}
            for n in names if f"zoo:{n}" in table.index]
