"""Every workbook notebook keeps the conventions papermill, nbval and readers rely on."""
import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_the_sequence_exists():
    names = [p.stem for p in NOTEBOOKS]
    for expected in ("01_extract_features", "02_kstar", "03_skewness", "04_robustness_correlation"):
        assert expected in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "kstar"
    code = _code_cells(nb)
    tagged = [i for i, c in enumerate(code) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged == [0], "the first code cell, and only it, is tagged `parameters`"
    params = ast.parse(_source(code[0]))
    assert all(isinstance(node, ast.Assign) for node in params.body), "the parameters cell only assigns values"
    names = {t.id for node in params.body for t in node.targets}
    import papermill

    # papermill reads the cell line by line and silently skips a line it cannot parse (a comment with quotes in it):
    # that name would be invisible to every parameter check
    assert set(papermill.inspect_notebook(str(path))) == names, "papermill must see every parameter"
    assert any(n.endswith(("_index", "_table", "_dir")) for n in names), "inputs and outputs are named as parameters"
    for cell in code:
        tree = ast.parse(_source(cell))
        defined = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda))]
        assert not defined, "notebooks call kstar_utils; they do not define logic"
    assert any(c.get("outputs") for c in code), "stored without outputs: nbval would have nothing to compare"
    assert all(c.get("execution_count") is not None for c in code), "stored outputs come from one full run"
