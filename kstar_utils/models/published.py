"""What the published CIFAR-10 model sources share: the table entry, exact loading, and the registry adapter.

Each source module (models.abcrown, models.convex_adversarial, models.chenyaofo) owns one table of
:class:`PublishedModel` entries: the shipped file and its sha256, the architecture, the checkpoint layout, the
normalisation, how the model was trained, its family, paper and inner layers. This module turns such a table into a
registry source (``known_names``, ``is_valid``, ``pretrained_tag``, ``requirements``, ``load``, ``architecture``).

Loading is exact: the file's sha256 must equal the table's (a different file is not the published model),
``torch.load(weights_only=True)`` (no code from a checkpoint), the state dict is taken out of the layout, every
upstream key is renamed through the architecture's explicit key map, and ``load_state_dict(strict=True)``: a missing,
extra, unmapped or mis-shaped key is an error that names the file.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from kstar_utils.models import CorruptWeightsError, LoadedModel, ModelInfo, WeightsNotFoundError, WeightsRequirement

#: the folder of the shipped files, under the shipped data folder (data/ or $KSTAR_SHIPPED_DATA)
FOLDER = "cifar_models_public"
TRAINING_KINDS = ("standard", "adversarial", "certified")


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and std applied to [0, 1] RGB inputs, as the model was trained."""

    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class Training:
    """How a model was trained. kind: "standard", "adversarial" or "certified"; norm: "Linf" / "L2" for the threat
    model trained against (None for standard training); eps: its budget in [0, 1] pixel units (None where upstream
    does not state it); method: one line on the recipe."""

    kind: str
    norm: str | None
    eps: float | None
    method: str

    def __post_init__(self):
        if self.kind not in TRAINING_KINDS:
            raise ValueError(f"training kind must be one of {TRAINING_KINDS}; got {self.kind!r}")


@dataclass(frozen=True)
class PublishedModel:
    """One published checkpoint and everything needed to load and describe it.

    name:          the name within its source (registry name ``<source>:<name>``).
    file:          path of the shipped file under data/cifar_models_public/.
    sha256:        sha256 of that file, checked on every load.
    build:         architecture builder from models.architectures, called as build(mean=..., std=...).
    upstream_keys: (upstream prefix, our prefix) pairs renaming every key of the checkpoint's state dict.
    layout:        where the state dict sits in the checkpoint: () the checkpoint is the state dict; ("state_dict",)
                   under that key; ("state_dict", 0) the first element of a list under that key.
    normalization, training, family (architecture family, e.g. "cnn-a-wide"), paper (citation), upstream
    (repository@commit:path), inner_layers (named inner layers worth analysing, each distinct from "penultimate").
    """

    name: str
    file: str
    sha256: str
    build: Callable[..., Any]
    upstream_keys: tuple[tuple[str, str], ...]
    layout: tuple[Any, ...]
    normalization: Normalization
    training: Training
    family: str
    paper: str
    upstream: str
    inner_layers: tuple[str, ...]
    note: str = ""


# ---------------------------------------------------------------------------------------------- files and keys
def weights_dir(option=None) -> Path:
    from kstar_utils.io.paths import shipped

    return Path(option).expanduser() if option else shipped(FOLDER)


def weights_file(entry: PublishedModel, weights_dir_opt=None) -> Path:
    return weights_dir(weights_dir_opt) / entry.file


def state_dict_of(checkpoint: Any, layout: tuple[Any, ...], path: Path) -> dict:
    """The tensor dict at `layout` inside `checkpoint`; CorruptWeightsError naming `path` when it is not there."""
    import torch

    node = checkpoint
    for step in layout:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            raise CorruptWeightsError(f"{path}: no {step!r} in the checkpoint where its state dict should be "
                                      f"(layout {list(layout)}); is it the published file?") from None
    if not isinstance(node, Mapping) or not all(isinstance(v, torch.Tensor) for v in node.values()):
        raise CorruptWeightsError(f"{path}: the entry at layout {list(layout)} is not a state dict of tensors")
    return dict(node)


def rename_keys(state: Mapping[str, Any], upstream_keys: tuple[tuple[str, str], ...], path: Path) -> dict:
    """Rename upstream keys ("5.weight", "linear1.bias", ...) to ours ("fc1.weight", "fc1.bias") by the longest
    matching prefix of `upstream_keys`; a key no prefix matches is an error naming `path`."""
    rules = sorted(upstream_keys, key=lambda r: -len(r[0]))
    out, unmapped = {}, []
    for key, value in state.items():
        for old, new in rules:
            if key == old or key.startswith(old + "."):
                out[new + key[len(old):]] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise CorruptWeightsError(f"{path}: keys {unmapped[:5]} match none of the architecture's upstream names "
                                  f"{[old for old, _ in upstream_keys]}")
    return out


def load_exact(entry: PublishedModel, path: Path, *, check_sha256: bool = True):
    """Architecture of `entry` with the weights of `path`, loaded strictly, in eval mode on the CPU.

    Raises WeightsNotFoundError when the file is missing, CorruptWeightsError (naming the file) when its sha256 is
    not the table's, it cannot be read with weights_only=True, or its keys or shapes do not match the architecture.
    """
    import pickle

    import torch

    from kstar_utils.io.cache import sha256_file

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights of {entry.name} not found: searched {path}; they ship with the project "
                                   f"in data/{FOLDER}/{entry.file} (restore it from the repository)")
    if check_sha256:
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise CorruptWeightsError(f"{path} has sha256 {digest[:16]}..., not the published file's "
                                      f"{entry.sha256[:16]}...; restore data/{FOLDER}/{entry.file} from the repository")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise CorruptWeightsError(f"cannot read weights file {path} with weights_only=True: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    state = rename_keys(state_dict_of(checkpoint, entry.layout, path), entry.upstream_keys, path)
    module = build(entry)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[1:]) or str(e)
        raise CorruptWeightsError(f"{path} does not match the architecture of {entry.name} "
                                  f"({type(module).__name__}): {detail}") from None
    return module.eval()


