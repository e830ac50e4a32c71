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


def test_one_default_for_where_results_go_whatever_the_working_directory(tmp_path, monkeypatch):
    from kstar_utils.io import cache
    from kstar_utils.study import load_study

    monkeypatch.delenv("KSTAR_OUTPUTS", raising=False)
    assert paths.outputs_root() == paths.REPO / "outputs"
    monkeypatch.setenv("KSTAR_OUTPUTS", str(tmp_path / "results"))
    spec = {"model": "m", "layer": "l"}
    here = cache.artifact_path(None, "features", spec, ".npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cache.artifact_path(None, "features", spec, ".npz") == here
    assert here.parent == tmp_path / "results" / "features"
    assert cache.artifact_path("rel", "features", spec, ".npz").parent == elsewhere / "rel" / "features"
    # a study that names no folders uses the same root, not one relative to wherever its file lies
    study_file = tmp_path / "deep" / "s.yaml"
    study_file.parent.mkdir()
    study_file.write_text("name: s\nmodels: [zoo:standard]\ndatasets: [digits]\n")
    study = load_study(study_file)
    assert study.cache_dir == tmp_path / "results" and study.output_dir == tmp_path / "results" / "studies" / "s"
