"""The method's open checks run on a study's files (notebooks 05-08): how Γ' and the model ranking depend on the
distance, how class skews of models and layers correlate, how k* and Γ' respond to noise on the latents and on the
input images, who fractures whom and the samples behind a class's skew.

    table, per_class = metric_sensitivity(features_index, layers=["penultimate", "logits"])
    ranking_changes(table)                       # Kendall tau between the rankings by Γ' under each metric
    pairs = class_skew_pairs(per_class_table)    # class-skew correlation of every pair of models
    latent_noise_study(features_index, [0, 0.1, 0.3]); input_noise_study(models, [0, 0.05, 0.1])
    fracture_stage(kstar_index, layer="penultimate"); gallery(kstar_index, model, layer, class_name)

The computations themselves are analysis.checks and analysis.fracture; these functions read files and run models.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from kstar_utils.pipeline.features import load_features
from kstar_utils.analysis.checks import (class_skew_correlation, kstar_by_metric, perturbation_study,
                                        ranking_change, response)
from kstar_utils.method.metrics import Metric, metric_space, standard_metrics
from kstar_utils.method.skewness import summarize_skewness
from kstar_utils.io.index import INDEX_KEYS, indexed_kstar, read_index, select


def metric_sensitivity(features_index, *, layers: str | Sequence[str] = ("penultimate", "logits"),
                       metrics: Sequence = standard_metrics()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Γ, Γ' and the class skews of every model at each of `layers` under each distance (analysis.checks.
    kstar_by_metric: Metrics or what Metric.parse reads, e.g. "minkowski(p=3)"; Mahalanobis uses the pooled
    within-class covariance with Ledoit-Wolf shrinkage); the `metric` columns hold each metric's label.

    Returns (models table: model, layer, metric, true_skewness, approx_skewness, approx_skewness_weighted,
    skew_spread, n_classes, n_fractured, n_overlapped, n_clustered, n_undefined; per-class table: model, layer,
    metric, label, n, mean, std, skew, pattern, included).
    """
    layers = [layers] if isinstance(layers, str) else list(layers)
    metrics = [Metric.parse(m) for m in metrics]  # a bad name fails before any file is read
    index = read_index(features_index, INDEX_KEYS + ["features_path"])
    missing = sorted(set(layers) - set(index["layer"]))
    if missing:
        raise ValueError(f"no features at layer(s) {missing} in the index; it has {sorted(set(index['layer']))}")
    index = index[index["layer"].isin(layers)]
    rows, classes = [], []
    for row in index.itertuples(index=False):
        fs = load_features(row.features_path)
        labels = np.asarray(fs.class_names)[fs.labels] if fs.class_names else fs.labels
        for metric, k in kstar_by_metric(fs.features, labels, metrics).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                s = summarize_skewness(k, labels)
            keys = {"model": row.model, "layer": row.layer, "metric": metric}
            rows.append({**keys, **s.to_dict()})
            classes.append(s.per_class.assign(**keys))
    per_class = pd.concat(classes, ignore_index=True)
    per_class = per_class[["model", "layer", "metric"] + [c for c in per_class.columns
                                                         if c not in ("model", "layer", "metric")]]
    return pd.DataFrame(rows), per_class


