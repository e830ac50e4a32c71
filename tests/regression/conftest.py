"""The regression comparison: the tables this session's notebook run wrote (outputs/tables) against the reference
tables stored with the notebooks (tests/baseline/tables, written by `make notebooks`), within the tolerances
measured for rounding-level changes of the features (tests/baseline/tolerances.csv and SENSITIVITY.md, written by
benchmarks/regression_sensitivity.py).

Run it after the notebooks, in the same session: `pytest notebooks tests/regression --nbval ...` (make test). A table
written before the session started is stale (its notebook did not run, or failed before writing it) and fails.
"""
from __future__ import annotations

import pytest

from kstar_utils.pipeline.baseline import read_tolerances
from regression_support import BASELINE


@pytest.fixture(scope="session")
def tolerances():
    return read_tolerances(BASELINE / "tolerances.csv")
