"""One registry of vision models: ``<source>:<name>`` -> a loaded model, its preprocessing and its layers.

Sources (one adapter module each, imported lazily so that e.g. the digits zoo works without open_clip):

- ``zoo:<name>``                                   the embedded digits models (``kstar_utils.models.digits_zoo``)
- ``cifar-resnet:<name>``                          pretrained CIFAR-10 ResNet-20/32/44/56 and the fine-tuned ResNet-20s
                                                    (shipped in data/cifar_resnets/), e.g. ``cifar-resnet:resnet20``
- ``openclip:<arch>/<pretrained tag>``             e.g. ``openclip:ViT-B-32/laion2b_s34b_b79k``; ``openclip:RN50``
                                                    without a tag builds random weights
- ``robustbench:<dataset>/<threat>/<name>``        e.g. ``robustbench:cifar10/Linf/Carmon2019Unlabeled``
- ``torchvision:<name>[@<weights tag>]``           e.g. ``torchvision:resnet50@IMAGENET1K_V2``
- ``timm:<name>[@<pretrained tag>]``               e.g. ``timm:resnet18`` (random weights unless ``pretrained=True``)
- ``abcrown:<name>``, ``convex:<name>``,           twenty published CIFAR-10 models (alpha-beta-CROWN's, Wong et al.
  ``chenyaofo:<name>``                             2018, chenyaofo's), shipped in data/cifar_models_public/, e.g.
                                                    ``abcrown:cnn-a-adv``, ``convex:small-8px``, ``chenyaofo:resnet56``

Layer names understood by every model: ``logits`` (or ``embedding`` for OpenCLIP), ``penultimate`` (the input of the
final linear layer, where the model has one) and any qualified module name of ``module.named_modules()``.
Weights come only from local caches unless ``allow_download=True`` (see ``docs/models_and_data.md``), and are read
as weights only: a checkpoint that needs a full unpickle (which can run code stored in it) is refused with
UntrustedCheckpointError unless the caller passes ``trust_checkpoint=True``. ``build_architecture`` gives a model's
architecture with random weights and reads no file at all (the checks before a run use it).

Each adapter module is one source and owns everything the workbook knows about its models (``ModelSource``):
``known_names``, ``is_valid``, ``pretrained_tag`` (the weights' identity, with their digest where there is a file),
``requirements`` (what must be on disk), ``load`` (with the weights, preprocessing and layers), ``architecture``
(random weights, no file read), ``describe`` (what a model is: family, training) and ``accuracies`` (where its
accuracies come from); optionally ``feature_key`` (options that change its features, beyond the weights) and
``ZERO_SHOT`` (it can classify by text prompts). Nothing outside models/ asks which source a name is from.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

SOURCES = {
    "zoo": "kstar_utils.models.zoo_adapter",
    "cifar-resnet": "kstar_utils.models.cifar_adapter",
    "openclip": "kstar_utils.models.openclip_adapter",
    "robustbench": "kstar_utils.models.robustbench_adapter",
    "torchvision": "kstar_utils.models.torchvision_adapter",
    "timm": "kstar_utils.models.timm_adapter",
    "abcrown": "kstar_utils.models.abcrown",
    "convex": "kstar_utils.models.convex_adversarial",
    "chenyaofo": "kstar_utils.models.chenyaofo",
}

#: how a model was trained, as figures and tables group models: by its authors ("standard", "adversarial" (an attack
#: in the training loop), "certified" (training through a provable bound), "language-image" (contrastive image-text
#: pre-training)) or by the workbook ("own-fine-tune": the workbook's fine-tunings of a published model, whatever the
#: recipe; "own-training": the workbook's models trained from scratch), or "random" (no training)
TRAINING_KINDS = ("standard", "adversarial", "certified", "own-fine-tune", "own-training", "language-image", "random")


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, as its source knows it.

    name: the registry name; short: a display name, unique among the shipped models ("resnet20", "cnn-a-adv",
    "chenyaofo-resnet20"); source: the registry source; family: the architecture family ("resnet", "cnn-a-wide", ...);
    training: one of TRAINING_KINDS; train_norm, train_eps: the threat model trained against (None where there is
    none or it is not stated); detail: one line on the recipe or origin; inner_layers: the model's named inner layers
    worth analysing, input side first (what the layer name "inner" stands for), each distinct from "penultimate".
    """

    name: str
    short: str
    source: str
    family: str = ""
    training: str = "standard"
    train_norm: str | None = None
    train_eps: float | None = None
    detail: str = ""
    inner_layers: tuple[str, ...] = ()

    def __post_init__(self):
        if self.training not in TRAINING_KINDS:
            raise ValueError(f"training must be one of {TRAINING_KINDS}; got {self.training!r} for {self.name}")


