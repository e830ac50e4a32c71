"""Three accuracy axes of a CIFAR-10 classifier, and the table of them for every model of the study.

Every function takes a model mapping (B, 3, 32, 32) images in [0, 1] to (B, 10) logits (each registry model of
``cifar-resnet:``, ``abcrown:``, ``convex:`` and ``chenyaofo:`` normalises inside), and returns fractions:

- **clean**: accuracy on the 846 exact CIFAR-10 test images (``cifar10-sample``, test) and on all 10,000 test images
  decoded from a JPEG copy (``cifar10-jpeg``: a JPEG-compression shift, never the clean accuracy);
- **robust**: accuracy under AutoAttack (pyautoattack; APGD-CE, then APGD-T on the points that survive, AutoAttack's
  settings but APGD-T's three most likely wrong classes instead of nine: one APGD-CE restart, 100 iterations each)
  at L-inf 2/255 and 8/255, on the class-stratified 500
  of the 846 images (``cifar_zoo.eval_subset``, seed 0);
- **corruption**: mean accuracy over the CIFAR-10-C corruptions of ``models.corruptions`` (eleven of the fifteen, each
  at its five published severities, seeded) of the 846 images, plus the mean per corruption and per family.

:func:`measure_cifar_models` measures a list of registry names and writes one row per model to a CSV (written
atomically after each model, so a stopped run keeps what it finished); run again, it skips every model whose row was
measured with the same weights and the same evaluation settings (:class:`EvaluationSettings` and the sha256 of the
two image files). ``kstar zoo measure`` is its command line. Columns: see :data:`COLUMNS_DOC`.
"""
from __future__ import annotations

import importlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from kstar_utils.models.corruptions import CORRUPTIONS, SEVERITIES, corrupt

#: the table of the three axes for every model of the study, rebuilt by `kstar zoo measure`
TABLE = ("cifar_accuracies", "cifar_accuracies.csv")
#: the sources whose models take 32x32 CIFAR-10 images in [0, 1]; `kstar zoo measure` measures all their models
CIFAR_SOURCES = ("cifar-resnet", "abcrown", "convex", "chenyaofo")

COLUMNS_DOC = """\
model, source, family, training (standard / adversarial / certified / own-fine-tune), train_method, train_norm,
train_eps (fraction; empty where not stated), weights (registry tag: name@sha256 prefix of the weights file);
clean_acc (on clean_n exact test images), jpeg_acc (on jpeg_n JPEG-decoded test images), robust_n,
clean_acc_robust_subset (clean accuracy on those robust_n images), robust_acc_linf_<k>_255 (AutoAttack at k/255),
corruption_acc (mean over corruptions and severities), corruption_acc_<family>, corr_<corruption> (mean over
severities); seconds_clean, seconds_jpeg, seconds_robust_linf_<k>_255, seconds_corruption, seconds_total;
settings (JSON of the evaluation settings and data digests), settings_key (its hash), versions (JSON of library
versions), measured (UTC time)."""


