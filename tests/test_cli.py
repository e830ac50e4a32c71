"""`kstar run` end to end on a small embedded study (offline): summary, failures, resume, Dask, figures, index.

One study run (module fixture) serves most tests: three zoo models on digits at one layer, plus one job that fails
(an image folder whose files are not images: present, so the checks before the run pass, but unreadable). Workers
are threads of this process (a LocalCluster with processes=False). The checks that stop a study before any job
starts, and Ctrl-C during a run, are tested on their own small studies.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kstar_utils.pipeline.notebooks import offline_problems

from kstar_utils import cli

from kstar_utils.pipeline import stages
from kstar_utils.study import expand_jobs, load_study, read_run_log
from kstar_utils.study import runner

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["zoo:untrained", "zoo:standard", "zoo:pgd-0.1"]
MISSING = "folder:/nonexistent/kstar-test-images"


def _broken_images(folder: Path) -> str:
    """A folder dataset that exists (two classes of one file each) but whose files are not images."""
    for cls in ("a", "b"):
        (folder / "broken" / cls).mkdir(parents=True, exist_ok=True)
        (folder / "broken" / cls / "x.png").write_bytes(b"not an image")
    return f"folder:{folder / 'broken'}"


def _write_study(folder: Path, **extra) -> Path:
    study = {"name": "small",
             "grids": [{"models": MODELS, "datasets": ["digits"], "layers": ["penultimate"]},
                       {"models": ["zoo:standard"], "datasets": [_broken_images(folder)], "layers": ["penultimate"]}],
             "output_dir": "out", "cache_dir": "cache", "n_boot": 200, "description": "digits <b>&</b> a broken folder",
             "figures": {"compare_models": ["zoo:untrained", "zoo:pgd-0.1"]}, **extra}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def _write_small_study(folder: Path, **extra) -> Path:
    """One zoo model on digits, one layer: the smallest study that runs a real job."""
    study = {"name": "tiny", "models": ["zoo:standard"], "datasets": ["digits"], "layers": ["penultimate"],
             "output_dir": "out", "cache_dir": "cache", "n_boot": 50, **extra}
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture
def no_cluster(monkeypatch):
    """Fails the test if a run gets as far as starting a Dask cluster."""
    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started although a check should have stopped the run")

    monkeypatch.setattr(runner, "_local_cluster", refuse)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    pytest.importorskip("papermill")
    from kstar_utils.models.digits_zoo import METRICS_FILE, _data_dir

    if not (_data_dir() / METRICS_FILE).exists():
        pytest.skip("the embedded zoo is not built (data/zoo/zoo_metrics.csv); run `make zoo`")
    folder = tmp_path_factory.mktemp("study")
    path = _write_study(folder)
    code = cli.main(["run", str(path), "--threads", "--workers", "2", "--retries", "0"])
    return {"path": path, "code": code, "out": folder / "out", "cache": folder / "cache",
            "broken": _broken_images(folder), "summary": pd.read_csv(folder / "out" / "summary.csv")}


@pytest.mark.slow
def test_run_writes_summary_and_records_the_failure(study_run):
    assert study_run["code"] == 1  # one job failed
    s = study_run["summary"]
    ok = s[s["dataset"] == "digits"]
    assert sorted(ok["model"]) == sorted(MODELS)
    assert (ok["status"] == "ok").all() and ok["approx_skewness"].notna().all()
    failed = s[s["dataset"] == study_run["broken"]]
    assert len(failed) == 1 and failed["status"].iloc[0] == "failed"
    assert "UnidentifiedImageError" in failed["error"].iloc[0]
    assert np.isnan(failed["approx_skewness"].iloc[0])
    assert "Traceback" in Path(failed["error_file"].iloc[0]).read_text()
    # the same table in parquet, with provenance per row
    pq = pd.read_parquet(study_run["out"] / "summary.parquet")
    assert list(pq.columns) == list(s.columns) and len(pq) == len(s)
    assert ok["spec_hash"].str.len().eq(10).all() and (ok["kstar_utils_version"] != "").all()
    # zoo accuracies joined from data/zoo/zoo_metrics.csv
    assert ok["clean_acc"].between(0, 1).all() and ok["robust_acc"].between(0, 1).all()


@pytest.mark.slow
def test_summary_matches_the_stages(study_run):
    """The notebooks run by the study give the same numbers as calling the stages directly."""
    features = stages.extract_stage(MODELS, "digits", layers=["penultimate"], root=study_run["cache"], progress=False)
    models_table, _ = stages.skewness_stage(stages.kstar_stage(features, root=study_run["cache"], progress=False))
    s = study_run["summary"]
    got = s[s["dataset"] == "digits"].set_index("model")
    want = models_table.set_index("model")
    for col in ["true_skewness", "approx_skewness", "approx_skewness_weighted", "skew_spread", "n_fractured",
                "n_overlapped", "n_clustered"]:
        np.testing.assert_allclose(got.loc[MODELS, col].to_numpy(float), want.loc[MODELS, col].to_numpy(float),
                                   rtol=1e-9, atol=1e-12, err_msg=col)


@pytest.mark.slow
def test_correlations_figures_and_index(study_run):
    out = study_run["out"]
    corr = pd.read_csv(out / "correlations.csv")
    assert {"clean_acc", "robust_acc"} <= set(corr["y"])
    assert set(corr["group"]) == {"digits"}  # one dataset: no separate pooled rows
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "approx_skewness_vs_accuracy_digits_penultimate.png" in figures
    assert "true_vs_approx_skewness.png" in figures
    assert any(f.startswith("kstar_side_by_side_zoo-untrained_vs_zoo-pgd-0.1") for f in figures)
    index = (out / "index.html").read_text()
    assert offline_problems(index) == []
    assert "fewer than 6 models" in index  # three models: every correlation says it cannot be trusted
    assert "zero-shot" not in index.split("<h2>Correlations")[0]  # a column with no value is left out
    for job in expand_jobs(load_study(study_run["path"])):
        if job.dataset == "digits":
            html = Path(job.job_dir) / "html" / "03_skewness.html"
            assert html.exists() and f"{Path(job.job_dir).name}/html/03_skewness.html" in index
            page = html.read_text()
            assert offline_problems(page) == [] and "<script src=" not in page
            assert f"<title>03_skewness · {job.model} · digits</title>" in page
            assert "# Parameters" not in page and page.count("parameters of this run") == 1  # shown once
    assert "figures/true_vs_approx_skewness.png" in index and "traceback" in index
    assert "digits &lt;b&gt;&amp;&lt;/b&gt; a broken folder" in index and "<b>" not in index  # text is escaped


@pytest.mark.slow
def test_rerun_executes_only_what_is_missing(study_run, tmp_path):
    """A job interrupted before it finished (no done.json) runs again; finished jobs are not executed again.

    On a copy of the shared run's output folder (same spec, so the same job folders), which the other tests keep
    seeing unchanged."""
    out = tmp_path / "out"
    shutil.copytree(study_run["out"], out)
    raw = yaml.safe_load(study_run["path"].read_text())
    raw.update(output_dir=str(out), cache_dir=str(study_run["cache"]))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    jobs = {j.model: j for j in expand_jobs(load_study(path)) if j.dataset == "digits"}
    victim = jobs["zoo:standard"]
    assert Path(victim.job_dir).parent == out / "jobs"
    (Path(victim.job_dir) / "done.json").unlink()  # as if the job had been killed before its last step
    mtimes = {m: (Path(j.job_dir) / "executed" / "03_skewness.ipynb").stat().st_mtime_ns for m, j in jobs.items()}
    n_before = len(read_run_log(out))
    code = cli.main(["run", str(path), "--threads", "--workers", "2", "--retries", "0"])
    assert code == 1  # the unreadable images still fail
    last = {r["model"] + "|" + r["dataset"]: r["status"] for r in read_run_log(out)[n_before:]}
    assert last == {"zoo:untrained|digits": "skipped", "zoo:pgd-0.1|digits": "skipped",
                    "zoo:standard|digits": "executed", f"zoo:standard|{study_run['broken']}": "failed"}
    for m, j in jobs.items():
        now = (Path(j.job_dir) / "executed" / "03_skewness.ipynb").stat().st_mtime_ns
        assert (now != mtimes[m]) == (m == "zoo:standard"), m
    assert (Path(study_run["path"]).parent / "out" / "jobs" / Path(victim.job_dir).name / "done.json").exists()
    s = pd.read_csv(out / "summary.csv")
    pd.testing.assert_frame_equal(
        s.set_index("model").loc[MODELS, ["approx_skewness", "true_skewness"]],
        study_run["summary"].set_index("model").loc[MODELS, ["approx_skewness", "true_skewness"]])


@pytest.mark.slow
def test_a_job_whose_weights_changed_is_not_skipped(study_run, tmp_path):
    """Features record the weights they came from; a finished job whose weights have new content runs again.

    The features' sidecar is pointed at a copy of the weights (same content: still finished), then the copy is
    changed. The shared run's sidecar is restored afterwards."""
    from kstar_utils.io import cache
    from kstar_utils.study.jobs import is_finished

    job = next(j for j in expand_jobs(load_study(study_run["path"]))
               if j.model == "zoo:standard" and j.dataset == "digits")
    assert is_finished(job)
    done = cache.read_json(Path(job.job_dir) / "done.json")
    features = next(p for p in done["inputs"] if "weights" in cache.read_sidecar(p).get("inputs", {}))
    sidecar = cache.sidecar_path(features)
    original = sidecar.read_bytes()
    meta = json.loads(original)
    copy = tmp_path / "standard.pt"
    shutil.copyfile(meta["inputs"]["weights"]["path"], copy)
    meta["inputs"]["weights"]["path"] = str(copy)
    try:
        sidecar.write_text(json.dumps(meta))
        assert is_finished(job)
        with open(copy, "ab") as f:
            f.write(b"retrained")
        assert not is_finished(job)
    finally:
        sidecar.write_bytes(original)
    assert is_finished(job)


