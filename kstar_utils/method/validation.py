"""Input checks shared by every public function: bad input fails early with a message that names the problem."""
from __future__ import annotations

import numpy as np
import pandas as pd

_SHOWN_ROWS = 5
_TORCH_NUMPY_FLOATS = ("torch.float16", "torch.float32", "torch.float64")


def _is_tensor(x) -> bool:
    # duck-typed so that numpy-only use never imports torch
    return hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "is_floating_point")


def _to_numpy(x, *, name: str = "input") -> np.ndarray:
    """torch tensors (CPU or CUDA) and array-likes -> numpy array (no copy where possible)."""
    if _is_tensor(x):
        x = x.detach().cpu()
        if x.is_floating_point() and str(x.dtype) not in _TORCH_NUMPY_FLOATS:
            x = x.float()  # numpy has no bfloat16 / float8; every such value is exactly a float32
        try:
            return x.numpy()
        except TypeError:
            raise ValueError(f"{name} has torch dtype {x.dtype}, which numpy cannot hold") from None
    return np.asarray(x)


def _rows_text(mask: np.ndarray, n: int) -> str:
    """'in 2 of 60 rows (first rows: [3, 17])' for a (n,) boolean mask."""
    rows = np.flatnonzero(mask)
    return f"in {rows.size} of {n} rows (first rows: {rows[:_SHOWN_ROWS].tolist()})"


def check_features(features, *, name: str = "features") -> np.ndarray:
    """Return `features` as a finite 2-D real array of shape (N, D), converted exactly; raise ValueError otherwise.

    float16 / float32 / float64 come back in their own dtype, without a copy (the engines convert float32 to float64
    themselves while sorting, which saves a pass over large inputs). Every other accepted dtype comes back as float64,
    and only where each value converts exactly: ints and bools (int64 / uint64 values that float64 cannot represent
    are rejected, naming the rows), torch bfloat16 / float8 (via float32, always exact) and long double (rows that
    do not round-trip are rejected). Complex, object, string, datetime and other dtypes are rejected naming the dtype;
    NaN and inf are rejected naming the rows.
    """
    X = _to_numpy(features, name=name)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (N, D); got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty: no samples (shape {X.shape})")
    if X.shape[1] == 0:
        raise ValueError(f"{name} has zero feature dimensions (shape {X.shape})")
    kind = X.dtype.kind
    if kind not in "fiub":
        raise ValueError(
            f"{name} must be numeric (float, int or bool), convertible exactly to float64; got dtype {X.dtype}"
        )
    if kind in "iu":
        return _ints_to_float64(X, name)
    if kind == "b":
        return X.astype(np.float64)
    _check_finite(X, name)
    if X.dtype.itemsize > 8:
        return _longdouble_to_float64(X, name)
    if _is_tensor(features) and str(features.dtype) not in _TORCH_NUMPY_FLOATS:
        return X.astype(np.float64)  # widened from bfloat16 / float8: a copy is made anyway
    return X


