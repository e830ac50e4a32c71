"""The method's pure functions: distances and their canonical rows (metrics)."""
