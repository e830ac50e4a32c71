"""Strict inputs: labels, features and k* convert exactly or fail with a ValueError naming the problem and rows."""
import re

import numpy as np
import pandas as pd
import pytest
import torch

from kstar_utils import compute_kstar, normalize_kstar, summarize_skewness
from kstar_utils.method.validation import check_features, check_kstar, encode_labels

ROWS_3_17 = re.escape("in 2 of 60 rows (first rows: [3, 17])")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = np.repeat([0, 1, 2], 20)
    return X, y, compute_kstar(X, y, backend="numpy")


def _with(values, rows, value, dtype=object):
    out = np.array(values, dtype=dtype)
    out[list(rows)] = value
    return out


# -- 1. labels: one rule for every container -------------------------------------------------------------------------
MISSING_LABELS = {
    "list-nan": lambda y: _with(y, (3, 17), np.nan).tolist(),
    "list-none": lambda y: _with(y, (3, 17), None).tolist(),
    "tuple-nat": lambda y: tuple(_with(y, (3, 17), pd.NaT)),
    "object-nan": lambda y: _with(y, (3, 17), np.nan),
    "object-none": lambda y: _with(y, (3, 17), None),
    "object-str-nan": lambda y: _with(y.astype(str), (3, 17), np.nan),
    "numpy-float-nan": lambda y: _with(y, (3, 17), np.nan, dtype=float),
    "numpy-datetime-nat": lambda y: _with(y, (3, 17), np.datetime64("NaT"), dtype="datetime64[D]"),
    "pandas-float-nan": lambda y: pd.Series(_with(y, (3, 17), np.nan, dtype=float)),
    "pandas-Int64-NA": lambda y: pd.Series(_with(y, (3, 17), pd.NA), dtype="Int64"),
    "pandas-string-NA": lambda y: pd.Series(_with(y.astype(str), (3, 17), pd.NA), dtype="string"),
    "pandas-categorical-nan": lambda y: pd.Series(_with(y.astype(str), (3, 17), None)).astype("category"),
    "torch-nan": lambda y: torch.as_tensor(_with(y, (3, 17), np.nan, dtype=float)),
    "torch-bfloat16-nan": lambda y: torch.as_tensor(_with(y, (3, 17), np.nan, dtype=float)).bfloat16(),
}


@pytest.mark.parametrize("make", MISSING_LABELS.values(), ids=MISSING_LABELS.keys())
def test_missing_labels_are_rejected_naming_rows_in_every_container(data, make):
    X, y, k = data
    labels = make(y)
    for call in (lambda: encode_labels(labels), lambda: compute_kstar(X, labels, backend="numpy"),
                 lambda: summarize_skewness(k, labels), lambda: normalize_kstar(k, labels)):
        with pytest.raises(ValueError, match=f"labels contain missing values .*{ROWS_3_17}"):
            call()


def test_nan_label_no_longer_splits_a_class(data):
    # before: np.unique kept each NaN as its own value and the per-class table listed the same label twice
    _, y, k = data
    labels = _with(y.astype(float), (3, 17), np.nan)
    with pytest.raises(ValueError, match=ROWS_3_17):
        summarize_skewness(k, labels)


MIXED_LABELS = {
    "list-int-str": (lambda y: _with(y, (3, 17), "1").tolist(), ["number (int) in 58 of 60 rows", "str (str)"]),
    "object-int-str": (lambda y: _with(y, (3, 17), "1"), ["number (int) in 58 of 60 rows", "str (str)"]),
    "pandas-int-str": (lambda y: pd.Series(_with(y, (3, 17), "1")), ["number (int) in 58 of 60 rows", "str (str)"]),
    "list-str-bytes": (lambda y: _with(y.astype(str), (3, 17), b"1").tolist(), ["str (str)", "bytes (bytes)"]),
    "list-int-bool": (lambda y: _with(y, (3, 17), True).tolist(), ["number (int)", "bool (bool)"]),
    "object-numpy-int-bool": (lambda y: _with(y.astype(np.int64), (3, 17), np.True_), ["number (int)", "bool (bool)"]),
}


@pytest.mark.parametrize("make, kinds", MIXED_LABELS.values(), ids=MIXED_LABELS.keys())
def test_mixed_label_kinds_are_rejected_naming_kinds_and_minority_rows(data, make, kinds):
    X, y, k = data
    labels = make(y)
    for call in (lambda: encode_labels(labels), lambda: compute_kstar(X, labels, backend="numpy"),
                 lambda: summarize_skewness(k, labels)):
        with pytest.raises(ValueError, match="mix kinds") as err:
            call()
        message = str(err.value)
        for kind in kinds:
            assert kind in message
        assert "in 2 of 60 rows (first rows: [3, 17])" in message


def test_one_and_string_one_are_not_merged_as_numpy_would():
    assert np.unique(np.asarray([1, "1", 2])).size == 2  # the silent merge the rule prevents
    with pytest.raises(ValueError, match=r"mix kinds.*str \(str\) in 1 of 3 rows \(first rows: \[1\]\)"):
        encode_labels([1, "1", 2])


