"""Checked notebook parameters: declared names, refusal of undeclared ones (kstar notebook), papermill-style values."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kstar_utils import cli
from kstar_utils.pipeline.notebooks import (UnknownParameterError, check_parameters, collect_parameters,
                                         declared_parameters, parse_value)

pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _notebook(path: Path, parameters: str | None, body: str) -> Path:
    """A one- or two-cell notebook for the kstar kernel; `parameters` is the source of the tagged cell (None: no
    parameters cell)."""
    cells = []
    if parameters is not None:
        cells.append({"id": "parameters", "cell_type": "code", "metadata": {"tags": ["parameters"]},
                      "source": parameters, "outputs": [], "execution_count": None})
    cells.append({"id": "body", "cell_type": "code", "metadata": {}, "source": body, "outputs": [],
                  "execution_count": None})
    nb = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "kstar", "display_name": "Python (kstar)", "language": "python"},
                       "language_info": {"name": "python"}}}
    path.write_text(json.dumps(nb))
    return path


def test_declared_parameters_are_the_tagged_cell_in_order(tmp_path):
    nb = _notebook(tmp_path / "p.ipynb", 'metric = "euclidean"  # a comment\nlayers = ["a", "b"]\nn_boot = 10',
                   "x = 1")
    declared = declared_parameters(nb)
    assert list(declared) == ["metric", "layers", "n_boot"]
    assert declared["metric"]["default"] == '"euclidean"'


def test_every_workbook_notebook_declares_parameters():
    for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        assert declared_parameters(nb), nb.name


def test_undeclared_name_is_refused_with_the_closest_names():
    with pytest.raises(UnknownParameterError) as e:
        check_parameters(NOTEBOOKS / "02_kstar.ipynb", {"metrc": "cosine", "plot_layer": "logits"})
    msg = str(e.value)
    assert msg.startswith("notebook 02_kstar.ipynb has no parameter 'metrc'; did you mean 'metric'? "
                          "declared: [")
    assert "'features_index'" in msg and "\n" not in msg
    check_parameters(NOTEBOOKS / "02_kstar.ipynb", {"metric": "cosine"})  # declared: no error


def test_a_notebook_without_parameters_cell_declares_nothing(tmp_path):
    nb = _notebook(tmp_path / "plain.ipynb", None, "x = 1")
    assert declared_parameters(nb) == {}
    with pytest.raises(UnknownParameterError, match="declares no parameters"):
        check_parameters(nb, ["x"])


def test_values_are_read_as_papermill_reads_them():
    from papermill.cli import _resolve_type

    for text in ["True", "False", "None", "3", "-3", "3.5", "1e-3", "nan", "inf", "cosine", "", "true", "[1, 2]",
                 "0x10", "1_000", " 7 "]:
        ours, theirs = parse_value(text), _resolve_type(text)
        assert type(ours) is type(theirs) and (ours == theirs or ours != ours), text


def test_parameter_sources_merge_in_papermills_order(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("metric: cosine\nplot_layer: logits\nfigures_dir: a\nkstar_index: 2020-01-01\n")
    params = collect_parameters(files=[f], yaml_strings=["plot_layer: fc\nfigures_dir: b"],
                                pairs=[("figures_dir", "c"), ("output_dir", "5")], raw_pairs=[("features_index", "5")])
    assert params == {"metric": "cosine", "plot_layer": "fc", "figures_dir": "c", "output_dir": 5,
                      "features_index": "5", "kstar_index": "2020-01-01"}  # dates stay text, as with papermill
    with pytest.raises(ValueError, match="mapping"):
        collect_parameters(yaml_strings=["[1, 2]"])


def test_kstar_notebook_refuses_a_misspelt_parameter(tmp_path, capsys):
    out = tmp_path / "out.ipynb"
    code = cli.main(["notebook", str(NOTEBOOKS / "02_kstar.ipynb"), str(out), "-p", "metrc", "cosine"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("kstar: error: notebook 02_kstar.ipynb has no parameter 'metrc'; did you mean 'metric'? "
                          "declared: ['features_index', 'metric',")
    assert err.count("\n") == 1 and not out.exists()  # refused before papermill wrote anything


def test_kstar_notebook_checks_names_from_files_too(tmp_path, capsys):
    f = tmp_path / "p.yaml"
    f.write_text("model: zoo:standard\n")  # 01 takes `models`, a list
    code = cli.main(["notebook", str(NOTEBOOKS / "01_extract_features.ipynb"), str(tmp_path / "o.ipynb"),
                     "-f", str(f)])
    assert code == 2 and "did you mean 'models'?" in capsys.readouterr().err


def test_kstar_notebook_bad_arguments(tmp_path, capsys):
    nb = NOTEBOOKS / "02_kstar.ipynb"
    assert cli.main(["notebook", str(tmp_path / "none.ipynb"), str(tmp_path / "o.ipynb")]) == 2
    assert "notebook not found" in capsys.readouterr().err
    assert cli.main(["notebook", str(nb), str(tmp_path / "o.ipynb"), "-k", "no-such-kernel"]) == 2
    assert "no Jupyter kernel named 'no-such-kernel'" in capsys.readouterr().err
    assert cli.main(["notebook", str(nb), str(tmp_path / "o.ipynb"), "-f", str(tmp_path / "none.yaml")]) == 2
    assert "parameter file not found" in capsys.readouterr().err


def test_kstar_notebook_runs_with_parsed_values(tmp_path, capsys):
    """End to end through papermill and the kstar kernel: values arrive typed, the kernel runs in --cwd."""
    nb = _notebook(tmp_path / "echo.ipynb", 'n = 1\nflag = False\nname = "x"\nlayers = ["a"]\nresult = "r.json"',
                   "import json, os\n"
                   "json.dump({'n': n, 'flag': flag, 'name': name, 'layers': layers, 'cwd': os.getcwd()},"
                   " open(result, 'w'))")
    work = tmp_path / "work"
    work.mkdir()
    code = cli.main(["notebook", str(nb), str(tmp_path / "out" / "echo.ipynb"), "-p", "n", "5", "-p", "flag", "True",
                     "-r", "name", "7", "-y", "layers: [b, c]", "--cwd", str(work), "-k", "kstar",
                     "--no-progress-bar"])
    assert code == 0, capsys.readouterr().err
    got = json.loads((work / "r.json").read_text())
    assert got == {"n": 5, "flag": True, "name": "7", "layers": ["b", "c"], "cwd": str(work)}
    assert (tmp_path / "out" / "echo.ipynb").exists()


def test_kstar_notebook_reports_a_failing_cell_in_one_line(tmp_path, capsys):
    nb = _notebook(tmp_path / "fail.ipynb", "x = 1", "raise RuntimeError(f'bad x {x}')")
    code = cli.main(["notebook", str(nb), str(tmp_path / "o.ipynb"), "-p", "x", "2", "--no-progress-bar"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("kstar: error: notebook fail.ipynb failed in cell") and "RuntimeError: bad x 2" in err
    assert (tmp_path / "o.ipynb").exists()  # executed up to the failing cell, as papermill leaves it


@pytest.mark.slow
def test_ctrl_c_during_kstar_notebook_ends_its_kernel(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    psutil = pytest.importorskip("psutil")
    nb = _notebook(tmp_path / "sleep.ipynb", "t = 1", "import time\ntime.sleep(t)")
    proc = subprocess.Popen([sys.executable, "-m", "kstar_utils.cli", "notebook", str(nb), str(tmp_path / "o.ipynb"),
                             "-p", "t", "120", "--no-progress-bar"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline, kernels = time.monotonic() + 120, []
        while not kernels:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            children = psutil.Process(proc.pid).children(recursive=True)
            kernels = [p for p in children if "ipykernel" in " ".join(p.cmdline())]
            time.sleep(0.2)
        time.sleep(2)  # the kernel is in the cell
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == "kstar: interrupted"
    _, alive = psutil.wait_procs(kernels, timeout=5)

    def gone(p) -> bool:  # a zombie under a PID 1 that does not reap has exited all the same
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            return True

    assert all(gone(p) for p in alive), [p.pid for p in alive]


def test_lab_works_on_copies_the_repository_ignores(tmp_path):
    import subprocess

    from kstar_utils.pipeline.notebooks import prepare_lab

    src = tmp_path / "notebooks"
    (src / "params").mkdir(parents=True)
    (src / "01_a.ipynb").write_text("{}")
    (src / "params" / "p.yaml").write_text("a: 1")
    work, copied = prepare_lab(source=src)
    assert work == tmp_path / "lab" and copied == ["01_a.ipynb"] and (work / "params" / "p.yaml").is_file()
    (work / "01_a.ipynb").write_text('{"edited": true}')  # exploration in the lab ...
    assert (src / "01_a.ipynb").read_text() == "{}"  # ... never reaches the tracked notebook
    assert prepare_lab(source=src)[1] == [] and "edited" in (work / "01_a.ipynb").read_text()  # kept
    assert prepare_lab(source=src, refresh=True)[1] == ["01_a.ipynb"] and (work / "01_a.ipynb").read_text() == "{}"
    root = Path(__file__).resolve().parents[1]
    ignored = subprocess.run(["git", "check-ignore", "lab/01_extract_features.ipynb"], cwd=root, capture_output=True)
    assert ignored.returncode == 0  # the repository's lab/ copies never show in git status



def test_kernels_talk_over_ipc_with_a_socket_prefix_each_and_keep_their_log_off_the_console(monkeypatch):
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    from kstar_utils.pipeline.notebooks import local_kernel_manager

    manager_class = local_kernel_manager()
    a, b = manager_class(kernel_name="kstar"), manager_class(kernel_name="kstar")
    assert a.transport == "ipc" and a.ip != b.ip  # parallel jobs never probe for the same socket names
    started = []

    async def start(self, **kw):
        started.append(kw)

    monkeypatch.setattr(AsyncKernelManager, "start_kernel", start)
    asyncio.run(a.start_kernel(extra_arguments=["--x"], cwd="/tmp"))
    assert started == [{"extra_arguments": ["--x", "--IPKernelApp.log_level=CRITICAL"], "cwd": "/tmp"}]
