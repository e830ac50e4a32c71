"""The `kstar` command.

    kstar run study.yaml [--scheduler ADDRESS] [--workers N] [--threads] [--retries N] [--force]
    kstar plan study.yaml          # the jobs a run would execute or skip, and the weights/data they need
    kstar preflight [--model M ...] [--dataset D ...] [--params FILE]   # weights and data a run needs, and where
    kstar zoo train [--zoo digits|cifar] [--models NAME ...] [--force]  # rebuild the workbook's own trained models
    kstar zoo measure [--models NAME ...] [--force] [--out CSV]     # clean, JPEG, AutoAttack and corruption accuracy
    kstar lab [--refresh] [JUPYTER ARGS]   # JupyterLab on working copies of the notebooks (lab/), never the tracked
                                           # ones; any other option is JupyterLab's: kstar lab --no-browser --port 8899
    kstar store-notebooks [--from DIR] [--to DIR] [--tables DIR] [--reference DIR]
                                   # a fresh full run becomes the regression baseline (notebooks + tables)
    kstar notebook NOTEBOOK OUTPUT [-p NAME VALUE ...] [-r NAME VALUE ...] [-y YAML] [-f params.yaml] [--cwd DIR]
                   [-k KERNEL]     # one notebook through papermill, refusing parameter names it does not declare
    kstar kstar FEATURES [--labels LABELS.npy] [--metric M] [--scheduler ADDRESS | --workers N] [--out PATH]
                   # the k* of one features file (.npz, or a memory-mapped .npy), locally or on a Dask cluster

`plan` and `run` check the study before any job starts: output and cache folders can be created and written, the
notebooks declare the files through which they hand results on, the metric and its options and the layer names are
valid, and (`run`) the weights
and data of every job to run are present. `notebook` runs one notebook through papermill after checking that the
notebook declares every parameter name given.

Exit status: 0 success; 1 some jobs failed (their errors are in the summary table and each failed job's error.txt),
`plan` found weights or data missing, or a notebook cell failed; 2 a bad study file, argument or parameter name, or a
failed check (one line `kstar: error: ...` naming the problem; nothing was started); 130 interrupted (Ctrl-C):
finished jobs are kept and a new run resumes.
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
    plan = sub.add_parser("plan", help="check a study; list its jobs, whether each is finished, and what it needs")
    plan.add_argument("study")
    nb = sub.add_parser("notebook", help="run one notebook through papermill, refusing parameter names it does not "
                                         "declare")
    nb.add_argument("notebook", help="the notebook to run, e.g. notebooks/02_kstar.ipynb")
    nb.add_argument("output", help="where to write the executed notebook")
    nb.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter; VALUE is read as papermill reads it: True, False, None, int, float, else text")
    nb.add_argument("-r", "--raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter kept as text")
    nb.add_argument("-y", "--yaml", action="append", default=[], metavar="YAML",
                    help="parameters as a YAML mapping, e.g. -y 'layers: [penultimate]'")
    nb.add_argument("-f", "--parameters-file", action="append", default=[], metavar="FILE",
                    help="parameters from a YAML file (e.g. notebooks/params/*.yaml); -y, -p, -r override it")
    nb.add_argument("--cwd", default=None, help="working directory of the kernel (default: the notebook's folder, "
                                                 "where the notebooks' relative paths point)")
    nb.add_argument("-k", "--kernel", default=None, help="Jupyter kernel (default: the notebook's own, e.g. kstar)")
    nb.add_argument("--no-progress-bar", action="store_true", help="do not show papermill's progress bar")
    pf = sub.add_parser("preflight", help="every weight file and dataset a run needs: present or not, where it was "
                                          "searched and how to provide it (exit 1 when something is missing)")
    pf.add_argument("--model", action="append", default=[], help="registry name, repeatable")
    pf.add_argument("--dataset", action="append", default=[], help="dataset name, repeatable")
    pf.add_argument("--split", default=None)
    pf.add_argument("--data-root", default=None)
    pf.add_argument("--model-dir", default=None, help="RobustBench checkpoint folder")
    pf.add_argument("--cache-dir", default=None, help="Hugging Face hub cache for OpenCLIP/timm")
    pf.add_argument("--params", default=None, help="a notebook parameter YAML to read the plan from")
    zoo = sub.add_parser("zoo", help="the workbook's own trained models, and the accuracy table of the CIFAR-10 "
                                     "models (runs once; not part of the tests)")
    zoo.add_argument("action", choices=["train", "measure"],
                     help="train: train every model of the zoo and measure its accuracies; measure: the three "
                          "accuracy axes (clean and JPEG, AutoAttack at 2/255 and 8/255, CIFAR-10-C corruptions) of "
                          "every CIFAR-10 model (data/cifar_accuracies/cifar_accuracies.csv; hours on 2 CPU cores)")
    zoo.add_argument("--zoo", choices=["digits", "cifar", "all"], default="all",
                     help="digits: the 8x8-digits CNNs (data/zoo); cifar: the fine-tuned CIFAR ResNet-20s and the "
                          "measurements of the pretrained ResNets (data/cifar_resnets); default: both")
    zoo.add_argument("--models", nargs="*", default=None,
                     help="only these models (train: recipe names such as resnet20-pgd2 or pgd-0.1; measure: registry "
                          "names such as abcrown:cnn-a-adv; default: all)")
    zoo.add_argument("--force", action="store_true",
                     help="rebuild / re-measure models already done (both resume otherwise)")
    zoo.add_argument("--out", default=None, help="measure: the CSV to write (default: the shipped table)")
    zoo.add_argument("--torch-threads", type=int, default=None,
                     help="measure: torch threads during the run (1 is much faster on a machine shared with others)")
    # every option kstar does not know is JupyterLab's (main() hands them on); no abbreviations, so that a Jupyter
    # option is never taken for a prefix of --refresh
    lab = sub.add_parser("lab", allow_abbrev=False,
                         help="open JupyterLab on working copies of the notebooks in lab/ (the tracked notebooks "
                              "stay the regression baseline; exploration never rewrites them)",
                         description="JupyterLab of this environment on working copies of the notebooks in lab/. "
                                     "Any other option is passed to JupyterLab, e.g. `kstar lab --no-browser --port "
                                     "8899`; after `--` everything is JupyterLab's (`kstar lab -- --help`). Without a "
                                     "token, on a trusted single-user machine only: --IdentityProvider.token=''")
    lab.add_argument("--refresh", action="store_true", help="replace the working copies by the tracked notebooks")
    st = sub.add_parser("store-notebooks", help="store a fresh run of every notebook as the regression baseline: "
                                                "lean copies over the tracked notebooks and the tables it wrote as "
                                                "reference tables (after a reviewed change to results); refuses a "
                                                "failed or partial run and writes nothing then")
    st.add_argument("--from", dest="source", default="outputs/executed", help="executed notebooks (default "
                                                                              "outputs/executed)")
    st.add_argument("--to", dest="target", default="notebooks", help="tracked notebooks (default notebooks)")
    st.add_argument("--tables", default="outputs/tables", help="the tables the run wrote (default outputs/tables)")
    st.add_argument("--reference", default="tests/baseline/tables",
                    help="reference tables (default tests/baseline/tables)")
    ks = sub.add_parser("kstar", help="the k* of one features file, on this machine or on a Dask cluster")
    ks.add_argument("features", help="a features .npz (features, labels, class_names) or an (N, D) .npy, read "
                                     "memory-mapped (then --labels)")
    ks.add_argument("--labels", default=None, help="(N,) labels .npy for a features .npy")
    ks.add_argument("--metric", default="euclidean", help="the distance with its options: euclidean (default), "
                                                          "cosine, mahalanobis, manhattan, chebyshev, minkowski(p=3) "
                                                          "(options may also be given as --p, --cov, --shrinkage)")
    ks.add_argument("--p", type=float, default=None, help="Minkowski order")
    ks.add_argument("--cov", choices=["pooled", "total"], default=None, help="Mahalanobis covariance")
    ks.add_argument("--shrinkage", default=None, help="Mahalanobis shrinkage: auto or a number in [0, 1]")
    ks.add_argument("--scheduler", default=None, help="address of a running Dask scheduler to compute on")
    ks.add_argument("--workers", type=int, default=None,
                    help="start a local Dask cluster of N worker processes (one thread each) to compute on")
    ks.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                    help="memory the computation may use (per worker on a cluster), in GB")
    ks.add_argument("--out", default=None, help="output .npz (kstar, enemy, labels, class_names); default "
                                                "<features name>.kstar-<metric>.npz in the current folder")
    return p


def lab_command(jupyter_args: Sequence[str], root_dir: str | Path) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start JupyterLab on `root_dir`: the JupyterLab of the interpreter
    running kstar (a virtual environment need not be activated, nor `jupyter` be on PATH), with that interpreter's
    scripts first on PATH so terminals and `!pip` in the lab use the same environment. `jupyter_args` follow
    unchanged (a leading `--` separator is dropped)."""
    import importlib.util
    import os

    if importlib.util.find_spec("jupyterlab") is None:
        raise FileNotFoundError(f"JupyterLab is not installed for {sys.executable}; `make venv` installs it")
    args = list(jupyter_args)
    if "--" in args:
        args.remove("--")  # the first one only: the separator between kstar's options and Jupyter's
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={root_dir}"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, *(p for p in env.get("PATH", "").split(os.pathsep) if p and p != scripts)])
    return cmd + args, env


