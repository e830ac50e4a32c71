"""The `kstar` command.

    kstar run study.yaml [--scheduler ADDRESS] [--workers N] [--threads] [--retries N] [--force]
    kstar plan study.yaml          # the jobs a run would execute or skip, and the weights/data they need

`run` exits with status 0 when every job finished, 1 when some failed (their errors are in the summary table and
each failed job's error.txt), 2 for a bad study file.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kstar", description="k* distribution studies of vision models")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run (or resume) a study: models x datasets x layers through the notebooks")
    run.add_argument("study", help="study YAML file (schema: docs/study.md)")
    run.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (default: a LocalCluster)")
    run.add_argument("--workers", type=int, default=None,
                     help="local workers (default: one per core; one per GPU for cuda jobs)")
    run.add_argument("--threads", action="store_true",
                     help="run local workers as threads of this process instead of processes (small studies)")
    run.add_argument("--retries", type=int, default=1, help="extra attempts of a failed job (default 1)")
    run.add_argument("--force", action="store_true", help="re-execute finished jobs (caches are still reused)")
    plan = sub.add_parser("plan", help="list a study's jobs, whether each is finished, and what it needs")
    plan.add_argument("study")
    return p


def _plan(study_file: str) -> int:
    from .preflight import format_report, preflight
    from .study import expand_jobs, is_finished, load_study

    study = load_study(study_file)
    jobs = expand_jobs(study)
    print(f"study {study.name}: {len(jobs)} job(s), output {study.output_dir}, cache {study.cache_dir}")
    for j in jobs:
        state = "finished (skipped)" if is_finished(j) else "to run"
        print(f"  {j.model:55s} {j.dataset:12s} {','.join(j.layers):24s} {j.device:5s} {state}")
    items = preflight(list(study.models), list(study.datasets), split=study.split, data_root=study.data_root)
    print(format_report(items))
    return 0 if all(i.present for i in items) else 1


def _run(study_file: str, *, scheduler: str | None, workers: int | None, threads: bool, retries: int,
         force: bool) -> int:
    from .study import ClusterOptions, load_study, run_study

    study = load_study(study_file)
    if retries < 0:
        raise ValueError("--retries must be >= 0")
    if workers is not None and workers < 1:
        raise ValueError("--workers must be >= 1")
    t0 = time.perf_counter()

    def report(job, status):
        what = status["error"] if status["status"] == "failed" else f"{job.model} on {job.dataset}"
        print(f"[{time.perf_counter() - t0:7.1f} s] {status['status']:7s} {what}", flush=True)

    result = run_study(study, cluster=ClusterOptions(scheduler, workers, processes=not threads), retries=retries,
                       force=force, on_done=report)
    counts = {s: sum(v["status"] == s for v in result.statuses.values()) for s in ("ok", "skipped", "failed")}
    print(f"{counts['ok']} executed, {counts['skipped']} skipped (finished before), {counts['failed']} failed "
          f"in {time.perf_counter() - t0:.1f} s")
    print(f"summary: {result.paths['csv']}\nindex:   {result.paths['index']}")
    return 1 if counts["failed"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "plan":
            return _plan(args.study)
        return _run(args.study, scheduler=args.scheduler, workers=args.workers, threads=args.threads,
                    retries=args.retries, force=args.force)
    except (ValueError, FileNotFoundError) as e:
        print(f"kstar: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
