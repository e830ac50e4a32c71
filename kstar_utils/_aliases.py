"""Old module paths, kept for one release: importing one warns once and gives the module's new home.

The package was reorganised into layers (method, engine, io, models, datasets, pipeline, analysis, plotting, study);
`import kstar_utils.stages` and `from kstar_utils import stages` keep working, with a DeprecationWarning that names
the new path. `python -m kstar_utils.preflight` and `python -m kstar_utils.zoo train` say which `kstar` subcommand
replaces them and run it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: old module -> its new home, or several homes searched in order for a name
MOVED: dict[str, str | tuple[str, ...]] = {
    "kstar_utils.kstar": "kstar_utils.method.kstar",
    "kstar_utils.skewness": "kstar_utils.method.skewness",
    "kstar_utils.validation": "kstar_utils.method.validation",
    "kstar_utils.cache": "kstar_utils.io.cache",
    "kstar_utils.tables": "kstar_utils.io.tables",
    "kstar_utils.correlate": ("kstar_utils.analysis.correlate", "kstar_utils.method.skewness"),
    "kstar_utils.sensitivity": "kstar_utils.analysis.checks",
    "kstar_utils.open_checks": "kstar_utils.pipeline.open_checks",
    "kstar_utils.perturbation": "kstar_utils.pipeline.open_checks",
    "kstar_utils.features": "kstar_utils.pipeline.features",
    "kstar_utils.stages": ("kstar_utils.pipeline.stages", "kstar_utils.analysis.findings"),
    "kstar_utils.zeroshot": "kstar_utils.pipeline.zeroshot",
    "kstar_utils.preflight": "kstar_utils.pipeline.preflight",
    "kstar_utils.study_plots": ("kstar_utils.plotting", "kstar_utils.plotting.study", "kstar_utils.study.summary"),
    "kstar_utils.zoo": ("kstar_utils.models.digits_zoo", "kstar_utils.models.training"),
    "kstar_utils.kstar_engine": "kstar_utils.engine",
    "kstar_utils.kstar_engine.layout": "kstar_utils.engine.layout",
    "kstar_utils.kstar_engine.run": "kstar_utils.engine.run",
    "kstar_utils.kstar_engine.faiss_engine": "kstar_utils.engine.faiss_knn",
    "kstar_utils.kstar_engine.exact": ("kstar_utils.engine.bounds", "kstar_utils.engine.bf16",
                                       "kstar_utils.engine.reference"),
    "kstar_utils.kstar_engine.torch_engine": ("kstar_utils.engine.passes", "kstar_utils.engine.kernels",
                                              "kstar_utils.engine.threads"),
}
#: names of the old modules that have no counterpart of the same name: what to use instead
REMOVED: dict[str, dict[str, str]] = {
    "kstar_utils.kstar": {"AUTO_PROGRESS_PAIRS": "compute_kstar(progress=True/False) chooses the progress bar"},
    "kstar_utils.tables": {"DATA_DIR_ENV": "kstar_utils.io.paths.SHIPPED_ENV (now 'KSTAR_SHIPPED_DATA')"},
    "kstar_utils.sensitivity": {
        "SENSITIVITY_METRICS": "kstar_utils.analysis.checks.METRICS",
        "SHRINKAGE_LEDOIT_WOLF": "shrinkage='auto' (Ledoit-Wolf, the default)",
        "mahalanobis_whiten": "compute_kstar(X, y, metric='mahalanobis'), or kstar_utils.method.metrics.covariance "
                              "and .whitening"},
    "kstar_utils.perturbation": {
        "noisy_digits": "kstar_utils.pipeline.open_checks.dataset_images('digits') and add_noise",
        "zoo_features_of_images": "kstar_utils.pipeline.open_checks.features_of_images"},
    "kstar_utils.stages": {
        "kstar_figures": "kstar_utils.plotting.plot_kstar_grid with kstar_utils.pipeline.stages.kstar_results",
        "load_accuracy": "kstar_utils.pipeline.stages.join_accuracy or kstar_utils.io.tables.load_measured_metrics"},
    "kstar_utils.preflight": {"main": "kstar_utils.cli.main(['preflight', ...]) (the `kstar preflight` command)"},
    "kstar_utils.study_plots": {"plot_coefficient_vs_accuracy": "kstar_utils.plotting.plot_metric_vs_accuracy"},
    "kstar_utils.kstar_engine.torch_engine": {
        "TorchEngine": "kstar_utils.engine.passes.TwoPassEngine (or compute_kstar(backend='torch'))",
        "DEFAULT_SCREEN": "compute_kstar(screen='auto')"},
    "kstar_utils.zoo": {
        "DATA_DIR": "kstar_utils.io.paths.shipped('zoo')",
        "SPLIT_SEED": "kstar_utils.datasets.embedded.DIGITS_SPLIT_SEED",
        "TEST_FRACTION": "kstar_utils.datasets.embedded.DIGITS_TEST_FRACTION",
        "load_zoo_metrics": "kstar_utils.io.tables.load_measured_metrics('zoo')",
        "main": "kstar_utils.cli.main(['zoo', 'train', '--zoo', 'digits']) (the `kstar zoo train` command)"},
}
#: old `python -m` entry points -> the `kstar` arguments that replace them: (before, after) the user's arguments;
#: `python -m kstar_utils.zoo train` trained the digits zoo only, and keeps doing so
COMMANDS = {"kstar_utils.preflight": (["preflight"], []), "kstar_utils.zoo": (["zoo"], ["--zoo", "digits"])}


class _Alias(types.ModuleType):
    """A stand-in module whose attributes are those of its new home(s)."""

    def __init__(self, name: str, targets: tuple[str, ...]):
        super().__init__(name, f"moved to {targets[0]}")
        self.__dict__["_targets"] = targets
        if any(old.startswith(name + ".") for old in MOVED):
            self.__dict__["__path__"] = []  # an old package: its old submodules import through the finder too

    def __getattr__(self, attr):
        for target in self.__dict__["_targets"]:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        instead = REMOVED.get(self.__name__, {}).get(attr)
        raise AttributeError(f"{self.__name__}.{attr} is gone in 0.2" + (f"; use {instead}" if instead else
                                                                           f" (searched {', '.join(self._targets)})"))

    def __dir__(self):
        return sorted({n for t in self.__dict__["_targets"] for n in dir(importlib.import_module(t))})


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        targets = _homes(spec.name)
        warnings.warn(f"{spec.name} moved to {targets[0]}; the old name goes in the next release", DeprecationWarning,
                      stacklevel=_importer_level())
        return _Alias(spec.name, targets)

    def exec_module(self, module):
        pass

    def get_code(self, fullname):  # `python -m <old name>`: say where the command went, then run it
        if fullname not in COMMANDS:
            return compile(f"raise SystemExit('{fullname} moved to {_homes(fullname)[0]}')", fullname, "exec")
        before, after = COMMANDS[fullname]
        message = f"python -m {fullname} is now `kstar {' '.join(before + ['...'] + after)}`"
        return compile(
            "import sys\n"
            f"print({message!r}, file=sys.stderr)\n"
            "from kstar_utils.cli import main\n"
            f"sys.exit(main({before!r} + sys.argv[1:] + {after!r}))\n", fullname, "exec")


def _homes(name: str) -> tuple[str, ...]:
    target = MOVED[name]
    return (target,) if isinstance(target, str) else target


def _importer_level() -> int:
    """The warnings stacklevel, seen from create_module, of the code that imported the old name: Python shows a
    DeprecationWarning when the user's own script or notebook triggers it, so the warning must be attributed there.
    `warnings` skips the frozen importlib._bootstrap frames by itself; importlib.import_module's frame it counts."""
    level, frame = 2, sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if name == importlib.__file__:
            level += 1
        elif not ("importlib" in name and "_bootstrap" in name):
            break
        frame = frame.f_back
    return level


def install() -> None:
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
