"""Shared test configuration.

tests/regression compares the tables a notebook run wrote with the stored reference tables, so it only means
something in the same session as that run (`make test`: `pytest notebooks tests/regression --nbval ...`). It is
collected only when named on the command line: `pytest tests` runs the unit tests alone.
"""
from pathlib import Path

REGRESSION = Path(__file__).resolve().parent / "regression"


def pytest_ignore_collect(collection_path, config):
    if Path(collection_path).resolve() != REGRESSION:
        return None
    here = Path(config.invocation_params.dir)
    for arg in config.args:
        named = (here / str(arg).split("::")[0]).resolve()
        if named == REGRESSION or REGRESSION in named.parents:
            return None
    return True