def test_same_labels_give_same_classes_in_every_container(data):
    _, y, _ = data
    expected_codes, expected_classes = encode_labels(y)
    for labels in (y.tolist(), tuple(y.tolist()), y.astype(object), y.astype(np.int32), y.astype(np.uint8),
                   pd.Series(y), pd.Series(y, dtype="Int64"), pd.Series(y).astype("category"), pd.Index(y),
                   torch.as_tensor(y)):
        codes, classes = encode_labels(labels)
        assert codes.dtype == np.int64 and codes.shape == (60,)
        np.testing.assert_array_equal(codes, expected_codes)
        np.testing.assert_array_equal(classes, expected_classes)
    names = np.array(["cat", "dog", "emu"])[y]
    for labels in (names, names.tolist(), names.astype(object), pd.Series(names, dtype="string"),
                   pd.Series(names).astype("category")):
        codes, classes = encode_labels(labels)
        np.testing.assert_array_equal(codes, expected_codes)
        assert classes.tolist() == ["cat", "dog", "emu"]


def test_ints_and_floats_are_one_kind_compared_by_value():
    codes, classes = encode_labels([1, 1.0, 2, np.float32(2.0), 1.5])
    assert codes.tolist() == [0, 0, 2, 2, 1]
    assert classes.dtype == np.float64 and classes.tolist() == [1.0, 1.5, 2.0]
    assert encode_labels([1, 2, 1])[1].dtype.kind == "i"  # ints alone stay ints
    # an int that float64 would round onto its neighbour's value is rejected, not merged
    with pytest.raises(ValueError, match=r"cannot represent exactly in 1 of 2 rows \(first rows: \[0\]\)"):
        encode_labels([2**53 + 1, 0.5])
    assert encode_labels([2**60, 0.5])[1].tolist() == [0.5, 2.0**60]


def test_labels_of_other_types_and_inf_are_rejected():
    with pytest.raises(ValueError, match="got values of type complex"):
        encode_labels([1 + 2j, 2 + 1j])
    with pytest.raises(ValueError, match="got dtype complex128"):
        encode_labels(np.array([1 + 2j, 2]))
    with pytest.raises(ValueError, match=r"inf .*first rows: \[1\]"):
        encode_labels(np.array([0.0, np.inf, 1.0]))


# -- 2. features: exact conversion to float64 or a ValueError --------------------------------------------------------
def test_bfloat16_features_are_widened_exactly(data):
    X, y, _ = data
    Xb = torch.as_tensor(X).bfloat16()
    out = check_features(Xb)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, check_features(Xb.float()))
    np.testing.assert_array_equal(compute_kstar(Xb, y, backend="numpy"), compute_kstar(Xb.float(), y, backend="numpy"))


def test_float_features_keep_their_dtype_without_copy(data):
    X, _, _ = data
    for dtype in (np.float16, np.float32, np.float64):
        Xd = X.astype(dtype)
        out = check_features(Xd)
        assert out.dtype == dtype and np.shares_memory(out, Xd)
        np.testing.assert_array_equal(out, Xd)
    assert check_features(torch.as_tensor(X, dtype=torch.float32)).dtype == np.float32


def test_integer_features_convert_exactly_or_name_the_rows(data):
    X, _, _ = data
    Xi = np.round(X * 1000).astype(np.int64)
    np.testing.assert_array_equal(check_features(Xi), Xi.astype(np.float64))
    assert check_features(Xi.astype(np.int32)).dtype == np.float64
    assert check_features(X > 0).dtype == np.float64
    Xi[7, 2] = 2**60  # large but on float64's grid: exact
    assert check_features(Xi)[7, 2] == 2.0**60
    Xi[[7, 41], 1] = 2**53 + 1
    with pytest.raises(ValueError, match=r"int64 .*exactly in 2 of 60 rows \(first rows: \[7, 41\]\)"):
        check_features(Xi)
    Xu = np.ones((60, 5), dtype=np.uint64)
    Xu[9, 0] = 2**64 - 1
    with pytest.raises(ValueError, match=r"uint64 .*first rows: \[9\]"):
        check_features(Xu)
    Xs = np.zeros((60, 5), dtype=np.int64)
    Xs[3, 0] = 2**63 - 1  # rounds up to 2**63, one past the int64 range
    with pytest.raises(ValueError, match=r"first rows: \[3\]"):
        check_features(Xs)


@pytest.mark.parametrize(
    "make, dtype",
    [
        (lambda X: X + 1j, "complex128"),
        (lambda X: X.astype(object), "object"),
        (lambda X: X.astype(str), "<U"),
        (lambda X: np.zeros(X.shape, dtype="datetime64[s]"), "datetime64"),
        (lambda X: torch.as_tensor(X) + 0j, "complex128"),
    ],
    ids=["complex", "object", "str", "datetime", "torch-complex"],
)
def test_features_of_non_real_dtypes_are_rejected_naming_the_dtype(data, make, dtype):
    X, y, _ = data
    with pytest.raises(ValueError, match=f"got dtype {re.escape(dtype)}"):
        compute_kstar(make(X), y, backend="numpy")


