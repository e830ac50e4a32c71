"""Loaders for the published tables in data/, each checked against a written schema (data/*/README.md).

Every loader reads one CSV and checks it: required columns, dtypes, value ranges, unique keys. A failed check raises a
ValueError that names the file, the column and the offending rows. Accuracies are returned as **fractions** in [0, 1].
RobustBench stores percents, and the loader divides them by 100. Tables of models get a `model_id` column that joins
with the model registry:
`openclip:<name>/<pretrained>` and `robustbench:<dataset>/<threat_model>/<model_name>`.

The data folder is `$KSTAR_SHIPPED_DATA` if set, otherwise the repository's `data/` beside this package. That is the
right place for an editable install. Every loader also takes an explicit `path` to its CSV.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kstar_utils.io.paths import SHIPPED_ENV


OPENCLIP_DATASET_COLUMNS: tuple[str, ...] = (
    "ImageNet 1k", "Caltech-101", "CIFAR-10", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Country211",
    "Describable Textures", "EuroSAT", "FGVC Aircraft", "Food-101", "GTSRB", "ImageNet Sketch", "ImageNet v2",
    "ImageNet-A", "ImageNet-O", "ImageNet-R", "KITTI Vehicle Distance", "MNIST", "ObjectNet", "Oxford Flowers-102",
    "Oxford-IIIT Pet", "Pascal VOC 2007", "PatchCamelyon", "Rendered SST2", "RESISC45", "Stanford Cars", "STL-10",
    "SUN397", "SVHN", "Flickr", "MSCOCO", "WinoGAViL", "iWildCam", "Camelyon17", "FMoW", "Dollar Street", "GeoDE",
)
"""The 38 zero-shot score columns of openclip_results.csv (fractions in [0, 1])."""

OPENCLIP_AVERAGE_COLUMN = "Average perf. on 38 datasets"
AVERAGE_TOLERANCE = 5e-4  # the average and the columns are each rounded to 4 decimals

ROBUSTBENCH_ACCURACY_COLUMNS: tuple[str, ...] = (
    "clean_acc", "robust_acc", "leaderboard_acc", "autoattack_acc", "external", "reported", "corruptions_acc",
    "corruptions_acc_3d",
)
"""Columns the CSV stores in percent and `load_robustbench_leaderboard` returns as fractions."""

PUBLISHED_SKEW_COLUMNS: tuple[str, ...] = (
    "standard_resnet50", "standard_resnet50_pgd_experiment", "adv_trained_resnet50_eps4",
)



def data_dir() -> Path:
    """The folder that holds the published tables: $KSTAR_SHIPPED_DATA, else <repository>/data (io.paths)."""
    from kstar_utils.io.paths import shipped

    return shipped()


# --------------------------------------------------------------------------------------------------------------------
# schema checking


@dataclass(frozen=True)
class Column:
    """One column of a schema: kind is "str", "float", "int" or "bool"; nullable allows missing cells;
    low/high bound the values (inclusive); choices lists the allowed values."""

    name: str
    kind: str
    nullable: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None


def _rows(df: pd.DataFrame, mask, key: Sequence[str]) -> str:
    """A short description of the first offending rows, by key where there is one."""
    idx = np.flatnonzero(np.asarray(mask))
    cols = [k for k in key if k in df.columns]
    shown = [
        "/".join(str(df.iloc[i][k]) for k in cols) if cols else f"row {i}"
        for i in idx[:5]
    ]
    more = f" and {idx.size - 5} more" if idx.size > 5 else ""
    return f"{idx.size} row(s): {shown}{more}"


def _is_bool_series(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s):
        return True
    values = s.dropna()
    return all(isinstance(v, (bool, np.bool_)) for v in values)


def validate_table(df: pd.DataFrame, schema: Sequence[Column], *, key: Sequence[str], source: str) -> pd.DataFrame:
    """Check `df` against `schema` and the unique `key`; return a copy with normalised dtypes.

    Missing columns, wrong dtypes, missing values in non-nullable columns, out-of-range or unknown values, and
    duplicate keys raise ValueError naming `source`, the column and the first offending rows. Normalised dtypes:
    nullable int columns become "Int64", bool columns with missing cells become "boolean".
    """
    missing = [c.name for c in schema if c.name not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing required column(s) {missing}; the file has columns {list(df.columns)}")
    if df.empty:
        raise ValueError(f"{source}: the table has no rows")
    out = df.copy()
    for col in schema:
        s = out[col.name]
        na = s.isna().to_numpy()
        if na.any() and not col.nullable:
            raise ValueError(f"{source}: column {col.name!r} has missing values in {_rows(out, na, key)}")
        if col.kind == "str":
            bad = np.array([not (isinstance(v, str) and v.strip() != "") for v in s], dtype=bool) & ~na
            if bad.any():
                raise ValueError(f"{source}: column {col.name!r} must hold non-empty text; bad values in {_rows(out, bad, key)}")
        elif col.kind in ("float", "int"):
            if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
                numeric = pd.to_numeric(s, errors="coerce")
                bad = numeric.isna().to_numpy() & ~na
                raise ValueError(
                    f"{source}: column {col.name!r} must be numeric; non-numeric values "
                    f"{s[bad].astype(str).tolist()[:5]} in {_rows(out, bad, key)}"
                )
            values = s.to_numpy(dtype=np.float64, na_value=np.nan)
            nonfinite = ~np.isfinite(values) & ~na
            if nonfinite.any():
                raise ValueError(f"{source}: column {col.name!r} has inf values in {_rows(out, nonfinite, key)}")
            if col.kind == "int":
                frac = (values != np.round(values)) & ~na
                if frac.any():
                    raise ValueError(f"{source}: column {col.name!r} must hold whole numbers; see {_rows(out, frac, key)}")
                out[col.name] = s.astype("Int64") if col.nullable else s.astype(np.int64)
            else:
                out[col.name] = s.astype(np.float64)
            with np.errstate(invalid="ignore"):
                low = (values < col.low) if col.low is not None else np.zeros(len(s), bool)
                high = (values > col.high) if col.high is not None else np.zeros(len(s), bool)
            bad = (low | high) & ~na
            if bad.any():
                raise ValueError(
                    f"{source}: column {col.name!r} must lie in [{col.low}, {col.high}]; out-of-range values "
                    f"{values[bad][:5].tolist()} in {_rows(out, bad, key)}"
                )
        elif col.kind == "bool":
            if not _is_bool_series(s):
                raise ValueError(
                    f"{source}: column {col.name!r} must hold True/False; found values {sorted(map(str, s.dropna().unique()))[:5]}"
                )
            out[col.name] = s.astype("boolean") if na.any() or col.nullable else s.astype(bool)
        else:  # pragma: no cover - a schema error, not a data error
            raise TypeError(f"unknown column kind {col.kind!r}")
        if col.choices is not None:
            bad = ~s.isin(col.choices).to_numpy() & ~na
            if bad.any():
                raise ValueError(
                    f"{source}: column {col.name!r} must be one of {list(col.choices)}; unknown values "
                    f"{sorted(map(str, s[bad].unique()))[:5]} in {_rows(out, bad, key)}"
                )
    dup = out.duplicated(list(key), keep=False).to_numpy()
    if dup.any():
        raise ValueError(f"{source}: the key {list(key)} must be unique; duplicated in {_rows(out, dup, key)}")
    return out


def _resolve(path, default_relative: str) -> Path:
    p = Path(path) if path is not None else data_dir() / default_relative
    if not p.is_file():
        hint = "" if path is not None else f" (set ${SHIPPED_ENV} to the folder that holds {default_relative})"
        raise FileNotFoundError(f"table not found: {p}{hint}")
    return p


def _read_csv(p: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not a readable CSV table: {e}") from None


def _insert_model_id(df: pd.DataFrame, ids: pd.Series, source: str) -> pd.DataFrame:
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        raise ValueError(f"{source}: model_id must be unique; duplicated: {sorted(set(ids[dup]))[:5]}")
    df.insert(0, "model_id", ids.astype(str).to_numpy())
    return df


# --------------------------------------------------------------------------------------------------------------------
# OpenCLIP

OPENCLIP_RESULTS_SCHEMA: tuple[Column, ...] = (
    Column("name", "str"),
    Column("pretrained", "str"),
    Column("params (M)", "float", low=0.0),
    Column("FLOPs (B)", "float", low=0.0),
    Column(OPENCLIP_AVERAGE_COLUMN, "float", low=0.0, high=1.0),
    *(Column(c, "float", low=0.0, high=1.0) for c in OPENCLIP_DATASET_COLUMNS),
)


def load_openclip_results(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """OpenCLIP zero-shot results (data/openclip/openclip_results.csv): one row per (name, pretrained).

    Returns the CSV's columns (`name`, `pretrained`, `params (M)`, `FLOPs (B)`, the average and the 38 dataset
    columns in OPENCLIP_DATASET_COLUMNS, all scores as fractions in [0, 1]) with `model_id` =
    "openclip:<name>/<pretrained>" first. Checks: required columns, numeric scores in [0, 1], positive sizes, a unique
    (name, pretrained) key, and that the average equals the mean of the 38 columns within AVERAGE_TOLERANCE. Any
    extra column must also be a score in [0, 1].
    """
    p = _resolve(path, "openclip/openclip_results.csv")
    df = _read_csv(p)
    key = ("name", "pretrained")
    known = {c.name for c in OPENCLIP_RESULTS_SCHEMA}
    extra = tuple(Column(c, "float", low=0.0, high=1.0) for c in df.columns if c not in known)
    df = validate_table(df, OPENCLIP_RESULTS_SCHEMA + extra, key=key, source=str(p))
    gap = (df[OPENCLIP_AVERAGE_COLUMN] - df[list(OPENCLIP_DATASET_COLUMNS)].mean(axis=1)).abs().to_numpy()
    bad = gap > AVERAGE_TOLERANCE
    if bad.any():
        raise ValueError(
            f"{p}: {OPENCLIP_AVERAGE_COLUMN!r} differs from the mean of the {len(OPENCLIP_DATASET_COLUMNS)} dataset "
            f"columns by more than {AVERAGE_TOLERANCE} in {_rows(df, bad, key)}"
        )
    ids = df["name"] + "/" + df["pretrained"]
    return _insert_model_id(df, "openclip:" + ids, str(p))


ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")
ROBUSTBENCH_THREAT_MODELS = ("Linf", "L2", "corruptions")

ROBUSTBENCH_SCHEMA: tuple[Column, ...] = (
    Column("dataset", "str", choices=ROBUSTBENCH_DATASETS),
    Column("threat_model", "str", choices=ROBUSTBENCH_THREAT_MODELS),
    Column("model_name", "str"),
    Column("clean_acc", "float", low=0.0, high=100.0),
    Column("robust_acc", "float", low=0.0, high=100.0),
    Column("leaderboard_acc", "float", low=0.0, high=100.0),
    Column("robust_acc_field", "str"),
    Column("eps_float", "float", nullable=True, low=0.0, high=1.0),
    Column("additional_data", "bool"),
    Column("number_forward_passes", "int", low=1),
    Column("unreliable", "bool", nullable=True),
    *(Column(c, "float", nullable=True, low=0.0, high=100.0) for c in ("autoattack_acc", "external", "reported", "corruptions_acc", "corruptions_acc_3d")),
    Column("corruptions_mce", "float", nullable=True, low=0.0),
    Column("corruptions_mce_3d", "float", nullable=True, low=0.0),
    Column("in_model_zoo_github", "bool"),
    Column("in_model_zoo_pypi_1_1_1", "bool"),
)


def load_robustbench_leaderboard(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """RobustBench leaderboard (data/robustbench/leaderboard.csv): one row per (dataset, threat_model, model_name).

    The CSV stores accuracies in percent. They are returned as FRACTIONS in [0, 1]: the columns in
    ROBUSTBENCH_ACCURACY_COLUMNS (clean_acc, robust_acc, leaderboard_acc, autoattack_acc, external, reported,
    corruptions_acc, corruptions_acc_3d) are divided by 100. corruptions_mce / corruptions_mce_3d are error ratios, not
    accuracies, and stay in percent (AlexNet = 100). `unreliable` is a nullable boolean (missing = not stated).
    `model_id` = "robustbench:<dataset>/<threat_model>/<model_name>" comes first.

    Checks: required columns; known dataset and threat-model names; percents in [0, 100]; a file whose clean accuracies
    are all <= 1 is refused as probably holding fractions already; leaderboard_acc <= robust_acc (the leaderboard
    ranks by the stricter number); a unique (dataset, threat_model, model_name) key.
    """
    p = _resolve(path, "robustbench/leaderboard.csv")
    key = ("dataset", "threat_model", "model_name")
    df = validate_table(_read_csv(p), ROBUSTBENCH_SCHEMA, key=key, source=str(p))
    if df["clean_acc"].max() <= 1.0:
        raise ValueError(
            f"{p}: every clean_acc is <= 1, so the file seems to hold fractions; this table must store percents (0-100)"
        )
    above = (df["leaderboard_acc"] > df["robust_acc"] + 1e-9).to_numpy()
    if above.any():
        raise ValueError(f"{p}: leaderboard_acc exceeds robust_acc in {_rows(df, above, key)}")
    for c in ROBUSTBENCH_ACCURACY_COLUMNS:
        if c in df.columns:
            df[c] = df[c] / 100.0
    ids = df["dataset"] + "/" + df["threat_model"] + "/" + df["model_name"]
    return _insert_model_id(df, "robustbench:" + ids, str(p))


# --------------------------------------------------------------------------------------------------------------------
# published per-class skews

PUBLISHED_SKEWS_SCHEMA: tuple[Column, ...] = (
    Column("class", "str"),
    *(Column(c, "float") for c in PUBLISHED_SKEW_COLUMNS),
)


def load_published_skews(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Per-class k̂* skews read off the predecessor paper's project page (data/paper/kdist_project_page_skews.csv).

    Returns one row per ImageNet-16 class: `class` (unique) and one finite float column per model run
    (PUBLISHED_SKEW_COLUMNS: standard_resnet50, standard_resnet50_pgd_experiment, adv_trained_resnet50_eps4).
    Values are unitless skews rounded to 2 decimals. Any extra column must also be finite numbers.
    """
    p = _resolve(path, "paper/kdist_project_page_skews.csv")
    df = _read_csv(p)
    known = {c.name for c in PUBLISHED_SKEWS_SCHEMA}
    extra = tuple(Column(c, "float") for c in df.columns if c not in known)
    return validate_table(df, PUBLISHED_SKEWS_SCHEMA + extra, key=("class",), source=str(p))


