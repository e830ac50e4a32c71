"""The regression baseline of the workbook's default run: the tables its notebooks write, stored beside the tests and
compared column by column within a tolerance measured for rounding-level changes of the features.

Why tolerances and not bytes: k* counts the classmates nearer than the nearest enemy, so it jumps when a float32
feature moves by its last bit, and float32 features differ in their last bits between CPUs (vector instructions,
convolution algorithms). Every number computed from k* therefore moves by small steps from one machine to another, and
a number printed to three decimals flips when it sits near a rounding edge. `benchmarks/regression_sensitivity.py`
measures how far each column moves when the features move at that level and writes the tolerances; `compare_table`
checks a run against the stored tables within them.

    names = table_names("notebooks")           # the tables the default run writes (its parameter defaults)
    store_baseline("outputs/executed", "notebooks", "outputs/tables", "tests/baseline/tables")   # kstar store-notebooks
    problems = compare_table(name, reference, executed, tolerances[name])                    # [] when within them

A column is a *key* (rows are matched on it: model, layer, metric, class, ...), a *number* (compared by its largest
absolute change) or a *label* (text, flags and sample numbers: compared by how many rows differ). A number column may
name rows of its own (`Tolerance.rows`): a row whose features are far more tie-prone than the rest (near-duplicate
vectors) moves far more at rounding level, and a tolerance wide enough for it would let a real change of every other
row through.
"""
from __future__ import annotations

import ast
import csv
import datetime as _dt
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

#: where the notebooks' defaults write (relative to notebooks/); a run elsewhere replaces this prefix
OUTPUTS_PREFIX = "../outputs"
TABLES_PREFIX = OUTPUTS_PREFIX + "/tables/"
#: columns that name a row rather than measure it; a table's keys are its columns among these
KEY_COLUMNS = ("model", "dataset", "split", "layer", "metric", "reference", "label", "class", "enemy_class", "x", "y",
               "group", "method", "layer_a", "layer_b", "a", "b", "strength", "which", "rank", "value", "n_per_class", "family",
               "draw")
#: integer columns that number samples: which sample, not how many, so compared as labels
SAMPLE_COLUMNS = ("index", "enemy")
TOLERANCE_FIELDS = ("table", "column", "kind", "measured", "tolerance", "row")


#: notebooks whose tables are not in the regression baseline: the sample-size notebook sends all 10,000 test images
#: through seven networks, too long for the fast tier's second, perturbed run and for the nine runs that measure the
#: tolerances; nbval still runs it top to bottom in the slow tier (make test-slow), its numbers masked
UNCOMPARED = ("09_sample_size.ipynb",)


def notebooks_of(folder: str | os.PathLike, *, compared: bool = False) -> list[Path]:
    """The workbook notebooks of a folder (NN_name.ipynb), in order; compared=True: those whose tables the
    regression baseline holds (all but UNCOMPARED)."""
    found = sorted(Path(folder).glob("[0-9][0-9]_*.ipynb"))
    return [nb for nb in found if nb.name not in UNCOMPARED] if compared else found


def _default(spec: Mapping[str, Any]) -> Any:
    try:
        return ast.literal_eval(spec.get("default", ""))
    except (ValueError, SyntaxError):
        return None  # an expression papermill cannot evaluate either: not a path default


def table_names(notebooks_dir: str | os.PathLike) -> list[str]:
    """File names of the tables the default run writes and the baseline compares: every parameter default of the
    compared notebooks that is a .csv under ../outputs/tables/, in notebook order, each once."""
    from kstar_utils.pipeline.notebooks import declared_parameters

    names: dict[str, None] = {}
    for nb in notebooks_of(notebooks_dir, compared=True):
        for spec in declared_parameters(nb).values():
            value = _default(spec)
            if isinstance(value, str) and value.startswith(TABLES_PREFIX) and value.endswith(".csv"):
                names[value[len(TABLES_PREFIX):]] = None
    return list(names)


def redirected_parameters(notebook: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, str]:
    """The notebook's parameters whose default lies under ../outputs, pointed under `out_dir` instead (cache_dir,
    tables, figures), as absolute paths."""
    from kstar_utils.pipeline.notebooks import declared_parameters

    out = Path(out_dir).resolve()
    params = {}
    for name, spec in declared_parameters(notebook).items():
        value = _default(spec)
        if isinstance(value, str) and (value == OUTPUTS_PREFIX or value.startswith(OUTPUTS_PREFIX + "/")):
            params[name] = str(out / value[len(OUTPUTS_PREFIX):].lstrip("/"))
    return params


