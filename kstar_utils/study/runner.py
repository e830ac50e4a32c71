"""Run a study's jobs on Dask distributed: skip finished jobs, retry failed ones, record what happened.

A LocalCluster (one process per worker, one thread each) is started unless a scheduler address is given. Jobs whose
device is cuda ask for the worker resource {"GPU": 1}, so each GPU runs one job at a time; a local cluster then gets
one worker per GPU. Every run appends one line per job to <output_dir>/run_log.jsonl (executed, skipped or failed,
attempts, seconds), which is how a resumed run shows that finished jobs were not executed again.

Before any job starts, `check_jobs` checks what can be checked without running one (folders, notebook parameters,
metric, layer names, weights and data); a failed check raises ValueError and nothing is started. An interrupted run
(Ctrl-C) closes the client and the local cluster and ends every process the cluster started, Jupyter kernels of
running jobs included; finished jobs keep their done.json, so the next run resumes.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import signal
import threading
import time
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from kstar_utils.study.jobs import ERROR_FILE, JobFailed, check_notebook_parameters, is_finished, job_paths, run_job
from kstar_utils.study.spec import Job

RUN_LOG = "run_log.jsonl"


@dataclass(frozen=True)
class ClusterOptions:
    """Where jobs run. scheduler: address of an existing Dask scheduler (then the other fields are ignored);
    workers: local worker count (default: one per GPU for cuda jobs, else the number of cores); processes: False
    runs local workers as threads of this process (lighter, for small studies and tests)."""

    scheduler: str | None = None
    workers: int | None = None
    processes: bool = True


def check_folders(jobs: Sequence[Job], output_dir: str | Path) -> None:
    """Raise preflight.PreflightError unless output_dir, every job folder and every cache_dir can be created and
    written. First of all checks: deciding whether a job is finished reads inside its folder."""
    from kstar_utils.pipeline.preflight import check_writable_folder

    check_writable_folder(output_dir, "output_dir")
    for job in jobs:
        check_writable_folder(job.job_dir, "job folder")
    for cache_dir in dict.fromkeys(j.cache_dir for j in jobs):
        check_writable_folder(cache_dir, "cache_dir")


def check_jobs(jobs: Sequence[Job], output_dir: str | Path, *, pending: Sequence[Job] | None = None,
               require_present: bool = True) -> list:
    """Everything that can be checked before a job starts; raises ValueError (preflight.PreflightError,
    pipeline.notebooks.UnknownParameterError, ...) naming the first problem, and returns the weights and data
    requirements of all jobs (preflight.PreflightItem, for a report).

    Checked: the folders (check_folders); the notebooks of the sequence declare the files through which they hand
    results on and the study settings they apply (jobs.REQUIRED); then, for
    the `pending` jobs (those a run would execute; default: the unfinished ones): with require_present, that their
    weights and data are present (weights a job may download are not required), and that each model has the
    requested layers; every features:<file> job, that its layers are the file's one layer, `features`. Nothing is
    created, downloaded or run. Quick: module names come from each architecture built once (on the meta device
    where possible, see preflight.layer_model).
    """
    from kstar_utils.pipeline.features import MODEL_OPTIONS, check_features_layers
    from kstar_utils.pipeline.preflight import PreflightError, check_model_layers, preflight

    check_folders(jobs, output_dir)
    check_notebook_parameters(jobs)

    to_run = {j.job_id for j in (pending if pending is not None else [j for j in jobs if not is_finished(j)])}
    items, missing = {}, {}
    for job in jobs:
        # a features:<file> dataset brings its own features: the notebooks do not load the model
        models = [] if job.dataset.startswith("features:") else [job.model]
        model_opts = {k: v for k, v in job.extract_options.items() if k in MODEL_OPTIONS and k != "allow_download"}
        for item in preflight(models, [job.dataset], split=job.split, data_root=job.data_root, **model_opts):
            key = (item.kind, item.name, item.path)
            items.setdefault(key, item)
            downloads = item.kind == "weights" and job.extract_options.get("allow_download")
            if job.job_id in to_run and not item.present and not downloads:
                missing.setdefault(key, item)
    if require_present and missing:
        listed = "; ".join(f"{i.kind} {i.name} (searched {i.path})" for i in missing.values())
        raise PreflightError(f"{len(missing)} requirement(s) of the jobs to run missing: {listed}; "
                             "`kstar plan` says how to provide each")

    checked = set()
    for job in jobs:
        if job.dataset.startswith("features:"):  # its one layer; no model is loaded
            check_features_layers(job.dataset, job.layers)
            continue
        if job.job_id not in to_run:
            continue
        model_opts = {k: v for k, v in job.extract_options.items() if k in MODEL_OPTIONS}
        key = (job.model, job.layers, repr(sorted(model_opts.items())))
        if key not in checked:
            check_model_layers(job.model, job.layers, **model_opts)
            checked.add(key)
    return list(items.values())


def _completed(results, poll: float = 0.2):
    """The futures of a distributed.as_completed as they finish, waiting in short sleeps: a blocking wait would hold
    the main thread in a lock until the next job ends, and a Ctrl-C that the kernel hands to another thread of this
    process (Dask's event loop) would then wait for it as well."""
    while not results.is_empty():
        batch = results.next_batch(block=False)
        if not batch:
            time.sleep(poll)
        yield from batch


@contextlib.contextmanager
def _sigint_ignored():
    """SIGINT is ignored inside the block (only the main thread can change signal handlers; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _local_cluster(options: ClusterOptions, gpu: bool, *, reachable: bool = False):
    """A LocalCluster for `options`. reachable: other processes of this machine (the jobs' notebook kernels) must
    reach its scheduler, so threads-only clusters listen on local TCP instead of their in-process transport."""
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
    # Processes spawned while SIGINT is ignored keep ignoring it (Python installs its KeyboardInterrupt handler only
    # over the default action), so a Ctrl-C in the terminal, sent to the whole process group, reaches only this
    # process, which then shuts the cluster down in order instead of every worker printing its own traceback.
    with _sigint_ignored() if options.processes else contextlib.nullcontext():
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=options.processes,
                            resources=resources, dashboard_address=None,
                            **({"protocol": "tcp://", "host": "127.0.0.1"} if reachable and not options.processes
                               else {}),
                            # Without a dashboard the scheduler still serves its HTTP routes (health, metrics), on
                            # Dask's dashboard port 8787 by default, and warns "Port 8787 is already in use" when
                            # anything else has it: a free port on this machine only, which no one is told about.
                            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                            # failed jobs are reported once, by run_jobs; the workers' own error logs would repeat them
                            silence_logs=logging.CRITICAL)


def _new_descendants(spared: set) -> set:
    """Live descendant processes of this process that are not in `spared` (psutil.Process objects, which compare
    by pid and start time), leaving out multiprocessing's own helpers, which serve the whole process."""
    import psutil

    out = set()
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        helper = "multiprocessing.resource_tracker" in cmd or "multiprocessing.forkserver" in cmd
        if p not in spared and not helper:
            out.add(p)
    return out


def _end_processes(procs: set, grace: float = 3.0) -> None:
    import psutil

    alive = [p for p in procs if p.is_running()]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(alive, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=grace)


@contextlib.contextmanager
def ending_new_processes(*, kill_on_sigint: bool = False):
    """On leaving the block, however it is left, end (terminate, then kill) every descendant process started inside
    it that is still running: e.g. the Jupyter kernel of a notebook interrupted by Ctrl-C.

    kill_on_sigint: SIGINT inside the block first kills those processes, then raises KeyboardInterrupt (main thread
    only). A kernel asked to shut down in the middle of a cell, as papermill does when interrupted, prints a
    traceback of its own; a killed one is silent, and nothing of it is needed any more."""
    import psutil

    spared = set(psutil.Process().children(recursive=True))

    def interrupt(signum, frame):
        for proc in _new_descendants(spared):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        raise KeyboardInterrupt

    install = kill_on_sigint and threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupt) if install else None
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
        with _sigint_ignored():
            _end_processes(_new_descendants(spared))


@contextlib.contextmanager
def _quiet_aborted_notebooks():
    """papermill's log is silenced inside the block: a job whose kernel is ended on purpose would report
    "Kernel died" after the run has already said it was interrupted."""
    log = logging.getLogger("papermill")
    disabled, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = disabled


def _shutdown(client, local, futures, spared: set, *, threads: bool, interrupted: bool) -> None:
    """Close the client and the local cluster, then end what they leave behind: a worker that did not stop in time
    and the Jupyter kernel of a job it was running (papermill starts kernels in their own session, so they outlive
    an interrupted worker; ipykernel notices a dead parent only after a while). SIGINT is ignored meanwhile: a
    second Ctrl-C cutting this short would leave exactly those processes running.

    threads: the workers are threads of this process. A thread cannot be stopped, and closing the cluster waits for
    it, so an interrupted run first ends the kernels (then this process's only new descendants): the notebook fails
    at once and the thread returns."""
    with _sigint_ignored(), _quiet_aborted_notebooks() if interrupted else contextlib.nullcontext():
        started = _new_descendants(spared)  # before closing: a kernel whose worker dies is no longer a descendant
        if client is not None:
            unfinished = [f for f in futures if not f.done()]
            with contextlib.suppress(Exception):
                if unfinished:  # else Dask retries them, or an external cluster runs them for nobody
                    client.cancel(unfinished)
        if interrupted and threads:
            _end_processes(started)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close(timeout=10)
        if local is not None:
            with contextlib.suppress(Exception):
                local.close(timeout=10)
        _end_processes(started | _new_descendants(spared))


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


def _announced_job(job: Job, topic: str) -> dict:
    """run_job on a worker, first telling the client that the job starts (an event on `topic`, which the client
    subscribed to): Dask itself only reports when a task ends."""
    from distributed import get_worker

    with contextlib.suppress(ValueError):  # not on a Dask worker (called directly): no one to tell
        get_worker().log_event(topic, {"job_id": job.job_id})
    return run_job(job)


def run_jobs(jobs: Sequence[Job], output_dir: str | Path, *, cluster: ClusterOptions = ClusterOptions(),
             retries: int = 1, force: bool = False, on_done: Callable[[Job, dict], None] | None = None,
             on_start: Callable[[Job, int], None] | None = None, check: bool = True,
             kstar_on_cluster: bool = False) -> dict[str, dict]:
    """Run every unfinished job (all with force=True) and return job_id -> status.

    status: {"status": "ok" | "skipped" | "failed", "attempts", "seconds", "error" (one line, failed only),
    "done" (the job's done.json content, finished jobs)}. A failed job does not stop the others; its traceback is
    in its folder's error.txt. retries: extra attempts of a failed job (Dask's retries). on_start(job, attempt):
    called when a worker starts a job (attempt 1, then 2, ... for retries; from the client's event thread);
    on_done(job, status): when it ended. check: run check_jobs first (a failed check raises ValueError before a
    cluster starts). KeyboardInterrupt propagates after the cluster and every process it started are shut down.
    kstar_on_cluster: each job computes its k* on this run's own cluster (its notebook 02 gets the scheduler's
    address), split over the workers, for features too large for one worker.

    When every job is finished, no cluster starts and nothing is checked beyond the folders: nothing will run.
    """
    run_id = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    statuses: dict[str, dict] = {}
    if check:
        check_folders(jobs, output_dir)
    todo = list(jobs) if force else [j for j in jobs if not is_finished(j)]
    if check and todo:  # before anything is changed: a failed check leaves every finished job finished
        check_jobs(jobs, output_dir, pending=todo, require_present=True)
    pending = {j.job_id for j in todo}
    for job in jobs:
        if job.job_id in pending:  # stale or absent: the worker then starts at once instead of hashing its files again
            job_paths(job)["done"].unlink(missing_ok=True)
        else:
            statuses[job.job_id] = {"status": "skipped", "attempts": 0, "seconds": 0.0,
                                    "done": json.loads(job_paths(job)["done"].read_text())}
    if todo:
        import uuid

        import psutil
        from distributed import Client, as_completed

        gpu = any(j.device == "cuda" for j in todo)
        spared = set(psutil.Process().children(recursive=True))
        local = client = None
        futures = {}
        completed = False
        by_id = {j.job_id: j for j in todo}
        starts: dict[str, int] = {}
        ended: set[str] = set()

        def started(event) -> None:
            job = by_id.get(event[1].get("job_id")) if isinstance(event[1], dict) else None
            if job is None or job.job_id in ended:  # an event that arrives after its job's result says nothing
                return
            starts[job.job_id] = starts.get(job.job_id, 0) + 1
            if on_start is not None:
                on_start(job, starts[job.job_id])

        topic = f"kstar-job-started-{uuid.uuid4().hex}"  # this run's own: a shared scheduler may serve others
        try:
            local = None if cluster.scheduler else _local_cluster(cluster, gpu, reachable=kstar_on_cluster)
            client = Client(cluster.scheduler or local)
            client.subscribe_topic(topic, started)
            t0 = time.perf_counter()
            if kstar_on_cluster:  # each job's k* is split over this cluster's workers (study: distributed_kstar)
                todo = [dataclasses.replace(j, kstar_scheduler=client.scheduler.address) for j in todo]
            for job in todo:
                fut = client.submit(_announced_job, job, topic, key=f"kstar-job-{job.job_id}", retries=retries,
                                    pure=False, resources={"GPU": 1} if job.device == "cuda" else None)
                futures[fut] = job
            for fut in _completed(as_completed(futures)):
                job = futures[fut]
                ended.add(job.job_id)
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
            completed = True
        finally:
            _shutdown(client, local, futures, spared, threads=local is not None and not cluster.processes,
                      interrupted=not completed)
    _append_log(Path(output_dir) / RUN_LOG,
                [{"run": run_id, "job_id": j.job_id, "model": j.model, "dataset": j.dataset,
                  "status": "executed" if statuses[j.job_id]["status"] == "ok" else statuses[j.job_id]["status"],
                  "seconds": statuses[j.job_id].get("seconds"), "error": statuses[j.job_id].get("error", "")}
                 for j in jobs])
    return statuses
