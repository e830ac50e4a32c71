"""Adapter for OpenCLIP image encoders: ``openclip:<architecture>/<pretrained tag>`` (e.g. ``ViT-B-32/laion2b_s34b_b79k``).

``openclip:<architecture>`` without a tag builds random weights (tests). Weights are read only from local caches:
the Hugging Face hub cache (``$HF_HUB_CACHE`` / ``$HF_HOME/hub``, or option ``cache_dir``) for tags hosted on the hub,
the ``~/.cache/clip`` folder (or ``cache_dir``) for URL-only tags, or an explicit ``weights_path``. Nothing is downloaded
unless ``allow_download=True``. Files are read as weights only unless ``trust_checkpoint=True``.

Preprocessing always comes from the tag's pretrained config (``open_clip.get_pretrained_cfg``): mean, std,
interpolation and resize mode, so SigLIP and other non-OpenAI models never get OpenAI's defaults. Tags trained with
QuickGELU get QuickGELU (the tag's config says so), as the weights expect.

The model output layer is ``embedding`` = ``encode_image`` (L2-normalised unless ``normalize=False``). Any module of
the image tower (``visual.*``) can also be read, e.g. ``visual.transformer.resblocks.11``.
"""
from __future__ import annotations

import os
from pathlib import Path

from kstar_utils.models import LoadedModel, ModelInfo, WeightsNotFoundError, WeightsRequirement
from kstar_utils.models._common import check_checkpoint_file, pil_transform, reading_checkpoint


def _oc():
    import open_clip

    return open_clip


def known_names() -> list[str]:
    oc = _oc()
    return [f"{m}/{t}" for m, t in oc.list_pretrained()] + list(oc.list_models())


