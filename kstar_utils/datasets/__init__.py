"""Labelled evaluation sets by name, read only from local folders (nothing is downloaded).

Names:
- ``digits``                 scikit-learn's 8x8 digits, a seeded stratified half as "test" (embedded, always present)
- ``cifar10-sample``         real CIFAR-10 images shipped in data/cifar10_sample/: split ``test`` (the first 846 of
                             the official test set) and ``train`` (the first 932 of each training batch, 4,660)
- ``cifar10-jpeg``           all 10,000 CIFAR-10 test images decoded from a JPEG copy, shipped in data/cifar10_jpeg/:
                             split ``test`` only; a JPEG-compression shift of the test set, never its clean accuracy
- ``cifar10``, ``cifar100``  torchvision's format under ``<data_root>/cifar-10-batches-py`` / ``cifar-100-python``
- ``imagenet``               ``<data_root>/imagenet/<split>/<wnid>/*.JPEG`` (split "val"/"test" -> the val folder);
                             option ``subset="robustbench"``: RobustBench's fixed 5,000-image subset of val
- ``imagenet16``             the 16 coarse classes of Geirhos et al. (data/imagenet16/) from the same ImageNet folder
- ``folder:<path>``          any ImageFolder (``<path>/<split>/<class>/*`` if that exists, else ``<path>/<class>/*``)
- ``features:<path>``        bring-your-own features (.npy with a sibling labels file, .npz, .parquet); not images:
                             read with :func:`load_feature_file`

``data_root`` defaults to ``$KSTAR_DATASETS`` or ``~/.cache/kstar/data``. Missing data raises
:class:`DatasetNotFoundError` naming the path searched and how to provide the data.
"""
from __future__ import annotations

import csv
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kstar_utils.datasets.embedded import (CIFAR10_CLASSES, cifar10_jpeg_arrays, cifar10_jpeg_file,  # noqa: F401
                                         cifar10_sample_arrays, cifar10_sample_file, load_digits, pack_images,
                                         unpack_images)

DATASETS = ("digits", "cifar10-sample", "cifar10-jpeg", "cifar10", "cifar100", "imagenet", "imagenet16")
PREFIXES = ("folder:", "features:")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DatasetNotFoundError(FileNotFoundError):
    """The data is not where it was searched. The message names the path and how to provide the data."""


@dataclass(frozen=True)
class LabelledImages:
    """An evaluation set ready for a DataLoader.

    dataset:     a torch Dataset whose items are (image, label); image is what `transform` returns (without a
                 transform: a PIL image, or a (C, H, W) float tensor in [0, 1] for digits).
    labels:      (N,) int64 class index of each item, in item order.
    class_names: (C,) human-readable names, indexed by label.
    source:      JSON-able description (path read, subset, sampling) for provenance.
    """

    name: str
    split: str
    dataset: Any
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DataRequirement:
    """One dataset a run needs: the path searched, whether it is there, and how to provide it."""

    dataset: str
    path: Path | None
    present: bool
    how_to_provide: str


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """`data_root`, else $KSTAR_DATASETS, else ~/.cache/kstar/data (kstar_utils.io.paths)."""
    from kstar_utils.io.paths import datasets_root

    return datasets_root(data_root)


