"""Running things on files: feature extraction (features), the notebook stages (stages, open_checks, sample_size),
zero-shot accuracy (zeroshot), pre-flight checks (preflight) and the notebooks themselves (notebooks)."""
