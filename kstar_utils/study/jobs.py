"""Run one study job: the notebook sequence 01 -> 02 -> 03 through papermill, in the job's own folder.

    <output_dir>/jobs/<model>_<dataset>__<spec hash>/
        executed/01_extract_features.ipynb ...   the executed notebooks (saved even when a cell fails)
        html/01_extract_features.html ...        the same, converted with nbconvert
        tables/features_index.csv, kstar_index.csv, skewness_models.csv, skewness_per_class.csv
        figures/                                  the notebooks' figures
        done.json                                 written last: the job finished (spec, timings, provenance, and
                                                  the sha256 of its tables and of the features and k* files)
        error.txt                                 the traceback of the last failed attempt

Features and k* are cached under the study's cache_dir (shared with the notebooks), so a rerun of a failed or
changed job reuses every file already computed.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from kstar_utils.io import cache
from kstar_utils.study.spec import NOTEBOOK_SEQUENCE, Job

DONE_FILE = "done.json"
ERROR_FILE = "error.txt"


class JobFailed(RuntimeError):
    """A job's notebook raised; the message names the job, the notebook and the error (the traceback is in the
    job's error.txt). A plain exception, so it crosses process boundaries intact."""


def job_paths(job: Job) -> dict[str, Path]:
    d = Path(job.job_dir)
    return {"dir": d, "executed": d / "executed", "html": d / "html", "tables": d / "tables", "figures": d / "figures",
            "done": d / DONE_FILE, "error": d / ERROR_FILE}


def is_finished(job: Job) -> bool:
    """True when the job's done.json records the same spec and every file its results rest on still has the content
    done.json recorded (then the job is skipped): the job's tables (`outputs`) and the features and k* files its k*
    index lists (`inputs`), and what those were computed from as their sidecars record (the model's weights, a
    features source file). A cached features file rebuilt with new content, or weights replaced, re-run the job.

    An unreadable done.json or a table whose bytes changed is set aside with a CorruptCacheWarning; a changed or
    missing features / k* file is not damage, just a reason to run again (the caches make that quick). Each file is
    hashed once per call.
    """
    done_path = job_paths(job)["done"]
    try:
        done = cache.read_json(done_path)
    except FileNotFoundError:
        return False
    except cache.CorruptFileError as e:
        cache.set_aside(done_path, str(e), then="the job runs again")
        return False
    if done.get("spec_hash") != job.spec_hash:
        return False
    outputs, inputs = done.get("outputs"), done.get("inputs")
    if not isinstance(outputs, dict) or not isinstance(inputs, dict):
        return False  # written before done.json recorded content: nothing to verify against
    for path, sha in outputs.items():
        if not Path(path).is_file():
            return False
        if cache.sha256_file(path) != sha:
            cache.set_aside(path, f"its content differs from the sha256 {str(sha)[:12]} recorded in {done_path} "
                                  f"(damaged or replaced)", then="the job runs again")
            return False
    try:  # the k* index was verified above; the files it lists must be exactly the recorded inputs
        listed = set(_indexed_inputs(done["tables"]["kstar_index"]))
    except (KeyError, TypeError, ValueError, OSError):
        return False
    if listed != set(inputs):
        return False
    digests: dict[str, str] = {}
    record = {"inputs": {path: cache.input_record(path, sha) for path, sha in inputs.items()}}
    if cache.changed_inputs(record, digests, missing_ok=False):
        return False
    # one level further: the weights (or source file) each features file was computed from, as its sidecar records
    for path in inputs:
        try:
            meta = cache.read_sidecar(path)
        except (FileNotFoundError, cache.CorruptFileError):
            return False
        if cache.changed_inputs(meta, digests, missing_ok=True):
            return False
    return True


def _indexed_inputs(kstar_index: str | Path) -> dict[str, str | None]:
    """{path: sha256} of every features and k* file a job's k* index lists; the sha256 is the one the index
    recorded when the k* stage ran (None where the index has no such column)."""
    import pandas as pd

    index = pd.read_csv(kstar_index)
    out: dict[str, str | None] = {}
    for path_col, sha_col in (("features_path", "features_sha256"), ("kstar_path", "kstar_sha256")):
        shas = index[sha_col] if sha_col in index.columns else [None] * len(index)
        for path, sha in zip(index[path_col], shas):
            out[str(path)] = sha if isinstance(sha, str) else None
    return out