def test_a_changed_spec_is_a_new_job(tmp_path):
    from kstar_utils.study.jobs import notebook_parameters

    s1 = load_study(_write_study(tmp_path))
    s2 = load_study(_write_study(tmp_path, metric="cosine"))
    s3 = load_study(_write_study(tmp_path, extract_options={"n_per_class": 20}))
    a, b, c = expand_jobs(s1)[0], expand_jobs(s2)[0], expand_jobs(s3)[0]
    assert a.model == b.model == c.model and len({a.job_dir, b.job_dir, c.job_dir}) == 3
    assert notebook_parameters(c)["01_extract_features.ipynb"]["extract_options"] == {"n_per_class": 20}
    assert notebook_parameters(b)["02_kstar.ipynb"]["metric"] == "cosine"


def test_bad_study_file_names_the_problem(tmp_path, capsys):
    path = _write_study(tmp_path, metrics="cosine")
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'metrics'" in err and "metric" in err
    raw = yaml.safe_load(path.read_text())
    raw.pop("metrics")
    raw["grids"][0]["models"] = ["zoo:standrad"]
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path)]) == 2
    assert "zoo:standard" in capsys.readouterr().err  # the registry's closest match
    raw["grids"][0]["models"] = ["zoo:standard"]
    raw["grids"][0]["layer"] = ["logits"]
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path)]) == 2
    assert "unknown key 'layer' in grids[0]" in capsys.readouterr().err
    raw["grids"][0].pop("layer")
    raw["extract_options"] = {"n_per_clas": 5}
    path.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(path)]) == 2
    assert "unknown option 'n_per_clas'" in capsys.readouterr().err


