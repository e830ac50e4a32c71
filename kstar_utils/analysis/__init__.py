"""Analyses on k* results, pure functions of tables and arrays: correlations with intervals (correlate), the open
checks (checks), who fractures whom (fracture), Γ' of subsamples (sampling) and the sentences the notebooks
print (findings)."""