def run_workbook(out_dir: str | os.PathLike, *, notebooks_dir: str | os.PathLike = "notebooks",
                 start_at: str | None = None, parameters: Mapping[str, Any] | None = None,
                 kernel: str | None = None) -> Path:
    """Run the workbook notebooks whose tables are compared (all but UNCOMPARED) on their defaults, every file they write under `out_dir` instead of ../outputs
    (features and k* caches, tables in out_dir/tables, figures, executed notebooks in out_dir/executed); returns
    out_dir/tables.

    start_at: the first notebook to run (e.g. "02"): the earlier ones' tables must then already be under
    out_dir/tables or given in `parameters`. parameters: values that override the redirected defaults, passed to
    each notebook that declares them. Raises papermill's PapermillExecutionError when a cell fails.
    """
    from kstar_utils.pipeline.notebooks import declared_parameters, run_notebook

    out = Path(out_dir)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    for nb in notebooks_of(notebooks_dir, compared=True):
        if start_at is not None and nb.name < start_at:
            continue
        declared = declared_parameters(nb)
        params = redirected_parameters(nb, out) | {k: v for k, v in (parameters or {}).items() if k in declared}
        run_notebook(nb, out / "executed" / nb.name, params, cwd=Path(notebooks_dir).resolve(), kernel=kernel,
                     progress_bar=False)
    return out / "tables"


# ---------------------------------------------------------------------------------------------- perturbation
def rounding_perturbation(values: np.ndarray, *, seed: int, scale: float) -> np.ndarray:
    """`values` (float32 features, any shape) each multiplied by (1 + u scale), u in [-1, 1) a hash of the value's
    own bits and the seed: a change at the level of float32 rounding (scale 2^-22: a few units in the last place)
    that, like any CPU's rounding, is a function of what is computed, so equal features (every image a network maps
    to the same output, e.g. its bias) stay equal. A fresh random draw per entry would split such duplicates, which
    no machine does, and move k* far more than another CPU can. Returns float32."""
    v = np.ascontiguousarray(values, dtype=np.float32)
    mask = np.uint64((1 << 32) - 1)
    key = np.uint64((seed * 0x9E3779B9 + 0x7F4A7C15) & ((1 << 32) - 1))  # the seed changes every bit of the hash
    h = (v.view(np.uint32).astype(np.uint64) ^ key) * np.uint64(2654435761) & mask
    h = (h ^ (h >> np.uint64(15))) * np.uint64(2246822519) & mask
    h ^= h >> np.uint64(13)
    u = h.astype(np.float64) / float(1 << 31) - 1.0
    return (v.astype(np.float64) * (1.0 + u * scale)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- table columns
def is_machine_column(name: str) -> bool:
    """Paths and content hashes: they name files on one machine (a features file's sha256 changes with its last
    bits), they are not results."""
    return name.endswith(("_path", "_sha256"))


def reference_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A table as stored in and compared with the baseline: without its machine columns."""
    return df[[c for c in df.columns if not is_machine_column(c)]]


#: key columns only where they name something: in the sample-size tables `value` says which quantity a row holds,
#: elsewhere a numeric `value` is a measurement
NAMING_ONLY = ("value",)


def key_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c in KEY_COLUMNS
            and not (c in NAMING_ONLY and pd.api.types.is_numeric_dtype(df[c]))]


def column_kind(name: str, values: pd.Series) -> str:
    """"number" for measured quantities (floats, counts), "label" for text, flags and sample numbers."""
    if name in SAMPLE_COLUMNS or pd.api.types.is_bool_dtype(values):
        return "label"
    return "number" if pd.api.types.is_numeric_dtype(values) else "label"


def _aligned(reference: pd.DataFrame, other: pd.DataFrame, name: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables with their rows in the reference's order, matched on the key columns (sorting by a value, as some
    tables do, may order near-equal rows differently on another machine). Raises ValueError naming what differs:
    columns, keys, duplicate keys."""
    if list(reference.columns) != list(other.columns):
        missing = [c for c in reference.columns if c not in other.columns]
        extra = [c for c in other.columns if c not in reference.columns]
        raise ValueError(f"{name}: columns differ from the reference (missing {missing}, new {extra}; order "
                         f"{list(other.columns)} vs {list(reference.columns)})")
    keys = key_columns(reference)
    if not keys:
        raise ValueError(f"{name}: no key column to match rows on (known keys: {KEY_COLUMNS})")
    ref, got = reference.set_index(keys), other.set_index(keys)
    for which, t in (("reference", ref), ("run", got)):
        if t.index.has_duplicates:
            dup = t.index[t.index.duplicated()][:3].tolist()
            raise ValueError(f"{name}: the keys {keys} repeat in the {which}, e.g. {dup}")
    missing, extra = ref.index.difference(got.index), got.index.difference(ref.index)
    if len(missing) or len(extra):
        raise ValueError(f"{name}: rows differ from the reference: missing {missing[:5].tolist()}, new "
                         f"{extra[:5].tolist()} ({len(missing)} missing, {len(extra)} new)")
    return ref, got.loc[ref.index]


def _number_changes(a: pd.Series, b: pd.Series) -> np.ndarray:
    """|a - b| row by row: 0 where equal (NaN and equal infinities included), inf where a number meets NaN or the
    opposite infinity (no finite change)."""
    x, y = a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64)
    same = (x == y) | (np.isnan(x) & np.isnan(y))  # equal infinities included
    with np.errstate(invalid="ignore"):
        d = np.where(same, 0.0, np.abs(x - y))
    return np.where(np.isnan(d), np.inf, d)


