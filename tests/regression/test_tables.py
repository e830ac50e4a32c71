"""This session's notebook tables against the stored reference tables.

Each column is compared at the tolerance in tests/baseline/tolerances.csv: 3x the largest change that rounding-level
changes of the features caused in it (benchmarks/regression_sensitivity.py; the measured table, per column and
variant, is tests/baseline/SENSITIVITY.md); the few rows far more tie-prone than the rest of their column have a
tolerance of their own. Columns no such change moved (sizes, dimensions, class names, most labels) must be equal.
Rows are matched on their key columns (model, layer, metric, class, ...), not on their order.
"""
from __future__ import annotations

import pandas as pd
import pytest

from kstar_utils.pipeline.baseline import compare_table, table_names
from regression_support import EXECUTED, NOTEBOOKS, SESSION_START, reference, reference_names


def test_the_reference_tables_are_the_tables_the_notebooks_write():
    assert reference_names() == sorted(table_names(NOTEBOOKS)), "run make notebooks to store them"


@pytest.mark.parametrize("name", reference_names())
def test_table_matches_its_reference(name, tolerances):
    path = EXECUTED / name
    assert path.is_file(), f"{path} is missing: the notebooks of this session did not write it"
    assert path.stat().st_mtime >= SESSION_START, (
        f"{path} was written before this test session started: its notebook did not run or failed before writing "
        f"it; run the notebooks and this comparison in one session (make test)")
    problems = compare_table(name, reference(name), pd.read_csv(path), tolerances.get(name, {}))
    assert not problems, "\n".join(problems)