def check_dataset_name(name: str) -> str:
    """Raise ValueError, with the closest names, unless `name` is a dataset name this module understands."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string; got {name!r}")
    if name in DATASETS or (name.startswith(PREFIXES) and len(name.split(":", 1)[1]) > 0):
        return name
    close = difflib.get_close_matches(name, list(DATASETS) + ["folder:<path>", "features:<path>"], n=3, cutoff=0.4)
    raise ValueError(f"unknown dataset {name!r}; valid: {list(DATASETS)} or 'folder:<path>' / 'features:<path>'"
                     + (f"; closest: {close}" if close else ""))


# ---------------------------------------------------------------------------------------------- where data lives
def _cifar_dir(name: str, root: Path) -> Path:
    return root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")


def _imagenet_split_dir(root: Path, split: str) -> Path:
    # ImageNet's labelled evaluation images are the validation set; "test" means val here, as in RobustBench
    folder = "train" if split == "train" else "val"
    return root / "imagenet" / folder


def _folder_dir(path: str, split: str) -> Path:
    base = Path(path).expanduser()
    return base / split if (base / split).is_dir() else base


def requirements(name: str, split: str = "test", data_root=None) -> list[DataRequirement]:
    """What data `name` needs and whether it is present (used by the pre-flight check)."""
    check_dataset_name(name)
    root = resolve_data_root(data_root)
    if name == "digits":
        return [DataRequirement(name, None, True, "embedded (scikit-learn's digits); nothing to provide")]
    if name == "cifar10-sample":
        path = cifar10_sample_file()
        return [DataRequirement(name, path, path.is_file(), "shipped with the project in data/cifar10_sample/; "
                                "restore it from the repository")]
    if name == "cifar10-jpeg":
        path = cifar10_jpeg_file()
        return [DataRequirement(name, path, path.is_file(), "shipped with the project in data/cifar10_jpeg/; "
                                "restore it from the repository")]
    if name in ("cifar10", "cifar100"):
        path = _cifar_dir(name, root)
        how = (f"download the python version of {name.upper()} (e.g. torchvision.datasets."
               f"{'CIFAR10' if name == 'cifar10' else 'CIFAR100'}(root, download=True) on a machine with internet) "
               f"and copy the folder '{path.name}' into {root} (or set KSTAR_DATASETS / data_root)")
        return [DataRequirement(name, path, path.is_dir(), how)]
    if name in ("imagenet", "imagenet16"):
        path = _imagenet_split_dir(root, split)
        how = (f"put the ILSVRC-2012 {path.name} images in {path}/<wnid>/*.JPEG (one folder per WordNet id, e.g. "
               f"with the 'valprep.sh' layout) or set KSTAR_DATASETS / data_root to the folder containing 'imagenet'")
        return [DataRequirement(name, path, path.is_dir() and any(path.iterdir()), how)]
    if name.startswith("folder:"):
        path = _folder_dir(name.split(":", 1)[1], split)
        return [DataRequirement(name, path, path.is_dir(), "point folder:<path> at an ImageFolder: <path>/<class>/<image>")]
    path = Path(name.split(":", 1)[1]).expanduser()
    return [DataRequirement(name, path, path.is_file(), "save features and labels as .npz (features, labels[, "
                            "class_names]), .parquet (feature columns + 'label') or .npy + <stem>_labels.npy")]


def _require(name: str, split: str, data_root) -> Path | None:
    req = requirements(name, split, data_root)[0]
    if not req.present:
        raise DatasetNotFoundError(f"dataset {name!r} ({split}) not found: searched {req.path}. "
                                   f"To provide it: {req.how_to_provide}")
    return req.path


# ---------------------------------------------------------------------------------------------- sampling
def subsample_per_class(labels: np.ndarray, n_per_class: int | None, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of at most `n_per_class` items of each class, drawn without replacement with `seed`.

    labels: (N,) ints. Classes with fewer items keep all of them. None -> all indices.
    """
    labels = np.asarray(labels)
    if n_per_class is None:
        return np.arange(labels.shape[0])
    if int(n_per_class) < 1:
        raise ValueError(f"n_per_class must be >= 1; got {n_per_class}")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(idx[rng.permutation(idx.size)[: int(n_per_class)]] if idx.size > n_per_class else idx)
    return np.sort(np.concatenate(keep))


class _Subset:
    """torch.utils.data.Subset without importing torch at module import; also maps labels (for ImageNet-16)."""

    def __init__(self, base, indices: np.ndarray, label_map: Mapping[int, int] | None = None):
        self.base, self.indices, self.label_map = base, np.asarray(indices), label_map

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i):
        x, y = self.base[int(self.indices[i])]
        return x, (self.label_map[int(y)] if self.label_map is not None else int(y))