@pytest.mark.skipif(np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant, reason="long double is float64 here")
def test_long_double_features_are_accepted_only_when_exact(data):
    X, _, _ = data
    Xl = X.astype(np.longdouble)
    out = check_features(Xl)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, X)
    Xl[[5, 30], 0] += np.longdouble(2) ** -60
    with pytest.raises(ValueError, match=r"exactly in 2 of 60 rows \(first rows: \[5, 30\]\)"):
        check_features(Xl)


def test_nan_and_inf_features_still_name_rows(data):
    X, y, _ = data
    Xn = X.copy()
    Xn[[3, 17], 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN values in 2 of 60 rows \(first bad rows: \[3, 17\]\)"):
        compute_kstar(Xn, y, backend="numpy")
    with pytest.raises(ValueError, match=r"inf values .*\[3, 17\]"):
        check_features(np.where(np.isnan(Xn), np.inf, Xn).astype(np.float32))


# -- 3. k*: whole numbers in 1..n_c ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "row, value, message",
    [
        (3, np.nan, r"NaN in 1 of 60 rows \(first rows: \[3\]\)"),
        (4, 1.5, r"not whole numbers in 1 of 60 rows \(first rows: \[4\]\), e.g. row 4: 1.5"),
        (5, 0, r"outside 1..n_c in 1 of 60 rows \(first rows: \[5\]\), e.g. row 5: k\*=0.0 with n_c=20"),
        (6, 21, r"outside 1..n_c in 1 of 60 rows \(first rows: \[6\]\), e.g. row 6: k\*=21.0 with n_c=20"),
        (7, np.inf, r"outside 1..n_c .*row 7: k\*=inf with n_c=20"),
    ],
    ids=["nan", "fractional", "zero", "n_c+1", "inf"],
)
def test_bad_kstar_values_are_rejected_naming_rows(data, row, value, message):
    _, y, k = data
    kb = k.astype(np.float64)
    kb[row] = value
    for call in (normalize_kstar, summarize_skewness):
        with pytest.raises(ValueError, match=message):
            call(kb, y)


def test_nan_kstar_no_longer_drops_a_class_from_gamma_prime(data):
    # before: the NaN made class 1's skew NaN, Γ' fell from 1.164 to 0.971 and the warning blamed a constant class
    _, y, k = data
    kb = k.astype(np.float64)
    kb[25] = np.nan
    with pytest.raises(ValueError, match=r"NaN in 1 of 60 rows \(first rows: \[25\]\)"):
        summarize_skewness(kb, y)


def test_out_of_range_integer_kstar_names_every_problem_row(data):
    _, y, k = data
    kb = k.copy()
    kb[[0, 45]] = [0, 21]
    with pytest.raises(ValueError, match=r"in 2 of 60 rows \(first rows: \[0, 45\]\), e.g. row 0: k\*=0 with n_c=20, "
                                         r"row 45: k\*=21 with n_c=20"):
        normalize_kstar(kb, y)


@pytest.mark.parametrize(
    "make, dtype",
    [
        (lambda k: k.astype(str), "<U"),
        (lambda k: k.astype(object), "object"),
        (lambda k: k + 0j, "complex128"),
        (lambda k: k > 0, "bool"),
    ],
    ids=["str", "object", "complex", "bool"],
)
def test_kstar_of_non_integer_dtypes_is_rejected_naming_the_dtype(data, make, dtype):
    _, y, k = data
    for call in (normalize_kstar, summarize_skewness):
        with pytest.raises(ValueError, match=f"got dtype {re.escape(dtype)}"):
            call(make(k), y)


def test_kstar_list_with_none_names_the_rows(data):
    _, y, k = data
    kb = k.tolist()
    kb[8] = None
    with pytest.raises(ValueError, match=r"dtype object \(missing values in 1 of 60 rows \(first rows: \[8\]\)\)"):
        normalize_kstar(kb, y)


def test_integral_kstar_of_any_numeric_container_is_accepted(data):
    _, y, k = data
    expected = normalize_kstar(k, y)
    base = summarize_skewness(k, y)
    for kk in (k.astype(np.float64), k.astype(np.float32), k.astype(np.uint16), k.tolist(), k.astype(float).tolist(),
               torch.as_tensor(k), torch.as_tensor(k).bfloat16(), torch.as_tensor(k).double(), pd.Series(k)):
        np.testing.assert_array_equal(normalize_kstar(kk, y), expected)
        assert summarize_skewness(kk, y).approx_skewness == base.approx_skewness
    out = check_kstar(k.astype(np.float64), y, np.bincount(y))
    assert out.dtype == np.int64 and out.shape == (60,)
    np.testing.assert_array_equal(out, k)


def test_kstar_shape_and_length_are_checked(data):
    _, y, k = data
    with pytest.raises(ValueError, match="kstar must be 1-D"):
        normalize_kstar(k[:, None], y)
    with pytest.raises(ValueError, match="kstar and labels differ in length: 59 k\\* values but 60 labels"):
        normalize_kstar(k[:-1], y)
