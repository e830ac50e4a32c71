"""The workbook's notebooks as files: checked parameters and one checked run; lean stored copies; offline HTML pages.

papermill injects any name it is given, and a name the notebook does not declare only produces a warning while the
notebook runs with its default: a misspelt ``metrc`` silently computes the Euclidean k*. Every execution path of the
workbook (``kstar notebook``, the study runner) therefore checks names against the notebook's tagged ``parameters``
cell before a kernel starts.

    declared_parameters("notebooks/02_kstar.ipynb")      # {"features_index": {...}, "metric": {...}, ...}
    check_parameters("notebooks/02_kstar.ipynb", {"metrc": "cosine"})   # ValueError: ... did you mean 'metric'? ...
    run_notebook("notebooks/02_kstar.ipynb", "out.ipynb", {"metric": "cosine"})
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

_DECLARED: dict[tuple[str, int, int], dict[str, dict]] = {}
#: seconds a kernel may take to start: parallel study jobs on a busy machine each import torch at once
KERNEL_START_TIMEOUT = 300


class UnknownParameterError(ValueError):
    """A parameter name the notebook's ``parameters`` cell does not declare; the message names the notebook, the
    closest declared names and all of them."""


def declared_parameters(notebook: str | os.PathLike) -> dict[str, dict]:
    """name -> {"name", "inferred_type_name", "default", "help"} of the notebook's cell tagged ``parameters``
    (``papermill.inspect_notebook``), in the cell's order; {} when there is no such cell.

    Cached per (path, mtime, size): the study runner asks once per job and notebook.
    """
    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"notebook not found: {path}")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _DECLARED:
        import papermill

        try:
            _DECLARED[key] = dict(papermill.inspect_notebook(str(path)))
        except Exception as e:  # noqa: BLE001 -- nbformat/json errors of many kinds; name the file in one line
            raise ValueError(f"cannot read the parameters of notebook {path}: {type(e).__name__}: {e}") from None
    return dict(_DECLARED[key])


def check_parameters(notebook: str | os.PathLike, names: Iterable[str], *, passed_by: str = "") -> None:
    """Raise UnknownParameterError unless every name in `names` is declared by `notebook`.

    names: parameter names (a mapping's keys). passed_by: who passes the names, for the message (e.g. "the study
    runner").
    """
    valid = list(declared_parameters(notebook))
    unknown = [n for n in names if n not in valid]
    if not unknown:
        return
    label = Path(notebook).name
    if not valid:
        raise UnknownParameterError(f"notebook {label} declares no parameters (no cell tagged 'parameters'), "
                                    f"but {passed_by or 'the command'} passes {unknown}")
    name = unknown[0]
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    who = f" (passed by {passed_by})" if passed_by else ""
    hint = ("; did you mean " + " or ".join(repr(c) for c in close) + "?") if close else ""
    more = f"; also unknown: {unknown[1:]}" if len(unknown) > 1 else ""
    raise UnknownParameterError(f"notebook {label} has no parameter {name!r}{who}{hint}{more}"
                                f"{' ' if close and not more else '; '}declared: {valid}")


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value as papermill reads it: True, False, None, an int, a float, else the string."""
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _yaml(text: str, where: str) -> dict:
    import yaml
    from papermill.iorw import NoDatesSafeLoader  # papermill's loader: dates stay strings, as with papermill -f

    try:
        value = yaml.load(text, Loader=NoDatesSafeLoader) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{where} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a YAML mapping of parameter names to values; got {type(value).__name__}")
    return dict(value)


def collect_parameters(*, files: Sequence[str | os.PathLike] = (), yaml_strings: Sequence[str] = (),
                       pairs: Sequence[tuple[str, str]] = (), raw_pairs: Sequence[tuple[str, str]] = ()) -> dict:
    """The parameter mapping of a command line, merged in papermill's order (later wins): YAML files (-f), YAML
    strings (-y), NAME VALUE pairs (-p, parsed by parse_value), raw NAME VALUE pairs (-r, kept as strings)."""
    params: dict[str, Any] = {}
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"parameter file not found: {path}")
        params.update(_yaml(path.read_text(), f"parameter file {path}"))
    for text in yaml_strings:
        params.update(_yaml(text, f"-y {text!r}"))
    for name, value in pairs:
        params[name] = parse_value(value)
    for name, value in raw_pairs:
        params[name] = value
    return params


