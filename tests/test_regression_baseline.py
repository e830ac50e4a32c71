"""The regression baseline: `kstar store-notebooks` stores a whole, successful, fresh run or nothing; the table
comparison matches rows by key and holds each column to its tolerance."""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from kstar_utils import cli
from kstar_utils.pipeline import baseline
from kstar_utils.pipeline.baseline import Tolerance, column_changes, compare_table, read_tolerances

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


# ---------------------------------------------------------------------------------------------- a workbook in tmp
def _tracked(folder: Path, name: str, table: str) -> Path:
    """A two-cell workbook notebook whose default run writes ../outputs/tables/<table>."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "kstar", "display_name": "Python (kstar)", "language": "python"}
    params = nbformat.v4.new_code_cell(f'table = "../outputs/tables/{table}"\ncache_dir = "../outputs"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {name}"), params, nbformat.v4.new_code_cell("print(1)")]
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / name))
    return folder / name


def _executed(tracked: Path, folder: Path, *, start: float, error: bool = False, marker_only: bool = False,
              injected: bool = False, unrun: bool = False) -> Path:
    """What papermill writes for `tracked`: outputs, execution counts, its metadata; optionally a failed run (an error
    output and papermill's marks, or the marks alone), injected parameters or a cell that never ran."""
    nb = nbformat.read(str(tracked), as_version=4)
    started = dt.datetime.fromtimestamp(start, dt.timezone.utc).replace(tzinfo=None)
    nb.metadata["papermill"] = {"start_time": started.isoformat(), "end_time": started.isoformat(),
                                "exception": None, "parameters": {}, "input_path": str(tracked)}
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        cell.execution_count = None if unrun and i == 1 else i + 1
        cell.metadata["papermill"] = {"status": "completed", "exception": False}
        if i == 1 and not unrun:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    if error or marker_only:
        last = nb.cells[-1]
        last.metadata["papermill"] = {"status": "failed", "exception": True}
        nb.metadata["papermill"]["exception"] = True
        if error:
            last.outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
        marker = nbformat.v4.new_markdown_cell("An Exception was encountered")
        marker.metadata["tags"] = ["papermill-error-cell-tag"]
        nb.cells.insert(0, marker)
    if injected:
        cell = nbformat.v4.new_code_cell('table = "elsewhere.csv"')
        cell.metadata["tags"] = ["injected-parameters"]
        cell.execution_count = 99
        nb.cells.insert(2, cell)
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(folder / tracked.name))
    return folder / tracked.name


@pytest.fixture
def workbook(tmp_path, monkeypatch):
    """tmp_path as a checkout: notebooks/ (two tracked notebooks), a fresh successful run of both in
    outputs/executed with their tables in outputs/tables, and an older reference table in tests/baseline/tables."""
    monkeypatch.chdir(tmp_path)
    start = time.time() - 60
    for name, table in (("01_a.ipynb", "a.csv"), ("02_b.ipynb", "b.csv")):
        _executed(_tracked(tmp_path / "notebooks", name, table), tmp_path / "outputs" / "executed", start=start)
    tables = tmp_path / "outputs" / "tables"
    tables.mkdir(parents=True)
    pd.DataFrame({"model": ["m1", "m2"], "layer": ["l", "l"], "value": [0.5, 0.25],
                  "features_path": ["/x/1.npz", "/x/2.npz"], "features_sha256": ["aa", "bb"]}).to_csv(
        tables / "a.csv", index=False)
    pd.DataFrame({"model": ["m1"], "n": [3]}).to_csv(tables / "b.csv", index=False)
    ref = tmp_path / "tests" / "baseline" / "tables"
    ref.mkdir(parents=True)
    (ref / "a.csv").write_text("model,layer,value\nm1,l,0.4\nm2,l,0.25\n")
    (ref / "gone.csv").write_text("model\nm1\n")
    return tmp_path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for sub in ("notebooks", "tests") for p in sorted((root / sub).rglob("*")) if p.is_file()}


def _store(capsys) -> tuple[int, str]:
    rc = cli.main(["store-notebooks", "--from", "outputs/executed", "--to", "notebooks"])
    return rc, capsys.readouterr().err