@dataclass(frozen=True)
class EvaluationSettings:
    """Everything that changes a measured number (part of each row's settings key).

    robust_eps: L-inf budgets in [0, 1] pixel units; robust_n: size of the class-stratified subset of the clean
    images attacked (seed subset_seed); attacks, apgd_restarts, apgd_targets, attack_seed: pyautoattack's settings;
    corruptions, severities, corruption_seed: the corruption axis; clean_n: None for all 846 exact images, else a
    class-stratified subset of that many (used for the clean and the corruption axes: for quick checks);
    jpeg_per_class: None for all 1,000 JPEG images per class, else that many per class (seed subset_seed).
    """

    robust_eps: tuple[float, ...] = (2 / 255, 8 / 255)
    robust_n: int = 500
    subset_seed: int = 0
    attacks: tuple[str, ...] = ("apgd-ce", "apgd-t")
    apgd_restarts: int = 1
    # three target classes instead of AutoAttack's nine: on the robust models APGD-T runs on every point APGD-CE left,
    # and nine targets tripled a run measured at 7-9 hours on 2 CPU cores; the three most likely wrong classes decide
    # almost every point (the same choice as the fine-tunings' own measurement, models.cifar_zoo)
    apgd_targets: int = 3
    attack_seed: int = 0
    corruptions: tuple[str, ...] = tuple(CORRUPTIONS)
    severities: tuple[int, ...] = SEVERITIES
    corruption_seed: int = 0
    clean_n: int | None = None
    jpeg_per_class: int | None = None

    def __post_init__(self):
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown:
            raise ValueError(f"unknown corruptions {unknown}; valid: {list(CORRUPTIONS)}")
        if not set(self.severities) <= set(SEVERITIES) or not self.severities:
            raise ValueError(f"severities must be a non-empty subset of {SEVERITIES}; got {self.severities}")
        if any(not 0 < e < 1 for e in self.robust_eps):
            raise ValueError(f"robust_eps are L-inf budgets in [0, 1] pixel units (2/255 = {2 / 255:.4f}); "
                             f"got {self.robust_eps}")
        for name in ("robust_n", "clean_n", "jpeg_per_class"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1 (or None for all images); got {value}")

    def record(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def eps_label(eps: float) -> str:
    """2/255 -> "linf_2_255"; a budget that is not a whole number of 1/255 steps -> "linf_<eps>"."""
    k = eps * 255
    return f"linf_{round(k)}_255" if math.isclose(k, round(k), abs_tol=1e-6) else f"linf_{eps:g}"


# ---------------------------------------------------------------------------------------------- the three axes
def _chw(images_uint8: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) uint8 -> contiguous (N, 3, 32, 32) float32 in [0, 1] (the attacks need plain strides)."""
    return np.ascontiguousarray(images_uint8.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def clean_accuracy(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction) on images (N, 3, 32, 32) float in [0, 1] or (N, 32, 32, 3) uint8, labels (N,)."""
    from kstar_utils.models.training import accuracy

    x = _chw(images) if images.dtype == np.uint8 else images
    return accuracy(model, x, labels, batch_size)


def autoattack_accuracy(model, images: np.ndarray, labels: np.ndarray, eps: float,
                        settings: EvaluationSettings = EvaluationSettings()) -> float:
    """Accuracy (fraction) of images (N, 3, 32, 32) in [0, 1] under the AutoAttack of `settings` at L-inf `eps`."""
    from kstar_utils.models.training import robust_accuracy

    return robust_accuracy(model, images, labels, eps=eps, attacks=settings.attacks,
                           n_restarts=settings.apgd_restarts, n_target_classes=settings.apgd_targets,
                           seed=settings.attack_seed)


def corrupted_sets(images: np.ndarray, corruptions: Iterable[str] = tuple(CORRUPTIONS),
                   severities: Iterable[int] = SEVERITIES, seed: int = 0) -> dict[tuple[str, int], np.ndarray]:
    """{(corruption, severity): (N, 32, 32, 3) uint8} of images (N, 32, 32, 3) uint8, seeded (see corrupt)."""
    return {(c, s): corrupt(images, c, s, seed=seed) for c in corruptions for s in severities}


def corruption_accuracy(model, sets: Mapping[tuple[str, int], np.ndarray], labels: np.ndarray) -> dict[str, float]:
    """Accuracy on each corrupted set of :func:`corrupted_sets`, summarised: {"corruption_acc": mean over every
    (corruption, severity), "corruption_acc_<family>": mean over that family's sets, "corr_<name>": mean over the
    severities of one corruption}. Every set holds the same images, so each mean weighs them equally."""
    acc = {key: clean_accuracy(model, x, labels) for key, x in sets.items()}
    out = {"corruption_acc": float(np.mean(list(acc.values())))}
    families: dict[str, list[float]] = {}
    names: dict[str, list[float]] = {}
    for (name, _), a in acc.items():
        families.setdefault(CORRUPTIONS[name].family, []).append(a)
        names.setdefault(name, []).append(a)
    out.update({f"corruption_acc_{f}": float(np.mean(v)) for f, v in families.items()})
    out.update({f"corr_{n}": float(np.mean(v)) for n, v in names.items()})
    return out


# ---------------------------------------------------------------------------------------------- what a model is
def describe_model(name: str) -> dict[str, Any]:
    """Source, architecture family and training of a registry name, for the table (kstar_utils.models.describe)."""
    from kstar_utils.models import describe

    info = describe(name)
    return {"source": info.source, "family": info.family or None, "training": info.training,
            "train_method": info.detail or None, "train_norm": info.train_norm, "train_eps": info.train_eps}


#: the datasets whose jobs the CIFAR models' measured accuracies belong to (they describe the model, measured on
#: fixed image sets: the 846 exact test images, the 10,000 JPEG ones)
CIFAR_DATASETS = ("cifar10-sample", "cifar10-jpeg", "cifar10")
_ROW_COLUMNS = ("clean_acc", "jpeg_acc", "robust_acc_linf_2_255", "robust_acc_linf_8_255", "corruption_acc")


def accuracy_rows(source: str, names: Sequence[str], dataset: str) -> list[dict]:
    """The measured CIFAR table's accuracies of `names` (names within `source`) for a job on `dataset`, as the
    registry's `accuracies` wants them: [] for other datasets or when the table does not exist yet."""
    if dataset not in CIFAR_DATASETS:
        return []
    from kstar_utils.io.tables import load_cifar_accuracies

    try:
        table = load_cifar_accuracies().set_index("model")
    except FileNotFoundError:
        return []
    rows = []
    for name in names:
        key = f"{source}:{name}"
        if key in table.index:
            rows.append({"model": name, **{c: float(table.at[key, c]) for c in _ROW_COLUMNS},
                         "accuracy_source": f"data/{'/'.join(TABLE)} (measured)"})
    return rows


def default_models() -> list[str]:
    """Every model of the CIFAR sources (the four pretrained ResNets, the six fine-tunings, the twenty published)."""
    from kstar_utils.models import known_model_names

    return [n for s in CIFAR_SOURCES for n in known_model_names(s)]


def default_table() -> Path:
    from kstar_utils.io.paths import shipped

    return shipped(*TABLE)


# ---------------------------------------------------------------------------------------------- the driver
@dataclass
class _Data:
    """The images of one run, built once for every model measured."""

    clean: np.ndarray            # (N, 32, 32, 3) uint8
    clean_labels: np.ndarray
    robust_idx: np.ndarray       # indices into clean
    jpeg: np.ndarray             # (M, 3, 32, 32) float32
    jpeg_labels: np.ndarray
    corrupted: dict = field(default_factory=dict)


def _data_digests() -> dict[str, str]:
    from kstar_utils.datasets import cifar10_jpeg_file, cifar10_sample_file
    from kstar_utils.io.cache import sha256_file

    return {"cifar10-sample": sha256_file(cifar10_sample_file()), "cifar10-jpeg": sha256_file(cifar10_jpeg_file())}


def _build_data(settings: EvaluationSettings) -> _Data:
    from kstar_utils.datasets import cifar10_jpeg_arrays, cifar10_sample_arrays, subsample_per_class
    from kstar_utils.models.cifar_zoo import eval_subset

    images, labels, _ = cifar10_sample_arrays("test")
    if settings.clean_n is not None:
        keep = eval_subset(labels, settings.clean_n, settings.subset_seed)
        images, labels = images[keep], labels[keep]
    robust_idx = eval_subset(labels, settings.robust_n, settings.subset_seed)
    jpeg, jpeg_labels, _ = cifar10_jpeg_arrays("test")
    keep = subsample_per_class(jpeg_labels, settings.jpeg_per_class, settings.subset_seed)
    corrupted = corrupted_sets(images, settings.corruptions, settings.severities, settings.corruption_seed)
    return _Data(images, labels, robust_idx, _chw(jpeg[keep]), np.array(jpeg_labels[keep]), corrupted)


def _classifier(name: str):
    """The registry model `name` as a module mapping (B, 3, 32, 32) in [0, 1] to (B, 10) logits; a clear error when
    it is not a CIFAR-10 classifier of 32x32 images."""
    import torch

    from kstar_utils.models import load_model

    loaded = load_model(name)
    if loaded.output_layer != "logits":
        raise ValueError(f"{name} outputs {loaded.output_layer!r}, not class logits: it is not a classifier")
    with torch.no_grad():
        try:
            out = loaded.module(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
        except RuntimeError as e:
            raise ValueError(f"{name} does not take (B, 3, 32, 32) CIFAR-10 images: {e}") from None
    if tuple(out.shape) != (2, 10):
        raise ValueError(f"{name} maps (2, 3, 32, 32) images to {tuple(out.shape)}, not to the 10 CIFAR-10 classes")
    return loaded.module.eval(), loaded.pretrained


def measure_model(name: str, data: _Data, settings: EvaluationSettings, *, progress: bool = False) -> dict[str, Any]:
    """One row of the table: the three axes of registry model `name` on `data`, with seconds per axis."""
    from tqdm.auto import tqdm

    model, weights = _classifier(name)
    row: dict[str, Any] = {"model": name, **describe_model(name), "weights": weights}
    bar = tqdm(total=3 + len(settings.robust_eps), desc=name, unit="axis", disable=not progress, leave=False)
    t0 = time.perf_counter()
    row["clean_acc"] = clean_accuracy(model, data.clean, data.clean_labels)
    row["clean_n"] = int(data.clean_labels.size)
    row["seconds_clean"] = time.perf_counter() - t0
    bar.update(1)
    t = time.perf_counter()
    row["jpeg_acc"] = clean_accuracy(model, data.jpeg, data.jpeg_labels)
    row["jpeg_n"] = int(data.jpeg_labels.size)
    row["seconds_jpeg"] = time.perf_counter() - t
    bar.update(1)
    xr, yr = _chw(data.clean[data.robust_idx]), data.clean_labels[data.robust_idx]
    row["robust_n"] = int(yr.size)
    row["clean_acc_robust_subset"] = clean_accuracy(model, xr, yr)
    for eps in settings.robust_eps:
        t = time.perf_counter()
        row[f"robust_acc_{eps_label(eps)}"] = autoattack_accuracy(model, xr, yr, eps, settings)
        row[f"seconds_robust_{eps_label(eps)}"] = time.perf_counter() - t
        bar.update(1)
    t = time.perf_counter()
    row.update(corruption_accuracy(model, data.corrupted, data.clean_labels))
    row["seconds_corruption"] = time.perf_counter() - t
    bar.update(1)
    bar.close()
    row["seconds_total"] = time.perf_counter() - t0
    return {k: (round(v, 1 if k.startswith("seconds_") else 4) if isinstance(v, float) and not k.startswith("train_")
                else v) for k, v in row.items()}


def _versions() -> dict[str, str]:
    from importlib import metadata

    from kstar_utils.io.cache import library_versions

    out = library_versions()
    for dist in ("pyautoattack", "pillow", "matplotlib", "scikit-learn"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _line(row: Mapping[str, Any], settings: EvaluationSettings) -> str:
    robust = ", ".join(f"{eps_label(e).removeprefix('linf_').replace('_', '/')} {row[f'robust_acc_{eps_label(e)}']:.3f}"
                       for e in settings.robust_eps)
    return (f"{row['model']}: clean {row['clean_acc']:.3f} (n={row['clean_n']}), jpeg {row['jpeg_acc']:.3f} "
            f"(n={row['jpeg_n']}), robust {robust} (n={row['robust_n']}), corruption {row['corruption_acc']:.3f}; "
            f"{row['seconds_total']:.0f} s")


def measure_cifar_models(names: Sequence[str] | None, out_path: str | Path | None = None, *, force: bool = False,
                         progress: bool = True, settings: EvaluationSettings | None = None,
                         threads: int | None = None) -> pd.DataFrame:
    """Measure the three accuracy axes of every registry name in `names` (None: :func:`default_models`) and write
    them, one row per model, to the CSV `out_path` (None: data/cifar_accuracies/cifar_accuracies.csv).

    Resumable: a model whose row holds the same weights tag and the same settings key (the evaluation settings and
    the sha256 of the image files) is skipped unless force=True; rows of models not in `names` are kept. The table
    is written atomically after each model. Prints one line per model; progress: tqdm bars within a model. Returns
    the table. Hours for the thirty models on 2 CPU cores (AutoAttack dominates); minutes with a small `settings`.

    threads: torch's intra-op threads during the run (restored after; None leaves them alone). On a machine whose
    cores other processes also use, 1 thread ran AutoAttack on a small CNN 20 times faster than 2 (the threads of a
    tiny convolution wait for each other); the measured numbers do not depend on it.
    """
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1; got {threads}")
        torch.set_num_threads(int(threads))
    try:
        return _measure(names, out_path, force=force, progress=progress, settings=settings)
    finally:
        torch.set_num_threads(previous)


def _measure(names, out_path, *, force: bool, progress: bool, settings: EvaluationSettings | None) -> pd.DataFrame:
    from kstar_utils.io import cache
    from kstar_utils.models import check_model_name, model_pretrained_tag

    settings = settings or EvaluationSettings()
    names = list(default_models() if names is None else names)
    if not names:
        raise ValueError("no models to measure")
    for name in names:
        check_model_name(name)
    out_path = Path(out_path) if out_path is not None else default_table()
    old = pd.read_csv(out_path) if out_path.is_file() else pd.DataFrame()
    rows = {r["model"]: r for r in old.to_dict("records")} if not old.empty else {}
    record = {"evaluation": settings.record(), "data_sha256": _data_digests()}
    key = cache.spec_hash(record, length=16)
    todo = []
    for name in names:
        prev = rows.get(name)
        if not force and prev is not None and prev.get("settings_key") == key \
                and prev.get("weights") == model_pretrained_tag(name):
            print(f"{name}: unchanged (weights and evaluation settings), kept", flush=True)
        else:
            todo.append(name)
    if todo:
        data = _build_data(settings)
        versions = json.dumps(_versions(), sort_keys=True)
        for name in todo:
            row = measure_model(name, data, settings, progress=progress)
            row.update(settings=json.dumps(record, sort_keys=True), settings_key=key, versions=versions,
                       measured=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
            rows[name] = row
            print(_line(row, settings), flush=True)
            with cache.atomic_path(out_path) as tmp:
                pd.DataFrame(list(rows.values())).to_csv(tmp, index=False)
    return pd.read_csv(out_path) if out_path.is_file() else pd.DataFrame()