def _split(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition("/")
    return arch, (tag or None)


def is_valid(name: str) -> bool:
    oc = _oc()
    arch, tag = _split(name)
    if arch not in oc.list_models():
        return False
    return tag is None or oc.get_pretrained_cfg(arch, tag) != {}


def pretrained_tag(name: str, weights_path=None, **options) -> str:
    arch, tag = _split(name)
    if weights_path is not None:
        return f"{tag or 'file'}:{Path(weights_path).name}"
    return tag or "random"


def _hub_cache(cache_dir=None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _candidates(cfg: dict, cache_dir=None) -> tuple[str, list[Path], str]:
    """(kind, local paths where the weights may already be, how to provide them) for one pretrained config."""
    hf = cfg.get("hf_hub", "")
    if hf:
        from open_clip.pretrained import HF_WEIGHTS_NAME, _get_safe_alternatives

        repo_id, filename = os.path.split(hf)
        filename = filename or HF_WEIGHTS_NAME
        names = list(_get_safe_alternatives(filename)) + [filename]
        paths = []
        try:
            from huggingface_hub import try_to_load_from_cache

            for fn in names:
                hit = try_to_load_from_cache(repo_id, fn, cache_dir=str(_hub_cache(cache_dir)))
                if isinstance(hit, str):
                    paths.append(Path(hit))
        except ImportError:
            pass
        folder = _hub_cache(cache_dir) / ("models--" + repo_id.replace("/", "--"))
        how = (f"fill the Hugging Face cache on a machine with internet (`huggingface-cli download {repo_id} "
               f"{filename}`, or run open_clip.create_model_and_transforms once) and copy {folder} to this machine's cache ({_hub_cache(cache_dir)}; set "
               f"HF_HOME / HF_HUB_CACHE or cache_dir=), or pass weights_path=<file>")
        return "hf_hub", paths or [folder], how
    url = cfg.get("url", "")
    folder = Path(cache_dir or "~/.cache/clip").expanduser()
    path = folder / os.path.basename(url)
    return "url", [path], f"download {url} to {path} (or pass weights_path=<file>)"


def _resolve_weights(name: str, cache_dir=None, weights_path=None) -> tuple[Path | None, WeightsRequirement]:
    arch, tag = _split(name)
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        return (p if p.is_file() else None), WeightsRequirement(f"openclip:{name}", p, p.is_file(),
                                                                 "check the weights_path you passed")
    if tag is None:
        return None, WeightsRequirement(f"openclip:{name}", None, True, "random weights: nothing needed")
    cfg = _oc().get_pretrained_cfg(arch, tag)
    kind, paths, how = _candidates(cfg, cache_dir)
    hit = next((p for p in paths if p.is_file()), None)
    return hit, WeightsRequirement(f"openclip:{name}", hit or paths[0], hit is not None, how)


def requirements(name: str, cache_dir=None, weights_path=None, **options) -> list[WeightsRequirement]:
    return [_resolve_weights(name, cache_dir, weights_path)[1]]


def create_kwargs(arch: str, tag: str | None) -> dict:
    """Keyword arguments for open_clip.create_model_and_transforms that reproduce the tag's preprocessing (mean, std,
    interpolation, resize mode) and activation, even when the weights are loaded from a file afterwards."""
    cfg = _oc().get_pretrained_cfg(arch, tag) if tag else {}
    return dict(image_mean=cfg.get("mean"), image_std=cfg.get("std"), image_interpolation=cfg.get("interpolation"),
                image_resize_mode=cfg.get("resize_mode"), force_quick_gelu=bool(cfg.get("quick_gelu", False)))


def load(name: str, cache_dir=None, weights_path=None, allow_download: bool = False, normalize: bool = True,
         trust_checkpoint: bool = False, **options) -> LoadedModel:
    oc = _oc()
    arch, tag = _split(name)
    kwargs = dict(create_kwargs(arch, tag), cache_dir=cache_dir)
    file, req = _resolve_weights(name, cache_dir, weights_path)
    if tag is not None or weights_path is not None:
        if file is None and not allow_download:
            raise WeightsNotFoundError(f"weights for openclip:{name} not found: searched {req.path}. "
                                       f"To provide them: {req.how_to_provide}")
    if file is not None:
        check_checkpoint_file(file)
        model, _, preprocess = oc.create_model_and_transforms(arch, pretrained=None, **kwargs)
        # open_clip's reader: it picks the state dict out of the usual wrappings and converts older layouts
        with reading_checkpoint(file, trust=trust_checkpoint):
            oc.load_checkpoint(model, str(file), weights_only=not trust_checkpoint)
    elif tag is not None:  # allow_download=True and not cached: let open_clip fetch it
        with reading_checkpoint(f"open_clip's pretrained weights {arch}/{tag}", trust=trust_checkpoint):
            model, _, preprocess = oc.create_model_and_transforms(arch, pretrained=tag,
                                                                  load_weights_only=not trust_checkpoint, **kwargs)
    else:
        model, _, preprocess = oc.create_model_and_transforms(arch, pretrained=None, **kwargs)
    return _loaded(name, model, preprocess, pretrained_tag(name, weights_path), file, normalize)


def architecture(name: str, normalize: bool = True, **options) -> LoadedModel:
    """The architecture (with the tag's activation and preprocessing) with random weights; no file is read."""
    arch, tag = _split(name)
    model, _, preprocess = _oc().create_model_and_transforms(arch, pretrained=None, **create_kwargs(arch, tag))
    return _loaded(name, model, preprocess, "random", None, normalize)


def _loaded(name: str, model, preprocess, pretrained: str, file: Path | None, normalize: bool) -> LoadedModel:
    arch, tag = _split(name)
    cfg = _oc().get_pretrained_cfg(arch, tag) if tag else {}
    model.eval()
    pcfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    description = {"source": f"open_clip pretrained cfg of {arch}/{tag}" if tag else "open_clip defaults (random init)",
                   **{k: (list(v) if isinstance(v, tuple) else v) for k, v in pcfg.items()},
                   "transform": repr(preprocess)}

    def run(x):
        return model.encode_image(x, normalize=normalize)

    return LoadedModel(
        name=f"openclip:{name}", module=model, preprocess=pil_transform(preprocess), run=run,
        output_layer="embedding", head_module=None, pretrained=pretrained, weights_file=file,
        preprocessing=description,
        extra={"architecture": arch, "tag": tag, "normalize": bool(normalize),
               "quick_gelu": bool(cfg.get("quick_gelu", False))},
        image_modules=("visual",),
    )


#: OpenCLIP encoders classify by text prompts (pipeline.zeroshot)
ZERO_SHOT = True


def feature_key(name: str, normalize: bool = True, **options) -> dict:
    """The embedding is L2-normalised unless normalize=False: part of the features' key."""
    return {"normalize": bool(normalize)}


def describe(name: str) -> ModelInfo:
    arch, tag = _split(name)
    return ModelInfo(f"openclip:{name}", name, "openclip", arch, "language-image" if tag else "random", None, None,
                     f"OpenCLIP {arch} pre-trained on {tag}" if tag else f"OpenCLIP {arch}, random initialisation")


def accuracies(names, dataset: str) -> list[dict]:
    """Zero-shot accuracy published in OpenCLIP's results table (data/openclip/): the 38-dataset mean for every
    dataset, and the dataset's own column where the table has one (CIFAR-10, CIFAR-100, ImageNet 1k)."""
    from kstar_utils.io.tables import OPENCLIP_AVERAGE_COLUMN, OPENCLIP_COLUMN, load_openclip_results

    table = load_openclip_results().set_index("model_id")
    rows = []
    for n in names:
        key = f"openclip:{n}"
        if key in table.index:
            row = {"model": n, "zeroshot_avg": float(table.at[key, OPENCLIP_AVERAGE_COLUMN]),
                   "accuracy_source": "OpenCLIP results table"}
            if dataset in OPENCLIP_COLUMN:
                row["zeroshot_acc"] = float(table.at[key, OPENCLIP_COLUMN[dataset]])
            rows.append(row)
    return rows