class _TensorImages:
    """(N, C, H, W) float images + labels, with an optional per-item transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None):
        import torch

        self.images = torch.as_tensor(images)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i):
        x = self.images[i]
        return (self.transform(x) if self.transform is not None else x), int(self.labels[i])


# ---------------------------------------------------------------------------------------------- loaders
def load_dataset(name: str, split: str = "test", *, data_root=None, transform: Callable | None = None,
                 n_per_class: int | None = None, seed: int = 0, subset: str | None = None) -> LabelledImages:
    """The labelled images of dataset `name`, optionally subsampled to `n_per_class` items per class with `seed`.

    subset: "robustbench" (ImageNet / ImageNet-16 only) restricts val to RobustBench's fixed 5,000-image list.
    transform: applied to each image (e.g. a model's preprocessing). Raises DatasetNotFoundError for missing data.
    """
    check_dataset_name(name)
    if name.startswith("features:"):
        raise ValueError(f"{name!r} holds features, not images: use load_feature_file() or extract_features()")
    if subset is not None and name not in ("imagenet", "imagenet16"):
        raise ValueError(f"subset={subset!r} applies to imagenet/imagenet16 only, not {name!r}")
    if name == "digits":
        base, labels, class_names, src = _load_digits(split, transform)
    elif name == "cifar10-sample":
        base, labels, class_names, src = _load_cifar10_sample(split, transform)
    elif name == "cifar10-jpeg":
        base, labels, class_names, src = _load_cifar10_jpeg(split, transform)
    elif name in ("cifar10", "cifar100"):
        base, labels, class_names, src = _load_cifar(name, split, data_root, transform)
    elif name in ("imagenet", "imagenet16"):
        base, labels, class_names, src = _load_imagenet(name, split, data_root, transform, subset)
    else:
        base, labels, class_names, src = _load_folder(name, split, data_root, transform)
    keep = subsample_per_class(labels, n_per_class, seed)
    if n_per_class is not None:
        base = _Subset(base, keep)
        labels = labels[keep]
    source = {**src, "n_per_class": n_per_class, "seed": seed if n_per_class is not None else None, "n": int(len(labels))}
    return LabelledImages(name, split, base, np.asarray(labels, dtype=np.int64), tuple(class_names), source)


def _load_digits(split: str, transform):
    images, labels = load_digits(split)
    return (_TensorImages(images, labels, transform), np.asarray(labels, dtype=np.int64),
            [str(i) for i in range(10)], {"path": "sklearn.datasets.load_digits (seeded stratified half split)"})


def cifar10_sample_tensors(split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The shipped CIFAR-10 images of `split` as contiguous (N, 3, 32, 32) float32 in [0, 1] (channels-last strides
    would reach the attacks' gradient views, which need plain strides), labels (N,) int64 and the class names."""
    images, labels, names = cifar10_sample_arrays(split)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0), labels, names


def _load_cifar10_sample(split: str, transform):
    chw, labels, names = cifar10_sample_tensors(split)
    return (_TensorImages(chw, labels, transform), labels, list(names),
            {"path": str(cifar10_sample_file()), "split": split})


def cifar10_jpeg_tensors(split: str = "test") -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The 10,000 JPEG-decoded CIFAR-10 test images as contiguous (N, 3, 32, 32) float32 in [0, 1], labels (N,) int64
    and the class names (see :func:`cifar10_jpeg_arrays`)."""
    images, labels, names = cifar10_jpeg_arrays(split)
    return (np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0),
            np.array(labels), names)


def _load_cifar10_jpeg(split: str, transform):
    images, labels, names = cifar10_jpeg_arrays(split)
    # decode lazily per item: 10,000 float images would take 123 MB where the uint8 ones take 31 MB
    return (_UInt8Images(images, labels, transform), np.array(labels), list(names),
            {"path": str(cifar10_jpeg_file()), "split": split, "shift": "JPEG compression of the test images"})


class _UInt8Images:
    """(N, H, W, C) uint8 images + labels; items are (C, H, W) float32 tensors in [0, 1], then `transform`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None):
        self.images, self.labels, self.transform = images, np.asarray(labels, dtype=np.int64), transform

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(self.images[i].transpose(2, 0, 1))).float().div_(255.0)
        return (self.transform(x) if self.transform is not None else x), int(self.labels[i])


def _load_cifar(name: str, split: str, data_root, transform):
    from torchvision import datasets as tvd

    if split not in ("train", "test"):
        raise ValueError(f"{name} splits are 'train' and 'test'; got {split!r}")
    path = _require(name, split, data_root)
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    try:
        ds = cls(root=str(path.parent), train=(split == "train"), transform=transform, download=False)
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise DatasetNotFoundError(f"{name} at {path} is incomplete or corrupt ({e}); "
                                   f"{requirements(name, split, data_root)[0].how_to_provide}") from None
    return ds, np.asarray(ds.targets, dtype=np.int64), list(ds.classes), {"path": str(path)}


def _robustbench_helper_file(name: str) -> Path:
    """A file of robustbench's helper_files/, found without importing robustbench (whose import is heavy and needs
    kstar_utils.compat)."""
    import importlib.util

    spec = importlib.util.find_spec("robustbench")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("robustbench is not installed; it ships the ImageNet id lists (pip install robustbench)")
    return Path(list(spec.submodule_search_locations)[0]) / "helper_files" / name


