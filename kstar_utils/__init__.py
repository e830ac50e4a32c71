"""k* distribution analysis of vision models' latent spaces (arXiv 2408.09065, 2312.04024)."""
from .kstar import compute_kstar, normalize_kstar
from .skewness import SkewnessSummary, summarize_skewness

__all__ = ["compute_kstar", "normalize_kstar", "summarize_skewness", "SkewnessSummary"]
__version__ = "0.1.0"
