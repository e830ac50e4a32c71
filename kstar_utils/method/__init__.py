"""The method's pure functions: k* (kstar), the distances and their canonical rows (metrics), skewness, Γ and Γ' with
a bootstrap interval of Γ' (skewness), and the input checks every public function shares (validation)."""
