"""Adapter for timm models: ``timm:<name>`` (random weights) or ``timm:<name>.<pretrained tag>`` with
``pretrained=True`` (e.g. ``timm:resnet50.a1_in1k``).

Pretrained weights are read from the Hugging Face hub cache (``$HF_HUB_CACHE``) or, for URL-hosted weights, the
torch hub cache, or from ``weights_path``; nothing is downloaded unless ``allow_download=True``. Files are read as
weights only unless ``trust_checkpoint=True`` (timm's own file loader unpickles in full, so it is not used for them).
Preprocessing is timm's resolved data config of the model (``timm.data.resolve_data_config`` + ``create_transform``).
"""
from __future__ import annotations

import os
from pathlib import Path

from kstar_utils.models import LoadedModel, ModelInfo, WeightsNotFoundError, WeightsRequirement
from kstar_utils.models._common import check_checkpoint_file, pil_transform, reading_checkpoint


def known_names() -> list[str]:
    import timm

    return sorted(set(timm.list_models()) | set(timm.list_models(pretrained=True)))


def is_valid(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".", 1)[0]) and (("." not in name) or name in timm.list_models(pretrained=True))


def pretrained_tag(name: str, pretrained: bool = False, weights_path=None, **options) -> str:
    if weights_path is not None:
        return f"file:{Path(weights_path).name}"
    return name if pretrained else "random"


def _cached_file(name: str, cache_dir=None) -> tuple[Path | None, Path, str]:
    """(cached file or None, the path searched, how to provide it)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name) if hasattr(timm.models, "get_pretrained_cfg") else None
    if cfg is None and "." not in name:
        cfg = timm.models.get_pretrained_cfg(timm.models.get_arch_pretrained_cfgs(name)[0]) \
            if hasattr(timm.models, "get_arch_pretrained_cfgs") else None
    if cfg is not None and cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        root = Path(cache_dir or constants.HF_HUB_CACHE).expanduser()
        for fn in (cfg.hf_hub_filename, "model.safetensors", "open_clip_pytorch_model.bin", "pytorch_model.bin"):
            if fn:
                hit = try_to_load_from_cache(cfg.hf_hub_id, fn, cache_dir=str(root))
                if isinstance(hit, str):
                    return Path(hit), Path(hit), ""
        folder = root / ("models--" + cfg.hf_hub_id.replace("/", "--"))
        return None, folder, (f"`huggingface-cli download {cfg.hf_hub_id}` on a machine with internet and copy "
                              f"{folder} here (set HF_HOME / HF_HUB_CACHE), or pass weights_path=<file>")
    if cfg is not None and cfg.url:
        import torch

        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        return (path if path.is_file() else None), path, f"download {cfg.url} to {path}, or pass weights_path=<file>"
    return None, Path("<none>"), f"timm has no pretrained weights for {name!r}; pass weights_path=<file>"


def requirements(name: str, pretrained: bool = False, weights_path=None, cache_dir=None, **options):
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        return [WeightsRequirement(f"timm:{name}", p, p.is_file(), "check the weights_path you passed")]
    if not pretrained:
        return [WeightsRequirement(f"timm:{name}", None, True, "random weights: nothing needed")]
    hit, searched, how = _cached_file(name, cache_dir)
    return [WeightsRequirement(f"timm:{name}", searched, hit is not None, how)]


def create_pretrained(name: str, file: Path | None, trust: bool, **kwargs):
    """timm.create_model(name, pretrained=True, **kwargs) with the weights of `file` (None: timm's own source, which
    may download), read as weights only unless `trust`.

    timm 1.0.9 reads a ``pretrained_cfg`` file with a full unpickle (``timm.models.load_state_dict`` defaults to
    weights_only=False), so the state dict is read here, by timm's own reader (the same choice of state dict in the
    checkpoint, the same key cleaning) held to weights_only, and handed to timm as an in-memory ``state_dict``, which
    keeps timm's adaptation of it to the model (classifier size, filter functions). A ``.npz`` file of a model with
    a custom loader is read by numpy (no pickle) as before.
    """
    import timm

    if file is None:
        with reading_checkpoint(f"timm's pretrained weights of {name}", trust=trust):
            return timm.create_model(name, pretrained=True, **kwargs)
    check_checkpoint_file(file)
    cfg = timm.models.get_pretrained_cfg(name)
    if Path(file).suffix == ".npz" and cfg is not None and cfg.custom_load:
        with reading_checkpoint(file, trust=trust):
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)}, **kwargs)
    with reading_checkpoint(file, trust=trust):
        state = timm.models.load_state_dict(str(file), weights_only=not trust)
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **kwargs)
    for cfg_dict in {id(c): c for c in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None))
                     if isinstance(c, dict)}.values():
        cfg_dict.pop("state_dict", None)  # a second copy of every weight, kept in the model's config otherwise
    return model


def load(name: str, pretrained: bool = False, weights_path=None, cache_dir=None, allow_download: bool = False,
         trust_checkpoint: bool = False, **options) -> LoadedModel:
    import timm

    file = None
    if pretrained or weights_path is not None:
        req = requirements(name, pretrained=True, weights_path=weights_path, cache_dir=cache_dir)[0]
        if not req.present and not allow_download:
            raise WeightsNotFoundError(f"weights for timm:{name} not found: searched {req.path}. "
                                       f"To provide them: {req.how_to_provide}")
        file = req.path if req.present else None
        model = create_pretrained(name, file, trust_checkpoint)
    else:
        model = timm.create_model(name, pretrained=False)
    return _loaded(name, model, pretrained_tag(name, bool(pretrained), weights_path), file)


def architecture(name: str, **options) -> LoadedModel:
    """The architecture with random weights; no file is read."""
    import timm

    return _loaded(name, timm.create_model(name, pretrained=False), "random", None)


def _loaded(name: str, model, pretrained: str, file: Path | None) -> LoadedModel:
    from timm.data import create_transform, resolve_data_config
    from torch import nn

    model.eval()
    cfg = resolve_data_config({}, model=model)
    tf = create_transform(**cfg)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    head = next((n for n, m in model.named_modules() if m is classifier and n), None)
    if head is not None and not isinstance(classifier, nn.Linear):
        head = None  # e.g. a conv or identity classifier: no linear head to read the input of
    return LoadedModel(
        name=f"timm:{name}", module=model, preprocess=pil_transform(tf), run=model, output_layer="logits",
        head_module=head, pretrained=pretrained, weights_file=file,
        preprocessing={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()} | {"transform": repr(tf)},
    )


def describe(name: str) -> ModelInfo:
    """Standard (ImageNet) training where a weights tag is named, else random weights."""
    tagged = '.' in name
    return ModelInfo(f"timm:{name}", name, "timm", name.split('.', 1)[0], "standard" if tagged else "random", None, None,
                     "timm weights" if tagged else "random initialisation")


def accuracies(names, dataset: str) -> list[dict]:
    """The workbook ships no accuracy table for timm models."""
    return []
