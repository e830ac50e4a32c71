"""Every root the workbook reads from, each with one documented environment variable.

| root | what | environment variable | default |
|---|---|---|---|
| shipped data | published tables, embedded weights and images (`data/`) | KSTAR_SHIPPED_DATA | the repository's data/ |
| datasets | image datasets the user provides (CIFAR, ImageNet, ...) | KSTAR_DATASETS | ~/.cache/kstar/data |
| RobustBench | RobustBench checkpoints, in RobustBench's own layout | KSTAR_ROBUSTBENCH_DIR | ~/.cache/kstar/robustbench |
| outputs | features, k*, tables, figures, studies | KSTAR_OUTPUTS | the repository's outputs/ |

Outputs go wherever a call's, a notebook's or a study's parameters say; where they say nothing, to `outputs_root()`,
the same folder whatever the current directory (the notebooks' `../outputs` is that folder seen from notebooks/).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED_ENV = "KSTAR_SHIPPED_DATA"
DATASETS_ENV = "KSTAR_DATASETS"
ROBUSTBENCH_ENV = "KSTAR_ROBUSTBENCH_DIR"
OUTPUTS_ENV = "KSTAR_OUTPUTS"
DEFAULT_DATASETS = "~/.cache/kstar/data"
DEFAULT_ROBUSTBENCH = "~/.cache/kstar/robustbench"


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def shipped(*parts: str) -> Path:
    """A path inside the shipped data folder: $KSTAR_SHIPPED_DATA if set, else the repository's data/."""
    env = _env(SHIPPED_ENV)
    return (Path(env).expanduser() if env else REPO / "data").joinpath(*parts)


def datasets_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where user-provided datasets live: `explicit` (a data_root parameter), else $KSTAR_DATASETS, else
    ~/.cache/kstar/data."""
    return Path(explicit or _env(DATASETS_ENV) or DEFAULT_DATASETS).expanduser()


def robustbench_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where RobustBench checkpoints live: `explicit` (a model_dir option), else $KSTAR_ROBUSTBENCH_DIR, else
    ~/.cache/kstar/robustbench."""
    return Path(explicit or _env(ROBUSTBENCH_ENV) or DEFAULT_ROBUSTBENCH).expanduser()


def outputs_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where results go (the caches of features and k*, tables, figures, studies): `explicit` (a root / cache_dir
    parameter), else $KSTAR_OUTPUTS, else the repository's outputs/. Absolute: a call from another working
    directory finds the same caches instead of silently starting new ones."""
    return Path(explicit or _env(OUTPUTS_ENV) or REPO / "outputs").expanduser().absolute()


def notebooks_dir() -> Path:
    """The workbook's notebooks (the repository's notebooks/)."""
    return REPO / "notebooks"
