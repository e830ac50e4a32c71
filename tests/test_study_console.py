"""What a study and the commands print: a line when each job starts, no warning about Dask's port 8787, no library
deprecation notices from `kstar plan`/`preflight`, a progress bar named after its notebook; a study whose jobs are
all finished starts no cluster and checks no notebook."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest

from kstar_utils import cli
from kstar_utils.study import expand_jobs, study_from_dict
from kstar_utils.study import runner
from kstar_utils.study.jobs import JobFailed, job_paths

ROOT = Path(__file__).resolve().parents[1]


def _jobs(tmp_path, models=("zoo:standard", "zoo:pgd-0.1")):
    study = study_from_dict({"name": "t", "models": list(models), "datasets": ["digits"], "layers": ["logits"],
                             "output_dir": "out", "cache_dir": "cache"}, base_dir=tmp_path)
    return expand_jobs(study), tmp_path / "out"


@pytest.fixture
def port_8787_busy():
    """Port 8787 taken, as on a machine where another Dask cluster (or anything else) has it."""
    s = socket.socket()
    try:
        s.bind(("", 8787))
        s.listen()
    except OSError:
        pass  # someone else has it already: busy either way
    yield
    s.close()


def test_local_cluster_says_nothing_about_a_busy_port_8787(port_8787_busy):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cluster = runner._local_cluster(runner.ClusterOptions(workers=1, processes=False), gpu=False)
    try:
        assert not [str(w.message) for w in seen if "already in use" in str(w.message)]
        assert cluster.scheduler.http_server.port != 8787
        assert cluster.scheduler.http_server.address == "127.0.0.1"  # its health routes are not offered to the network
    finally:
        cluster.close()


def test_each_job_is_announced_when_it_starts_and_again_when_retried(tmp_path, monkeypatch):
    jobs, out = _jobs(tmp_path)
    seen: list[tuple] = []
    started = {j.job_id: threading.Event() for j in jobs}
    attempts: dict[str, int] = {}

    def fake_run_job(job):
        # the job waits until its start was reported, so the order below is the one a user sees
        assert started[job.job_id].wait(60), "no start was reported for a running job"
        started[job.job_id].clear()
        attempts[job.job_id] = attempts.get(job.job_id, 0) + 1
        if job.model == "zoo:pgd-0.1" and attempts[job.job_id] == 1:
            raise JobFailed("first attempt fails")
        return {"seconds": 0.0}

    def on_start(job, attempt):
        seen.append(("start", job.model, attempt))
        started[job.job_id].set()

    monkeypatch.setattr(runner, "run_job", fake_run_job)
    statuses = runner.run_jobs(jobs, out, cluster=runner.ClusterOptions(workers=1, processes=False), retries=1,
                               check=False, on_start=on_start,
                               on_done=lambda job, status: seen.append(("done", job.model, status["status"])))
    assert {s["status"] for s in statuses.values()} == {"ok"}
    for model, tries in (("zoo:standard", 1), ("zoo:pgd-0.1", 2)):
        mine = [e for e in seen if e[1] == model]
        assert mine == [("start", model, a) for a in range(1, tries + 1)] + [("done", model, "ok")]


def test_kstar_run_prints_a_line_when_a_job_starts(tmp_path, monkeypatch, capsys):
    import kstar_utils.study as study_pkg

    jobs, _ = _jobs(tmp_path, models=("zoo:standard",))

    def fake_run_study(study, *, cluster, retries, force, on_done, on_start):
        on_start(jobs[0], 1)
        on_start(jobs[0], 2)
        on_done(jobs[0], {"status": "ok"})
        return study_pkg.StudyResult(None, None, {jobs[0].job_id: {"status": "ok"}}, {"csv": "s.csv", "index": "i"})

    study_file = tmp_path / "s.yaml"
    study_file.write_text("name: t\nmodels: [zoo:standard]\ndatasets: [digits]\noutput_dir: out\ncache_dir: c\n")
    monkeypatch.setattr(study_pkg, "run_study", fake_run_study)
    assert cli.main(["run", str(study_file), "--threads"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("] started zoo:standard on digits")
    assert lines[1].endswith("] started zoo:standard on digits (attempt 2)")
    assert lines[2].endswith("] ok      zoo:standard on digits")


def test_a_study_whose_jobs_are_all_finished_starts_and_checks_nothing(tmp_path, monkeypatch):
    jobs, out = _jobs(tmp_path)
    for job in jobs:
        job_paths(job)["dir"].mkdir(parents=True)
        job_paths(job)["done"].write_text(json.dumps({"spec_hash": job.spec_hash}))

    def refuse(*args, **kwargs):
        raise AssertionError("nothing runs, so nothing should be started or checked")

    monkeypatch.setattr(runner, "is_finished", lambda job: True)
    monkeypatch.setattr(runner, "_local_cluster", refuse)
    monkeypatch.setattr(runner, "check_jobs", refuse)
    monkeypatch.setattr(runner, "check_notebook_parameters", refuse)
    statuses = runner.run_jobs(jobs, out)
    assert {s["status"] for s in statuses.values()} == {"skipped"}
    assert [json.loads(line)["status"] for line in (out / runner.RUN_LOG).read_text().splitlines()] == ["skipped"] * 2


def test_the_progress_bar_names_its_notebook(tmp_path, monkeypatch):
    import papermill

    from kstar_utils.pipeline.notebooks import run_notebook

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **kw: seen.update(kw))
    nb = ROOT / "notebooks" / "02_kstar.ipynb"
    run_notebook(nb, tmp_path / "out.ipynb", {})
    assert seen["progress_bar"] == {"desc": "02_kstar"}
    run_notebook(nb, tmp_path / "out.ipynb", {}, progress_bar=False)
    assert seen["progress_bar"] is False


def test_the_command_hides_torchs_jit_interface_notice():
    """timm (imported by timm, OpenCLIP and RobustBench models) uses torch.jit.interface at import, which torch
    deprecates with a FutureWarning; the kstar command filters exactly that notice."""
    import torch

    from kstar_utils.compat import quiet_library_notices

    def use_jit_interface():
        @torch.jit.interface
        class Forward(torch.nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                pass

    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        use_jit_interface()
    if not [w for w in before if issubclass(w.category, FutureWarning)]:
        pytest.skip("this torch does not deprecate torch.jit.interface")
    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        quiet_library_notices()
        use_jit_interface()
        warnings.warn("another library's notice", FutureWarning)
    assert [str(w.message) for w in after] == ["another library's notice"]


@pytest.mark.slow
@pytest.mark.parametrize("command", [["preflight", "--model", "timm:resnet18"]])
def test_preflight_of_a_timm_model_prints_no_torch_notice(command):
    out = subprocess.run([sys.executable, "-m", "kstar_utils.cli", *command], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr and "torch.jit" not in out.stderr
