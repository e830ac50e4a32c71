"""Batch studies: a YAML file lists models x datasets x layers; each (model, dataset) job runs the notebook sequence
01 -> 02 -> 03 through papermill on Dask; the results become one summary table, the study-level correlations,
figures and an HTML index.

    from kstar_utils.study import load_study, run_study
    result = run_study(load_study("studies/digits.yaml"))

Command line: ``kstar run studies/digits.yaml`` (kstar_utils.cli). Schema and options: docs/study.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from kstar_utils.study.jobs import is_finished, run_job
from kstar_utils.study.runner import ClusterOptions, check_jobs, read_run_log, run_jobs
from kstar_utils.study.spec import Job, Study, expand_jobs, load_study, study_from_dict


@dataclass(frozen=True)
class StudyResult:
    """What a study run wrote: the summary (one row per model, dataset and layer), the correlations, the paths."""

    summary: pd.DataFrame
    correlations: pd.DataFrame
    statuses: dict
    paths: dict


def run_study(study: Study, *, cluster: ClusterOptions = ClusterOptions(), retries: int = 1, force: bool = False,
              on_done: Callable | None = None, on_start: Callable | None = None) -> StudyResult:
    """Run (or resume) a study: unfinished jobs on Dask, then summary.csv / summary.parquet, correlations.csv, the
    figures and index.html under study.output_dir.

    Raises ValueError naming the problem, before any cluster starts, when check_jobs finds one (a folder that cannot
    be written, an undeclared notebook parameter, an unknown layer, missing weights or data of a job to run).
    KeyboardInterrupt propagates once the cluster and the processes it started are shut down. on_start(job, attempt)
    and on_done(job, status) are told when a job starts and ends (run_jobs)."""
    from kstar_utils.io.index import write_table
    from kstar_utils.study.report import study_figures, write_index
    from kstar_utils.study.summary import build_summary, study_correlations, write_summary

    out = Path(study.output_dir)
    jobs = expand_jobs(study)
    statuses = run_jobs(jobs, out, cluster=cluster, retries=retries, force=force, on_done=on_done,
                        on_start=on_start, kstar_on_cluster=study.distributed_kstar)
    summary = build_summary(jobs, statuses, published=study.accuracy.published)
    paths = write_summary(summary, out)
    stats = study_correlations(summary, n_boot=study.n_boot, seed=study.seed)
    paths["correlations"] = write_table(stats, out / "correlations.csv")
    figures = study_figures(study, jobs, summary, stats, out / "figures")
    paths["figures"] = figures
    paths["index"] = write_index(study, jobs, statuses, summary, stats, figures, out / "index.html")
    return StudyResult(summary, stats, statuses, paths)


__all__ = ["Study", "Job", "StudyResult", "ClusterOptions", "load_study", "study_from_dict", "expand_jobs",
           "run_study", "run_jobs", "run_job", "is_finished", "read_run_log", "check_jobs"]