def _content_record(tables: dict[str, str]) -> dict[str, dict[str, str]]:
    """done.json's content record: `outputs` {table path: sha256} of the job's tables and `inputs` {path: sha256}
    of the features and k* files its k* index lists (as the index recorded them: the content the results were
    computed from; hashed now only where the index recorded none)."""
    outputs = {str(path): cache.sha256_file(path) for path in tables.values()}
    inputs = {path: sha or cache.sha256_file(path) for path, sha in _indexed_inputs(tables["kstar_index"]).items()}
    return {"outputs": outputs, "inputs": inputs}


#: what each notebook of the sequence must declare: the files through which results are handed on, and the study
#: settings it applies. A notebook without one of them would silently run on its default (another file, metric or
#: model); the presentation parameters (figures, shown model and layer) are passed only where declared.
REQUIRED = {"01_extract_features.ipynb": ("models", "dataset", "split", "layers", "data_root", "extract_options",
                                          "device", "cache_dir", "features_index"),
            "02_kstar.ipynb": ("features_index", "metric", "device", "cache_dir", "kstar_index"),
            "03_skewness.ipynb": ("kstar_index", "skewness_table", "per_class_table")}


def job_context(job: Job) -> dict[str, Any]:
    """Everything a job knows, in the vocabulary the notebooks' parameters and the study files share (absolute
    paths: the kernel's working directory is notebooks/)."""
    p = job_paths(job)
    t = p["tables"]
    first = job.plot_layer or job.layers[0]
    return {"models": [job.model], "dataset": job.dataset, "split": job.split, "layers": list(job.layers),
            "data_root": job.data_root, "cache_dir": job.cache_dir, "extract_options": dict(job.extract_options),
            "metric": job.metric.label, "device": job.device, "scheduler": job.kstar_scheduler,
            "features_index": str(t / "features_index.csv"),
            "kstar_index": str(t / "kstar_index.csv"), "overview_table": str(t / "kstar_overview.csv"),
            "skewness_table": str(t / "skewness_models.csv"), "per_class_table": str(t / "skewness_per_class.csv"),
            "intervals_table": str(t / "skewness_intervals.csv"), "figures_dir": str(p["figures"]),
            "plot_layer": first, "show_layer": first, "show_model": job.model, "depth_layers": list(job.layers),
            "compare_models": None}


def notebook_parameters(job: Job) -> dict[str, dict[str, Any]]:
    """The parameters papermill injects into each notebook of the sequence: of the job's context, the names each
    notebook declares in its `parameters` cell (read from the notebook, not assumed)."""
    from kstar_utils.pipeline.notebooks import declared_parameters

    context = job_context(job)
    out = {}
    for name in NOTEBOOK_SEQUENCE:
        declared = declared_parameters(Path(job.notebooks_dir) / name)
        out[name] = {k: v for k, v in context.items() if k in declared}
    return out


def check_notebook_parameters(jobs: Sequence[Job]) -> None:
    """Raise UnknownParameterError (a ValueError) naming the notebook when a notebook of the sequence does not declare
    a name of REQUIRED, before any job starts."""
    from kstar_utils.pipeline.notebooks import check_parameters

    for folder in dict.fromkeys(job.notebooks_dir for job in jobs):
        for name, needed in REQUIRED.items():
            check_parameters(Path(folder) / name, needed, passed_by="the study runner")


def _select_gpu() -> None:
    # A LocalCluster names its workers 0..n-1; with one GPU per worker, worker i uses GPU i. External clusters
    # (dask-cuda) set CUDA_VISIBLE_DEVICES themselves, so an existing value is kept.
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return
    if "CUDA_VISIBLE_DEVICES" not in os.environ and str(name).isdigit():
        import torch

        n = torch.cuda.device_count()
        if n:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(int(name) % n)


def to_html(notebook: Path, out_dir: Path, job: Job | None = None) -> Path | None:
    """An offline HTML page of an executed notebook, titled by notebook, model and dataset (pipeline.notebooks.
    notebook_html); None when the notebook is missing or cannot be converted."""
    if not notebook.is_file():
        return None
    from kstar_utils.pipeline.notebooks import notebook_html

    what = f" · {job.model} · {job.dataset}" if job is not None else ""
    try:
        return notebook_html(notebook, out_dir / (notebook.stem + ".html"), title=f"{notebook.stem}{what}")
    except Exception:  # noqa: BLE001 -- a page that cannot be made must not turn a finished job into a failed one
        return None


