"""The index tables that hand results from one stage to the next, and the k* files they list: the contract between
the notebooks, the study runner, the report and the explorer.

    features index (01) -> k* index (02) -> skewness tables (03) -> correlations (04)

An index is a small CSV with one row per (model, dataset, split, layer) (INDEX_KEYS) and the paths of the cached
artefacts, with the sha256 of each file's bytes, so a notebook names its input and output as two paths and any stage
can be rerun alone. `read_index` checks a table's columns, `write_table` writes one atomically, `select` picks rows,
`load_kstar` / `indexed_kstar` read a k* file checked against its sidecar and the index (KstarResult).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from kstar_utils.io import cache

#: the columns that identify one row of every index table
INDEX_KEYS = ["model", "dataset", "split", "layer"]


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a table atomically; the format follows the suffix (.csv or .parquet)."""
    path = Path(path)
    with cache.atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            raise ValueError(f"unsupported table format {path.suffix!r} for {path}; use .csv or .parquet")
    return path


def read_index(index: str | Path | pd.DataFrame, required: Sequence[str], *, layer: str | None = None) -> pd.DataFrame:
    """An index table (a DataFrame or the path of its CSV) with its required columns checked; with `layer`, only the
    rows of that layer (an error when there are none)."""
    where = ""
    if not isinstance(index, pd.DataFrame):
        path = Path(index)
        if not path.exists():
            raise FileNotFoundError(f"index table not found: {path} (run the previous notebook/stage first)")
        where = f" {path}"
        try:
            index = pd.read_csv(path)
        except (ValueError, OSError) as e:  # ParserError, EmptyDataError and UnicodeDecodeError are ValueErrors
            raise ValueError(f"index table {path} is not a readable CSV ({type(e).__name__}: {e}); write it again "
                             f"with the previous notebook/stage") from None
    missing = [c for c in required if c not in index.columns]
    if missing:
        raise ValueError(f"index table{where} lacks columns {missing}; has {list(index.columns)[:20]}")
    if layer is not None:
        index = index[index["layer"] == layer]
        if index.empty:
            raise ValueError(f"no rows for layer {layer!r} in the index")
    return index


@dataclass(frozen=True)
class KstarResult:
    """k* of one (model, layer): kstar (N,) int64 raw k*, labels (N,) int64, class_names (C,), meta = sidecar,
    enemy (N,) int64: the index of each sample's nearest sample of another class (lowest index among exact ties)."""

    kstar: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    meta: Mapping
    enemy: np.ndarray | None = None

    @property
    def khat(self) -> np.ndarray:
        """(N,) normalised k* = k* / class size."""
        return self.kstar / np.bincount(self.labels)[self.labels]

    @property
    def names(self) -> list[str]:
        """The class names in label order (the labels as text when the features carried no names)."""
        return list(self.class_names) if self.class_names else [str(c) for c in np.unique(self.labels)]

    @property
    def named_labels(self) -> np.ndarray:
        """(N,) class names (or the integer labels when the features carried no names)."""
        return np.asarray(self.class_names)[self.labels] if self.class_names else self.labels


def load_kstar(path: str | Path, *, sha256: str | None = None) -> KstarResult:
    """Read a k* file written by :func:`kstar_of_file`.

    Its bytes are hashed and parsed in one read and must match the sha256 its sidecar records and, when given,
    `sha256` (e.g. the k* index's record), so a result never comes from a damaged or swapped file. A mismatch or an
    unreadable file raises ValueError (cache.CorruptFileError) naming it.
    """
    path = Path(path)
    data = path.read_bytes()
    meta = cache.read_sidecar(path)
    actual = hashlib.sha256(data).hexdigest()
    for whose, want in (("its sidecar", meta.get("sha256")), ("the k* index", sha256)):
        if isinstance(want, str) and want and want != actual:
            raise cache.CorruptFileError(
                f"k* file {path} (sha256 {actual[:12]}) is not the file {whose} records (sha256 {want[:12]}): damaged "
                f"or replaced; run the k* stage again (it sets a damaged cached k* aside and recomputes it)")
    z = cache.load_npz(data, ["kstar", "enemy", "labels", "class_names"], name=path)
    return KstarResult(z["kstar"], z["labels"], tuple(str(c) for c in z["class_names"]), meta, z["enemy"])


def indexed_kstar(row) -> KstarResult:
    """The k* file of a k* index row (a namedtuple or Series with kstar_path), checked against the sha256 the index
    recorded for it (indexes written before that column existed are checked against the sidecar only)."""
    recorded = getattr(row, "kstar_sha256", None)
    return load_kstar(row.kstar_path, sha256=recorded if isinstance(recorded, str) else None)


def select(df: pd.DataFrame, **equal) -> pd.DataFrame:
    """Rows of `df` whose columns equal the given values, e.g. select(t, model="zoo:standard", layer="logits")."""
    missing = [k for k in equal if k not in df.columns]
    if missing:
        raise ValueError(f"no column(s) {missing} to select on; columns are {list(df.columns)}")
    mask = np.ones(len(df), dtype=bool)
    for k, v in equal.items():
        mask &= (df[k] == v).to_numpy()
    if not mask.any():
        raise ValueError(f"no rows with {equal}; values present: " +
                         ", ".join(f"{k}={sorted(map(str, df[k].unique()))[:10]}" for k in equal))
    return df[mask].reset_index(drop=True)