class ModelSource(Protocol):
    """The functions every adapter module defines (see the module docstring); `name` is the part after "<source>:".
    Optional: feature_key(name, **options) -> dict (default {}) and ZERO_SHOT: bool (default False)."""

    def known_names(self) -> list[str]: ...
    def is_valid(self, name: str) -> bool: ...
    def pretrained_tag(self, name: str, **options) -> str: ...
    def requirements(self, name: str, **options) -> list["WeightsRequirement"]: ...
    def load(self, name: str, **options) -> "LoadedModel": ...
    def architecture(self, name: str, **options) -> "LoadedModel": ...
    def describe(self, name: str) -> ModelInfo: ...
    def accuracies(self, names: Sequence[str], dataset: str) -> list[dict]: ...


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not in the local cache. The message names the path searched and how to provide them."""


class CorruptWeightsError(RuntimeError):
    """A weights file exists but cannot be a checkpoint (truncated, an HTML error page, ...). Names the file."""


class UntrustedCheckpointError(ValueError):
    """A checkpoint that only a full unpickle could read (it pickles objects other than tensors and plain containers,
    and unpickling can run code stored in the file), refused because the caller did not trust it. The message, one
    line, names the file and the explicit opt-in (``trust_checkpoint``)."""


@dataclass(frozen=True)
class WeightsRequirement:
    """One weights file (or cache entry) a model needs: where it is searched and how to provide it."""

    model: str
    path: Path | None  # the file or cache folder searched; None for random-init models (nothing needed)
    present: bool
    how_to_provide: str


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for feature extraction.

    module:      the nn.Module in eval mode.
    preprocess:  callable turning one dataset item (PIL image or CHW tensor) into a CHW float tensor.
    run:         callable (batch (B, C, H, W) tensor) -> the model output of layer `output_layer`, (B, K).
    output_layer: "logits" for classifiers, "embedding" for OpenCLIP image encoders.
    head_module: qualified name of the final Linear layer; its input is the "penultimate" layer. None if none.
    pretrained:  the weights tag or file name ("random" when randomly initialised).
    weights_file: the checkpoint file read, when there is one (its sha256 goes into the provenance).
    preprocessing: a JSON-able description of `preprocess` (image size, mean, std, ...), for the provenance.
    """

    name: str
    module: Any
    preprocess: Callable[[Any], Any]
    run: Callable[[Any], Any]
    output_layer: str
    head_module: str | None
    pretrained: str
    weights_file: Path | None = None
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: only modules under these prefixes run on images (OpenCLIP: "visual"); empty = all modules
    image_modules: tuple[str, ...] = ()

    def layer_names(self) -> list[str]:
        """Every layer name this model accepts: the special names it supports, then its (image-path) module names."""
        special = [self.output_layer] + (["penultimate"] if self.head_module is not None else [])
        prefixes = self.image_modules
        return special + [n for n, _ in self.module.named_modules()
                          if n and (not prefixes or any(n == p or n.startswith(p + ".") for p in prefixes))]

    def check_layers(self, layers) -> tuple[str, ...]:
        """Validate layer names early; unknown names raise ValueError with the closest valid names."""
        layers = (layers,) if isinstance(layers, str) else tuple(layers)
        if not layers:
            raise ValueError("no layers requested")
        valid = self.layer_names()
        valid_set = set(valid)
        for layer in layers:
            if layer not in valid_set:
                close = difflib.get_close_matches(layer, valid, n=5, cutoff=0.5)
                hint = f"; closest: {close}" if close else f"; special layers: {valid[:2]}"
                raise ValueError(f"unknown layer {layer!r} for model {self.name!r}{hint}")
        return layers


