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

MOVED = {
    "kstar_utils.kstar": "kstar_utils.method.kstar",
    "kstar_utils.skewness": "kstar_utils.method.skewness",
    "kstar_utils.validation": "kstar_utils.method.validation",
    "kstar_utils.cache": "kstar_utils.io.cache",
    "kstar_utils.paths": "kstar_utils.io.paths",
    "kstar_utils.tables": "kstar_utils.io.tables",
    "kstar_utils.correlate": "kstar_utils.analysis.correlate",
    "kstar_utils.sensitivity": "kstar_utils.analysis.checks",
    "kstar_utils.open_checks": "kstar_utils.pipeline.open_checks",
    "kstar_utils.perturbation": "kstar_utils.pipeline.open_checks",
    "kstar_utils.features": "kstar_utils.pipeline.features",
    "kstar_utils.stages": "kstar_utils.pipeline.stages",
    "kstar_utils.notebook_params": "kstar_utils.pipeline.notebooks",
    "kstar_utils.zeroshot": "kstar_utils.pipeline.zeroshot",
    "kstar_utils.preflight": "kstar_utils.pipeline.preflight",
    "kstar_utils.study_plots": "kstar_utils.plotting",
    "kstar_utils.zoo": "kstar_utils.models.digits_zoo",
    "kstar_utils.kstar_engine": "kstar_utils.engine",
}
#: old `python -m` entry points -> the `kstar` arguments that replace them: (before, after) the user's arguments;
#: `python -m kstar_utils.zoo train` trained the digits zoo only, and keeps doing so
COMMANDS = {"kstar_utils.preflight": (["preflight"], []), "kstar_utils.zoo": (["zoo"], ["--zoo", "digits"])}


class _Alias(types.ModuleType):
    """A stand-in module whose attributes are those of the new module."""

    def __init__(self, name: str, target: str):
        super().__init__(name, f"moved to {target}")
        self.__dict__["_target"] = target

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self.__dict__["_target"]), attr)

    def __dir__(self):
        return dir(importlib.import_module(self.__dict__["_target"]))


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        target = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {target}; the old name goes in the next release", DeprecationWarning,
                      stacklevel=_importer_level())
        return _Alias(spec.name, target)

    def exec_module(self, module):
        pass

    def get_code(self, fullname):  # `python -m <old name>`: say where the command went, then run it
        if fullname not in COMMANDS:
            return compile(f"raise SystemExit('{fullname} moved to {MOVED[fullname]}')", fullname, "exec")
        before, after = COMMANDS[fullname]
        message = f"python -m {fullname} is now `kstar {' '.join(before + ['...'] + after)}`"
        return compile(
            "import sys\n"
            f"print({message!r}, file=sys.stderr)\n"
            "from kstar_utils.cli import main\n"
            f"sys.exit(main({before!r} + sys.argv[1:] + {after!r}))\n", fullname, "exec")


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
