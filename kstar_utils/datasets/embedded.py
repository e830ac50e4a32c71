"""The datasets shipped with the workbook: scikit-learn's 8x8 digits (split here), a sample of real CIFAR-10 images
(data/cifar10_sample/) and all 10,000 CIFAR-10 test images decoded from a JPEG copy (data/cifar10_jpeg/), both
losslessly packed as WebP and verified by pixel hashes when read."""
from __future__ import annotations

import os
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.5
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@lru_cache(maxsize=None)
def _digits_split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    d = _load()
    X = (d.images / 16.0).astype(np.float32)[:, None, :, :]
    y = d.target.astype(np.int64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
                                          stratify=y)
    return {"train": (Xtr, ytr), "test": (Xte, yte)}


def load_digits(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Digits images (N, 1, 8, 8) float32 in [0, 1] and labels (N,) int64 for split "train" or "test" (a seeded,
    stratified half each of the 1,797 images)."""
    splits = _digits_split()
    if split not in splits:
        raise ValueError(f"unknown digits split {split!r}; choose one of {sorted(splits)}")
    X, y = splits[split]
    return X.copy(), y.copy()


def cifar10_sample_file() -> Path:
    from kstar_utils.io.paths import shipped

    return shipped("cifar10_sample", "cifar10_sample.npz")


def cifar10_sample_arrays(split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The shipped CIFAR-10 images of `split` ("test": 846, "train": 4,660): (images (N, 32, 32, 3) uint8 RGB,
    labels (N,) int64, class names)."""
    if split not in ("test", "train"):
        raise ValueError(f"cifar10-sample splits are 'test' (846 images) and 'train' (4,660); got {split!r}")
    path = cifar10_sample_file()
    if not path.is_file():
        from kstar_utils.datasets import DatasetNotFoundError

        raise DatasetNotFoundError(f"dataset 'cifar10-sample' not found: searched {path}; it ships with the project "
                                   "in data/cifar10_sample/ (restore it from the repository)")
    return unpack_images(path, split)


def cifar10_jpeg_file() -> Path:
    from kstar_utils.io.paths import shipped

    return shipped("cifar10_jpeg", "cifar10_jpeg.npz")


def cifar10_jpeg_arrays(split: str = "test") -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """All 10,000 CIFAR-10 test images decoded from a JPEG copy (a JPEG-compression shift of the test set, never its
    clean accuracy; data/cifar10_jpeg/README.md): (images (10000, 32, 32, 3) uint8 RGB, read-only, labels (10000,)
    int64, class names). Decoded and checked against the stored sha256 once per process while the file is unchanged
    (decoding takes seconds)."""
    if split != "test":
        raise ValueError(f"cifar10-jpeg has one split, 'test' (all 10,000 test images); got {split!r}")
    path = cifar10_jpeg_file()
    if not path.is_file():
        from kstar_utils.datasets import DatasetNotFoundError

        raise DatasetNotFoundError(f"dataset 'cifar10-jpeg' not found: searched {path}; it ships with the project "
                                   "in data/cifar10_jpeg/ (restore it from the repository)")
    st = path.stat()
    return _unpack_cached(str(path), st.st_size, st.st_mtime_ns, split)


@lru_cache(maxsize=2)
def _unpack_cached(path: str, size: int, mtime_ns: int, split: str):
    # keyed by size and time too, so that a replaced file is decoded and checked again
    images, labels, names = unpack_images(path, split)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels, names


def pack_images(path: str | os.PathLike, splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
                class_names: Sequence[str], *, method: int = 6) -> Path:
    """Write labelled uint8 images as one compact .npz of losslessly compressed WebP images.

    splits: {split: (images (N, H, W, 3) uint8 RGB, labels (N,) int)}. Per split the file holds `<split>_webp` (the
    concatenated WebP bytes), `<split>_offsets` ((N + 1,) int64), `<split>_labels` ((N,) int64) and
    `<split>_sha256` (sha256 of the raw pixel array, so every load proves the round trip exact), plus
    `class_names`. Written atomically. method: libwebp's effort, 0-6 (6: slowest to write; on JPEG-decoded CIFAR
    images 2 writes 60 times faster and a few per cent smaller); reading is fast at every effort.
    """
    import hashlib
    import io as _io

    from PIL import Image

    from kstar_utils.io import cache

    arrays: dict[str, np.ndarray] = {"class_names": np.asarray([str(c) for c in class_names])}
    for split, (images, labels) in splits.items():
        images = np.ascontiguousarray(images, dtype=np.uint8)
        blobs = []
        for im in images:
            buf = _io.BytesIO()
            Image.fromarray(im).save(buf, format="WEBP", lossless=True, quality=100, method=method)
            blobs.append(buf.getvalue())
        arrays[f"{split}_webp"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
        arrays[f"{split}_sha256"] = np.asarray(hashlib.sha256(images.tobytes()).hexdigest())
    path = Path(path)
    with cache.atomic_path(path) as tmp:
        cache.write_npz(tmp, arrays)
    return path


def unpack_images(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read one split of a file written by :func:`pack_images`: (images (N, H, W, 3) uint8, labels (N,) int64,
    class_names). Raises ValueError naming the file when the split is unknown or the decoded pixels do not match the
    stored hash (a damaged file)."""
    import hashlib
    import io as _io

    from PIL import Image

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            splits = sorted(k[: -len("_labels")] for k in z.files if k.endswith("_labels"))
            if split not in splits:
                raise ValueError(f"{path} has no split {split!r}; splits: {splits}")
            blob, offsets = z[f"{split}_webp"], z[f"{split}_offsets"]
            labels, digest = z[f"{split}_labels"], str(z[f"{split}_sha256"])
            names = tuple(str(c) for c in z["class_names"])
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"packed image file {path} is unreadable or incomplete ({e})") from None
    decoded = []
    for i, (a, b) in enumerate(zip(offsets[:-1], offsets[1:])):
        try:
            decoded.append(np.asarray(Image.open(_io.BytesIO(blob[a:b].tobytes())).convert("RGB")))
        except (OSError, ValueError) as e:  # PIL's errors for bytes that are no image: name the file instead
            raise ValueError(f"packed image file {path}: {split!r} image {i} cannot be decoded ({e}); the file is "
                             "damaged (restore it from the repository)") from None
    images = np.stack(decoded)
    if hashlib.sha256(images.tobytes()).hexdigest() != digest:
        raise ValueError(f"packed image file {path}: the decoded {split!r} images do not match their stored sha256; "
                         "the file is damaged (restore it from the repository)")
    return images, labels.astype(np.int64), names
