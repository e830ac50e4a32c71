"""Exact, tiled k* engines (torch and faiss screens with float64 re-decision). Public entry: kstar.compute_kstar."""
from .exact import pair_sq_distances, screen_eps
from .layout import SortedSet, auto_tile_size

__all__ = ["SortedSet", "auto_tile_size", "pair_sq_distances", "screen_eps"]
