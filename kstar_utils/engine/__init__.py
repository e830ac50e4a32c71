"""The exact, tiled k* engine. Public entry: kstar_utils.compute_kstar (method layer); this package is its machinery.

    reference   the float64 scores that define "exact" (squared Euclidean, l1, linf, lp) and the nearest-enemy rule
    bounds      rigorous error bounds of the float32 screens
    bf16        the bfloat16 screen of pass 1 (squared Euclidean, where bfloat16 GEMMs are fast)
    kernels     screened-score kernels (GEMM; faiss / torch difference loops; float64)
    layout      class-sorted views of a labelled set, tile blocks and sizes
    threads     tile-parallel execution, true float32 GEMMs
    ops         small tensor helpers
    passes      the two-pass engine (nearest foreign score, count of closer classmates)
    faiss_knn   faiss k-NN searches as the screen (squared Euclidean)
    run         device, backend and tile selection: run_engine
"""
from kstar_utils.engine.bounds import screen_eps, screen_floor
from kstar_utils.engine.layout import SortedSet, auto_tile_size
from kstar_utils.engine.reference import Distance, pair_sq_distances
from kstar_utils.engine.run import run_engine

__all__ = ["Distance", "SortedSet", "auto_tile_size", "pair_sq_distances", "run_engine", "screen_eps", "screen_floor"]
