"""Controlled perturbation study (docs/METHOD.md section 4): Gaussian noise of growing strength added to the latent
features, or to the input images of the embedded zoo models, and how k* and Γ' respond.

    latent = latent_noise_study(features_index, [0, 0.1, 0.3], layer="penultimate")
    inputs = input_noise_study(["zoo:standard", "zoo:pgd-0.1"], [0, 0.1, 0.3], layer="penultimate")

Both return one row per (model, strength) with true_skewness, approx_skewness, skew_spread, frac_kstar_changed
(share of samples whose k* differs from the unperturbed run) and mean_abs_khat_change; the input study adds the
accuracy on the noised images. Input noise is in pixel units of images in [0, 1] (clipped back to [0, 1]); latent
noise is relative to each feature dimension's standard deviation (kstar_utils.analysis.checks.perturb_latents).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from kstar_utils.pipeline.features import forward_layers, load_features
from kstar_utils.method.kstar import compute_kstar
from kstar_utils.analysis.checks import perturbation_study
from kstar_utils.method.skewness import summarize_skewness
from kstar_utils.pipeline.stages import INDEX_KEYS, read_index
from kstar_utils.method.validation import encode_labels


def noisy_digits(strength: float, *, split: str = "test", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Digits images (N, 1, 8, 8) float32 plus Gaussian noise of standard deviation `strength` (pixel units, images
    in [0, 1]), clipped to [0, 1]; and labels (N,) int64. strength 0 returns the clean images. Deterministic in seed."""
    from kstar_utils.datasets import load_digits

    strength = float(strength)
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0; got {strength}")
    X, y = load_digits(split)
    if strength > 0:
        noise = np.random.default_rng(seed).standard_normal(X.shape).astype(np.float32)
        X = np.clip(X + strength * noise, 0.0, 1.0)
    return X, y


def zoo_features_of_images(model: str, images: np.ndarray, layer: str = "penultimate") -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) float32 of `images` (N, 1, 8, 8) at `layer` of zoo model `model` ("zoo:<name>" or "<name>"),
    and the model's predicted classes (N,). The model comes from kstar_utils.models.digits_zoo.load_zoo_model through the registry,
    so layer names are those of extract_features ("penultimate", "logits" or a module name)."""
    import torch

    from kstar_utils import models as registry

    name = model if model.startswith("zoo:") else f"zoo:{model}"
    loaded = registry.load_model(name, device="cpu")
    loaded.check_layers((layer,))
    layers = tuple(dict.fromkeys((layer, loaded.output_layer)))
    with torch.inference_mode():
        out = forward_layers(loaded, torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), layers)
    return out[layer].float().numpy(), out[loaded.output_layer].argmax(1).numpy()


def _row(k: np.ndarray, base: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # strong noise can leave a class without a distribution; the row says so
        s = summarize_skewness(k, labels)
    return {"true_skewness": s.true_skewness, "approx_skewness": s.approx_skewness, "skew_spread": s.skew_spread,
            "frac_kstar_changed": float(np.mean(k != base)),
            "mean_abs_khat_change": float(np.mean(np.abs(k - base) / counts))}


def input_noise_study(models: Sequence[str], strengths: Sequence[float], *, layer: str = "penultimate",
                      split: str = "test", seed: int = 0, metric: str = "euclidean") -> pd.DataFrame:
    """k* and Γ' of zoo models' features of noised digits, per (model, strength).

    Returns columns model, layer, strength, accuracy (on the noised images), true_skewness, approx_skewness,
    skew_spread, frac_kstar_changed, mean_abs_khat_change; changes are against strength 0 of the same model.
    """
    rows = []
    for model in models:
        X0, y = noisy_digits(0.0, split=split, seed=seed)
        f0, _ = zoo_features_of_images(model, X0, layer)
        base = compute_kstar(f0, y, metric=metric)
        codes, _ = encode_labels(y)
        counts = np.bincount(codes)[codes].astype(np.float64)
        for s in strengths:
            X, _ = noisy_digits(s, split=split, seed=seed)
            f, pred = zoo_features_of_images(model, X, layer)
            k = base if float(s) == 0 else compute_kstar(f, y, metric=metric)
            rows.append({"model": model, "layer": layer, "strength": float(s), "accuracy": float(np.mean(pred == y)),
                         **_row(k, base, y, counts)})
    return pd.DataFrame(rows)


def latent_noise_study(features_index, strengths: Sequence[float], *, layer: str = "penultimate", seed: int = 0,
                       metric: str = "euclidean") -> pd.DataFrame:
    """kstar_utils.analysis.checks.perturbation_study for every model of a features index (notebook 01) at `layer`.

    Returns columns model, layer, strength, true_skewness, approx_skewness, skew_spread, frac_kstar_changed,
    mean_abs_khat_change. Noise is strength x each dimension's standard deviation.
    """
    index = read_index(features_index, INDEX_KEYS + ["features_path"], layer=layer)
    parts = []
    for row in index.itertuples(index=False):
        fs = load_features(row.features_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t = perturbation_study(fs.features, fs.labels, strengths, seed=seed, metric=metric)
        parts.append(t.assign(model=row.model, layer=layer))
    table = pd.concat(parts, ignore_index=True)
    return table[["model", "layer"] + [c for c in table.columns if c not in ("model", "layer")]]


__all__ = ["noisy_digits", "zoo_features_of_images", "input_noise_study", "latent_noise_study"]