@contextlib.contextmanager
def _seceded(active: bool):
    """While a job's notebook computes its k* on the study's own cluster, its worker thread leaves the worker's
    thread pool (distributed.secede), so the worker can run the k* tasks instead of waiting for them (a cluster whose
    every worker runs such a job would otherwise wait forever); it rejoins afterwards. Outside a Dask worker, or
    when not active, nothing happens."""
    seceded = False
    if active:
        try:
            from distributed import get_worker, rejoin, secede

            get_worker()
            secede()
            seceded = True
        except (ImportError, ValueError):
            pass
    try:
        yield
    finally:
        if seceded:
            rejoin()


def _zeroshot(job: Job) -> float:
    from kstar_utils.pipeline.zeroshot import zero_shot_accuracy

    return zero_shot_accuracy(job.model, job.dataset, split=job.split, templates=job.zeroshot_templates,
                              root=job.cache_dir, data_root=job.data_root,
                              **{"progress": False, **dict(job.extract_options)})


def run_job(job: Job) -> dict[str, Any]:
    """Execute the notebook sequence for one job; returns the content of its done.json.

    Raises JobFailed (after writing error.txt and converting the executed notebooks) when a notebook fails, so that
    the scheduler can retry it. A job that is already finished for the same spec returns its done.json unchanged.
    """
    from kstar_utils.pipeline.notebooks import run_notebook

    p = job_paths(job)
    if is_finished(job):
        return json.loads(p["done"].read_text())
    # run_study checks this before any job starts; a job run on its own (or a notebook edited mid-study) is checked here
    check_notebook_parameters([job])
    for key in ("executed", "html", "tables", "figures"):
        p[key].mkdir(parents=True, exist_ok=True)
    if job.device == "cuda":
        _select_gpu()
    p["done"].unlink(missing_ok=True)
    params = notebook_parameters(job)
    timings: dict[str, float] = {}
    executed: list[Path] = []
    current = None
    t_job = time.perf_counter()
    try:
        for name in NOTEBOOK_SEQUENCE:
            current = name
            out = p["executed"] / name
            executed.append(out)
            t0 = time.perf_counter()
            with _seceded(job.kstar_scheduler is not None and name == "02_kstar.ipynb"):
                run_notebook(Path(job.notebooks_dir) / name, out, params[name], cwd=job.notebooks_dir,
                             kernel=job.kernel, progress_bar=False)
            timings[name] = round(time.perf_counter() - t0, 2)
        current = "zero-shot accuracy"
        zeroshot_acc = _zeroshot(job) if job.zeroshot_computed else None
    except Exception as exc:
        for nb in executed:
            to_html(nb, p["html"], job)
        with cache.atomic_path(p["error"]) as tmp:
            tmp.write_text(f"job {job.job_id} ({job.model} on {job.dataset}) failed in {current}\n\n"
                           + "".join(traceback.format_exception(exc)))
        message = _short_error(exc)
        raise JobFailed(f"{job.model} on {job.dataset}: {current} failed: {message}") from None
    html = [to_html(nb, p["html"], job) for nb in executed]
    p["error"].unlink(missing_ok=True)
    tables = ({k: params["03_skewness.ipynb"][k] for k in ("skewness_table", "per_class_table")}
              | {"kstar_index": params["02_kstar.ipynb"]["kstar_index"],
                 "features_index": params["01_extract_features.ipynb"]["features_index"]})
    result = cache.provenance(job.spec, job_id=job.job_id, model=job.model, dataset=job.dataset,
                              host=socket.gethostname(), pid=os.getpid(),
                              layers=list(job.layers), seconds=round(time.perf_counter() - t_job, 2),
                              notebook_seconds=timings, executed=[str(x) for x in executed],
                              html=[str(x) for x in html if x], zeroshot_acc_computed=zeroshot_acc,
                              tables=tables, **_content_record(tables))
    cache.write_json_atomic(p["done"], result)
    return result


def _short_error(exc: BaseException) -> str:
    """One line: for a failed notebook cell, its exception name and value; otherwise the exception itself."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]