def _check_finite(X: np.ndarray, name: str) -> None:
    # in row blocks of ~16M values: no (N, D) temporary, and a memory-mapped file is read once, block by block
    step = max(1, (1 << 24) // max(1, X.shape[1]))
    rows, kind = [], "inf"
    for s in range(0, X.shape[0], step):
        block = X[s : s + step]
        bad = ~np.isfinite(block)
        if bad.any():
            rows.append(s + np.flatnonzero(bad.any(axis=1)))
            kind = "NaN" if kind == "NaN" or np.isnan(block[bad]).any() else kind
    if rows:
        rows = np.concatenate(rows)
        raise ValueError(
            f"{name} contain {kind} values in {rows.size} of {X.shape[0]} rows (first bad rows: {rows[:5].tolist()}); "
            "k* needs finite features"
        )


def _ints_to_float64(X: np.ndarray, name: str) -> np.ndarray:
    """(N, D) int/uint -> float64, rejecting the rows whose values float64 cannot hold exactly."""
    F = X.astype(np.float64)
    if X.dtype.itemsize < 8:  # every 32-bit integer is a float64
        return F
    big = np.abs(F) >= 2.0**53  # below 2**53 every integer converts exactly
    if big.any():
        limit = 2.0 ** (8 * X.dtype.itemsize - (X.dtype.kind == "i"))
        fits = big & (F < limit)  # F == limit (rounded up from the type's maximum) cannot be cast back
        back = np.where(fits, F, 0).astype(X.dtype)
        inexact = big & (~fits | (back != X))
        if inexact.any():
            raise ValueError(
                f"{name} of dtype {X.dtype} hold integers too large for float64 to represent exactly "
                f"{_rows_text(inexact.any(axis=1), X.shape[0])}; k* is computed in float64"
            )
    return F


def _longdouble_to_float64(X: np.ndarray, name: str) -> np.ndarray:
    """(N, D) long double -> float64, rejecting the rows that do not round-trip (more precision or range)."""
    with np.errstate(over="ignore"):
        F = X.astype(np.float64)
    inexact = F.astype(X.dtype) != X
    if inexact.any():
        raise ValueError(
            f"{name} of dtype {X.dtype} hold values that float64 cannot represent exactly "
            f"{_rows_text(inexact.any(axis=1), X.shape[0])}; k* is computed in float64"
        )
    return F


def encode_labels(labels, n: int | None = None, *, name: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Map (N,) labels to codes 0..C-1: returns (codes (N,) int64, classes (C,) in sorted order).

    One rule for every container (Python list or tuple, numpy array of any dtype, pandas Series / Index / array
    including categorical and nullable dtypes, torch tensor):
    - Every label is present: None, NaN, pd.NA and NaT raise ValueError naming the rows (a missing label is no
      class; NaN != NaN would otherwise split one class in two). inf is rejected the same way.
    - Every label is of one kind: numbers, strings (str), bytes or booleans. A mix of kinds (int and str, bytes and
      str, bool and int, ...) raises ValueError naming the kinds found and the first rows of the less common ones:
      any merge or order between kinds would be arbitrary ([1, "1"] would become one class "1", [True, 1] one
      class 1). Values of any other type (complex, datetime, tuples, ...) are rejected.
    - Numbers are ints and floats together and compare by value: 1 and 1.0 are one class, 1.5 is a class of its own.
      The classes are float64 when any label is a float (numpy's rule for [1, 1.0]), otherwise the integer dtype;
      an int that float64 cannot hold exactly, next to floats, is rejected rather than merged with a neighbour.
    numpy int / uint / bool / str / bytes arrays pass without per-element work and float arrays with one vectorised
    NaN / inf check, so N in the millions stays fast; Python sequences and object arrays are inspected per element.
    Raises ValueError also on a length mismatch with `n` samples, on empty labels and on more than one dimension.
    """
    y = _labels_to_numpy(labels, name)
    if y.ndim != 1:
        y = y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"features and {name} differ in length: {n} feature rows but {y.shape[0]} labels")
    y = _one_kind_labels(y, name)
    classes, codes = np.unique(y, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), classes


_LABEL_KINDS = "numbers (ints and floats), strings, bytes or booleans"


def _labels_to_numpy(labels, name: str) -> np.ndarray:
    if isinstance(labels, (list, tuple)):
        # numpy would coerce [1, "1"] to strings, [True, 1] to ints and [2**60 + 1, 0.5] to rounded floats before
        # any check could see them: keep the Python objects
        return np.array(labels, dtype=object)
    if isinstance(labels, (pd.Series, pd.Index, pd.api.extensions.ExtensionArray)):
        # nullable and categorical dtypes: without missing values to_numpy gives the plain dtype (Int64 -> int64);
        # with them, objects keep pd.NA visible and ints exact (np.asarray would turn Int64 + NA into float64)
        if np.asarray(pd.isna(labels)).any():
            return np.asarray(labels.to_numpy(dtype=object))
        return np.asarray(labels.to_numpy())
    return _to_numpy(labels, name=name)


def _missing_error(mask: np.ndarray, name: str) -> ValueError:
    return ValueError(
        f"{name} contain missing values (NaN/None/NA/NaT) {_rows_text(mask, mask.size)}; every sample needs a class"
    )


def _one_kind_labels(y: np.ndarray, name: str) -> np.ndarray:
    """(N,) labels of any dtype -> (N,) labels of one plain numpy dtype that np.unique orders, or ValueError."""
    kind = y.dtype.kind
    if kind in "iubUS":
        return y
    if kind == "f":
        if np.isnan(y).any():
            raise _missing_error(np.isnan(y), name)
        if np.isinf(y).any():
            raise ValueError(f"{name} contain inf {_rows_text(np.isinf(y), y.size)}")
        return y
    if kind in "Mm" and np.isnat(y).any():
        raise _missing_error(np.isnat(y), name)
    if kind != "O":
        raise ValueError(f"{name} must be {_LABEL_KINDS}; got dtype {y.dtype}")
    return _object_labels(y, name)


def _label_kind(t: type) -> str:
    if issubclass(t, (bool, np.bool_)):  # before int: bool is a subclass of int
        return "bool"
    if issubclass(t, (int, np.integer, float, np.floating)):
        return "number"
    if issubclass(t, str):  # includes np.str_
        return "str"
    if issubclass(t, bytes):  # includes np.bytes_
        return "bytes"
    return t.__name__


def _object_labels(y: np.ndarray, name: str) -> np.ndarray:
    n = y.size
    missing = np.asarray(pd.isna(y), dtype=bool)
    if missing.any():
        raise _missing_error(missing, name)
    types = set(map(type, y))
    kind_of = {t: _label_kind(t) for t in types}
    kinds = sorted(set(kind_of.values()))
    if len(kinds) > 1:
        row_kind = np.array([kind_of[type(v)] for v in y])
        sizes = {k: int(np.sum(row_kind == k)) for k in kinds}
        common = max(kinds, key=sizes.__getitem__)
        parts = []
        for k in sorted(kinds, key=lambda k: -sizes[k]):
            type_names = ", ".join(sorted(t.__name__ for t, tk in kind_of.items() if tk == k))
            where = f"in {sizes[k]} of {n} rows" if k == common else _rows_text(row_kind == k, n)
            parts.append(f"{k} ({type_names}) {where}")
        raise ValueError(
            f"{name} mix kinds of value that do not form one set of classes: {'; '.join(parts)}. "
            f"Give every label as one kind: {_LABEL_KINDS}"
        )
    kind = kinds[0]
    if kind == "bool":
        return y.astype(bool)
    if kind == "str":
        return y.astype(str)
    if kind == "bytes":
        return y.astype(bytes)
    if kind == "number":
        return _number_labels(y, types, name)
    raise ValueError(f"{name} must be {_LABEL_KINDS}; got values of type {kind} {_rows_text(np.ones(n, bool), n)}")


def _number_labels(y: np.ndarray, types: set, name: str) -> np.ndarray:
    """(N,) object array of ints and floats -> int64 / uint64 when all are ints, else float64 (exact or ValueError)."""
    n = y.size
    if not any(issubclass(t, (float, np.floating)) for t in types):
        for dtype in (np.int64, np.uint64):
            try:
                return y.astype(dtype)
            except OverflowError:
                pass
        outside = np.array([not -(2**63) <= int(v) < 2**63 for v in y])
        raise ValueError(f"{name} hold integers outside the int64 range {_rows_text(outside, n)}")
    try:
        f = y.astype(np.float64)
    except OverflowError:  # a Python int beyond float64's range
        f = np.array([float(v) if abs(v) < 2**1024 else np.inf for v in y])
    if np.isinf(f).any():
        raise ValueError(f"{name} contain inf or numbers beyond float64's range {_rows_text(np.isinf(f), n)}")
    # float16/32/64 convert exactly; ints do below 2**53 in magnitude; long doubles may round anywhere
    ints = {t for t in types if issubclass(t, (int, np.integer))}
    longs = {t for t in types if issubclass(t, np.floating) and not issubclass(t, (float, np.float16, np.float32))}
    if ints or longs:
        row_types = list(map(type, y))
        candidates = np.array([t in longs for t in row_types]) | (
            np.array([t in ints for t in row_types]) & (np.abs(f) >= 2.0**53)
        )
        inexact = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(candidates):
            v, fv = y[i], float(f[i])
            # int == float and long double == long double compare exactly; np.int64 == float would not
            inexact[i] = int(v) != fv if isinstance(v, (int, np.integer)) else np.longdouble(fv) != v
        if inexact.any():
            raise ValueError(
                f"{name} mix floats with numbers that float64 cannot represent exactly {_rows_text(inexact, n)}; "
                "converting them would merge distinct classes"
            )
    return f


def check_class_names(class_names, *, name: str = "class_names") -> tuple[str, ...]:
    """(C,) class names -> C distinct strings; raise ValueError unless 1-D and free of duplicates (naming them).

    Strings stay as they are, bytes are decoded as UTF-8 (a name that is not UTF-8 is refused), anything else is
    written with str(). Two classes of one name would merge in every table that groups by name, so a duplicate is
    refused rather than repaired.
    """
    arr = np.asarray(class_names)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of names; got shape {arr.shape}")
    names = []
    for i, c in enumerate(arr.tolist()):
        if isinstance(c, bytes):
            try:
                c = c.decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{name}[{i}] = {c!r} is not UTF-8 text") from None
        names.append(str(c))
    seen, duplicates = set(), []
    for n in names:
        if n in seen and n not in duplicates:
            duplicates.append(n)
        seen.add(n)
    if duplicates:
        raise ValueError(f"{name} hold duplicate names {duplicates[:_SHOWN_ROWS]}: each class needs a name of its "
                         "own (two classes of one name would merge in every table)")
    return tuple(names)


def name_classes(codes: np.ndarray, classes: np.ndarray, class_names=None, *,
                 name: str = "labels") -> tuple[np.ndarray, tuple[str, ...]]:
    """Name the classes of encode_labels: (codes (N,) int64, classes (C,)) -> (codes (N,) int64, names (C,) str),
    class code i named names[i]. The rule:

    - Without `class_names`: each class is named by its value (str of the number or bool, the string itself, bytes
      decoded as UTF-8), classes in sorted order as encode_labels gives them.
    - Number or bool labels with `class_names`: class_names[v] names label value v (False = 0, True = 1), so every
      label must be a whole number in 0..len(class_names)-1; other values are refused, naming them. Names of values
      absent from the labels are not used.
    - String (or bytes) labels with `class_names`: every label must be one of the names, which then fix the class
      order; labels not among them are refused, naming them. Names absent from the labels are not used.
    - Duplicate class_names are always refused (check_class_names), and the names returned are distinct.
    Codes change only where `class_names` reorder string classes.
    """
    codes = np.asarray(codes, dtype=np.int64)
    kind = classes.dtype.kind
    text = kind in "US"
    values = check_class_names(classes, name=name) if text else None  # bytes decoded; distinct as classes are
    if class_names is None:
        if text:
            return codes, values
        return codes, check_class_names([str(v) for v in classes.tolist()], name=f"names of the {name}")
    names = check_class_names(class_names, name=_names_of(name))
    if text:
        position = {n: i for i, n in enumerate(names)}
        missing = [v for v in values if v not in position]
        if missing:
            raise ValueError(f"{name} hold values not among the class_names: {missing[:_SHOWN_ROWS]} "
                             f"({len(missing)} of {len(values)} classes); class_names: {list(names[:10])}"
                             + (" ..." if len(names) > 10 else ""))
        order = np.argsort([position[v] for v in values], kind="stable")
        rank = np.empty(len(values), dtype=np.int64)
        rank[order] = np.arange(len(values))
        return rank[codes], tuple(values[i] for i in order)
    as_float = classes.astype(np.float64) if kind == "f" else None
    if as_float is not None and (as_float != np.floor(as_float)).any():
        fractional = classes[as_float != np.floor(as_float)]
        raise ValueError(f"{name} must be whole numbers to be named by class_names (class_names[v] names label v); "
                         f"got {fractional[:_SHOWN_ROWS].tolist()}")
    index = [int(v) for v in classes.tolist()]  # Python ints: uint64 and int64 compare exactly
    outside = [v for v in index if not 0 <= v < len(names)]
    if outside:
        raise ValueError(f"{name} hold values outside 0..{len(names) - 1}, the indices of the {len(names)} class_names "
                         f"(class_names[v] names label value v): {outside[:_SHOWN_ROWS]}")
    return codes, tuple(names[v] for v in index)


def _names_of(name: str) -> str:
    # "labels of x.npz" -> "class_names of x.npz": the message then names the file the names came from
    return "class_names" + name[len("labels"):] if name.startswith("labels") else "class_names"


def check_features_labels(features, labels, *, min_classes: int = 2,
                          where: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate a labelled feature set. Returns (X (N, D) float, codes (N,) int64, classes (C,)).

    where: appended to "features" and "labels" in messages (e.g. " of embeddings.npz"), to name their source."""
    X = check_features(features, name=f"features{where}")
    codes, classes = encode_labels(labels, X.shape[0], name=f"labels{where}")
    if classes.size < min_classes:
        raise ValueError(
            f"k* needs samples from at least {min_classes} classes (a nearest neighbour from another class); "
            f"got {classes.size} class(es): {classes[:5].tolist()}"
        )
    return X, codes, classes


def check_kstar(kstar, codes, counts=None, *, name: str = "kstar") -> np.ndarray:
    """Validate raw k* against their samples' classes: (N,) k*, (N,) class codes 0..C-1 and optional (C,) class
    sizes (default: np.bincount(codes)) -> (N,) int64.

    k* must be whole numbers: any int dtype, or floats holding integral values (k* read back from float storage),
    numpy or torch (bfloat16 included); each must lie in 1..n_c, n_c the size of the sample's class. Otherwise
    ValueError naming the rows (NaN, non-integral, out of range with the class size), or for string, object,
    complex, bool and datetime dtypes naming the dtype: a NaN or fractional k* would silently distort or drop a
    class skew downstream.
    """
    k = _to_numpy(kstar, name=name)
    if k.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {k.shape}")
    codes = np.asarray(codes)
    if k.shape[0] != codes.shape[0]:
        raise ValueError(f"{name} and labels differ in length: {k.shape[0]} k* values but {codes.shape[0]} labels")
    n = k.shape[0]
    if k.dtype.kind not in "iuf":
        hint = ""
        if k.dtype.kind == "O" and np.asarray(pd.isna(k), dtype=bool).any():
            hint = f" (missing values {_rows_text(np.asarray(pd.isna(k), dtype=bool), n)})"
        raise ValueError(
            f"{name} must be whole numbers (an int dtype, or floats holding integers); got dtype {k.dtype}{hint}"
        )
    n_c = (np.bincount(codes) if counts is None else np.asarray(counts))[codes]
    problems = []
    fractional = np.zeros(n, dtype=bool)
    if k.dtype.kind == "f":
        nan = np.isnan(k)
        if nan.any():
            problems.append(f"NaN {_rows_text(nan, n)}")
        fractional = np.isfinite(k) & (k != np.floor(k))
        if fractional.any():
            rows = np.flatnonzero(fractional)[:_SHOWN_ROWS]
            problems.append(
                f"not whole numbers {_rows_text(fractional, n)}, e.g. "
                + ", ".join(f"row {r}: {k[r].item()}" for r in rows)
            )
    outside = ((k < 1) | (k > n_c)) & ~fractional  # NaN compares False either way
    if outside.any():
        rows = np.flatnonzero(outside)[:_SHOWN_ROWS]
        problems.append(
            f"outside 1..n_c {_rows_text(outside, n)}, e.g. "
            + ", ".join(f"row {r}: k*={k[r].item()} with n_c={int(n_c[r])}" for r in rows)
        )
    if problems:
        raise ValueError(
            f"{name} must be whole numbers in 1..n_c (n_c: the size of the sample's class): " + "; ".join(problems)
            + ". Were these raw k* for these labels?"
        )
    return k.astype(np.int64)
