"""A study file (YAML) -> a validated, frozen Study; and the grid of jobs it expands to.

    study = load_study("studies/digits.yaml")
    jobs = expand_jobs(study)            # one Job per (model, dataset) of every grid block

Relative paths in the file are relative to the file's folder, so a study means the same thing from any working
directory. Unknown keys, model names and dataset names raise ValueError naming the key or name (with the closest
valid ones), before anything runs.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from kstar_utils.io.paths import notebooks_dir, outputs_root

from kstar_utils.io import cache
from kstar_utils.method.metrics import METRICS, Metric

#: the notebooks every job runs, in order (the stages 01 -> 02 -> 03 of the workbook)
NOTEBOOK_SEQUENCE = ("01_extract_features.ipynb", "02_kstar.ipynb", "03_skewness.ipynb")
DEFAULT_NOTEBOOKS_DIR = notebooks_dir()
DEVICES = ("auto", "cpu", "cuda")

TOP_KEYS = {
    "name": "study name (used in file names and titles)",
    "description": "free text shown in the HTML index",
    "models": "list of registry names, e.g. zoo:standard (the single grid when `grids` is absent)",
    "datasets": "list of dataset names, e.g. digits, cifar10",
    "layers": "list of layer names (default [penultimate, logits]; a features:<file> dataset: its one layer, "
              "features)",
    "grids": "list of {models, datasets, layers, extract_options} blocks, for models that only make sense on some "
             "datasets",
    "extract_options": "options of extract_features passed through notebook 01 (e.g. subset, n_per_class, "
                       "batch_size, model_dir, weights_path)",
    "split": "dataset split (default test)",
    "metric": f"the k* distance, one of {', '.join(METRICS)}, with its options: e.g. minkowski(p=3), "
              "mahalanobis(cov=total, shrinkage=0.1), or a mapping {name: minkowski, p: 3} (default euclidean)",
    "data_root": "where real datasets live (default $KSTAR_DATASETS)",
    "output_dir": "where the study writes jobs, summary, figures, index.html (default <outputs>/studies/<name>, "
                  "<outputs> being $KSTAR_OUTPUTS or the workbook's outputs/)",
    "cache_dir": "root of the feature and k* caches shared with the notebooks (default <outputs>)",
    "notebooks_dir": "folder of the workbook notebooks (default: the package's notebooks/)",
    "device": "auto | cpu | cuda: cuda jobs get one GPU each through Dask worker resources",
    "distributed_kstar": "true: each job computes its k* on the study's own Dask cluster (split over its workers), "
                         "for features too large for one worker (default false: on the job's worker)",
    "accuracy": "{published: true, zeroshot_computed: false, zeroshot_templates: simple}",
    "figures": "{compare_models: [a, b], layer: <layer>, format: png}",
    "n_boot": "bootstrap resamples (and permutations) of the study correlations (default 2000)",
    "seed": "seed of the bootstrap (default 0)",
    "kernel": "Jupyter kernel papermill runs the notebooks with (default kstar)",
}
GRID_KEYS = ("models", "datasets", "layers", "extract_options")
ACCURACY_KEYS = ("published", "zeroshot_computed", "zeroshot_templates")
FIGURE_KEYS = ("compare_models", "layer", "format")


@dataclass(frozen=True)
class Grid:
    """models x datasets, each at `layers`; extract_options go to extract_features (through notebook 01)."""

    models: tuple[str, ...]
    datasets: tuple[str, ...]
    layers: tuple[str, ...]
    extract_options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class AccuracyOptions:
    published: bool = True            # zoo metrics, RobustBench leaderboard, OpenCLIP results table
    zeroshot_computed: bool = False   # also compute OpenCLIP zero-shot accuracy (kstar_utils.pipeline.zeroshot) in the job
    zeroshot_templates: str = "simple"


@dataclass(frozen=True)
class FigureOptions:
    compare_models: tuple[str, ...] = ()  # two models whose per-class k* distributions are drawn side by side
    layer: str | None = None              # layer of the figures (default: the first layer of the first grid)
    format: str = "png"


@dataclass(frozen=True)
class Study:
    name: str
    grids: tuple[Grid, ...]
    output_dir: Path
    cache_dir: Path
    notebooks_dir: Path = DEFAULT_NOTEBOOKS_DIR
    split: str = "test"
    metric: Metric = Metric()
    data_root: str | None = None
    device: str = "auto"
    distributed_kstar: bool = False
    accuracy: AccuracyOptions = field(default_factory=AccuracyOptions)
    figures: FigureOptions = field(default_factory=FigureOptions)
    n_boot: int = 2000
    seed: int = 0
    kernel: str = "kstar"
    description: str = ""
    source: Path | None = None

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for g in self.grids for m in g.models))

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d for g in self.grids for d in g.datasets))

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(layer for g in self.grids for layer in g.layers))


@dataclass(frozen=True)
class Job:
    """One (model, dataset) run of the notebook sequence. `spec` keys its folder and its skip-if-finished check."""

    model: str
    dataset: str
    layers: tuple[str, ...]
    split: str
    metric: Metric
    data_root: str | None
    cache_dir: str
    notebooks_dir: str
    kernel: str
    device: str
    extract_options: Mapping[str, Any]
    zeroshot_computed: bool
    zeroshot_templates: str
    job_dir: str
    spec: Mapping[str, Any]
    plot_layer: str = ""  # the layer the job's figures show (the study's figures.layer, else its first layer)
    #: the Dask scheduler a job computes its k* on (the study's own cluster, set by the runner when the study asks
    #: for distributed_kstar); None: on the job's own worker. Not part of the spec: it changes where, not what.
    kstar_scheduler: str | None = None

    @property
    def job_id(self) -> str:
        return Path(self.job_dir).name

    @property
    def spec_hash(self) -> str:
        return cache.spec_hash(self.spec)


def _unknown_keys(given, valid, where: str) -> None:
    bad = [k for k in given if k not in valid]
    if bad:
        k = bad[0]
        close = difflib.get_close_matches(str(k), list(valid), n=3, cutoff=0.5)
        raise ValueError(f"study file: unknown key {k!r} in {where}" + (f"; did you mean {close}?" if close else "")
                         + f"; valid keys: {sorted(valid)}")


def _str_list(value, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"study file: {key!r} must be a non-empty list of names; got {value!r}")
    return tuple(dict.fromkeys(value))


def _options(value, key: str, base: Path) -> tuple[tuple[str, Any], ...]:
    """extract_features options of a block: names and values checked, paths made absolute against the study file's
    folder (the notebooks run in notebooks/, where a relative path would mean something else)."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise ValueError(f"study file: {key!r} must be a mapping of extract_features options; got {value!r}")
    from kstar_utils.pipeline.features import PATH_OPTIONS, check_options

    if "device" in value:
        raise ValueError(f"study file: {key}.device: the device is the study's own key 'device' (auto, cpu or cuda), "
                         "used by every notebook of every job")
    options = check_options(value, where=f"study file: {key}")
    for k in PATH_OPTIONS:
        if k in options:
            options[k] = str(_path(options[k], base))
    return tuple(sorted(options.items()))