def test_store_writes_the_lean_notebooks_and_the_reference_tables(workbook, capsys):
    assert cli.main(["store-notebooks"]) == 0
    assert "stored 2 notebook(s) in notebooks and 2 reference table(s) in tests/baseline/tables" in \
        capsys.readouterr().out
    ref = workbook / "tests" / "baseline" / "tables"
    assert sorted(p.name for p in ref.iterdir()) == ["a.csv", "b.csv"]  # gone.csv: no notebook writes it
    assert (ref / "a.csv").read_text() == "model,layer,value\nm1,l,0.5\nm2,l,0.25\n"  # no paths, no hashes
    nb = json.loads((workbook / "notebooks" / "01_a.ipynb").read_text())
    assert "start_time" not in nb["metadata"]["papermill"]
    assert [c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"] == [1, 2]
    assert "".join(nb["cells"][2]["outputs"][0]["text"]) == "1\n"


@pytest.mark.parametrize("kind", ["error", "marker_only"])
def test_store_refuses_a_failed_notebook_and_writes_nothing(workbook, capsys, kind):
    """A run whose second notebook failed (an error output, or only papermill's failure marks): exit 2 naming it,
    and neither notebook nor any table is written (the first, successful notebook included)."""
    executed = workbook / "outputs" / "executed"
    _executed(workbook / "notebooks" / "02_b.ipynb", executed, start=time.time() - 60, **{kind: True})
    before = _snapshot(workbook)
    rc, err = _store(capsys)
    assert rc == 2
    assert err.startswith("kstar: error: nothing stored") and "02_b.ipynb" in err and "01_a.ipynb" not in err
    assert ("ValueError: boom" in err) if kind == "error" else ("papermill marks the run as failed" in err)
    assert _snapshot(workbook) == before


def test_store_refuses_a_partial_run(workbook, capsys):
    (workbook / "outputs" / "executed" / "02_b.ipynb").unlink()
    before = _snapshot(workbook)
    rc, err = _store(capsys)
    assert rc == 2 and "02_b.ipynb: missing" in err
    assert _snapshot(workbook) == before


@pytest.mark.parametrize("kind,message", [("injected", "injected parameters"), ("unrun", "code cell 2 did not run")])
def test_store_refuses_a_run_that_is_not_the_default_one(workbook, capsys, kind, message):
    _executed(workbook / "notebooks" / "01_a.ipynb", workbook / "outputs" / "executed", start=time.time() - 60,
              **{kind: True})
    before = _snapshot(workbook)
    rc, err = _store(capsys)
    assert rc == 2 and "01_a.ipynb" in err and message in err
    assert _snapshot(workbook) == before


def test_store_refuses_a_run_of_an_older_version_of_the_notebook(workbook, capsys):
    """Edited after the run: storing would silently put the old cells back."""
    path = workbook / "notebooks" / "02_b.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[-1].source = "print(2)"
    nbformat.write(nb, str(path))
    rc, err = _store(capsys)
    assert rc == 2 and "02_b.ipynb: its cells differ from the tracked notebook's" in err
    assert nbformat.read(str(path), as_version=4).cells[-1].source == "print(2)"


def test_store_refuses_tables_older_than_the_run(workbook, capsys):
    old = time.time() - 3600
    os.utime(workbook / "outputs" / "tables" / "b.csv", (old, old))
    (workbook / "outputs" / "tables" / "a.csv").unlink()
    before = _snapshot(workbook)
    rc, err = _store(capsys)
    assert rc == 2 and "a.csv: missing" in err and "b.csv: older than this run" in err
    assert _snapshot(workbook) == before


def test_store_notebook_alone_refuses_a_failed_run(workbook):
    from kstar_utils.pipeline.notebooks import store_notebook

    tracked = workbook / "notebooks" / "02_b.ipynb"
    failed = _executed(tracked, workbook / "failed", start=time.time(), error=True)
    before = tracked.read_bytes()
    with pytest.raises(ValueError, match="02_b.ipynb is not stored: .*code cell 2 raised ValueError: boom"):
        store_notebook(failed, tracked)
    assert tracked.read_bytes() == before


# ---------------------------------------------------------------------------------------------- the comparison
TOL = {"value": Tolerance("number", 0.01, 0.03), "pattern": Tolerance("label", 0, 0),
       "n": Tolerance("number", 0, 0)}


def _table(values=(0.5, 0.25, -1.0), patterns=("Fractured", "Clustered", "Overlapped"), n=(3, 4, 5)):
    return pd.DataFrame({"model": ["a", "b", "c"], "layer": ["l"] * 3, "value": list(values),
                         "pattern": list(patterns), "n": list(n)})


def test_rows_are_matched_on_their_keys_not_their_order():
    ref = _table()
    assert compare_table("t", ref, ref.iloc[::-1].reset_index(drop=True), TOL) == []


def test_a_number_beyond_its_tolerance_is_reported_with_its_row():
    problems = compare_table("t", _table(), _table(values=(0.5, 0.29, -1.0)), TOL)
    assert len(problems) == 1
    assert problems[0].startswith("t: column 'value': largest change 0.04 > tolerance 0.03")
    assert "('b', 'l')" in problems[0]
    assert compare_table("t", _table(), _table(values=(0.5, 0.27, -1.0)), TOL) == []


def test_labels_and_counts_with_zero_tolerance_must_be_equal():
    assert compare_table("t", _table(), _table(patterns=("Fractured", "Fractured", "Overlapped")), TOL)
    assert compare_table("t", _table(), _table(n=(3, 4, 6)), TOL)


def test_nan_and_infinities_compare_equal_only_to_themselves():
    ref = _table(values=(np.nan, np.inf, -np.inf))
    assert compare_table("t", ref, ref.copy(), TOL) == []
    for other in ((0.0, np.inf, -np.inf), (np.nan, -np.inf, -np.inf), (np.nan, np.inf, 1.0)):
        changes = column_changes(ref, _table(values=other))
        assert changes["value"] == ("number", np.inf)


def test_structure_differences_and_unmeasured_columns_are_reported():
    ref = _table()
    assert "rows differ" in compare_table("t", ref, ref.iloc[:2], TOL)[0]
    assert "columns differ" in compare_table("t", ref, ref.drop(columns="n"), TOL)[0]
    assert "no tolerance for column 'n'" in compare_table("t", ref, ref, {k: TOL[k] for k in ("value", "pattern")})[0]
    dup = pd.concat([ref, ref.iloc[:1]], ignore_index=True)
    assert "repeat" in compare_table("t", dup, dup, TOL)[0]


def test_machine_columns_are_not_compared():
    ref = _table().assign(kstar_path="/a", kstar_sha256="x")
    assert compare_table("t", ref, ref.assign(kstar_path="/b", kstar_sha256="y"), TOL) == []


def test_a_row_of_its_own_is_allowed_more_and_only_that_row():
    own = {**TOL, "value": Tolerance("number", 0.1, 0.03, (("model=b; layer=l", 0.3),))}
    assert compare_table("t", _table(), _table(values=(0.5, 0.45, -1.0)), own) == []   # b moved 0.2 <= 0.3
    problems = compare_table("t", _table(), _table(values=(0.5, 0.65, -1.0)), own)       # b moved 0.4 > 0.3
    assert len(problems) == 1 and "change 0.4 > tolerance 0.3 at model=b; layer=l" in problems[0]
    problems = compare_table("t", _table(), _table(values=(0.5, 0.25, -0.8)), own)       # c moved 0.2 > 0.03
    assert len(problems) == 1 and "change 0.2 > tolerance 0.03 at model=c; layer=l" in problems[0]
    # NaN where a number was is no finite change, whatever the row's tolerance
    assert compare_table("t", _table(), _table(values=(0.5, np.nan, -1.0)), own)
    # a row the table no longer has (a renamed model) is reported, not silently ignored
    dead = {**TOL, "value": Tolerance("number", 0.1, 0.03, (("model=zzz; layer=l", 0.3),))}
    problems = compare_table("t", _table(), _table(), dead)
    assert len(problems) == 1 and "rows the table does not have: ['model=zzz; layer=l']" in problems[0]


def test_tolerances_file_round_trip_and_checks(tmp_path):
    rows = [{"table": "t.csv", "column": "value", "kind": "number", "measured": 0.01, "tolerance": 0.03},
            {"table": "t.csv", "column": "pattern", "kind": "label", "measured": 1, "tolerance": 3}]
    path = tmp_path / "tol.csv"
    path.write_text(baseline.tolerances_csv(rows))
    assert read_tolerances(path) == {"t.csv": {"value": Tolerance("number", 0.01, 0.03),
                                               "pattern": Tolerance("label", 1.0, 3.0)}}
    # a row of its own follows its column's line; a file without the row column (older) still reads
    rows.insert(1, {"table": "t.csv", "column": "value", "kind": "number", "measured": 0.2, "tolerance": 0.6,
                    "row": "model=b; layer=l"})
    path.write_text(baseline.tolerances_csv(rows))
    assert read_tolerances(path)["t.csv"]["value"] == Tolerance("number", 0.2, 0.03, (("model=b; layer=l", 0.6),))
    path.write_text(baseline.tolerances_csv(rows[1:]))
    with pytest.raises(ValueError, match="must follow its column's line"):
        read_tolerances(path)
    path.write_text("table,column,kind,measured,tolerance\nt.csv,value,number,0.01,0.03\n")
    assert read_tolerances(path) == {"t.csv": {"value": Tolerance("number", 0.01, 0.03)}}
    path.write_text(baseline.tolerances_csv(rows).replace("label", "text"))
    with pytest.raises(ValueError, match="kind must be number or label"):
        read_tolerances(path)
    with pytest.raises(FileNotFoundError, match="regression_sensitivity"):
        read_tolerances(tmp_path / "none.csv")


# ---------------------------------------------------------------------------------------------- the workbook's tables
def test_the_workbook_tables_are_found_from_the_notebooks_defaults():
    names = baseline.table_names(NOTEBOOKS)
    for expected in ("features_index.csv", "kstar_index.csv", "skewness_models.csv", "correlations.csv",
                     "metric_sensitivity.csv", "fracture.csv"):
        assert expected in names
    params = baseline.redirected_parameters(NOTEBOOKS / "03_skewness.ipynb", "/tmp/x")
    assert params["skewness_table"] == "/tmp/x/tables/skewness_models.csv"
    assert params["figures_dir"] == "/tmp/x/figures"
    assert "show_model" not in params


def test_a_study_job_passes_every_table_its_notebooks_write():
    """Every output table of notebooks 01-03 is in a job's context, so a study never writes into ../outputs/tables
    (a notebook keeps its default for a name the context lacks)."""
    from kstar_utils.pipeline.notebooks import declared_parameters
    from kstar_utils.study.jobs import job_context
    from kstar_utils.study.spec import NOTEBOOK_SEQUENCE

    from kstar_utils.method.metrics import Metric

    class FakeJob:
        job_dir, plot_layer, layers, model, dataset, split = "/j", None, ("penultimate",), "m", "d", "test"
        data_root, cache_dir, extract_options, metric, spec, device = None, "/c", {}, Metric("euclidean"), {}, "cpu"
        kstar_scheduler = None

    context = job_context(FakeJob())
    for name in NOTEBOOK_SEQUENCE:
        for param, spec in declared_parameters(NOTEBOOKS / name).items():
            if str(spec["default"]).strip("\"'").startswith(baseline.OUTPUTS_PREFIX):
                assert param in context, f"{name} writes {param} to its default {spec['default']} in a study"


def test_a_text_value_column_names_rows_a_numeric_one_measures_them():
    from kstar_utils.pipeline.baseline import key_columns

    named = pd.DataFrame({"model": ["a", "a"], "value": ["approx_skewness", "true_skewness"], "mean": [0.1, 0.2]})
    assert key_columns(named) == ["model", "value"]
    assert key_columns(_table()) == ["model", "layer"]


def test_the_sample_size_notebook_runs_but_its_tables_are_not_in_the_baseline():
    from kstar_utils.pipeline import baseline

    names = baseline.table_names(NOTEBOOKS)
    assert "skewness_models.csv" in names and not any(n.startswith("sample_size") for n in names)
    every = [nb.name for nb in baseline.notebooks_of(NOTEBOOKS)]
    assert "09_sample_size.ipynb" in every
    assert "09_sample_size.ipynb" not in [nb.name for nb in baseline.notebooks_of(NOTEBOOKS, compared=True)]


def test_the_rounding_perturbation_moves_values_by_their_last_bits_and_keeps_equal_values_equal():
    from kstar_utils.pipeline.baseline import rounding_perturbation

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    x[10:20] = x[5]  # ten copies of one row: an input the network maps to one output
    x[30, 3] = 0.0
    moved = rounding_perturbation(x, seed=1, scale=2.0**-22)
    assert moved.dtype == np.float32
    nz = x != 0
    rel = np.abs(moved[nz].astype(np.float64) / x[nz] - 1.0)
    assert rel.max() <= 2.0**-22 + 2.0**-23 and (moved != x).any()  # by at most the scale, and float32 rounding
    assert (moved[10:20] == moved[5]).all() and moved[30, 3] == 0.0  # equal stays equal, zero stays zero
    other = rounding_perturbation(x, seed=2, scale=2.0**-22)
    assert (other != moved).any()  # the seed picks another perturbation
