"""How the tiled engines run: whole tiles on parallel Python threads (one intra-op thread each), true float32 GEMMs.

torch and numpy release the GIL in their kernels, so tiles run truly in parallel; with intra-op threading off there
is no per-op thread start-up, and every cheap pass of a tile (masking, minima, counting) is spread over the cores as
well as its GEMM.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def run_tiles(tiles, fn, workers: int) -> None:
    """fn(tile) for every tile; on `workers` > 1 Python threads. Exceptions propagate (the first one raised)."""
    if workers <= 1 or len(tiles) <= 1:
        for t in tiles:
            fn(t)
        return
    from concurrent.futures import ThreadPoolExecutor

    import torch

    def run(t):
        with torch.inference_mode():
            fn(t)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        for f in [ex.submit(run, t) for t in tiles]:
            f.result()


_single = {"depth": 0, "saved": 1}
_single_lock = threading.Lock()


@contextmanager
def single_thread(device):
    """One CPU thread for bursts of tiny ops: OpenMP start-up per op costs more than the op (ms each on a busy box).

    torch's thread count is process-wide: engines running at once on several threads of one process (e.g. Dask
    workers that are threads) share one count, set to 1 by the first to enter and restored by the last to leave."""
    import torch

    if device.type != "cpu":
        yield
        return
    with _single_lock:
        if _single["depth"] == 0:
            _single["saved"] = torch.get_num_threads()
            torch.set_num_threads(1)
        _single["depth"] += 1
    try:
        yield
    finally:
        with _single_lock:
            _single["depth"] -= 1
            if _single["depth"] == 0:
                torch.set_num_threads(_single["saved"])


@contextmanager
def exact_float32_matmul():
    """True float32 GEMMs (no TF32 / bf16) while the engine runs; the error bounds depend on it."""
    import torch

    prev = torch.get_float32_matmul_precision()
    prev_bf16 = torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction
    torch.set_float32_matmul_precision("highest")
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False  # bf16 screen: float32 accumulation
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_float32_matmul_precision(prev)
        torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = prev_bf16
