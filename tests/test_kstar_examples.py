"""k* on hand-worked examples of the definition (docs/method.md section 1) and the public function's input checks."""
import numpy as np
import pytest
import torch

from kstar_utils import compute_kstar, normalize_kstar


def test_line_example_worked_by_hand():
    # A at 0, 1, 2; B at 10 and 2.5.  A@0: foreign at 2.5, classmates at 1, 2 closer -> 3.  A@1: foreign at 1.5,
    # classmates at 1, 1 -> 3.  A@2: foreign at 0.5 -> 1.  B@10: foreign at 8, classmate at 7.5 -> 2.  B@2.5 -> 1.
    X = np.array([[0.0], [1.0], [2.0], [10.0], [2.5]])
    y = np.array(["A", "A", "A", "B", "B"])
    np.testing.assert_array_equal(compute_kstar(X, y), [3, 3, 1, 2, 1])
    np.testing.assert_allclose(normalize_kstar([3, 3, 1, 2, 1], y), [1, 1, 1 / 3, 1, 0.5])


def test_classmate_tied_with_nearest_foreign_does_not_count():
    X = np.array([[0.0], [1.0], [-1.0]])
    y = np.array([0, 0, 1])
    assert compute_kstar(X, y)[0] == 1


def test_duplicate_across_classes_gives_one_and_within_class_counts():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [5.0, 5.0]])
    y = np.array([0, 0, 1, 1])
    k = compute_kstar(X, y)
    # samples 0 and 1 have a foreign duplicate (distance 0): nothing is strictly closer
    assert k[0] == 1 and k[1] == 1 and k[2] == 1
    X2 = np.array([[0.0], [0.0], [3.0]])
    np.testing.assert_array_equal(compute_kstar(X2, [0, 0, 1]), [2, 2, 1])


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 4)).astype(np.float32)
    y = rng.integers(0, 3, 30)
    np.testing.assert_array_equal(compute_kstar(torch.from_numpy(X), torch.from_numpy(y)), compute_kstar(X, y))


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.array([[0.0], [np.nan]]), [0, 1], "NaN"),
        (np.array([[0.0], [np.inf]]), [0, 1], "inf"),
        (np.zeros((3, 2)), [0, 1], "differ in length"),
        (np.zeros((3, 2)), [0, 0, 0], "at least 2 classes"),
        (np.zeros((0, 2)), [], "empty"),
        (np.zeros(4), [0, 1, 0, 1], "2-D"),
        (np.zeros((2, 2)), [0, 1], None),
    ],
)
def test_bad_input_names_the_problem(X, y, message):
    if message is None:  # control: valid input passes
        assert compute_kstar(X, y).tolist() == [1, 1]
        return
    with pytest.raises(ValueError, match=message):
        compute_kstar(X, y)