def run_notebook(notebook: str | os.PathLike, output: str | os.PathLike, parameters: Mapping[str, Any], *,
                 cwd: str | os.PathLike | None = None, kernel: str | None = None, progress_bar: bool | dict = True,
                 log_output: bool = False) -> Path:
    """Check the names of `parameters` against `notebook`, then execute it with papermill into `output`.

    cwd: the kernel's working directory (default: the notebook's folder, where the workbook's relative defaults such
    as ``../outputs`` point). kernel: a Jupyter kernel name (default: the notebook's own kernelspec). Raises
    UnknownParameterError before any kernel starts; papermill's PapermillExecutionError when a cell fails (the
    output notebook is written up to the failing cell). progress_bar: papermill's bar, named after the notebook
    (one bar per notebook of `make demo` or a study would otherwise all read "Executing"); a dict of tqdm options
    is passed on as it is.
    """
    import papermill as pm

    notebook, output = Path(notebook), Path(output)
    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    if progress_bar is True:
        progress_bar = {"desc": notebook.stem}
    pm.execute_notebook(str(notebook), str(output), parameters=dict(parameters), kernel_name=kernel,
                        cwd=str(cwd if cwd is not None else notebook.resolve().parent), progress_bar=progress_bar,
                        log_output=log_output, kernel_manager_class=local_kernel_manager(),
                        start_timeout=KERNEL_START_TIMEOUT)
    return output


def local_kernel_manager():
    """A kernel manager that talks to its kernel over local IPC sockets: the kernel and the workbook share one
    machine, and over TCP every kernel start prints a warning about unencrypted traffic that says nothing here."""
    import tempfile
    import uuid

    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum, default

    class LocalKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc").tag(config=True)

        @default("ip")
        def _unique_ip(self):
            # jupyter_client numbers IPC sockets "<ip>-1", "<ip>-2", ... by probing for free names; kernels started at
            # once from one folder (parallel study jobs) would race for the same ones, so each gets its own prefix
            return str(Path(tempfile.gettempdir()) / f"kstar-{uuid.uuid4().hex[:12]}-ipc")

        async def start_kernel(self, **kw):
            # The kernel's own log (stderr, shared with the study's console) only ever says things like "Parent
            # appears to have exited" or, when the interrupt that precedes every shutdown lands as a cell's reply is
            # being sent, "KeyboardInterrupt caught in kernel": nothing for the user. Cell errors reach the notebook.
            extra = [*(kw.pop("extra_arguments", None) or []), "--IPKernelApp.log_level=CRITICAL"]
            return await super().start_kernel(extra_arguments=extra, **kw)

    return LocalKernelManager


# ---------------------------------------------------------------------------------------------- lean copies
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
_VOLATILE_PAPERMILL = ("duration", "start_time", "end_time", "input_path", "output_path", "exception", "status",
                       "environment_variables", "version")


def clean_notebook(nb):
    """An executed notebook without what changes from run to run or machine to machine: progress bars (widgets or
    text; their stored views show a bar's first state, e.g. "0 %"), widget state, papermill's timings and paths,
    execution timestamps. Works in place on an nbformat node and returns it."""
    nb.metadata.pop("widgets", None)
    pm = nb.metadata.get("papermill")
    if pm is not None:
        for k in _VOLATILE_PAPERMILL:
            pm.pop(k, None)
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {}) and not _progress_text(o)]
    return nb


def _progress_text(output) -> bool:
    """A progress bar written as text to stderr (tqdm without widgets): its stored state is a snapshot, not a result."""
    import re

    return (output.get("output_type") == "stream" and output.get("name") == "stderr"
            and bool(re.search(r"\d+%\|", "".join(output.get("text", "")))))


#: papermill's marks of a failed run: the tag of the cells it inserts above the failing cell and at the top
PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"


def run_problems(nb, tracked=None) -> list[str]:
    """Why an executed notebook cannot become the regression baseline, one line each ([] when it can): an error
    output, papermill's failure marker (a failed cell, the notebook's `exception` flag, its inserted error cells), a
    code cell that never ran, parameters injected into it (the baseline is the default run), or, given the tracked
    notebook `tracked`, cells that differ from it (the run is of another version of the notebook)."""
    problems = []
    pm = nb.metadata.get("papermill", {})
    if pm.get("exception"):
        problems.append("papermill marks the run as failed (exception)")
    code_no = 0
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if PAPERMILL_ERROR_TAG in tags:
            if not pm.get("exception"):
                problems.append("it holds papermill's error marker cell")
            continue
        if "injected-parameters" in tags:
            problems.append("it ran with injected parameters, not on its defaults")
            continue
        if cell.cell_type != "code":
            continue
        code_no += 1
        errors = [o for o in cell.outputs if o.get("output_type") == "error"]
        if errors:
            problems.append(f"code cell {code_no} raised {errors[0].get('ename')}: "
                            f"{' '.join(str(errors[0].get('evalue', '')).split())[:200]}")
        status = cell.metadata.get("papermill", {}).get("status")
        if cell.metadata.get("papermill", {}).get("exception") and not errors:
            problems.append(f"code cell {code_no} failed (papermill exception marker)")
        elif cell.execution_count is None or status in ("pending", "running"):
            problems.append(f"code cell {code_no} did not run")
    if tracked is not None:
        ran = [(c.cell_type, c.source) for c in nb.cells
               if not {PAPERMILL_ERROR_TAG, "injected-parameters"} & set(c.metadata.get("tags", []))]
        if ran != [(c.cell_type, c.source) for c in tracked.cells]:
            problems.append("its cells differ from the tracked notebook's (run again after the last edit)")
    return problems