def test_example_studies_are_valid():
    root = Path(__file__).resolve().parents[1] / "studies"
    embedded = load_study(root / "digits.yaml")
    assert len(expand_jobs(embedded)) == 8
    paper = load_study(root / "paper.yaml", check_names=False)
    assert {j.dataset for j in expand_jobs(paper)} == {"cifar10", "cifar100", "imagenet"}


def test_plan_lists_jobs(tmp_path, capsys):
    path = _write_study(tmp_path)
    assert cli.main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 job(s)" in out and "zoo:pgd-0.1" in out and "to run" in out


@pytest.mark.slow
def test_dask_worker_processes(study_run, tmp_path):
    """The default cluster: a LocalCluster whose workers are separate processes (feature cache already warm)."""
    import os

    from kstar_utils.study import ClusterOptions, run_study, study_from_dict

    study = study_from_dict({"name": "proc", "models": ["zoo:standard"], "datasets": ["digits"],
                             "layers": ["logits"], "output_dir": str(tmp_path / "out"),
                             "cache_dir": str(study_run["cache"]), "n_boot": 50}, tmp_path)
    result = run_study(study, cluster=ClusterOptions(workers=1, processes=True), retries=0)
    (status,) = result.statuses.values()
    assert status["status"] == "ok" and status["done"]["pid"] != os.getpid()
    assert result.summary["approx_skewness"].notna().all()