# --------------------------------------------------------------------------------------------------------------------
# accuracies measured by the workbook for its own models

MEASURED_SCHEMA: tuple[Column, ...] = (
    Column("model", "str"),
    Column("kind", "str"),
    Column("train_eps", "float", low=0.0),
    Column("clean_acc", "float", low=0.0, high=1.0),
    Column("robust_acc", "float", low=0.0, high=1.0),
    Column("eval_eps", "float", low=0.0),
    Column("attacks", "str"),
)
#: registry source -> (file in the shipped data, the dataset its accuracies were measured on, how to rebuild)
MEASURED = {
    "zoo": ("zoo/zoo_metrics.csv", "digits", "kstar zoo train --zoo digits"),
    "cifar-resnet": ("cifar_resnets/cifar_zoo_metrics.csv", "cifar10-sample", "kstar zoo train --zoo cifar"),
}


def load_measured_metrics(source: str, path: str | os.PathLike | None = None) -> pd.DataFrame:
    """Clean and robust accuracy the workbook measured for its own models: source "zoo" (the digits CNNs,
    data/zoo/zoo_metrics.csv) or "cifar-resnet" (the CIFAR ResNets, data/cifar_resnets/cifar_zoo_metrics.csv).

    Checked columns: model (a name of the source; returned as the registry name "<source>:<name>"), kind, train_eps,
    clean_acc and robust_acc (fractions), eval_eps (the attack's L-inf budget), attacks; other columns pass through.
    Raises FileNotFoundError naming the file and the command that rebuilds it.
    """
    if source not in MEASURED:
        raise ValueError(f"no measured accuracies for source {source!r}; sources: {sorted(MEASURED)}")
    rel, _, rebuild = MEASURED[source]
    p = Path(path) if path is not None else data_dir() / rel
    if not p.is_file():
        raise FileNotFoundError(f"measured accuracies not found: {p}; rebuild them with `{rebuild}`")
    df = validate_table(_read_csv(p), MEASURED_SCHEMA, key=("model",), source=str(p))
    bad = (df["robust_acc"] > df["clean_acc"] + 0.05).to_numpy()  # attacked on a subset: within sampling noise only
    if bad.any():
        raise ValueError(f"{p}: robust_acc exceeds clean_acc in {_rows(df, bad, ('model',))}")
    return df.assign(model=source + ":" + df["model"])


