"""Old module paths and entry points keep working for one release, and say where things moved."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("old,new,attr", [("kstar_utils.stages", "kstar_utils.pipeline.stages", "kstar_stage"),
                                          ("kstar_utils.kstar", "kstar_utils.method.kstar", "compute_kstar"),
                                          ("kstar_utils.tables", "kstar_utils.io.tables", "load_openclip_results"),
                                          ("kstar_utils.kstar_engine", "kstar_utils.engine", "SortedSet")])
def test_old_module_paths_warn_and_resolve(old, new, attr):
    code = (f"import importlib, warnings\nwarnings.simplefilter('error')\n"
            f"try:\n    importlib.import_module({old!r})\nexcept DeprecationWarning as w:\n    print(w)\n"
            f"warnings.simplefilter('ignore')\nm = importlib.import_module({old!r})\n"
            f"n = importlib.import_module({new!r})\nassert getattr(m, {attr!r}) is getattr(n, {attr!r})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"moved to {new}" in out.stdout


@pytest.mark.parametrize("statement", ["import kstar_utils.kstar", "from kstar_utils import kstar",
                                       "import importlib; importlib.import_module('kstar_utils.kstar')"])
def test_the_warning_is_shown_by_default_and_points_at_the_importing_line(statement):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Python's default filters
    out = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True, check=True, env=env)
    assert out.stderr.startswith("<string>:1: DeprecationWarning: kstar_utils.kstar moved to kstar_utils.method.kstar")


def test_old_entry_point_names_the_new_command():
    out = subprocess.run([sys.executable, "-m", "kstar_utils.preflight", "--dataset", "digits"], capture_output=True,
                         text=True)
    assert "kstar preflight" in out.stderr
    assert out.returncode == 0 and "digits" in out.stdout


def test_old_zoo_entry_point_keeps_its_scope():
    out = subprocess.run([sys.executable, "-m", "kstar_utils.zoo", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: kstar zoo" in out.stdout
    assert "python -m kstar_utils.zoo is now `kstar zoo ... --zoo digits`" in out.stderr  # the digits zoo, as before


def test_names_that_moved_elsewhere_or_were_removed():
    code = ("import warnings\nwarnings.simplefilter('ignore')\n"
            "import kstar_utils.study_plots as old, kstar_utils.zoo as zoo\n"
            "from kstar_utils.plotting.study import plot_skewness_heatmap\n"
            "from kstar_utils.study.summary import average_over_datasets\n"
            "from kstar_utils.models.training import pgd_linf\n"
            "assert old.plot_skewness_heatmap is plot_skewness_heatmap\n"
            "assert old.average_over_datasets is average_over_datasets and zoo.pgd_linf is pgd_linf\n"
            "from kstar_utils.kstar_engine.layout import SortedSet\n"
            "from kstar_utils.engine.layout import SortedSet as new\n"
            "assert SortedSet is new\n"
            "try:\n    zoo.load_zoo_metrics\nexcept AttributeError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "kstar_utils.zoo.load_zoo_metrics is gone in 0.2; use kstar_utils.io.tables.load_measured_metrics" \
        in out.stdout