def _dataset(name: str, base: Path) -> str:
    """A dataset name with the path of a folder: / features: dataset made absolute against the study file's folder."""
    for prefix in ("folder:", "features:"):
        if name.startswith(prefix) and name[len(prefix):].strip():
            return prefix + str(_path(name[len(prefix):], base))
    return name


def _grid_blocks(block: Mapping, i: int, default_layers: tuple[str, ...], options, base: Path, *,
                 layers_given: bool, where: str) -> list[Grid]:
    """The Grid(s) of one block. A features:<file> dataset has one layer (pipeline.features.FEATURES_LAYER): given
    layers must be that one (else ValueError naming the layer); without layers given, such datasets run it and the
    other datasets of the block the default layers (consecutive datasets of one kind share a Grid, so the jobs keep
    the file's order)."""
    from itertools import groupby

    from kstar_utils.pipeline.features import FEATURES_LAYER, check_features_layers

    models = _str_list(block["models"], f"grids[{i}].models")
    datasets = tuple(dict.fromkeys(_dataset(d, base) for d in _str_list(block["datasets"], f"grids[{i}].datasets")))
    layers = _str_list(block.get("layers", default_layers), f"grids[{i}].layers")
    if layers_given:
        for d in datasets:
            try:
                check_features_layers(d, layers)
            except ValueError as e:
                raise ValueError(f"study file: {where}: {e}") from None
        return [Grid(models, datasets, layers, options)]
    own = lambda d: d.startswith("features:")  # noqa: E731
    return [Grid(models, tuple(run), (FEATURES_LAYER,) if features else layers, options)
            for features, run in groupby(datasets, key=own)]


