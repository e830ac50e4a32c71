"""The executed-notebook pages show each run's real parameters in one cell: injected values in place of the defaults
they override, multi-line defaults included, everything else as the notebook wrote it."""
from __future__ import annotations

import ast
import copy
from pathlib import Path

import nbformat
import pytest

from kstar_utils.pipeline.notebooks import effective_parameters_cell, notebook_html

pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _parameterized(defaults: str, parameters: dict):
    """A notebook whose tagged `parameters` cell is `defaults`, parameterised as papermill does before running it."""
    from papermill.parameterize import parameterize_notebook

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"},
                                            "language_info": {"name": "python"}, "papermill": {}})
    nb.cells = [nbformat.v4.new_markdown_cell("# title", metadata={"tags": []}),
                nbformat.v4.new_code_cell(defaults, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(1)", metadata={"tags": []})]
    return parameterize_notebook(nb, parameters)


def _ran(cells: list[str]) -> dict:
    """The parameters' values after running `cells` in order (what the kernel had)."""
    ns: dict = {}
    for source in cells:
        exec(compile(source, "<cell>", "exec"), ns)  # noqa: S102 -- the test's own literal cells
    return {k: v for k, v in ns.items() if not k.startswith("__")}


def _shown(nb) -> str:
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert not [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    return cell.source


MULTILINE = '''models = ["cifar-resnet:resnet20", "cifar-resnet:resnet32",
          "cifar-resnet:resnet44",
          "cifar-resnet:resnet56"]
dataset = "cifar10-sample"  # cifar10-sample | digits
options = {
    "batch_size": 128,
}
# a comment between parameters
layers = ["penultimate"]
'''


@pytest.mark.parametrize("parameters", [
    {"models": ["cifar-resnet:resnet20"]},
    {"models": ["x"], "options": {"n_per_class": 5}, "layers": ["logits"]},
    {"dataset": "digits", "undeclared_here": 3},
    {},
])
def test_one_cell_with_the_values_the_run_had(parameters):
    nb = _parameterized(MULTILINE, parameters)
    cells = [c.source for c in nb.cells if c.cell_type == "code"][:2]  # defaults, then papermill's injected cell
    shown = _shown(effective_parameters_cell(copy.deepcopy(nb)))
    ast.parse(shown)  # one valid cell: no stray lines of a replaced multi-line default
    assert _ran([shown]) == _ran(cells)
    for name in parameters:  # each injected value is shown once, and its default is gone
        assert sum(line.startswith(f"{name} = ") for line in shown.splitlines()) == 1
    if "models" in parameters:
        assert "resnet44" not in shown
    assert "# a comment between parameters" in shown


def test_statements_sharing_lines_and_several_targets():
    defaults = "a = b = [1,\n     2]\nx = 1; y = 2\nz: int = 3\np, q = 4, 5\n"
    parameters = {"a": [9], "y": 7, "z": 0, "p": 6}
    nb = _parameterized(defaults, parameters)
    cells = [c.source for c in nb.cells if c.cell_type == "code"][:2]
    shown = _shown(effective_parameters_cell(copy.deepcopy(nb)))
    assert _ran([shown]) == _ran(cells)


def test_a_parameters_cell_that_does_not_parse_keeps_its_text_and_the_values():
    defaults = "n = 1\n%matplotlib inline\n"
    nb = _parameterized(defaults, {"n": 2})
    shown = _shown(effective_parameters_cell(copy.deepcopy(nb)))
    assert "%matplotlib inline" in shown and shown.rstrip().endswith("n = 2")


def test_the_page_of_notebook_01_shows_the_jobs_models_only(tmp_path):
    """Notebook 01's default `models` spans four lines; a study job passes one model."""
    from papermill.parameterize import parameterize_notebook

    nb = nbformat.read(str(NOTEBOOKS / "01_extract_features.ipynb"), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    nb = parameterize_notebook(nb, {"models": ["cifar-resnet:resnet20"], "layers": ["penultimate"]})
    executed = tmp_path / "01.ipynb"
    nbformat.write(nb, str(executed))
    shown = _shown(effective_parameters_cell(copy.deepcopy(nb)))
    assert "models = ['cifar-resnet:resnet20']" in shown.splitlines()
    assert "resnet32" not in shown and "resnet20-pgd8" not in shown
    page = notebook_html(executed, tmp_path / "01.html", title="01").read_text()
    assert "resnet20-pgd8" not in page and "resnet20" in page