def split_name(name: str) -> tuple[str, str]:
    """'openclip:ViT-B-32/openai' -> ('openclip', 'ViT-B-32/openai'); raises ValueError for an unknown source."""
    if not isinstance(name, str) or ":" not in name:
        raise ValueError(
            f"model names look like '<source>:<name>' with source in {sorted(SOURCES)}, e.g. 'zoo:standard'; "
            f"got {name!r}" + _suggest(str(name), known_model_names())
        )
    source, rest = name.split(":", 1)
    if source not in SOURCES:
        close = difflib.get_close_matches(source, list(SOURCES), n=3, cutoff=0.4)
        raise ValueError(f"unknown model source {source!r} in {name!r}; valid sources: {sorted(SOURCES)}"
                         + (f"; closest: {close}" if close else ""))
    return source, rest


def _adapter(source: str):
    return importlib.import_module(SOURCES[source])


def _suggest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.5)
    return f"; closest valid names: {close}" if close else ""


def known_model_names(source: str | None = None) -> list[str]:
    """Valid names of one source (or all sources whose library is installed), prefixed with the source."""
    out: list[str] = []
    for src in [source] if source else list(SOURCES):
        try:
            out += [f"{src}:{n}" for n in _adapter(src).known_names()]
        except ImportError:  # an optional library is missing: that source simply has no names
            continue
    return out


def check_model_name(name: str) -> str:
    """Raise ValueError, with the closest valid names, unless `name` is a model the registry can build."""
    source, rest = split_name(name)
    adapter = _adapter(source)
    if not adapter.is_valid(rest):
        candidates = [f"{source}:{n}" for n in adapter.known_names()]
        raise ValueError(f"unknown model {name!r}" + (_suggest(name, candidates) or
                                                      f"; e.g. {candidates[:5]}"))
    return name


def load_model(name: str, *, device=None, trust_checkpoint: bool = False, **options) -> LoadedModel:
    """Build model `name` with its weights from the local cache (see the module docstring for names and options).

    Common options: ``allow_download`` (False), ``weights_path`` (an explicit checkpoint file), ``pretrained``
    (timm/torchvision), ``normalize`` (OpenCLIP embedding, True). ``trust_checkpoint`` (False): checkpoints are read
    with torch's weights-only unpickler; only True allows a full unpickle of a file that needs it, which runs any
    code the file holds, so pass it only for files whose origin you trust. Raises ValueError for unknown names,
    WeightsNotFoundError when weights are missing, CorruptWeightsError when a checkpoint cannot be read,
    UntrustedCheckpointError (a ValueError) when one needs trust it was not given. Random weights (no pretrained
    tag) are drawn from seed 0 without touching the caller's random state, so every load gives the same model and
    cached features of it stay valid.
    """
    import torch

    check_model_name(name)
    trust = _trust(trust_checkpoint)
    source, rest = split_name(name)
    with torch.random.fork_rng(devices=[]):  # random weights (tag "random") are the same on every load
        torch.manual_seed(0)
        loaded = _adapter(source).load(rest, trust_checkpoint=trust, **options)
    if device is not None:
        loaded.module.to(device)
    loaded.module.eval()
    return loaded


def build_architecture(name: str, **options) -> LoadedModel:
    """The architecture of model `name` with random weights (seed 0), in eval mode, on the CPU: the same modules,
    output layer and head as `load_model` gives, built without reading or downloading any file.

    For checks before a run (layer names): a tag or checkpoint only fills the same modules, so their names do not
    depend on the weights, and a 1.7 GB checkpoint need not be present, or trusted, to check them. options: as for
    load_model; those that only say where the weights are, or whether to trust them, are accepted and unused (the
    trust option is still checked to be a boolean). ``pretrained`` is the tag "random".
    """
    import torch

    check_model_name(name)
    _trust(options.pop("trust_checkpoint", False))
    source, rest = split_name(name)
    adapter = _adapter(source)
    if not hasattr(adapter, "architecture"):
        raise ValueError(f"model source {source!r} cannot build the architecture of {name!r} without its weights "
                         f"(its adapter {SOURCES[source]} has no architecture())")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loaded = adapter.architecture(rest, **options)
    loaded.module.eval()
    return loaded


def _trust(value) -> bool:
    """The trust_checkpoint option, which must be said with a boolean: a string such as "false" is truthy, so
    anything else is refused rather than read as trust."""
    if not isinstance(value, bool):
        raise ValueError(f"trust_checkpoint must be true or false; got {value!r} ({type(value).__name__})")
    return value


def weights_requirements(name: str, **options) -> list[WeightsRequirement]:
    """What weights `name` needs and whether they are present locally (for the pre-flight check)."""
    check_model_name(name)
    source, rest = split_name(name)
    return list(_adapter(source).requirements(rest, **options))