def _check_names(grids: Sequence[Grid]) -> None:
    # unknown model or dataset names fail here, with the registry's closest matches, not minutes later in a job
    from kstar_utils import datasets as _datasets
    from kstar_utils import models as _models

    for g in grids:
        for m in g.models:
            try:
                _models.check_model_name(m)
            except ImportError as e:  # a source whose optional library is not installed
                raise ValueError(f"model {m!r} needs a library that is not installed: {e}") from None
        for d in g.datasets:
            _datasets.check_dataset_name(d)


def _flag(raw: Mapping, key: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ValueError(f"study file: {key!r} must be true or false; got {value!r}")
    return value


def _check_conflicts(grids: Sequence[Grid]) -> None:
    """A (model, dataset) listed in two blocks runs once, with the union of their layers; with different
    extract_options it would be ambiguous which block wins, so that is refused naming both blocks."""
    seen: dict[tuple[str, str], int] = {}
    for i, g in enumerate(grids):
        for m in g.models:
            for d in g.datasets:
                j = seen.setdefault((m, d), i)
                if j != i and dict(grids[j].extract_options) != dict(g.extract_options):
                    a, b = dict(grids[j].extract_options), dict(g.extract_options)
                    diff = [f"{k}: {a.get(k, '<unset>')!r} vs {b.get(k, '<unset>')!r}"
                            for k in sorted(set(a) | set(b)) if a.get(k, "<unset>") != b.get(k, "<unset>")]
                    raise ValueError(f"study file: {m} on {d} is in grids[{j}] and grids[{i}] with different "
                                     f"extract_options ({'; '.join(diff)}); list the pair in one block, or give both "
                                     "blocks the same options")


#: a study name becomes a folder name (outputs/studies/<name>): one plain name, no path
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
#: the most values a study file may expand to through YAML aliases (a real study has hundreds; an alias "bomb" of a
#: few lines expands to billions, and would exhaust memory the moment anything walks it)
MAX_YAML_VALUES = 100_000


def _path(value, base: Path) -> Path:
    p = Path(str(value)).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def study_from_dict(raw: Mapping[str, Any], base_dir: str | Path = ".", *, source: Path | None = None,
                    check_names: bool = True) -> Study:
    """Validate a study mapping (the parsed YAML); relative paths are taken from `base_dir`."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"study file: the top level must be a mapping of keys; got {type(raw).__name__}")
    if "metric_options" in raw:  # the form of earlier releases: say what to write now
        raise ValueError("study file: 'metric_options' is gone; write the options with the metric, e.g. "
                         "'metric: minkowski(p=3)' or 'metric: {name: minkowski, p: 3}'")
    _unknown_keys(raw, TOP_KEYS, "the study")
    base = Path(base_dir).resolve()
    if "name" not in raw or not isinstance(raw["name"], str) or not raw["name"].strip():
        raise ValueError("study file: key 'name' is required (a non-empty string)")
    name = raw["name"]
    if not _PLAIN_NAME.match(name):
        raise ValueError(f"study file: name {name!r} must be a plain folder name (letters, digits, '.', '_', '-', "
                         "starting with a letter or digit): it names the study's folder")
    for key in ("description", "split", "kernel", "output_dir", "cache_dir", "notebooks_dir", "data_root"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or (key != "description" and not value.strip())):
            raise ValueError(f"study file: {key!r} must be {'text' if key == 'description' else 'a non-empty string'}"
                             f"; got {type(value).__name__} {value!r:.60}")
    default_layers = _str_list(raw.get("layers", ["penultimate", "logits"]), "layers")
    if "grids" in raw:
        if "models" in raw or "datasets" in raw:
            raise ValueError("study file: give either 'grids' or top-level 'models' and 'datasets', not both")
        blocks = raw["grids"]
        if not isinstance(blocks, Sequence) or not blocks:
            raise ValueError("study file: 'grids' must be a non-empty list of {models, datasets, layers} mappings")
    else:
        for k in ("models", "datasets"):
            if k not in raw:
                raise ValueError(f"study file: key {k!r} is required (or a 'grids' list)")
        blocks = [{"models": raw["models"], "datasets": raw["datasets"]}]
    grids = []
    for i, b in enumerate(blocks):
        if not isinstance(b, Mapping):
            raise ValueError(f"study file: grids[{i}] must be a mapping with models, datasets (and layers)")
        _unknown_keys(b, GRID_KEYS, f"grids[{i}]")
        for k in ("models", "datasets"):
            if k not in b:
                raise ValueError(f"study file: grids[{i}] lacks key {k!r}")
        where = f"grids[{i}].extract_options" if "extract_options" in b else "extract_options"
        options = _options(b.get("extract_options", raw.get("extract_options")), where, base)
        grids.extend(_grid_blocks(b, i, default_layers, options, base, layers_given="layers" in b or "layers" in raw,
                                  where=f"grids[{i}]" if "grids" in raw else "the study"))
    _check_conflicts(grids)
    if check_names:
        _check_names(grids)
    try:  # a metric without its options (minkowski without p) fails here, not in every job
        metric = Metric.parse(raw.get("metric", "euclidean"))
    except ValueError as e:
        raise ValueError(f"study file: metric: {e}") from None
    device = raw.get("device", "auto")
    if device not in DEVICES:
        raise ValueError(f"study file: 'device' must be one of {DEVICES}; got {device!r}")
    acc = dict(raw.get("accuracy") or {})
    _unknown_keys(acc, ACCURACY_KEYS, "accuracy")
    figs = dict(raw.get("figures") or {})
    _unknown_keys(figs, FIGURE_KEYS, "figures")
    compare = tuple(figs.get("compare_models", ()))
    if compare and len(compare) != 2:
        raise ValueError(f"study file: figures.compare_models names two models; got {list(compare)}")
    # the figures are drawn after every job has run: a name they cannot use would only be noticed then, as a figure
    # silently left out
    models = list(dict.fromkeys(m for g in grids for m in g.models))
    for m in compare:
        if m not in models:
            close = difflib.get_close_matches(str(m), models, n=3, cutoff=0.5)
            raise ValueError(f"study file: figures.compare_models names {m!r}, which is not a model of the study"
                             + (f"; did you mean {close}?" if close else f"; models: {models}"))
    layers = list(dict.fromkeys(layer for g in grids for layer in g.layers))
    if figs.get("layer") is not None and figs["layer"] not in layers:
        raise ValueError(f"study file: figures.layer {figs['layer']!r} is not a layer of the study; layers: {layers}")
    if "format" in figs:
        from matplotlib.backend_bases import FigureCanvasBase

        formats = sorted(FigureCanvasBase.get_supported_filetypes())
        if figs["format"] not in formats:
            raise ValueError(f"study file: figures.format {figs['format']!r} is not one matplotlib writes; "
                             f"valid: {formats}")
    for n_key in ("n_boot", "seed"):
        if n_key in raw and (not isinstance(raw[n_key], int) or raw[n_key] < 0):
            raise ValueError(f"study file: {n_key!r} must be a non-negative integer; got {raw[n_key]!r}")
    return Study(
        name=name,
        grids=tuple(grids),
        output_dir=_path(raw["output_dir"], base) if raw.get("output_dir") else outputs_root() / "studies" / name,
        cache_dir=_path(raw["cache_dir"], base) if raw.get("cache_dir") else outputs_root(),
        notebooks_dir=_path(raw["notebooks_dir"], base) if "notebooks_dir" in raw else DEFAULT_NOTEBOOKS_DIR,
        split=str(raw.get("split", "test")),
        metric=metric,
        data_root=str(_path(raw["data_root"], base)) if raw.get("data_root") else None,
        device=device,
        distributed_kstar=_flag(raw, "distributed_kstar"),
        accuracy=AccuracyOptions(bool(acc.get("published", True)), bool(acc.get("zeroshot_computed", False)),
                                 str(acc.get("zeroshot_templates", "simple"))),
        figures=FigureOptions(compare, figs.get("layer"), str(figs.get("format", "png"))),
        n_boot=int(raw.get("n_boot", 2000)),
        seed=int(raw.get("seed", 0)),
        kernel=str(raw.get("kernel", "kstar")),
        description=str(raw.get("description", "")),
        source=source,
    )


def load_study(path: str | Path, *, check_names: bool = True) -> Study:
    """Read and validate a study YAML file (schema: TOP_KEYS; docs/study.md)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file not found: {path}")
    raw = _read_yaml(path)
    return study_from_dict(raw, path.parent, source=path.resolve(), check_names=check_names)


def _read_yaml(path: Path):
    """yaml.safe_load, refusing a document that expands (through aliases) to more than MAX_YAML_VALUES values."""
    loader = yaml.SafeLoader(path.read_text())
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        # count the values as they would be after expanding every alias, stopping at the cap: O(cap) however
        # deep the aliases nest (or loop)
        stack, count = [node], 0
        while stack:
            n = stack.pop()
            count += 1
            if count > MAX_YAML_VALUES:
                raise ValueError(f"study file {path}: its YAML aliases expand to more than {MAX_YAML_VALUES:,} values; "
                                 "write the values out, or use fewer aliases")
            if isinstance(n, yaml.SequenceNode):
                stack.extend(n.value)
            elif isinstance(n, yaml.MappingNode):
                for k, v in n.value:
                    stack.extend((k, v))
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ValueError(f"study file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    finally:
        loader.dispose()


def notebooks_code_hash(notebooks_dir: str | Path) -> str:
    """Hash of the code cells of the notebook sequence: a changed notebook means changed results, while re-stored
    outputs do not."""
    h = hashlib.sha256()
    for name in NOTEBOOK_SEQUENCE:
        path = Path(notebooks_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"notebook {name} not found in {notebooks_dir}")
        nb = json.loads(path.read_text())
        for c in nb["cells"]:
            if c["cell_type"] == "code":
                h.update("".join(c["source"]).encode())
    return h.hexdigest()[:16]


def expand_jobs(study: Study) -> list[Job]:
    """One Job per (model, dataset) of each grid block (a pair listed in two blocks runs once, with the union of
    the layers), in the file's order."""
    code = notebooks_code_hash(study.notebooks_dir)
    from kstar_utils.engine.run import resolve_device
    from kstar_utils.models import supports_zero_shot

    # "cuda" is kept as asked even where this machine has none: the jobs may run on a cluster's GPU workers
    device = study.device if study.device != "auto" else resolve_device("auto").type
    pairs: dict[tuple[str, str], tuple[str, ...]] = {}
    options: dict[tuple[str, str], dict] = {}
    for g in study.grids:
        for d in g.datasets:
            for m in g.models:
                pairs[(m, d)] = tuple(dict.fromkeys(pairs.get((m, d), ()) + g.layers))
                options.setdefault((m, d), {}).update(dict(g.extract_options))
    jobs = []
    for (model, dataset), layers in pairs.items():
        opts = options[(model, dataset)]
        zs = study.accuracy.zeroshot_computed and supports_zero_shot(model)
        spec = {"kind": "study-job", "model": model, "dataset": dataset, "split": study.split, "layers": list(layers),
                "metric": study.metric.label,
                "data_root": study.data_root, "cache_dir": str(study.cache_dir),
                "notebooks": code, "zeroshot_computed": zs, **({"extract_options": opts} if opts else {}),
                **({"zeroshot_templates": study.accuracy.zeroshot_templates} if zs else {})}
        job_dir = cache.artifact_path(study.output_dir, "jobs", spec, "", slug_keys=["model", "dataset"])
        plot_layer = study.figures.layer if study.figures.layer in layers else layers[0]
        jobs.append(Job(model=model, dataset=dataset, layers=layers, split=study.split, metric=study.metric,
                        plot_layer=plot_layer, data_root=study.data_root, cache_dir=str(study.cache_dir),
                        notebooks_dir=str(study.notebooks_dir), kernel=study.kernel, device=device,
                        extract_options=opts,
                        zeroshot_computed=zs, zeroshot_templates=study.accuracy.zeroshot_templates,
                        job_dir=str(job_dir), spec=spec))
    return jobs