def _robustbench_ids() -> list[str]:
    """RobustBench's fixed 5,000 ImageNet val images ('<wnid>/<file>'), shipped inside the robustbench package."""
    text = _robustbench_helper_file("imagenet_test_image_ids.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def imagenet16_mapping() -> dict[str, str]:
    """wnid -> coarse category for the 207 ImageNet classes of ImageNet-16 (data/imagenet16/, with provenance)."""
    from kstar_utils.io.paths import shipped

    with open(shipped("imagenet16", "imagenet16_classes.csv"), newline="") as f:
        return {row["wnid"]: row["category"] for row in csv.DictReader(f)}


def _imagenet_class_names(wnids: Sequence[str]) -> list[str]:
    # human-readable names: open_clip's 1000 ImageNet names are in sorted-wnid order; fall back to the wnids
    try:
        import open_clip

        all_wnids = sorted(_imagenet_all_wnids())
        name_of = dict(zip(all_wnids, open_clip.IMAGENET_CLASSNAMES))
        names = [name_of.get(w, w) for w in wnids]
    except Exception:  # noqa: BLE001 -- names are cosmetic; never fail the load over them
        return list(wnids)
    # open_clip's list names two classes each "missile" and "sunglasses"; a table grouped by name would merge them
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n} ({w})" if seen[n] > 1 else n for n, w in zip(names, wnids)]


def _imagenet_all_wnids() -> list[str]:
    import json

    return list(json.loads(_robustbench_helper_file("imagenet_class_to_id_map.json").read_text()))