def _kstar(args: argparse.Namespace) -> int:
    """`kstar kstar`: compute_kstar on one features file, written atomically with a provenance sidecar."""
    import numpy as np

    from kstar_utils import compute_kstar
    from kstar_utils.io import cache
    from kstar_utils.method.metrics import Metric
    from kstar_utils.method.skewness import summarize_skewness

    shrinkage = args.shrinkage
    if shrinkage not in (None, "auto"):
        try:
            shrinkage = float(shrinkage)
        except ValueError:
            raise ValueError(f"--shrinkage must be 'auto' or a number in [0, 1]; got {shrinkage!r}") from None
    metric = Metric.parse(args.metric, p=args.p, cov=args.cov, shrinkage=shrinkage)
    if args.scheduler and args.workers:
        raise ValueError("give --scheduler or --workers, not both")
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if args.memory_limit is not None and args.memory_limit <= 0:
        raise ValueError("--memory-limit must be a positive number of GB")
    path = Path(args.features)
    if not path.is_file():
        raise FileNotFoundError(f"features file not found: {path}")
    if path.suffix == ".npy":
        if args.labels is None:
            raise ValueError(f"{path} holds features only: give their labels with --labels LABELS.npy")
        try:
            X = np.load(path, mmap_mode="r", allow_pickle=False)  # read in row blocks, never loaded whole
            y = np.load(args.labels, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {path} / {args.labels} as .npy arrays: {e}") from None
        names = ()
    else:
        if args.labels is not None:
            raise ValueError("--labels is for a features .npy; a features .npz carries its labels")
        from kstar_utils.pipeline.features import load_features

        fs = load_features(path)
        X, y, names = fs.features, fs.labels, fs.class_names
    out = Path(args.out) if args.out else Path(f"{path.stem}.kstar-{cache.slugify(metric.label)}.npz")
    client, cluster, where = None, None, "this machine"
    t0 = time.perf_counter()
    try:
        if args.workers:
            from kstar_utils.study.runner import ClusterOptions, _local_cluster
            from distributed import Client

            cluster = _local_cluster(ClusterOptions(None, args.workers, processes=True), gpu=False)
            client = Client(cluster)
            where = f"a local cluster of {args.workers} worker(s)"
        elif args.scheduler:
            client, where = args.scheduler, f"the cluster at {args.scheduler}"
        limit = None if args.memory_limit is None else int(args.memory_limit * 1e9)
        k, enemy = compute_kstar(X, y, metric=metric, return_enemy=True, client=client, memory_limit=limit)
    finally:
        if cluster is not None:
            client.close()
            cluster.close()
    labels = np.asarray(y)
    arrays = {"kstar": k, "enemy": enemy, "labels": labels,
              "class_names": np.asarray(names or [str(c) for c in np.unique(labels)], dtype=str)}
    spec = {"kind": "kstar", **metric.spec}
    cache.write_artifact(out, lambda tmp: cache.write_npz(tmp, arrays),
                         cache.provenance(spec, features_path=str(path), n=int(k.size), inputs={
                             "features": cache.input_record(path, cache.sha256_file(path))}))
    s = summarize_skewness(k, labels)
    print(f"k* of {k.size:,} samples x {X.shape[1]:,} dims ({len(np.unique(labels))} classes, {metric.label}) in "
          f"{time.perf_counter() - t0:.1f} s on {where}: Γ' = {s.approx_skewness:.4f}\nwritten: {out}")
    return 0


def _lab(args: argparse.Namespace) -> int:
    import os

    from kstar_utils.pipeline.notebooks import prepare_lab, quiet_jupyterlab

    work, copied = prepare_lab(refresh=args.refresh)
    print(f"working copies in {work} ({len(copied)} copied; `kstar lab --refresh` replaces them by the tracked ones)",
          flush=True)
    quiet_jupyterlab()
    cmd, env = lab_command(args.jupyter_args, work)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached: execve replaces this process


def _store(args: argparse.Namespace) -> int:
    from kstar_utils.pipeline.baseline import store_baseline

    done = store_baseline(args.source, args.target, args.tables, args.reference)
    gone = f"; removed {len(done.removed)} reference table(s) no notebook writes" if done.removed else ""
    print(f"stored {len(done.notebooks)} notebook(s) in {args.target} and {len(done.tables)} reference table(s) in "
          f"{args.reference}{gone}")
    return 0


def _preflight(args: argparse.Namespace) -> int:
    from kstar_utils.pipeline.notebooks import collect_parameters
    from kstar_utils.pipeline.preflight import format_report, plan_from_params, preflight

    plan = {"models": [], "datasets": [], "split": "test", "data_root": None}
    if args.params:
        plan.update(plan_from_params(collect_parameters(files=[args.params])))
    plan["models"] += args.model
    plan["datasets"] += args.dataset
    for key, value in (("split", args.split), ("data_root", args.data_root), ("model_dir", args.model_dir),
                       ("cache_dir", args.cache_dir)):
        if value is not None:
            plan[key] = value
    if not plan["models"] and not plan["datasets"]:
        raise ValueError("nothing to check: give --model/--dataset or --params")
    options = {k: plan[k] for k in ("model_dir", "cache_dir", "weights_path", "weights_dir") if k in plan}
    items = preflight(plan["models"], plan["datasets"], split=plan["split"], data_root=plan["data_root"], **options)
    print(format_report(items))
    return 0 if all(it.present for it in items) else 1


def _zoo(args: argparse.Namespace) -> int:
    if args.action == "measure":
        from kstar_utils.models.evaluation import measure_cifar_models

        measure_cifar_models(args.models, args.out, force=args.force, threads=args.torch_threads)
        return 0
    if args.zoo in ("digits", "all"):
        from kstar_utils.models.digits_zoo import build_digits_zoo

        print(build_digits_zoo(models=args.models, force=args.force).to_string(index=False))
    if args.zoo in ("cifar", "all"):
        from kstar_utils.models.cifar_zoo import build_cifar_zoo

        print(build_cifar_zoo(models=args.models, force=args.force).to_string(index=False))
    return 0


def _plan(study_file: str) -> int:
    from kstar_utils.pipeline.preflight import format_report
    from kstar_utils.study import check_jobs, expand_jobs, is_finished, load_study
    from kstar_utils.study.runner import check_folders

    study = load_study(study_file)
    jobs = expand_jobs(study)
    check_folders(jobs, study.output_dir)
    finished = {j.job_id: is_finished(j) for j in jobs}
    # missing weights and data are reported below (exit 1); anything else that would stop a run is an error here
    items = check_jobs(jobs, study.output_dir, pending=[j for j in jobs if not finished[j.job_id]],
                       require_present=False)
    print(f"study {study.name}: {len(jobs)} job(s), output {study.output_dir}, cache {study.cache_dir}")
    for j in jobs:
        state = "finished (skipped)" if finished[j.job_id] else "to run"
        print(f"  {j.model:55s} {j.dataset:12s} {','.join(j.layers):24s} {j.device:5s} {state}")
    print(format_report(items))
    return 0 if all(i.present for i in items) else 1


def _run(study_file: str, *, scheduler: str | None, workers: int | None, threads: bool, retries: int,
         force: bool) -> int:
    from kstar_utils.study import ClusterOptions, load_study, run_study

    study = load_study(study_file)
    if retries < 0:
        raise ValueError("--retries must be >= 0")
    if workers is not None and workers < 1:
        raise ValueError("--workers must be >= 1")
    t0 = time.perf_counter()

    def report(job, status):
        what = status["error"] if status["status"] == "failed" else f"{job.model} on {job.dataset}"
        print(f"[{time.perf_counter() - t0:7.1f} s] {status['status']:7s} {what}", flush=True)

    def starting(job, attempt):
        again = f" (attempt {attempt})" if attempt > 1 else ""
        print(f"[{time.perf_counter() - t0:7.1f} s] started {job.model} on {job.dataset}{again}", flush=True)

    result = run_study(study, cluster=ClusterOptions(scheduler, workers, processes=not threads), retries=retries,
                       force=force, on_done=report, on_start=starting)
    counts = {s: sum(v["status"] == s for v in result.statuses.values()) for s in ("ok", "skipped", "failed")}
    print(f"{counts['ok']} executed, {counts['skipped']} skipped (finished before), {counts['failed']} failed "
          f"in {time.perf_counter() - t0:.1f} s")
    print(f"summary: {result.paths['csv']}\nindex:   {result.paths['index']}")
    return 1 if counts["failed"] else 0


def _notebook(args: argparse.Namespace) -> int:
    from kstar_utils.pipeline.notebooks import collect_parameters, run_notebook
    from kstar_utils.study.runner import ending_new_processes

    notebook = Path(args.notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    if args.cwd is not None and not Path(args.cwd).is_dir():
        raise FileNotFoundError(f"--cwd {args.cwd} is not a folder")
    if args.kernel is not None:
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

        try:
            KernelSpecManager().get_kernel_spec(args.kernel)
        except NoSuchKernel:
            raise ValueError(f"no Jupyter kernel named {args.kernel!r}; installed: "
                             f"{sorted(KernelSpecManager().find_kernel_specs())}") from None
    params = collect_parameters(files=args.parameters_file, yaml_strings=args.yaml, pairs=args.parameter,
                                raw_pairs=args.raw)
    import papermill as pm

    try:
        # papermill stops its kernel on a failed cell; on Ctrl-C the kernel is ended here
        with ending_new_processes(kill_on_sigint=True):
            out = run_notebook(notebook, args.output, params, cwd=args.cwd, kernel=args.kernel,
                               progress_bar=not args.no_progress_bar)
    except pm.PapermillExecutionError as e:
        where = f"cell {e.exec_count}" if e.exec_count else f"cell #{e.cell_index}"
        print(f"kstar: error: notebook {notebook.name} failed in {where}: {e.ename}: "
              f"{' '.join(str(e.evalue).split())[:300]}; executed notebook: {args.output}", file=sys.stderr)
        return 1
    print(f"executed notebook: {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from kstar_utils.compat import quiet_library_notices

    quiet_library_notices()
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "lab":
        args.jupyter_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "plan":
            return _plan(args.study)
        if args.command == "notebook":
            return _notebook(args)
        if args.command == "preflight":
            return _preflight(args)
        if args.command == "zoo":
            return _zoo(args)
        if args.command == "lab":
            return _lab(args)
        if args.command == "store-notebooks":
            return _store(args)
        if args.command == "kstar":
            return _kstar(args)
        return _run(args.study, scheduler=args.scheduler, workers=args.workers, threads=args.threads,
                    retries=args.retries, force=args.force)
    except (ValueError, FileNotFoundError) as e:
        print(f"kstar: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # the runner has already shut the cluster down; done.json marks every job that finished
        what = "; finished jobs are kept, run again to resume" if args.command == "run" else ""
        print(f"kstar: interrupted{what}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
