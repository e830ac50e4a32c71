"""Every root has one helper and one environment variable."""
from __future__ import annotations

from pathlib import Path

import pytest

from kstar_utils.io import paths


def test_shipped_data_defaults_to_the_repository_and_follows_its_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("KSTAR_SHIPPED_DATA", raising=False)
    assert paths.shipped("zoo") == paths.REPO / "data" / "zoo"
    assert (paths.REPO / "kstar_utils" / "io" / "paths.py").is_file()
    monkeypatch.setenv("KSTAR_SHIPPED_DATA", str(tmp_path))
    assert paths.shipped("a", "b") == tmp_path / "a" / "b"


def test_datasets_and_robustbench_roots(tmp_path, monkeypatch):
    monkeypatch.delenv("KSTAR_DATASETS", raising=False)
    assert paths.datasets_root() == Path("~/.cache/kstar/data").expanduser()
    monkeypatch.setenv("KSTAR_DATASETS", str(tmp_path))
    assert paths.datasets_root() == tmp_path
    assert paths.datasets_root(tmp_path / "explicit") == tmp_path / "explicit"  # a parameter wins
    monkeypatch.setenv("KSTAR_ROBUSTBENCH_DIR", str(tmp_path / "rb"))
    assert paths.robustbench_dir() == tmp_path / "rb"
    assert paths.robustbench_dir("~/x") == Path("~/x").expanduser()
