"""Adapter for timm models: ``timm:<name>`` (random weights) or ``timm:<name>.<pretrained tag>`` with
``pretrained=True`` (e.g. ``timm:resnet50.a1_in1k``).

Pretrained weights are read from the Hugging Face hub cache (``$HF_HUB_CACHE``) or, for URL-hosted weights, the
torch hub cache, or from ``weights_path``; nothing is downloaded unless ``allow_download=True``. Preprocessing is
timm's resolved data config of the model (``timm.data.resolve_data_config`` + ``create_transform``).
"""
from __future__ import annotations

import os
from pathlib import Path

from kstar_utils.models import LoadedModel, WeightsNotFoundError, WeightsRequirement
from kstar_utils.models._common import check_checkpoint_file, pil_transform


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


def load(name: str, pretrained: bool = False, weights_path=None, cache_dir=None, allow_download: bool = False,
         **options) -> LoadedModel:
    import timm
    from timm.data import create_transform, resolve_data_config

    file = None
    if pretrained or weights_path is not None:
        req = requirements(name, pretrained=True, weights_path=weights_path, cache_dir=cache_dir)[0]
        if not req.present and not allow_download:
            raise WeightsNotFoundError(f"weights for timm:{name} not found: searched {req.path}. "
                                       f"To provide them: {req.how_to_provide}")
        file = req.path if req.present else None
    if file is not None:
        check_checkpoint_file(file)
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(file)})
    else:
        model = timm.create_model(name, pretrained=bool(pretrained))
    model.eval()
    cfg = resolve_data_config({}, model=model)
    tf = create_transform(**cfg)
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    head = next((n for n, m in model.named_modules() if m is classifier and n), None)
    from torch import nn

    if head is not None and not isinstance(classifier, nn.Linear):
        head = None  # e.g. a conv or identity classifier: no linear head to read the input of
    return LoadedModel(
        name=f"timm:{name}", module=model, preprocess=pil_transform(tf), run=model, output_layer="logits",
        head_module=head, pretrained=pretrained_tag(name, bool(pretrained), weights_path), weights_file=file,
        preprocessing={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()} | {"transform": repr(tf)},
    )