def model_pretrained_tag(name: str, **options) -> str:
    """The weights identity recorded in cache keys, without loading the model."""
    source, rest = split_name(name)
    return _adapter(source).pretrained_tag(rest, **options)


def describe(name: str) -> ModelInfo:
    """What model `name` is (ModelInfo), from its source."""
    check_model_name(name)
    source, rest = split_name(name)
    return _adapter(source).describe(rest)


#: the layer name that stands for each model's own inner layers (ModelInfo.inner_layers), so one list of layers,
#: e.g. ["inner", "penultimate", "logits"], serves models of any architecture
INNER = "inner"


def expand_layers(name: str, layers) -> tuple[str, ...]:
    """The layers of model `name` that `layers` asks for: "inner" replaced by the model's inner layers (input side
    first), duplicates dropped, order kept."""
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    out: list[str] = []
    for layer in layers:
        out.extend(describe(name).inner_layers if layer == INNER else (layer,))
    return tuple(dict.fromkeys(out))


def layer_depth(name: str, layer: str) -> float:
    """Where `layer` sits in model `name`, from the input side (0) to the output (1): its inner layers evenly in
    order, then "penultimate", then the output layer ("logits" / "embedding"); NaN for any other module name. What
    the depth profile of models of different architectures is drawn against."""
    steps = [*describe(name).inner_layers, "penultimate", "output"]
    key = "output" if layer in ("logits", "embedding") else layer
    return steps.index(key) / (len(steps) - 1) if key in steps else float("nan")


def short_name(name: str) -> str:
    """The display name of a model: its source's short name, or the part after "<source>:" for a name no source
    knows (e.g. the model label of imported features)."""
    try:
        return describe(name).short
    except (ValueError, ImportError):
        return str(name).split(":", 1)[-1]


#: accuracy columns, fractions in [0, 1]: what the sources' `accuracies` fill (io.tables.ACCURACY_COLUMNS)
def accuracies(models: Sequence[str], datasets: Sequence[str]) -> "pd.DataFrame":
    """Every accuracy the workbook knows for each (model, dataset) pair, asked of each model's source: one row per
    pair with model, dataset, the accuracy columns of io.tables.ACCURACY_COLUMNS (NaN where nothing is known),
    eval_eps and accuracy_source (where the numbers come from)."""
    import numpy as np
    import pandas as pd

    from kstar_utils.io.tables import ACCURACY_COLUMNS

    rows = {(m, d): {"model": m, "dataset": d, "eval_eps": np.nan, "accuracy_source": ""}
            for m in models for d in datasets}
    by_source: dict[str, list[str]] = {}
    for m in dict.fromkeys(models):
        check_model_name(m)
        by_source.setdefault(split_name(m)[0], []).append(m)
    for source, names in by_source.items():
        adapter = _adapter(source)
        for d in datasets:
            for found in adapter.accuracies([split_name(m)[1] for m in names], d):
                rows[(f"{source}:{found['model']}", d)].update({k: v for k, v in found.items() if k != "model"})
    out = pd.DataFrame(list(rows.values()))
    for c in ACCURACY_COLUMNS:
        if c not in out.columns:
            out[c] = np.nan
    return out[["model", "dataset", *ACCURACY_COLUMNS, "eval_eps", "accuracy_source"]]


def feature_key(name: str, **options) -> dict[str, Any]:
    """What, beyond the weights, changes the features of model `name` under these options (e.g. OpenCLIP's
    embedding normalisation): part of every features cache key."""
    source, rest = split_name(name)
    fn = getattr(_adapter(source), "feature_key", None)
    return dict(fn(rest, **options)) if fn is not None else {}


def supports_zero_shot(name: str) -> bool:
    """Whether model `name` can classify by text prompts (its source's ZERO_SHOT)."""
    return bool(getattr(_adapter(split_name(name)[0]), "ZERO_SHOT", False))


__all__ = [
    "ModelInfo", "ModelSource", "TRAINING_KINDS", "INNER", "describe", "expand_layers", "layer_depth", "short_name", "accuracies", "feature_key",
    "supports_zero_shot", "LoadedModel", "WeightsRequirement", "WeightsNotFoundError", "CorruptWeightsError", "UntrustedCheckpointError",
    "SOURCES", "load_model", "build_architecture", "check_model_name", "known_model_names", "weights_requirements",
    "split_name", "model_pretrained_tag",
]