def _number_change(a: pd.Series, b: pd.Series) -> float:
    return float(_number_changes(a, b).max(initial=0.0))


def row_name(keys: Sequence[str], values: Any) -> str:
    """How a tolerance file names one row: its key columns and values, "model=a; layer=b"."""
    values = values if isinstance(values, tuple) else (values,)
    return "; ".join(f"{k}={v}" for k, v in zip(keys, values))


def row_changes(reference: pd.DataFrame, other: pd.DataFrame, *, name: str = "table") -> dict[str, pd.Series]:
    """{number column: |change| of each row, indexed by row_name} of `other` against `reference`, rows matched on the
    key columns (what column_changes reduces to its largest)."""
    ref, got = _aligned(reference_frame(reference), reference_frame(other), name)
    names = [row_name(ref.index.names, k) for k in ref.index]
    return {col: pd.Series(_number_changes(ref[col], got[col]), index=names)
            for col in ref.columns if column_kind(col, ref[col]) == "number"}


def _label_change(a: pd.Series, b: pd.Series) -> int:
    x, y = a.astype(str).to_numpy(), b.astype(str).to_numpy()
    return int(np.sum(x != y))


def column_changes(reference: pd.DataFrame, other: pd.DataFrame, *, name: str = "table") -> dict[str, tuple[str, float]]:
    """{column: (kind, change)} of every non-key, non-machine column of `other` against `reference`, rows matched on
    the key columns: the largest absolute change of a number column (inf where a value turns NaN or infinite), the
    number of rows that differ in a label column. Raises ValueError when the tables do not have the same columns
    and keys."""
    ref, got = _aligned(reference_frame(reference), reference_frame(other), name)
    out = {}
    for col in ref.columns:
        kind = column_kind(col, ref[col])
        change = _number_change(ref[col], got[col]) if kind == "number" else _label_change(ref[col], got[col])
        out[col] = (kind, change)
    return out


# ---------------------------------------------------------------------------------------------- tolerances
@dataclass(frozen=True)
class Tolerance:
    """How far one column may move: kind "number" (largest absolute change) or "label" (rows that differ);
    measured: the largest change seen at rounding level; tolerance: what the comparison allows; rows: number columns
    only, ((row_name, tolerance), ...) for rows allowed more than the rest (a tie-prone model's row)."""

    kind: str
    measured: float
    tolerance: float
    rows: tuple[tuple[str, float], ...] = ()

    def allowed(self, names: Sequence[str]) -> np.ndarray:
        """The tolerance of each named row."""
        own = dict(self.rows)
        return np.array([own.get(n, self.tolerance) for n in names], dtype=np.float64)


