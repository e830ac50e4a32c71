"""Pre-flight check: every weight file and dataset a planned run needs, whether each is present, where it was
searched and how to provide it. Nothing is loaded or downloaded, and no weights file is read (only whether it exists).

    kstar preflight --model openclip:ViT-B-32/laion2b_s34b_b79k --dataset cifar10 --data-root ~/data
    kstar preflight --params notebooks/params/openclip_vitb32_cifar10.yaml

Exit status 0 when everything is present, 1 otherwise (so scripts can stop before a long run).

The checks a run makes before anything starts (``kstar plan`` / ``kstar run``) also live here: output folders that
can be created and written (`check_writable_folder`) and layer names each model has (`check_model_layers`: the one
check that builds something, the model's architecture with random weights (models.build_architecture), which reads
no file, so a checkpoint is neither needed nor unpickled to check layer names).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from kstar_utils import datasets as _datasets
from kstar_utils import models as _models


@dataclass(frozen=True)
class PreflightItem:
    """One requirement of a run. kind: "weights" or "data"."""

    kind: str
    name: str
    path: str
    present: bool
    how_to_provide: str


def preflight(models: Sequence[str], datasets: Sequence[str], *, split: str = "test", data_root=None,
              **model_options) -> list[PreflightItem]:
    """Requirements of extracting features of each dataset from each model.

    model_options: as for load_model (model_dir, cache_dir, weights_path, pretrained, ...). Invalid names raise
    ValueError with the closest valid names, before anything else is checked.
    """
    models, datasets = list(_as_list(models)), list(_as_list(datasets))
    for m in models:
        _models.check_model_name(m)
    for d in datasets:
        _datasets.check_dataset_name(d)
    items = []
    for m in models:
        for r in _models.weights_requirements(m, **model_options):
            items.append(PreflightItem("weights", r.model, str(r.path or "-"), r.present, r.how_to_provide))
    for d in datasets:
        for r in _datasets.requirements(d, split, data_root):
            items.append(PreflightItem("data", f"{r.dataset} ({split})", str(r.path or "-"), r.present,
                                       r.how_to_provide))
    return items


def _as_list(x) -> list:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def format_report(items: Sequence[PreflightItem]) -> str:
    """A plain-text table; missing items are followed by how to provide them."""
    lines = []
    for it in items:
        lines.append(f"[{'ok' if it.present else 'MISSING':7}] {it.kind:7} {it.name}\n          searched: {it.path}")
        if not it.present:
            lines.append(f"          provide:  {it.how_to_provide}")
    missing = sum(not it.present for it in items)
    lines.append(f"{len(items) - missing} of {len(items)} requirements present" + (f"; {missing} missing" if missing else ""))
    return "\n".join(lines)


class PreflightError(ValueError):
    """A problem found before a run starts (a folder that cannot be written, an unknown layer, missing weights or
    data for a run); the message is one line naming the path, model or name."""


def check_writable_folder(path: str | os.PathLike, what: str = "folder") -> Path:
    """Raise PreflightError unless `path` is a writable folder or can be created as one; returns the absolute path.

    Nothing is created: the path is walked up to its first existing ancestor, which must be a folder (not a file in
    the way) with write permission. `what` names the folder in the message (e.g. "output_dir").
    """
    path = Path(path).expanduser().absolute()
    probe = path
    try:
        while not probe.exists():
            if probe.is_symlink():
                raise PreflightError(f"{what} {path} cannot be created: {probe} is a broken symbolic link")
            probe = probe.parent
    except PermissionError:
        raise PreflightError(f"{what} {path} cannot be checked: no permission to look inside {probe.parent}") from None
    if not probe.is_dir():
        if probe == path:
            raise PreflightError(f"{what} {path} is a file, not a folder")
        raise PreflightError(f"{what} {path} cannot be created: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        if probe == path:
            raise PreflightError(f"{what} {path} is not writable (no write permission)")
        raise PreflightError(f"{what} {path} cannot be created: no write permission on {probe}")
    return path


_LAYER_MODELS: dict[tuple, Any] = {}


class _ModuleNames:
    """Stands in for a built module once its names are read: LoadedModel.check_layers only walks named_modules(),
    and keeping the names instead of the module frees its memory at once."""

    def __init__(self, module):
        self.names = tuple(n for n, _ in module.named_modules())

    def named_modules(self):
        return ((n, None) for n in self.names)


def _build(name: str, options: Mapping[str, Any]):
    import warnings

    import torch

    with warnings.catch_warnings():
        # a throwaway build, only read for its module names: what its constructor warns about (deprecated arguments,
        # meta tensors) concerns the real load in the job, which shows it, not the check
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):  # no memory and no random initialisation: building a big model is instant
                return _models.build_architecture(name, **options)
        except Exception:  # noqa: BLE001 -- some constructors use their tensors (open_clip moves the model to the CPU)
            pass
        return _models.build_architecture(name, **options)


def layer_model(name: str, **model_options):
    """The LoadedModel of registry model `name` as LoadedModel.check_layers needs it (output layer, head module,
    module names; `module` replaced by its names).

    Built from the architecture alone, with random weights (models.build_architecture): module names do not depend
    on the weights (a tag or checkpoint only fills the same modules), so no weights file is read, unpickled or
    needed, and nothing is downloaded. model_options: as for load_model (those that only locate or trust weights
    are unused). Cached per model and options for the life of the process. Raises PreflightError when the
    architecture cannot be built (a missing library, a bad option).
    """
    key = (name, repr(sorted(model_options.items())))
    if key not in _LAYER_MODELS:
        try:
            loaded = _build(name, model_options)
        except Exception as e:  # noqa: BLE001 -- whatever the adapter raised, one line naming the model
            raise PreflightError(f"cannot build model {name!r} to check its layers: {type(e).__name__}: "
                                 f"{' '.join(str(e).split())[:300]}") from None
        _LAYER_MODELS[key] = dataclasses.replace(loaded, module=_ModuleNames(loaded.module), run=None,
                                                 preprocess=None)
    return dataclasses.replace(_LAYER_MODELS[key], name=name)


def check_model_layers(name: str, layers: Sequence[str], **model_options) -> bool:
    """Raise PreflightError, with the closest valid names, when model `name` has no layer called one of `layers`.

    Made from the architecture alone, whether or not the weights are in place; "inner" stands for the model's own
    inner layers (models.expand_layers); returns True.
    """
    loaded = layer_model(name, **model_options)
    try:
        loaded.check_layers(_models.expand_layers(name, layers))
    except ValueError as e:
        raise PreflightError(str(e)) from None
    return True


def plan_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Read a notebook parameter mapping (see notebooks/params/*.yaml): model(s), dataset(s), split, data_root and
    the weight-location options, which live in `extract_options` (the notebook's top-level `cache_dir` is the
    feature cache, not a weights cache)."""
    plan = {"models": _as_list(params.get("models", params.get("model"))),
            "datasets": _as_list(params.get("datasets", params.get("dataset"))),
            "split": params.get("split", "test"), "data_root": params.get("data_root")}
    options = params.get("extract_options") or {}
    for key in ("model_dir", "cache_dir", "weights_path", "weights_dir"):
        if options.get(key) is not None:
            plan[key] = options[key]
    return plan