def lean_notebook(nb):
    """A cleaned copy of an executed notebook (clean_notebook) with execution counts renumbered from 1, so that a
    rerun that changes nothing changes no byte. Works in place and returns it."""
    nb = clean_notebook(nb)
    count = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            count += 1
            cell.execution_count = count
            for o in cell.outputs:
                if "execution_count" in o:
                    o["execution_count"] = count
    return nb


def store_notebook(executed: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Write a lean copy (lean_notebook) of an executed notebook over a tracked one, the regression baseline nbval
    compares against. Raises ValueError naming the notebook, and writes nothing, when the run failed or is not of
    the tracked notebook on its defaults (run_problems); `kstar store-notebooks` stores a whole run at once
    (pipeline.baseline.store_baseline)."""
    import nbformat

    from kstar_utils.io.cache import atomic_path

    target = Path(target)
    nb = nbformat.read(str(executed), as_version=4)
    tracked = nbformat.read(str(target), as_version=4) if target.exists() else None
    problems = run_problems(nb, tracked)
    if problems:
        raise ValueError(f"{executed} is not stored: " + "; ".join(problems))
    with atomic_path(target) as tmp:
        nbformat.write(lean_notebook(nb), str(tmp))
    return target


# ---------------------------------------------------------------------------------------------- offline HTML
def effective_parameters_cell(nb):
    """Replace the default `parameters` cell and papermill's `injected-parameters` cell by one cell holding every
    parameter's value in this run (the injected value, else the default), so a page shows them once.

    The defaults are read as Python (ast): an assignment of an injected name, over however many lines it spans, is
    replaced by the injected value; everything else (other defaults, comments) stays as written. A cell that does not
    parse keeps its text, followed by the injected values (which is what papermill ran: they override the defaults).
    """
    import nbformat

    cells = nb.cells
    idx = {tag: i for i, c in enumerate(cells) for tag in c.metadata.get("tags", [])
           if tag in ("parameters", "injected-parameters")}
    if "injected-parameters" not in idx or "parameters" not in idx:
        return nb
    injected = dict(nb.metadata.get("papermill", {}).get("parameters", {}))
    lines = ["# parameters of this run (injected values replace the notebook's defaults)",
             *_merged_parameters(cells[idx["parameters"]].source, injected)]
    merged = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["parameters"]})
    keep = [c for i, c in enumerate(cells) if i not in idx.values()]
    keep.insert(min(idx.values()), merged)
    nb.cells = keep
    return nb


def _assigned_names(stmt) -> list[str] | None:
    """The names a plain assignment (`a = ...`, `a = b = ...`, `a: T = ...`) binds; None for any other statement
    (tuple targets, attributes, augmented assignments, expressions): such a statement is kept as written."""
    import ast

    if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
        return [t.id for t in stmt.targets]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return [stmt.target.id]
    return None


def _merged_parameters(source: str, injected: Mapping[str, Any]) -> list[str]:
    """The lines of a `parameters` cell with the injected values in place of the defaults they override."""
    import ast

    try:
        body = ast.parse(source).body
    except SyntaxError:
        return [*(line for line in source.splitlines() if line.strip()),
                *(f"{k} = {v!r}" for k, v in injected.items())]
    text = source.splitlines()
    # where each injected name is assigned last: its value appears there (a name assigned twice keeps one line)
    last = {name: i for i, stmt in enumerate(body) for name in (_assigned_names(stmt) or []) if name in injected}
    out: list[str] = []
    done = 0  # lines of `text` already handled
    i = 0
    while i < len(body):
        # statements sharing lines (`a = 1; b = 2`) are handled together
        group, end = [body[i]], body[i].end_lineno
        while i + len(group) < len(body) and body[i + len(group)].lineno <= end:
            group.append(body[i + len(group)])
            end = max(end, group[-1].end_lineno)
        first = group[0].lineno - 1
        out += [line for line in text[done:first] if line.strip()]  # comments between statements
        if not any(set(_assigned_names(s) or []) & set(injected) for s in group):
            out += text[first:end]
        else:
            for k, stmt in enumerate(group, start=i):
                names = _assigned_names(stmt)
                if not names or not set(names) & set(injected):
                    out.append(ast.get_source_segment(source, stmt) or ast.unparse(stmt))
                    continue
                for name in names:
                    if name not in injected:
                        # `a = b = default` with only `a` injected: b keeps its default
                        out.append(f"{name} = {ast.get_source_segment(source, stmt.value) or ast.unparse(stmt.value)}")
                    elif last[name] == k:
                        out.append(f"{name} = {injected[name]!r}")
        done = end
        i += len(group)
    out += [line for line in text[done:] if line.strip()]
    assigned = {name for stmt in body for name in (_assigned_names(stmt) or [])}
    out += [f"{k} = {v!r}" for k, v in injected.items() if k not in assigned]
    return out


def notebook_html(executed: str | os.PathLike, out: str | os.PathLike, *, title: str) -> Path:
    """A self-contained HTML page of an executed notebook: titled `title`, the parameters shown once, images
    embedded, no script or style fetched from the network (it opens and shows every output offline)."""
    import re

    import nbformat
    from nbconvert import HTMLExporter

    from kstar_utils.io.cache import atomic_path

    nb = effective_parameters_cell(clean_notebook(nbformat.read(str(executed), as_version=4)))
    nb.metadata["title"] = title
    body, _ = HTMLExporter(template_name="lab", embed_images=True).from_notebook_node(nb)
    # the template links require.js and MathJax from CDNs; the pages need neither (no widgets, no LaTeX)
    body = re.sub(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", "", body)
    body = re.sub(r"<link[^>]*\bhref=[\"']https?://[^>]*>", "", body)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return out


def offline_problems(html_text: str) -> list[str]:
    """Resources an HTML page would fetch from the network (scripts, stylesheets, images): [] for a page that works
    offline."""
    import re

    found = re.findall(r"<(?:script|img|iframe)[^>]*\bsrc=[\"'](https?://[^\"']+)", html_text)
    found += re.findall(r"<link[^>]*\bhref=[\"'](https?://[^\"']+)", html_text)
    found += re.findall(r"@import\s+url\([\"']?(https?://[^)\"']+)", html_text)
    return found


def prepare_lab(*, refresh: bool = False, source: Path | None = None) -> tuple[Path, list[str]]:
    """Working copies of the tracked notebooks (and their params/) in lab/ beside notebooks/ (git-ignored), where the
    notebooks' relative paths (../outputs) still point: JupyterLab opens those, so "Run All" and autosave never touch
    the regression baseline. Existing copies are kept unless `refresh`. Returns (the folder, the notebooks copied)."""
    import shutil

    from kstar_utils.io.paths import notebooks_dir

    src = Path(source) if source is not None else notebooks_dir()
    work = src.parent / "lab"
    work.mkdir(exist_ok=True)
    copied = []
    for item in sorted(src.glob("*.ipynb")) + [src / "params"]:
        dst = work / item.name
        if item.exists() and (refresh or not dst.exists()):
            if item.is_dir():
                shutil.copytree(item, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(item, dst)
                copied.append(item.name)
    return work, copied


def quiet_jupyterlab() -> Path:
    """JupyterLab settings of this environment (sys.prefix): no news pop-up, no update check. Returns the file.

    Written only when it lacks those settings; an environment that cannot be written (installed read-only), or a
    settings file that is not JSON, keeps what it has rather than stopping the lab."""
    import json
    import sys

    from kstar_utils.io.cache import atomic_path

    path = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    try:
        settings = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return path  # someone's own settings file, unreadable to us: left as it is
    if not isinstance(settings, dict):
        return path
    wanted = {"fetchNews": "false", "checkForUpdates": False}
    section = settings.setdefault("@jupyterlab/apputils-extension:notification", {})
    if not isinstance(section, dict):
        return path
    if all(section.get(k) == v for k, v in wanted.items()):
        return path
    section.update(wanted)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(settings, indent=2) + "\n")
    except OSError:
        pass
    return path


__all__ = ["declared_parameters", "check_parameters", "parse_value", "collect_parameters", "run_notebook",
           "UnknownParameterError", "clean_notebook", "store_notebook", "notebook_html", "offline_problems"]
