"""k* distribution analysis of vision models' latent spaces (arXiv 2408.09065, 2312.04024).

The layers, bottom up (docs/architecture.md): method (k*, metrics, skewness: pure functions) and engine (the exact
k* machinery); io (paths, caches, tables); models and datasets; pipeline (extraction and the notebook stages);
analysis (correlations, fracture, open checks); plotting; study (batch runs); cli.
"""
from kstar_utils import _aliases
from kstar_utils.method.kstar import compute_kstar, normalize_kstar
from kstar_utils.method.skewness import SkewnessSummary, summarize_skewness

_aliases.install()

__all__ = ["compute_kstar", "normalize_kstar", "summarize_skewness", "SkewnessSummary"]
__version__ = "0.2.0"
