"""Checked notebook parameters: a notebook's declared parameters, name checks, papermill-style values, one checked run.

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


def check_parameters(notebook: str | os.PathLike, names: Iterable[str], *, declared: Iterable[str] | None = None,
                     passed_by: str = "") -> None:
    """Raise UnknownParameterError unless every name in `names` is declared by `notebook`.

    names: parameter names (a mapping's keys). declared: the declared names, when already known (else read with
    declared_parameters). passed_by: who passes the names, for the message (e.g. "the study runner").
    """
    valid = list(declared) if declared is not None else list(declared_parameters(notebook))
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
                 cwd: str | os.PathLike | None = None, kernel: str | None = None, progress_bar: bool = True,
                 log_output: bool = False) -> Path:
    """Check the names of `parameters` against `notebook`, then execute it with papermill into `output`.

    cwd: the kernel's working directory (default: the notebook's folder, where the workbook's relative defaults such
    as ``../outputs`` point). kernel: a Jupyter kernel name (default: the notebook's own kernelspec). Raises
    UnknownParameterError before any kernel starts; papermill's PapermillExecutionError when a cell fails (the
    output notebook is written up to the failing cell).
    """
    import papermill as pm

    notebook, output = Path(notebook), Path(output)
    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(str(notebook), str(output), parameters=dict(parameters), kernel_name=kernel,
                        cwd=str(cwd if cwd is not None else notebook.resolve().parent), progress_bar=progress_bar,
                        log_output=log_output)
    return output


__all__ = ["declared_parameters", "check_parameters", "parse_value", "collect_parameters", "run_notebook",
           "UnknownParameterError"]