def read_tolerances(path: str | os.PathLike) -> dict[str, dict[str, Tolerance]]:
    """{table: {column: Tolerance}} from a CSV with columns table, column, kind, measured, tolerance and row (empty:
    the column's tolerance; a row_name: that row's own, after the column's line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tolerances not found: {path} (written by benchmarks/regression_sensitivity.py)")
    out: dict[str, dict[str, Tolerance]] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TOLERANCE_FIELDS if c != "row" and c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: lacks columns {missing}")
        for row in reader:
            table, column, kind, which = row["table"], row["column"], row["kind"], (row.get("row") or "").strip()
            if kind not in ("number", "label"):
                raise ValueError(f"{path}: kind must be number or label; got {kind!r} for {table} {column}")
            measured, tolerance = float(row["measured"]), float(row["tolerance"])
            if not (tolerance >= 0 and math.isfinite(tolerance)):
                raise ValueError(f"{path}: tolerance of {table} {column} {which} must be a finite number >= 0")
            columns = out.setdefault(table, {})
            if not which:
                columns[column] = Tolerance(kind, measured, tolerance)
                continue
            own = columns.get(column)
            if own is None or own.kind != "number" or kind != "number":
                raise ValueError(f"{path}: the row {which!r} of {table} {column} must follow its column's line, "
                                 f"and only number columns have rows of their own")
            columns[column] = Tolerance(kind, max(own.measured, measured), own.tolerance,
                                        own.rows + ((which, tolerance),))
    return out


def tolerances_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The CSV text of tolerance rows (table, column, kind, measured, tolerance, row: empty for a column's own)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TOLERANCE_FIELDS, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (repr(float(r[k])) if k in ("measured", "tolerance") else r.get(k) or "")
                    for k in TOLERANCE_FIELDS})
    return buf.getvalue()


def compare_table(name: str, reference: pd.DataFrame, executed: pd.DataFrame,
                  tolerances: Mapping[str, Tolerance]) -> list[str]:
    """What differs between a run's table and its reference beyond the tolerances, one line each ([] when nothing).

    Rows are matched on the key columns, which must be the same set; every other column needs a tolerance of its
    kind (a column without one is reported: measure it). Machine columns (paths, hashes) are not compared.
    """
    try:
        changes = column_changes(reference, executed, name=name)
    except ValueError as e:
        return [str(e)]
    problems, rows = [], None
    for col, (kind, change) in changes.items():
        tol = tolerances.get(col)
        if tol is None:
            problems.append(f"{name}: no tolerance for column {col!r}; measure it with "
                            f"benchmarks/regression_sensitivity.py")
        elif tol.kind != kind:
            problems.append(f"{name}: column {col!r} is a {kind} column, its tolerance is for a {tol.kind}")
        elif tol.rows:
            d = rows[col] if rows else (rows := row_changes(reference, executed, name=name))[col]
            gone = [r for r, _ in tol.rows if r not in d.index]
            if gone:  # a renamed model or key: its line would be dead, and the row it meant held to the column's
                problems.append(f"{name}: column {col!r}: the tolerances name rows the table does not have: "
                                f"{gone[:3]}; re-measure with benchmarks/regression_sensitivity.py")
            over = d.to_numpy() > tol.allowed(d.index)
            if over.any():
                worst = d[over].idxmax()
                allowed = dict(tol.rows).get(worst, tol.tolerance)
                problems.append(f"{name}: column {col!r}: change {d[worst]:.6g} > tolerance {allowed:.6g} at "
                                f"{worst} ({int(over.sum())} row(s) beyond their tolerance)")
        elif change > tol.tolerance:
            what = "largest change" if kind == "number" else "rows that differ"
            problems.append(f"{name}: column {col!r}: {what} {change:.6g} > tolerance {tol.tolerance:.6g} "
                            f"(rounding-level changes of the features moved it by at most {tol.measured:.6g})"
                            + _worst(reference, executed, col, kind))
    return problems


def _worst(reference: pd.DataFrame, executed: pd.DataFrame, col: str, kind: str) -> str:
    """The row that moved most, for the message."""
    ref, got = _aligned(reference_frame(reference), reference_frame(executed), "table")
    if kind == "number":
        d = (ref[col].astype(float) - got[col].astype(float)).abs().fillna(np.inf)
        key = d.idxmax()
    else:
        diff = ref[col].astype(str) != got[col].astype(str)
        key = diff.idxmax()
    return f"; e.g. at {key}: {got.at[key, col]!r}, reference {ref.at[key, col]!r}"


# ---------------------------------------------------------------------------------------------- storing
def _start_time(nb) -> float | None:
    """The UTC epoch second papermill started the executed notebook `nb` (None when it was not run by papermill)."""
    text = nb.metadata.get("papermill", {}).get("start_time")
    if not text:
        return None
    t = _dt.datetime.fromisoformat(str(text))
    if t.tzinfo is None:  # papermill writes naive UTC times
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


@dataclass(frozen=True)
class StoredBaseline:
    notebooks: list[Path]
    tables: list[Path]
    removed: list[Path]


def store_baseline(executed_dir: str | os.PathLike, notebooks_dir: str | os.PathLike,
                   tables_dir: str | os.PathLike, reference_dir: str | os.PathLike) -> StoredBaseline:
    """Store a fresh run of the default notebooks as the regression baseline: lean copies of the executed notebooks
    over the tracked ones, and the tables the run wrote (without paths and hashes) as the reference tables.

    Everything is checked before anything is written, so a baseline is never partial: every tracked notebook must
    have an executed copy that ran to the end without an error (no error output, no papermill failure marker, every
    code cell executed), on its defaults (no injected parameters) and from the tracked source; every table the
    notebooks write must exist and be newer than the start of the run. Raises ValueError listing every problem,
    naming each notebook or table. Then each file is written atomically; reference tables the notebooks no longer
    write are removed.
    """
    import nbformat

    from kstar_utils.io.cache import atomic_path
    from kstar_utils.pipeline.notebooks import lean_notebook, run_problems

    executed_dir, notebooks_dir = Path(executed_dir), Path(notebooks_dir)
    tables_dir, reference_dir = Path(tables_dir), Path(reference_dir)
    tracked = notebooks_of(notebooks_dir)
    if not tracked:
        raise FileNotFoundError(f"no workbook notebook (NN_name.ipynb) in {notebooks_dir}")
    problems, lean, starts = [], {}, []
    for target in tracked:
        executed = executed_dir / target.name
        if not executed.is_file():
            problems.append(f"{executed}: missing (run every notebook first: make demo)")
            continue
        try:
            nb = nbformat.read(str(executed), as_version=4)
        except Exception as e:  # noqa: BLE001 -- json/nbformat errors of many kinds; name the file in one line
            problems.append(f"{executed}: not a readable notebook ({type(e).__name__}: {e})")
            continue
        found = run_problems(nb, nbformat.read(str(target), as_version=4))
        problems += [f"{executed}: {p}" for p in found]
        if not found:
            start = _start_time(nb)
            if start is None:
                problems.append(f"{executed}: no papermill start time, so its tables cannot be told from older "
                                f"ones (run it with `kstar notebook` or make demo)")
            else:
                starts.append(start)
            lean[target] = lean_notebook(nb)
    tables = {}
    for name in table_names(notebooks_dir):
        path = tables_dir / name
        if not path.is_file():
            problems.append(f"{path}: missing (written by the default run)")
        elif starts and path.stat().st_mtime < min(starts):
            problems.append(f"{path}: older than this run (written {_utc(path.stat().st_mtime)}, run started "
                            f"{_utc(min(starts))}): not its result")
        else:
            try:
                tables[name] = reference_frame(pd.read_csv(path)).to_csv(index=False, lineterminator="\n")
            except (ValueError, OSError) as e:
                problems.append(f"{path}: not a readable CSV ({type(e).__name__}: {e})")
    if problems:
        raise ValueError(f"nothing stored; {len(problems)} problem(s): " + "; ".join(problems))
    written = []
    for target, nb in lean.items():
        with atomic_path(target) as tmp:
            nbformat.write(nb, str(tmp))
        written.append(target)
    reference_dir.mkdir(parents=True, exist_ok=True)
    stored = []
    for name, text in tables.items():
        with atomic_path(reference_dir / name) as tmp:
            tmp.write_text(text)
        stored.append(reference_dir / name)
    removed = [p for p in sorted(reference_dir.glob("*.csv")) if p.name not in tables]
    for p in removed:
        p.unlink()
    return StoredBaseline(written, stored, removed)


def _utc(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
