"""`kstar run` end to end on a small embedded study (offline): summary, failures, resume, Dask, figures, index.

One study run (module fixture) serves most tests: three zoo models on digits at one layer, plus one job that fails
(a dataset folder that does not exist). Workers are threads of this process (a LocalCluster with processes=False).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kstar_utils import cli, stages
from kstar_utils.study import expand_jobs, load_study, read_run_log

MODELS = ["zoo:untrained", "zoo:standard", "zoo:pgd-0.1"]
MISSING = "folder:/nonexistent/kstar-test-images"


def _write_study(folder: Path, **extra) -> Path:
    study = {"name": "small", "grids": [{"models": MODELS, "datasets": ["digits"], "layers": ["penultimate"]},
                                        {"models": ["zoo:standard"], "datasets": [MISSING], "layers": ["penultimate"]}],
             "output_dir": "out", "cache_dir": "cache", "n_boot": 200,
             "figures": {"compare_models": ["zoo:untrained", "zoo:pgd-0.1"]}, **extra}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    pytest.importorskip("papermill")
    from kstar_utils.zoo import DATA_DIR, METRICS_FILE

    if not (DATA_DIR / METRICS_FILE).exists():
        pytest.skip("the embedded zoo is not built (data/zoo/zoo_metrics.csv); run `make zoo`")
    folder = tmp_path_factory.mktemp("study")
    path = _write_study(folder)
    code = cli.main(["run", str(path), "--threads", "--workers", "2", "--retries", "0"])
    return {"path": path, "code": code, "out": folder / "out", "cache": folder / "cache",
            "summary": pd.read_csv(folder / "out" / "summary.csv")}


def test_run_writes_summary_and_records_the_failure(study_run):
    assert study_run["code"] == 1  # one job failed
    s = study_run["summary"]
    ok = s[s["dataset"] == "digits"]
    assert sorted(ok["model"]) == sorted(MODELS)
    assert (ok["status"] == "ok").all() and ok["approx_skewness"].notna().all()
    failed = s[s["dataset"] == MISSING]
    assert len(failed) == 1 and failed["status"].iloc[0] == "failed"
    assert "DatasetNotFoundError" in failed["error"].iloc[0]
    assert np.isnan(failed["approx_skewness"].iloc[0])
    assert "Traceback" in Path(failed["error_file"].iloc[0]).read_text()
    # the same table in parquet, with provenance per row
    pq = pd.read_parquet(study_run["out"] / "summary.parquet")
    assert list(pq.columns) == list(s.columns) and len(pq) == len(s)
    assert ok["spec_hash"].str.len().eq(10).all() and (ok["kstar_utils_version"] != "").all()
    # zoo accuracies joined from data/zoo/zoo_metrics.csv
    assert ok["clean_acc"].between(0, 1).all() and ok["robust_acc"].between(0, 1).all()


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


def test_correlations_figures_and_index(study_run):
    out = study_run["out"]
    corr = pd.read_csv(out / "correlations.csv")
    assert {"clean_acc", "robust_acc"} <= set(corr["y"])
    assert set(corr["group"]) == {"digits"}  # one dataset: no separate pooled rows
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "approx_skewness_vs_accuracy_digits_penultimate.png" in figures
    assert "true_vs_approx_skewness.png" in figures
    assert "approx_skewness_heatmap_penultimate.png" in figures
    assert any(f.startswith("kstar_side_by_side_zoo-untrained_vs_zoo-pgd-0.1") for f in figures)
    index = (out / "index.html").read_text()
    for job in expand_jobs(load_study(study_run["path"])):
        if job.dataset == "digits":
            html = Path(job.job_dir) / "html" / "03_skewness.html"
            assert html.exists() and f"{Path(job.job_dir).name}/html/03_skewness.html" in index
    assert "figures/true_vs_approx_skewness.png" in index and "traceback" in index


def test_rerun_executes_only_what_is_missing(study_run):
    """A job interrupted before it finished (no done.json) runs again; finished jobs are not executed again."""
    jobs = {j.model: j for j in expand_jobs(load_study(study_run["path"])) if j.dataset == "digits"}
    victim = jobs["zoo:standard"]
    (Path(victim.job_dir) / "done.json").unlink()  # as if the job had been killed before its last step
    mtimes = {m: (Path(j.job_dir) / "executed" / "03_skewness.ipynb").stat().st_mtime_ns for m, j in jobs.items()}
    n_before = len(read_run_log(study_run["out"]))
    code = cli.main(["run", str(study_run["path"]), "--threads", "--workers", "2", "--retries", "0"])
    assert code == 1  # the missing dataset still fails
    last = {r["model"] + "|" + r["dataset"]: r["status"] for r in read_run_log(study_run["out"])[n_before:]}
    assert last == {"zoo:untrained|digits": "skipped", "zoo:pgd-0.1|digits": "skipped",
                    "zoo:standard|digits": "executed", f"zoo:standard|{MISSING}": "failed"}
    for m, j in jobs.items():
        now = (Path(j.job_dir) / "executed" / "03_skewness.ipynb").stat().st_mtime_ns
        assert (now != mtimes[m]) == (m == "zoo:standard"), m
    s = pd.read_csv(study_run["out"] / "summary.csv")
    pd.testing.assert_frame_equal(
        s.set_index("model").loc[MODELS, ["approx_skewness", "true_skewness"]],
        study_run["summary"].set_index("model").loc[MODELS, ["approx_skewness", "true_skewness"]])


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
    assert "unknown key 'n_per_clas'" in capsys.readouterr().err


def test_example_studies_are_valid():
    root = Path(__file__).resolve().parents[1] / "studies"
    embedded = load_study(root / "embedded.yaml")
    assert len(expand_jobs(embedded)) == 8
    paper = load_study(root / "paper.yaml", check_names=False)
    assert {j.dataset for j in expand_jobs(paper)} == {"cifar10", "cifar100", "imagenet"}


def test_plan_lists_jobs(tmp_path, capsys):
    path = _write_study(tmp_path)
    cli.main(["plan", str(path)])
    out = capsys.readouterr().out
    assert "4 job(s)" in out and "zoo:pgd-0.1" in out and "to run" in out


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
