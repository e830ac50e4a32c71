"""`kstar lab`: the JupyterLab of the running interpreter's environment, JupyterLab's options passed through, the
working copies served; one real start on a free port."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kstar_utils import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def captured_exec(monkeypatch, tmp_path):
    """Runs `kstar lab` up to the point where it would replace itself by JupyterLab; returns what it would run."""
    import kstar_utils.pipeline.notebooks as notebooks

    seen = {}

    def fake_execve(path, argv, env):
        seen.update(path=path, argv=list(argv), env=dict(env))

    monkeypatch.setattr(os, "execve", fake_execve)
    monkeypatch.setattr(notebooks, "prepare_lab", lambda refresh=False: (tmp_path / "lab", []))
    monkeypatch.setattr(notebooks, "quiet_jupyterlab", lambda: tmp_path / "overrides.json")
    return seen


def _jupyter_args(seen: dict, root: Path) -> list[str]:
    argv = seen["argv"]
    assert argv[:4] == [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root}"]
    return [a for a in argv[4:] if a != "--allow-root"]


def test_jupyter_options_are_passed_through(captured_exec, tmp_path):
    # the Makefile's documented example: LAB_ARGS="--no-browser --port 8899"
    assert cli.main(["lab", "--no-browser", "--port", "8899"]) == 0
    assert _jupyter_args(captured_exec, tmp_path / "lab") == ["--no-browser", "--port", "8899"]


def test_a_double_dash_separates_and_is_not_passed_on(captured_exec, tmp_path):
    assert cli.main(["lab", "--refresh", "--", "--no-browser", "--IdentityProvider.token="]) == 0
    assert _jupyter_args(captured_exec, tmp_path / "lab") == ["--no-browser", "--IdentityProvider.token="]


def test_kstar_options_and_jupyter_options_mix(captured_exec, tmp_path, monkeypatch):
    import kstar_utils.pipeline.notebooks as notebooks

    refreshed = []
    monkeypatch.setattr(notebooks, "prepare_lab", lambda refresh=False: (refreshed.append(refresh), (tmp_path, []))[1])
    # --ref is not taken as an abbreviation of --refresh: it is JupyterLab's to judge
    assert cli.main(["lab", "--port=8899", "--refresh", "--ref"]) == 0
    assert refreshed == [True]
    assert _jupyter_args(captured_exec, tmp_path) == ["--port=8899", "--ref"]


def test_jupyterlab_of_this_interpreter_without_jupyter_on_path(captured_exec, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert cli.main(["lab"]) == 0
    assert captured_exec["path"] == sys.executable
    scripts = str(Path(sys.executable).parent)
    assert captured_exec["env"]["PATH"].split(os.pathsep) == [scripts, *(p for p in ("/usr/bin", "/bin") if p != scripts)]


def test_other_commands_still_refuse_unknown_options(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["plan", "study.yaml", "--no-browser"])
    assert e.value.code == 2
    assert "unrecognized arguments: --no-browser" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


@pytest.mark.slow
def test_lab_serves_the_working_copies(tmp_path):
    """The CLI's own path (main -> prepare_lab -> exec) in a child process whose repository is a temporary folder,
    with nothing on PATH but the system's folders and no token; JupyterLab answers on the port given."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copy(ROOT / "notebooks" / "02_kstar.ipynb", repo / "notebooks" / "02_kstar.ipynb")
    port = _free_port()
    script = ("import sys; from pathlib import Path; import kstar_utils.io.paths as p; p.REPO = Path(sys.argv[1]); "
              "from kstar_utils.cli import main; sys.exit(main(sys.argv[2:]))")
    args = ["lab", "--no-browser", "--port", str(port), "--ServerApp.port_retries=0", "--IdentityProvider.token="]
    env = {**os.environ, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR"):
        env.pop(name, None)
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", script, str(repo), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        status = None
        deadline = time.monotonic() + 240  # a loaded machine; the test does not measure how long it takes
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, page = _get(f"{base}/lab")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert status == 200, f"JupyterLab did not answer (exit {proc.poll()}):\n{log.read_text()[-3000:]}"
        assert b"JupyterLab" in page
        _, listing = _get(f"{base}/api/contents")
        assert [item["name"] for item in json.loads(listing)["content"]] == ["02_kstar.ipynb"]
        assert (repo / "lab" / "02_kstar.ipynb").is_file()
        if (Path(sys.prefix) / "share" / "jupyter" / "kernels" / "kstar").is_dir():
            _, specs = _get(f"{base}/api/kernelspecs")
            assert "kstar" in json.loads(specs)["kernelspecs"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
