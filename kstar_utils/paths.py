"""Where the workbook's files live: the data shipped with the project, and the roots users point elsewhere.

- shipped data (published tables, embedded weights and images): ``<repository>/data``, or ``$KSTAR_DATA_DIR``.
"""
from __future__ import annotations

import os
from pathlib import Path

SHIPPED_ENV = "KSTAR_DATA_DIR"
_REPO_DATA = Path(__file__).resolve().parents[1] / "data"


def shipped(*parts: str) -> Path:
    """A path inside the shipped data folder: $KSTAR_DATA_DIR if set, else the repository's data/."""
    env = os.environ.get(SHIPPED_ENV)
    return (Path(env).expanduser() if env else _REPO_DATA).joinpath(*parts)
