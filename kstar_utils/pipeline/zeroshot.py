"""Zero-shot classification accuracy of OpenCLIP models on an extracted dataset.

The image side reuses the cached ``embedding`` features of :func:`kstar_utils.pipeline.features.extract_features` (so k* and
zero-shot accuracy are computed on exactly the same images); the text side is open_clip's
``build_zero_shot_classifier`` over the dataset's class names and prompt templates.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

TEMPLATE_SETS = ("openai", "simple")


def get_templates(templates: str | Sequence[str | Callable] = "simple") -> list:
    """"openai" (80 OpenAI ImageNet prompts), "simple" (7 prompts) or your own list of format strings / callables."""
    import open_clip

    if isinstance(templates, str):
        if templates == "openai":
            return list(open_clip.OPENAI_IMAGENET_TEMPLATES)
        if templates == "simple":
            return list(open_clip.SIMPLE_IMAGENET_TEMPLATES)
        raise ValueError(f"templates must be one of {TEMPLATE_SETS} or a list of prompts; got {templates!r}")
    out = list(templates)
    if not out:
        raise ValueError("templates is empty")
    # open_clip calls templates as functions; accept "a photo of a {}." format strings too
    return [t if callable(t) else (lambda c, t=t: t.format(c)) for t in out]


def readable_class_names(dataset: str, class_names: Sequence[str]) -> list[str]:
    """Names fit for prompts: ImageNet uses open_clip's curated names; underscores become spaces elsewhere."""
    import open_clip

    if dataset in ("imagenet",) and len(class_names) == 1000:
        return list(open_clip.IMAGENET_CLASSNAMES)
    return [str(c).replace("_", " ") for c in class_names]


def text_classifier(loaded, class_names: Sequence[str], templates="simple", device=None):
    """(D, C) tensor of normalised class embeddings (prompt ensemble) for an OpenCLIP LoadedModel."""
    import open_clip
    import torch

    arch = loaded.extra.get("architecture") if loaded.extra else None
    if arch is None:
        raise ValueError(f"zero-shot classification needs an OpenCLIP model; got {loaded.name!r}")
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:  # noqa: BLE001 -- HF tokenizers need files from the hub cache; say so
        raise RuntimeError(f"cannot build the tokenizer of {arch!r} offline ({type(e).__name__}: {e}); fill the "
                           f"Hugging Face cache with its tokenizer (see docs/models_and_data.md)") from None
    device = device or next(loaded.module.parameters()).device
    with torch.inference_mode():
        return open_clip.build_zero_shot_classifier(loaded.module, tokenizer, list(class_names),
                                                    get_templates(templates), num_classes_per_batch=10,
                                                    device=device, use_tqdm=False)


def zero_shot_predict(embeddings: np.ndarray, classifier) -> np.ndarray:
    """Predicted class (N,) = argmax of cosine similarity between embeddings (N, D) and classifier (D, C)."""
    import torch

    X = torch.as_tensor(np.asarray(embeddings, dtype=np.float32))
    X = X / X.norm(dim=1, keepdim=True).clamp_min(1e-12)
    W = torch.as_tensor(classifier).float().cpu()
    return (X @ W).argmax(dim=1).numpy()


def zero_shot_accuracy(model: str, dataset: str, *, split: str = "test", templates="simple",
                       class_names: Sequence[str] | None = None, root: str | Path | None = None, data_root=None,
                       batch_size: int = 256, device=None, **options) -> float:
    """Top-1 zero-shot accuracy (a fraction in [0, 1]) of OpenCLIP `model` on `dataset`.

    Extracts (or reuses) the `embedding` features with extract_features(**options), then classifies them with the
    text embeddings of `class_names` (default: the dataset's names) under `templates`.
    """
    from kstar_utils.pipeline.features import MODEL_OPTIONS, extract_features, load_features
    from kstar_utils.models import load_model, supports_zero_shot

    if not supports_zero_shot(model):
        raise ValueError(f"zero-shot accuracy needs a model that classifies by text prompts (an OpenCLIP model, "
                         f"'openclip:<arch>/<tag>'); got {model!r}")
    paths = extract_features(model, dataset, split=split, layers=("embedding",), root=root, data_root=data_root,
                             batch_size=batch_size, device=device, **options)
    fs = load_features(paths["embedding"])
    names = list(class_names) if class_names is not None else readable_class_names(dataset, fs.class_names)
    if len(names) != len(fs.class_names):
        raise ValueError(f"{len(names)} class names for {len(fs.class_names)} classes")
    model_opts = {k: v for k, v in options.items() if k in MODEL_OPTIONS}
    loaded = load_model(model, device=device or "cpu", **model_opts)
    classifier = text_classifier(loaded, names, templates, device=device or "cpu")
    pred = zero_shot_predict(fs.features, classifier)
    return float(np.mean(pred == fs.labels))
