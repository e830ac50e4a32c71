"""Deprecated: the engine moved to kstar_utils.engine (this alias goes in the next release)."""
import warnings

from ..engine import *  # noqa: F401,F403
from ..engine import __all__  # noqa: F401

warnings.warn("kstar_utils.kstar_engine is deprecated; use kstar_utils.engine", DeprecationWarning, stacklevel=2)