#: every accuracy column the workbook joins to Γ' (fractions in [0, 1]); the sources say where each comes from
#: (kstar_utils.models.accuracies): clean accuracy; robust accuracy at the budget in `eval_eps` (RobustBench, the
#: digits zoo); the CIFAR models' robust accuracy under AutoAttack at L-inf 2/255 and 8/255, CIFAR-10-C corruption
#: accuracy and accuracy on the JPEG-compressed test set (data/cifar_accuracies/); OpenCLIP zero-shot accuracy
ACCURACY_COLUMNS = ("clean_acc", "robust_acc", "robust_acc_linf_2_255", "robust_acc_linf_8_255", "corruption_acc",
                    "jpeg_acc", "zeroshot_acc", "zeroshot_avg")
#: the OpenCLIP results column holding the zero-shot score of each dataset of the registry
OPENCLIP_COLUMN = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet 1k"}



CIFAR_ACCURACY_SCHEMA: tuple[Column, ...] = (
    Column("model", "str"),
    Column("training", "str"),
    Column("clean_acc", "float", low=0.0, high=1.0),
    Column("clean_n", "int", low=1),
    Column("jpeg_acc", "float", low=0.0, high=1.0),
    Column("jpeg_n", "int", low=1),
    Column("robust_n", "int", low=1),
    Column("robust_acc_linf_2_255", "float", low=0.0, high=1.0),
    Column("robust_acc_linf_8_255", "float", low=0.0, high=1.0),
    Column("corruption_acc", "float", low=0.0, high=1.0),
    Column("settings_key", "str"),
)