# ---------------------------------------------------------------------------------------------- checks before a run
def _error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("kstar: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("command", ["plan", "run"])
def test_output_dir_that_is_a_file_stops_before_anything_starts(tmp_path, capsys, no_cluster, command):
    (tmp_path / "taken").write_text("a file where the output folder should be")
    path = _write_small_study(tmp_path, output_dir="taken")
    assert cli.main([command, str(path)]) == 2  # no_cluster: stopped before a cluster or a job started
    err = _error(capsys)
    assert f"output_dir {tmp_path / 'taken'} is a file" in err
    # a file further up is named too
    path = _write_small_study(tmp_path, output_dir="taken/deeper/out")
    assert cli.main([command, str(path)]) == 2
    assert f"{tmp_path / 'taken'} is a file" in _error(capsys)
    assert not (tmp_path / "cache").exists()  # nothing was created


@pytest.mark.parametrize("command", ["plan", "run"])
def test_cache_dir_that_cannot_be_created_stops_the_study(tmp_path, capsys, no_cluster, command):
    (tmp_path / "blocker").write_text("a file")
    path = _write_small_study(tmp_path, cache_dir="blocker/cache")
    assert cli.main([command, str(path)]) == 2
    err = _error(capsys)
    assert f"cache_dir {tmp_path / 'blocker' / 'cache'} cannot be created: {tmp_path / 'blocker'} is a file" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_cache_dir_without_write_permission_stops_the_study(tmp_path, capsys, no_cluster):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        path = _write_small_study(tmp_path, cache_dir="locked/cache")
        assert cli.main(["run", str(path)]) == 2
        assert f"no write permission on {locked}" in _error(capsys)
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", ["plan", "run"])
def test_unknown_layer_stops_the_study_with_the_closest_names(tmp_path, capsys, no_cluster, command):
    path = _write_small_study(tmp_path, layers=["penultimat"])
    assert cli.main([command, str(path)]) == 2
    err = _error(capsys)
    assert "unknown layer 'penultimat' for model 'zoo:standard'" in err and "'penultimate'" in err


def test_metric_and_its_options_are_checked_before_the_run(tmp_path, capsys, no_cluster):
    path = _write_small_study(tmp_path, metric="minkowski")
    assert cli.main(["plan", str(path)]) == 2
    assert "needs p" in _error(capsys)
    path = _write_small_study(tmp_path, metric={"name": "minkowski", "q": 3})
    assert cli.main(["run", str(path)]) == 2
    assert "unknown metric option(s) ['q']" in _error(capsys)
    path = _write_small_study(tmp_path, metric="minkowski", metric_options={"p": 3})
    assert cli.main(["plan", str(path)]) == 2
    assert "'metric_options' is gone; write the options with the metric, e.g. 'metric: minkowski(p=3)'" in _error(capsys)
    from kstar_utils.study import expand_jobs, load_study
    from kstar_utils.study.jobs import notebook_parameters

    # every spelling of one metric is one value: one label for the notebook, one job
    jobs = [expand_jobs(load_study(_write_small_study(tmp_path, metric=m)))[0]
            for m in ("minkowski(p=3)", {"name": "minkowski", "p": 3.0}, {"name": "minkowski", "p": "3"})]
    assert {notebook_parameters(j)["02_kstar.ipynb"]["metric"] for j in jobs} == {"minkowski(p=3)"}
    assert len({j.job_id for j in jobs}) == 1


def test_figure_options_are_checked_before_the_run(tmp_path, capsys, no_cluster):
    path = _write_study(tmp_path, figures={"compare_models": ["zoo:untrained", "zoo:pgd-0.01"]})
    assert cli.main(["run", str(path)]) == 2
    assert "'zoo:pgd-0.01', which is not a model of the study; did you mean ['zoo:pgd-0.1']" in _error(capsys)
    path = _write_study(tmp_path, figures={"layer": "logits"})
    assert cli.main(["plan", str(path)]) == 2
    assert "figures.layer 'logits' is not a layer of the study" in _error(capsys)
    path = _write_study(tmp_path, figures={"format": "pgn"})
    assert cli.main(["plan", str(path)]) == 2
    assert "figures.format 'pgn'" in _error(capsys)


def test_module_layer_names_are_valid_layers(tmp_path, capsys):
    path = _write_small_study(tmp_path, layers=["features.3", "fc"])
    assert cli.main(["plan", str(path)]) == 0
    assert "to run" in capsys.readouterr().out


def test_missing_data_is_reported_by_plan_and_refused_by_run(tmp_path, capsys, no_cluster):
    path = _write_small_study(tmp_path, datasets=[MISSING])
    assert cli.main(["plan", str(path)]) == 1  # the report, as before: what is missing and how to provide it
    out = capsys.readouterr().out
    assert "MISSING" in out and "/nonexistent/kstar-test-images" in out
    assert cli.main(["run", str(path)]) == 2
    err = _error(capsys)
    assert f"data {MISSING} (test)" in err and "/nonexistent/kstar-test-images" in err


def test_missing_weights_are_refused_by_run(tmp_path, capsys, no_cluster):
    path = _write_small_study(tmp_path, extract_options={"weights_dir": str(tmp_path / "no-weights")})
    assert cli.main(["plan", str(path)]) == 1
    assert "MISSING" in capsys.readouterr().out
    assert cli.main(["run", str(path)]) == 2
    err = _error(capsys)
    assert "weights zoo:standard" in err and str(tmp_path / "no-weights") in err


def _notebooks_with_renamed_parameter(folder: Path) -> Path:
    """A copy of the sequence's notebooks in which 02_kstar.ipynb calls its `metric` parameter `distance_metric`."""
    from kstar_utils.study.spec import NOTEBOOK_SEQUENCE

    folder.mkdir()
    for name in NOTEBOOK_SEQUENCE:
        shutil.copy(ROOT / "notebooks" / name, folder / name)
    nb = json.loads((folder / "02_kstar.ipynb").read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    cell["source"] = [line.replace("metric =", "distance_metric =") for line in cell["source"]]
    (folder / "02_kstar.ipynb").write_text(json.dumps(nb))
    return folder


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_parameter_the_notebook_does_not_declare_stops_the_study(tmp_path, capsys, no_cluster, command):
    notebooks = _notebooks_with_renamed_parameter(tmp_path / "nb")
    path = _write_small_study(tmp_path, notebooks_dir=str(notebooks))
    assert cli.main([command, str(path)]) == 2
    err = _error(capsys)
    assert "notebook 02_kstar.ipynb has no parameter 'metric'" in err and "'distance_metric'" in err


def test_plan_of_the_embedded_study_computes_nothing(tmp_path, capsys):
    raw = yaml.safe_load((ROOT / "studies" / "digits.yaml").read_text())
    raw.update(output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(raw))
    import papermill  # noqa: F401 -- imports are the interpreter's start-up cost, not the plan's
    import torch  # noqa: F401

    from kstar_utils.pipeline import notebooks as notebook_params, preflight

    preflight._LAYER_MODELS.clear()  # every model is built and every notebook read again
    notebook_params._DECLARED.clear()
    assert cli.main(["plan", str(path)]) == 0
    assert "8 job(s)" in capsys.readouterr().out
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()  # a plan computes and writes nothing


# ---------------------------------------------------------------------------------------------- Ctrl-C
def _as_at_a_terminal() -> None:
    """SIGINT at its default in the child, as for a command typed at a terminal: a test suite started in the background
    of a non-interactive shell (nohup ... &) inherits SIGINT ignored, and a Python started so keeps ignoring it. (It
    runs between fork and exec, where only async-signal-safe work is sure to be safe in a threaded parent; setting one
    signal's disposition is.)"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _kernel_started(proc, psutil) -> list:
    """The descendants of `proc` once one of them is a Jupyter kernel (a job is running), else []."""
    try:
        procs = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        return []
    for p in procs:
        try:
            if "ipykernel" in " ".join(p.cmdline()):
                return procs
        except psutil.Error:
            pass
    return []


@pytest.mark.slow
@pytest.mark.parametrize("target,workers", [("process", "processes"), ("process group", "processes"),
                                            ("process", "threads")])
def test_ctrl_c_stops_the_run_cleanly(tmp_path, target, workers):
    """SIGINT while a job runs (to the kstar process alone, or to its process group as a terminal's Ctrl-C does):
    one line, exit status 130, no traceback, and no worker or kernel process left behind."""
    psutil = pytest.importorskip("psutil")
    path = _write_small_study(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "kstar_utils.cli", "run", str(path), "--workers", "1",
                             "--retries", "0", *(["--threads"] if workers == "threads" else [])], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_as_at_a_terminal)
    try:
        deadline = time.monotonic() + 240
        while not (started := _kernel_started(proc, psutil)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no job started within 240 s"
            time.sleep(0.2)
        if target == "process":
            proc.send_signal(signal.SIGINT)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("kstar: interrupted"), err
    _, alive = psutil.wait_procs(started, timeout=5)
    assert not [p.pid for p in alive if _running(p, psutil)], [p.pid for p in alive]


def _running(p, psutil) -> bool:
    # an exited process reparented to a PID 1 that does not reap stays a zombie: it is gone all the same
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
