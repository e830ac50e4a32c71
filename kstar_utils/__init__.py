"""k* distribution analysis of vision models' latent spaces (arXiv 2408.09065, 2312.04024).

The layers, bottom up (docs/architecture.md): engine (the exact k* machinery); io (paths, caches, tables); method
(k*, metrics, skewness: pure functions); datasets; models; analysis (correlations, fracture, open checks); pipeline
(extraction and the notebook stages); plotting; study (batch runs); cli.
"""
from kstar_utils.method.kstar import compute_kstar, normalize_kstar
from kstar_utils.method.skewness import SkewnessSummary, summarize_skewness


__all__ = ["compute_kstar", "normalize_kstar", "summarize_skewness", "SkewnessSummary"]
__version__ = "0.3.0"
