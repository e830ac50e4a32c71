"""Run a study's jobs on Dask distributed: skip finished jobs, retry failed ones, record what happened.

A LocalCluster (one process per worker, one thread each) is started unless a scheduler address is given. Jobs whose
device is cuda ask for the worker resource {"GPU": 1}, so each GPU runs one job at a time; a local cluster then gets
one worker per GPU. Every run appends one line per job to <output_dir>/run_log.jsonl (executed, skipped or failed,
attempts, seconds), which is how a resumed run shows that finished jobs were not executed again.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .jobs import ERROR_FILE, JobFailed, is_finished, job_paths, run_job
from .spec import Job

RUN_LOG = "run_log.jsonl"


@dataclass(frozen=True)
class ClusterOptions:
    """Where jobs run. scheduler: address of an existing Dask scheduler (then the other fields are ignored);
    workers: local worker count (default: one per GPU for cuda jobs, else the number of cores); processes: False
    runs local workers as threads of this process (lighter, for small studies and tests)."""

    scheduler: str | None = None
    workers: int | None = None
    processes: bool = True


def _local_cluster(options: ClusterOptions, gpu: bool):
    import os

    from distributed import LocalCluster

    if gpu:
        import torch

        n_gpu = torch.cuda.device_count()
        workers = options.workers or max(1, n_gpu)
        resources = {"GPU": 1}
    else:
        workers = options.workers or max(1, os.cpu_count() or 1)
        resources = None
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=options.processes, resources=resources,
                        dashboard_address=None,
                        # failed jobs are reported once, by run_jobs; the workers' own error logs would repeat them
                        silence_logs=logging.CRITICAL)


def _append_log(log: Path, records: Sequence[dict]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        for r in records:
            fh.write(json.dumps(r, default=str) + "\n")


def read_run_log(output_dir: str | Path) -> list[dict]:
    """Every record of <output_dir>/run_log.jsonl, oldest first."""
    path = Path(output_dir) / RUN_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_jobs(jobs: Sequence[Job], output_dir: str | Path, *, cluster: ClusterOptions = ClusterOptions(),
             retries: int = 1, force: bool = False, on_done: Callable[[Job, dict], None] | None = None) -> dict[str, dict]:
    """Run every unfinished job (all with force=True) and return job_id -> status.

    status: {"status": "ok" | "skipped" | "failed", "attempts", "seconds", "error" (one line, failed only),
    "done" (the job's done.json content, finished jobs)}. A failed job does not stop the others; its traceback is
    in its folder's error.txt. retries: extra attempts of a failed job (Dask's retries).
    """
    from distributed import Client, as_completed

    run_id = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    statuses: dict[str, dict] = {}
    todo = []
    for job in jobs:
        if force:
            job_paths(job)["done"].unlink(missing_ok=True)
        if is_finished(job):
            statuses[job.job_id] = {"status": "skipped", "attempts": 0, "seconds": 0.0,
                                    "done": json.loads(job_paths(job)["done"].read_text())}
        else:
            todo.append(job)
    if todo:
        gpu = any(j.device == "cuda" for j in todo)
        local = None if cluster.scheduler else _local_cluster(cluster, gpu)
        client = Client(cluster.scheduler or local)
        try:
            t0 = time.perf_counter()
            futures = {}
            for job in todo:
                fut = client.submit(run_job, job, key=f"kstar-job-{job.job_id}", retries=retries, pure=False,
                                    resources={"GPU": 1} if job.device == "cuda" else None)
                futures[fut] = job
            for fut in as_completed(futures):
                job = futures[fut]
                seconds = round(time.perf_counter() - t0, 2)
                if fut.status == "finished":
                    done = fut.result()
                    statuses[job.job_id] = {"status": "ok", "attempts": None, "seconds": done.get("seconds", seconds),
                                            "done": done}
                else:
                    exc = fut.exception()
                    message = str(exc) if isinstance(exc, JobFailed) else f"{type(exc).__name__}: {exc}"
                    statuses[job.job_id] = {"status": "failed", "attempts": retries + 1, "seconds": seconds,
                                            "error": message, "error_file": str(job_paths(job)["dir"] / ERROR_FILE)}
                if on_done is not None:
                    on_done(job, statuses[job.job_id])
        finally:
            client.close()
            if local is not None:
                local.close()
    _append_log(Path(output_dir) / RUN_LOG,
                [{"run": run_id, "job_id": j.job_id, "model": j.model, "dataset": j.dataset,
                  "status": "executed" if statuses[j.job_id]["status"] == "ok" else statuses[j.job_id]["status"],
                  "seconds": statuses[j.job_id].get("seconds"), "error": statuses[j.job_id].get("error", "")}
                 for j in jobs])
    return statuses