def load_cifar_accuracies(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """The three accuracy axes the workbook measured for every CIFAR-10 model of its study
    (data/cifar_accuracies/cifar_accuracies.csv, `kstar zoo measure`; its README says how): one row per registry
    name `model` (unique): clean_acc on clean_n exact test images, jpeg_acc on jpeg_n JPEG-decoded ones, robust
    accuracy under AutoAttack at L-inf 2/255 and 8/255 on robust_n images, corruption_acc (CIFAR-10-C style), as
    fractions; other columns (per-corruption accuracies, seconds, settings, versions) pass through. Robust accuracy
    above the clean accuracy of the attacked images is refused."""
    p = _resolve(path, "cifar_accuracies/cifar_accuracies.csv")
    if not p.is_file():
        raise FileNotFoundError(f"measured accuracies not found: {p}; rebuild them with `kstar zoo measure`")
    df = validate_table(_read_csv(p), CIFAR_ACCURACY_SCHEMA, key=("model",), source=str(p))
    if "clean_acc_robust_subset" in df.columns:
        for c in ("robust_acc_linf_2_255", "robust_acc_linf_8_255"):
            bad = (df[c] > df["clean_acc_robust_subset"] + 1e-9).to_numpy()
            if bad.any():
                raise ValueError(f"{p}: {c} exceeds the clean accuracy of the attacked images in "
                                 f"{_rows(df, bad, ('model',))}")
    return df