def build(entry: PublishedModel):
    """The architecture of `entry` with random weights (no file read), in eval mode."""
    n = entry.normalization
    return entry.build(mean=n.mean, std=n.std).eval()


# ---------------------------------------------------------------------------------------------- registry adapter
class PublishedSource:
    """A registry source over one table: ``<prefix>:<name>`` for every name of `table`."""

    def __init__(self, prefix: str, table: Mapping[str, PublishedModel]):
        for key, entry in table.items():
            if key != entry.name:
                raise ValueError(f"table key {key!r} differs from its entry's name {entry.name!r}")
        self.prefix, self.table = prefix, dict(table)

    def known_names(self) -> list[str]:
        return list(self.table)

    def is_valid(self, name: str) -> bool:
        return name in self.table

    def entry(self, name: str) -> PublishedModel:
        if name not in self.table:
            close = difflib.get_close_matches(name, list(self.table), n=3, cutoff=0.4)
            raise ValueError(f"unknown model {self.prefix}:{name}; closest: {close or list(self.table)}")
        return self.table[name]

    def pretrained_tag(self, name: str, weights_dir=None, **options) -> str:
        """"<source>:<name>@<sha256 prefix of its file>" (the bare name when the file is missing)."""
        from kstar_utils.io.cache import sha256_file

        path = weights_file(self.entry(name), weights_dir)
        return f"{self.prefix}:{name}@{sha256_file(path)[:12]}" if path.is_file() else f"{self.prefix}:{name}"

    def requirements(self, name: str, weights_dir=None, **options) -> list[WeightsRequirement]:
        entry = self.entry(name)
        path = weights_file(entry, weights_dir)
        return [WeightsRequirement(f"{self.prefix}:{name}", path, path.is_file(),
                                   f"shipped with the project in data/{FOLDER}/{entry.file} (provenance in "
                                   f"data/{FOLDER}/README.md); restore it from the repository")]

    def _loaded(self, name: str, module, pretrained: str, path: Path | None) -> LoadedModel:
        from kstar_utils.models._common import to_tensor_if_needed

        entry = self.entry(name)
        n = entry.normalization
        return LoadedModel(
            name=f"{self.prefix}:{name}", module=module, preprocess=to_tensor_if_needed, run=module,
            output_layer="logits", head_module="linear", pretrained=pretrained, weights_file=path,
            preprocessing={"input": "(3, 32, 32) float32 in [0, 1], no resize",
                           "normalisation": f"inside the model ({n.name}): mean {n.mean}, std {n.std}"},
            extra={"penultimate_dim": module.linear.in_features, "family": entry.family,
                   "training": entry.training.kind, "inner_layers": entry.inner_layers},
        )

    def load(self, name: str, weights_dir=None, **options) -> LoadedModel:
        if options.get("weights_path"):
            raise ValueError(f"{self.prefix}:{name}: this source reads its shipped file by name (option weights_dir "
                             f"for a folder laid out like data/{FOLDER}/), not a weights_path file; got "
                             f"weights_path={options['weights_path']!r}")
        entry = self.entry(name)
        path = weights_file(entry, weights_dir)
        module = load_exact(entry, path)
        return self._loaded(name, module, self.pretrained_tag(name, weights_dir), path)

    def architecture(self, name: str, **options) -> LoadedModel:
        """The model `name` with random weights and its own normalisation; reads no file."""
        return self._loaded(name, build(self.entry(name)), "random", None)

    def describe(self, name: str) -> ModelInfo:
        """The table entry as a ModelInfo; the short name is the source's own name prefixed by the source, except
        for alpha-beta-CROWN's, whose names are unique among the shipped models as they are."""
        e = self.entry(name)
        short = name if self.prefix == "abcrown" else f"{self.prefix}-{name}"
        return ModelInfo(f"{self.prefix}:{name}", short, self.prefix, e.family, e.training.kind, e.training.norm,
                         e.training.eps, e.training.method, e.inner_layers)

    def accuracies(self, names, dataset: str) -> list[dict]:
        """The three accuracy axes the workbook measured (models.evaluation, data/cifar_accuracies/)."""
        from kstar_utils.models.evaluation import accuracy_rows

        return accuracy_rows(self.prefix, names, dataset)


#: the functions of a registry source (models.ModelSource) that a source module exports
SOURCE_FUNCTIONS = ("known_names", "is_valid", "pretrained_tag", "requirements", "load", "architecture", "describe",
                    "accuracies")


def export_source(prefix: str, table: Mapping[str, PublishedModel], namespace: dict) -> PublishedSource:
    """Make a source module a registry source over `table`: the PublishedSource's methods named in SOURCE_FUNCTIONS
    become functions of `namespace` (the module's ``globals()``), as the registry imports a source by its module."""
    source = PublishedSource(prefix, table)
    namespace.update({name: getattr(source, name) for name in SOURCE_FUNCTIONS})
    return source