def ranking_changes(table: pd.DataFrame, *, reference="euclidean", column: str = "approx_skewness",
                    n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """How the ranking of models by `column` under each metric differs from the ranking under `reference` (a Metric
    or what Metric.parse reads) (analysis.checks.ranking_change), per layer: one row per (layer, metric) with n,
    kendall_tau and its interval, p_value, same_best, max_rank_shift and the mean |ΔΓ'| against the reference."""
    reference = Metric.parse(reference).label
    if reference not in set(table["metric"]):
        raise ValueError(f"no rows for the reference metric {reference!r}; metrics: {sorted(set(table['metric']))}")
    rows = []
    for layer, by_layer in table.groupby("layer", sort=False):
        ref = by_layer[by_layer["metric"] == reference]
        for metric, sub in by_layer.groupby("metric", sort=False):
            if metric == reference:
                continue
            with warnings.catch_warnings():
                # with few models some bootstrap resamples tie every value; the interval uses the others
                warnings.simplefilter("ignore", RuntimeWarning)
                r = ranking_change(ref, sub, column=column, key="model", n_boot=n_boot, n_perm=n_boot, seed=seed)
            delta = sub.set_index("model")[column] - ref.set_index("model")[column]
            rows.append({"layer": layer, "reference": reference, "metric": metric, **r,
                         "mean_abs_change": float(delta.abs().mean())})
    return pd.DataFrame(rows)


def class_skew_pairs(per_class: pd.DataFrame, *, by: str = "model", within: str = "layer", method: str = "spearman",
                     n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Correlation between the class skews of every pair of `by` values (models), within each `within` value
    (layer), classes matched by label (analysis.checks.class_skew_correlation). One row per pair: within, a, b,
    statistic, ci_low, ci_high, p_value, n."""
    rows = []
    for w, sub in per_class.groupby(within, sort=False):
        groups = {k: g for k, g in sub.groupby(by, sort=False)}
        for a, b in itertools.combinations(groups, 2):
            r = class_skew_correlation(groups[a], groups[b], methods=(method,), n_boot=n_boot, n_perm=n_boot,
                                       seed=seed).iloc[0]
            rows.append({within: w, "a": a, "b": b, "method": method, "statistic": float(r["statistic"]),
                         "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]),
                         "p_value": float(r["p_value"]), "n": int(r["n"])})
    return pd.DataFrame(rows)


def pair_matrix(pairs: pd.DataFrame, **equal) -> pd.DataFrame:
    """The symmetric matrix (1 on the diagonal) of a class_skew_pairs table, after selecting rows equal to
    `equal` (e.g. layer="penultimate"); order of first appearance."""
    t = pairs
    for k, v in equal.items():
        t = t[t[k] == v]
    names = list(dict.fromkeys(list(t["a"]) + list(t["b"])))
    m = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for r in t.itertuples(index=False):
        m.loc[r.a, r.b] = m.loc[r.b, r.a] = r.statistic
    return m


def cross_layer_class_skews(per_class: pd.DataFrame, layer_a: str, layer_b: str, *, method: str = "spearman",
                            n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Per model: correlation between its class skews at layer_a and at layer_b (do the same classes fracture?)."""
    rows = []
    for model, sub in per_class.groupby("model", sort=False):
        a, b = sub[sub["layer"] == layer_a], sub[sub["layer"] == layer_b]
        if a.empty or b.empty:
            continue
        r = class_skew_correlation(a, b, methods=(method,), n_boot=n_boot, n_perm=n_boot, seed=seed).iloc[0]
        rows.append({"model": model, "layer_a": layer_a, "layer_b": layer_b, "method": method,
                     "statistic": float(r["statistic"]), "ci_low": float(r["ci_low"]),
                     "ci_high": float(r["ci_high"]), "n": int(r["n"])})
    return pd.DataFrame(rows)


def mean_class_skew(per_class: pd.DataFrame, *, layer: str) -> pd.DataFrame:
    """Per class at `layer`: mean and standard deviation of its skew over models, and in how many models it is
    Fractured: which classes fracture whatever the training."""
    t = per_class[(per_class["layer"] == layer) & per_class["included"].astype(bool)]
    skew = t["skew"].replace([np.inf, -np.inf], np.nan)
    g = t.assign(skew=skew, fractured=t["pattern"].eq("Fractured")).groupby("label", sort=True)
    return pd.DataFrame({"mean_skew": g["skew"].mean(), "std_skew": g["skew"].std(),
                         "n_fractured": g["fractured"].sum().astype(int), "n_models": g.size()}).reset_index()


# ------------------------------------------------------------------------------------------------ noise
def latent_noise_study(features_index, strengths: Sequence[float], *, layer: str = "penultimate", seed: int = 0,
                       metric="euclidean") -> pd.DataFrame:
    """analysis.checks.perturbation_study for every model of a features index (notebook 01) at `layer`.

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


def dataset_images(dataset: str, split: str = "test", *, indices: Sequence[int] | None = None,
                   **sampling) -> tuple[np.ndarray, np.ndarray]:
    """The images of a (small) dataset as one array (N, C, H, W) float32 in [0, 1] and labels (N,) int64; with
    `indices`, only those items (in that order). sampling: n_per_class, seed, as the features were extracted."""
    from kstar_utils.datasets import load_dataset
    from kstar_utils.models._common import to_tensor_if_needed

    data = load_dataset(dataset, split, transform=to_tensor_if_needed, **sampling)
    if indices is not None:
        items = [data.dataset[int(i)] for i in indices]
        return (np.stack([x.numpy() for x, _ in items]).astype(np.float32),
                np.asarray([y for _, y in items], dtype=np.int64))
    images = np.stack([data.dataset[i][0].numpy() for i in range(len(data))]).astype(np.float32)
    return images, data.labels


def add_noise(images: np.ndarray, strength: float, *, seed: int = 0) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] plus Gaussian noise of standard deviation `strength` (pixel units), clipped back
    to [0, 1]; strength 0 returns them unchanged. Deterministic in seed."""
    strength = float(strength)
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0; got {strength}")
    if strength == 0:
        return images
    noise = np.random.default_rng(seed).standard_normal(images.shape).astype(np.float32)
    return np.clip(images + strength * noise, 0.0, 1.0)


def features_of_images(model, images: np.ndarray, layer: str = "penultimate",
                       batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) float32 of `images` (N, C, H, W) in [0, 1] at `layer` of `model` (a registry name, or a model
    load_model returned, to reuse it), each image through the model's own preprocessing, and the model's predicted
    classes (N,)."""
    import torch

    from kstar_utils import models as registry
    from kstar_utils.pipeline.features import forward_layers

    loaded = registry.load_model(model, device="cpu") if isinstance(model, str) else model
    loaded.check_layers((layer,))
    layers = tuple(dict.fromkeys((layer, loaded.output_layer)))
    feats, preds = [], []
    with torch.inference_mode():
        for s in range(0, images.shape[0], batch_size):
            x = torch.stack([loaded.preprocess(torch.from_numpy(im)) for im in images[s : s + batch_size]])
            out = forward_layers(loaded, x, layers)
            feats.append(out[layer].float().numpy())
            preds.append(out[loaded.output_layer].argmax(1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def input_noise_study(models: Sequence[str], strengths: Sequence[float], *, dataset: str = "cifar10-sample",
                      split: str = "test", layer: str = "penultimate", seed: int = 0,
                      metric="euclidean") -> pd.DataFrame:
    """k* and Γ' of each model's features of noised images, per (model, strength).

    Noise is Gaussian in pixel units of images in [0, 1] (add_noise), the same draw for every model. Returns columns
    model, layer, strength, accuracy (on the noised images), true_skewness, approx_skewness, skew_spread,
    frac_kstar_changed, mean_abs_khat_change; changes are against strength 0 of the same model.
    """
    from kstar_utils import compute_kstar
    from kstar_utils import models as registry

    images, y = dataset_images(dataset, split)
    rows = []
    for model in models:
        loaded = registry.load_model(model, device="cpu")  # once per model, for every strength
        f0, pred0 = features_of_images(loaded, images, layer)
        base = compute_kstar(f0, y, metric=metric)
        for s in strengths:
            s = float(s)
            f, pred = (f0, pred0) if s == 0 else features_of_images(loaded, add_noise(images, s, seed=seed), layer)
            k = base if s == 0 else compute_kstar(f, y, metric=metric)
            rows.append({"model": model, "layer": layer, "strength": s, "accuracy": float(np.mean(pred == y)),
                         **response(k, base, y)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ fracture
def fracture_stage(kstar_index, *, layer: str) -> pd.DataFrame:
    """The fracture matrix (analysis.fracture.fracture_matrix) of every model at `layer`, one tidy table: model,
    class, enemy_class, n, share, mean_khat."""
    from kstar_utils.analysis.fracture import fracture_matrix

    index = read_index(kstar_index, INDEX_KEYS + ["kstar_path"], layer=layer)
    parts = []
    for row in index.itertuples(index=False):
        res = indexed_kstar(row)
        names = res.class_names or None
        t = fracture_matrix(res.labels, res.labels[res.enemy], res.khat, names)
        parts.append(t.assign(model=row.model))
    table = pd.concat(parts, ignore_index=True)
    return table[["model"] + [c for c in table.columns if c != "model"]]


def gallery(kstar_index, *, model: str, layer: str, class_name: str, n: int = 4) -> tuple[pd.DataFrame, dict]:
    """The samples behind a class's skew: its n most fractured and n most clustered samples (analysis.fracture.
    samples_behind) with the distance to their nearest enemy in the k*'s own metric, and {index: image} for every
    sample and enemy shown (empty for datasets that are feature files, not images)."""
    from kstar_utils.analysis.fracture import samples_behind

    row = select(read_index(kstar_index, INDEX_KEYS + ["kstar_path", "features_path"]), model=model, layer=layer)
    row = row.iloc[0]
    res = indexed_kstar(row)
    names = res.names
    if class_name not in names:
        import difflib

        close = difflib.get_close_matches(str(class_name), names, n=3, cutoff=0.4)
        raise ValueError(f"no class {class_name!r} in {model} at {layer}; classes: {names}"
                         + (f"; closest: {close}" if close else ""))
    table = samples_behind(res.kstar, res.labels, res.enemy, names.index(class_name), n=n, class_names=names)
    metric = Metric.from_spec(res.meta.get("spec", {}))
    if metric.needs_matrix:
        raise ValueError(f"the k* of {model} at {layer} used a covariance matrix given by the caller, which its file "
                         f"records only by digest: the gallery cannot recompute those distances; use a pooled or "
                         f"total covariance (cov='pooled' / 'total') for it")
    fs = load_features(row.features_path)
    space = metric_space(fs.features, metric, codes=fs.labels)
    table = table.assign(distance=space.distances(table["index"].to_numpy(), table["enemy"].to_numpy()))
    images: dict = {}
    if not str(row.dataset).startswith("features:"):
        fmeta = fs.meta.get("spec", {})
        sampling = {k: fmeta[k] for k in ("n_per_class", "seed") if k in fmeta}
        wanted = sorted(set(table["index"]) | set(table["enemy"]))
        pics, _ = dataset_images(row.dataset, row.split, indices=wanted, **sampling)
        images = dict(zip(wanted, pics))
    return table, images