def _load_imagenet(name: str, split: str, data_root, transform, subset):
    from torchvision.datasets.folder import default_loader

    path = _require(name, split, data_root)
    wnids = sorted(d.name for d in path.iterdir() if d.is_dir())
    if subset == "robustbench":
        rel = _robustbench_ids()
        items = [(path / r, r.split("/")[0]) for r in rel]
        missing = [str(p) for p, _ in items if not p.is_file()]
        if missing:
            raise DatasetNotFoundError(f"{len(missing)} of the {len(items)} images of RobustBench's ImageNet subset "
                                       f"are missing under {path} (first: {missing[0]}); provide the full val set")
    elif subset is None:
        items = [(f, w) for w in wnids for f in sorted((path / w).iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    else:
        raise ValueError(f"unknown ImageNet subset {subset!r}; valid: None, 'robustbench'")
    if name == "imagenet16":
        mapping = imagenet16_mapping()
        class_names = sorted(set(mapping.values()))
        code = {c: i for i, c in enumerate(class_names)}
        items = [(p, code[mapping[w]]) for p, w in items if w in mapping]
    else:
        # ImageNet labels are the standard 0..999 indices (sorted wnids of all 1000 classes), not folder positions,
        # so that a folder holding only some classes still lines up with a classifier's logits
        try:
            all_wnids = sorted(_imagenet_all_wnids())
        except ImportError:  # robustbench missing: number the folders present (a warning-worthy fallback)
            import warnings

            warnings.warn("robustbench not installed: ImageNet labels are folder positions, not the 0-999 indices")
            all_wnids = wnids
        index = {w: i for i, w in enumerate(all_wnids)}
        unknown = sorted({w for _, w in items if w not in index})
        if unknown:
            raise ValueError(f"folders under {path} are not ImageNet wnids: {unknown[:5]}")
        items = [(p, index[w]) for p, w in items]
        class_names = _imagenet_class_names(all_wnids)
    if not items:
        raise DatasetNotFoundError(f"no images found for {name!r} under {path}")
    ds = _ImageList([str(p) for p, _ in items], [y for _, y in items], default_loader, transform)
    src = {"path": str(path), "subset": subset, "n_classes_in_folder": len(wnids)}
    return ds, np.asarray(ds.targets, dtype=np.int64), class_names, src


class _ImageList:
    """A list of (image file, label) pairs read with torchvision's default loader."""

    def __init__(self, files: list[str], targets: list[int], loader, transform):
        self.files, self.targets, self.loader, self.transform = files, targets, loader, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        img = self.loader(self.files[i])
        return (self.transform(img) if self.transform is not None else img), self.targets[i]


def _load_folder(name: str, split: str, data_root, transform):
    from torchvision.datasets import ImageFolder

    path = _require(name, split, data_root)
    ds = ImageFolder(str(path), transform=transform)
    return ds, np.asarray(ds.targets, dtype=np.int64), list(ds.classes), {"path": str(path)}


# ---------------------------------------------------------------------------------------------- own features
def load_feature_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Bring-your-own features (text, audio, any embedding): returns (features (N, D), labels (N,) int64 class codes
    0..C-1, class_names (C,) distinct strings), class code i named class_names[i].

    Accepted: .npz with arrays `features` and `labels` and optional `class_names`; .npy of features with labels in
    `<stem>_labels.npy` beside it; .parquet with a `label` column and numeric feature columns (or one list-valued
    `features` column; other columns are not read).

    Features keep their precision, under the rules of compute_kstar (method.validation.check_features): float16,
    float32 and float64 come back as they are; integers, bools and long doubles as float64 where every value
    converts exactly, otherwise refused naming the rows; complex and other dtypes refused naming the dtype; NaN and
    inf refused naming the rows. Parquet columns of different dtypes are converted one by one, exactly.

    Labels follow compute_kstar's rules too (method.validation.encode_labels): numbers (any int width, signed or
    unsigned, or floats), strings, bytes or bools, one kind per file, compared by value; NaN / None refused naming
    the rows; at least two classes. Classes are named (method.validation.name_classes):
    - without `class_names`, by their values, in sorted order (labels -1, 0, 1 are classes "-1", "0", "1");
    - integer labels with `class_names`: class_names[v] names label value v, so every label must lie in
      0..len(class_names)-1 (else refused, naming the values); names of absent values are left out;
    - string labels with `class_names`: every label must be one of the names, whose order is then the class order
      (else refused, naming the labels);
    - duplicate class_names are always refused, so no two classes share a name.
    Raises DatasetNotFoundError for a missing file and ValueError, naming the file, for anything refused.
    """
    from kstar_utils.method.validation import check_features_labels, name_classes

    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetNotFoundError(f"feature file not found: {path}. {requirements('features:' + str(path))[0].how_to_provide}")
    class_names = None
    if path.suffix == ".npz":
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single array, not an .npz archive of 'features' and 'labels'")
        with z:
            if "features" not in z or "labels" not in z:
                raise ValueError(f"{path} must contain arrays 'features' and 'labels'; found {list(z.keys())}")
            X, y = z["features"], z["labels"]
            if "class_names" in z:
                class_names = z["class_names"]
    elif path.suffix == ".npy":
        lab = path.with_name(path.stem + "_labels.npy")
        if not lab.is_file():
            raise DatasetNotFoundError(f"labels for {path} not found: searched {lab}")
        X, y = np.load(path, allow_pickle=False), np.load(lab, allow_pickle=False)
    elif path.suffix == ".parquet":
        X, y = _read_parquet_features(path)
    else:
        raise ValueError(f"unsupported feature file {path}: use .npz, .npy (+ _labels.npy) or .parquet")
    X, codes, classes = check_features_labels(X, y, where=f" of {path}")
    codes, names = name_classes(codes, classes, class_names, name=f"labels of {path}")
    return X, codes, names


def _read_parquet_features(path: Path):
    """(features (N, D) array, labels Series) of a .parquet file; columns of different dtypes converted exactly."""
    import pandas as pd

    from kstar_utils.method.validation import check_features

    df = pd.read_parquet(path)
    if "label" not in df.columns:
        raise ValueError(f"{path} needs a 'label' column; found {list(df.columns)[:10]}")
    y = df["label"]  # a Series: encode_labels reads nullable and categorical columns without losing NA
    if "features" in df.columns:
        cells = df["features"].to_numpy()
        bad = [i for i, c in enumerate(cells) if c is None or np.ndim(c) != 1 or len(c) != len(cells[0])]
        if bad:
            raise ValueError(f"{path}: column 'features' must hold one list of equal length per row; rows "
                             f"{bad[:5]} are missing or differ from row 0's length {np.size(cells[0])}")
        return np.stack(cells), y
    columns = [c for c in df.columns if c != "label" and pd.api.types.is_numeric_dtype(df[c])
               and not pd.api.types.is_bool_dtype(df[c])]
    if not columns:
        raise ValueError(f"{path} has no numeric feature columns beside 'label'; found {list(df.columns)[:10]}")
    arrays = [_column_array(df[c]) for c in columns]
    if len({a.dtype for a in arrays}) == 1:
        return np.column_stack(arrays), y
    # numpy would put int64 and float32 columns into float64 and round integers beyond 2**53 without a word:
    # convert each column exactly first (to its own float dtype or float64), then to the widest, which holds them all
    arrays = [check_features(a[:, None], name=f"column {c!r} of {path}")[:, 0] for c, a in zip(columns, arrays)]
    return np.column_stack(arrays).astype(np.result_type(*arrays), copy=False), y


def _column_array(s) -> np.ndarray:
    """(N,) numpy array of a numeric column; nullable columns with missing values become float64 with NaN (which
    the features check then refuses, naming the rows)."""
    numpy_dtype = getattr(s.dtype, "numpy_dtype", None)  # pandas' nullable Int64 / Float64 / ...
    if numpy_dtype is None:
        return s.to_numpy()
    if s.isna().any():
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    return s.to_numpy(dtype=numpy_dtype)
