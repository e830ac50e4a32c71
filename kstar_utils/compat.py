"""Workarounds for third-party packages, each applied once and only where needed."""
from __future__ import annotations

import importlib
import sys
import threading
import warnings

_lock = threading.Lock()


def import_robustbench():
    """Import and return ``robustbench`` (1.1.1 from PyPI), making its ``import autoattack`` work.

    robustbench imports ``autoattack`` and ``autoattack.state``, but its dependency pyautoattack installs the same
    code as the module ``pyautoattack``. When no real ``autoattack`` is importable we alias the module and its
    submodules in ``sys.modules`` before importing robustbench (pyautoattack's own imports are relative, so the alias
    is safe). Idempotent; an installed original ``autoattack`` is left alone.
    """
    with _lock:
        if "robustbench" in sys.modules:
            return sys.modules["robustbench"]
        try:
            importlib.import_module("autoattack")
        except ImportError:
            pyautoattack = importlib.import_module("pyautoattack")
            sys.modules["autoattack"] = pyautoattack
            for sub in ("state", "autopgd_base", "fab_pt", "square", "checks", "other_utils"):
                try:
                    sys.modules.setdefault(f"autoattack.{sub}", importlib.import_module(f"pyautoattack.{sub}"))
                except ImportError:  # a submodule a future pyautoattack no longer has: nothing to alias
                    pass
        with warnings.catch_warnings():
            # robustbench imports pkg_resources (setuptools<81 is pinned for it); its deprecation notice is noise
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            return importlib.import_module("robustbench")


def quiet_library_notices() -> None:
    """Hide, in this process, deprecation notices that libraries raise at import and that say nothing to a user of
    the workbook. Meant for the `kstar` command; idempotent.

    torch 2.14 deprecates ``torch.jit.interface`` and warns each time it is used; timm 1.0.9 uses it when
    ``timm.models.hrnet`` is imported, which ``import timm``, ``import open_clip`` and ``import robustbench`` all do:
    ``kstar plan`` and ``kstar preflight`` of any such model printed a FutureWarning about torch.compile.
    """
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.interface` is deprecated", category=FutureWarning)
