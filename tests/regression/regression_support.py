"""Paths and helpers of the regression comparison (see conftest.py)."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

#: when this module was imported, i.e. while the session collected its tests, before any notebook of it ran
SESSION_START = time.time()

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
BASELINE = ROOT / "tests" / "baseline"
REFERENCE = BASELINE / "tables"
EXECUTED = ROOT / "outputs" / "tables"


def reference_names() -> list[str]:
    return sorted(p.name for p in REFERENCE.glob("*.csv"))


def reference(name: str) -> pd.DataFrame:
    return pd.read_csv(REFERENCE / name)


def perturb_features(index_csv: Path, out_dir: Path, *, seed: int, scale: float) -> Path:
    """Copies of every features file of a features index with each feature multiplied by (1 + u scale), u in
    [-1, 1] a hash of the feature's value and the seed (pipeline.baseline.rounding_perturbation), under out_dir/features, and their index as out_dir/tables/features_index.csv (returned).
    Relative paths in the index are the notebooks' (their working directory is notebooks/)."""
    from kstar_utils.io import cache
    from kstar_utils.pipeline.features import load_features, save_features

    from kstar_utils.pipeline.baseline import rounding_perturbation

    index = pd.read_csv(index_csv)
    paths, shas = [], []
    for path in index["features_path"]:
        fs = load_features(NOTEBOOKS / path)  # an absolute path stays as it is
        moved = rounding_perturbation(fs.features, seed=seed, scale=scale)
        target = out_dir / "features" / Path(path).name
        sidecar = {k: v for k, v in fs.meta.items() if k != "sha256"}
        save_features(target, moved, fs.labels, fs.class_names, sidecar)
        paths.append(str(target))
        shas.append(cache.read_sidecar(target)["sha256"])
    out = out_dir / "tables" / "features_index.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    index.assign(features_path=paths, features_sha256=shas).to_csv(out, index=False)
    return out
