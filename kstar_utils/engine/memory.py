"""Memory planned before any work: the peak a k* computation will need, the tile that fits, or a refusal.

`plan_memory` estimates, from the sizes alone (N queries, M pool rows, D, the input dtype, the distance, backend,
screen, tile edge T and the number of tile threads), the peak of the memory that `compute_kstar` allocates on top of
the caller's own arrays, and compares it with the memory available (MemAvailable, or an explicit limit). It runs
before anything large is allocated or any pass over the data is made, so a request that cannot fit is refused in
milliseconds with `InsufficientMemoryError`, which names the estimate, what is available and what to do.

The estimate is the largest, over the computation's phases (input conversion and metric transform; the engine), of
the sum of the arrays alive in that phase. Its terms follow the engine's data structures:

    sorted float64 rows        8 N D (the exact decisions read them)          SortedSet.X
    float32 GEMM operands      2 x 4 N W, W = D + 2 rounded up to 8           kernels.GemmKernel
    bfloat16 operands          2 x 2 N W16, W16 = D + 4 rounded up to 32      bf16.Bf16Side
    pass-1 table               N x (number of column chunks) x 2 or 4 bytes   passes / bf16
    per tile thread            a few T x T float32 tiles                      passes, kernels
    candidates                 ~ CANDIDATES_PER_ROW (row, chunk) pairs per row with their bounds

plus the float32 copies of the difference kernels, faiss's (N, C) table, and the float64 copies a metric transform
(cosine, Mahalanobis) or an integer input needs. Data-dependent parts (the candidate chunks of pass 1, the
ambiguous pairs of pass 2) are taken at a generous typical size: data with masses of exact ties (every sample at the
same distance from many others) can need more; `benchmarks/memory_check.py` measures the estimate against the peak
resident memory (benchmarks/RESULTS.md). On CUDA the device's share (operands, table, tiles) is estimated separately
and compared with the device's free memory.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kstar_utils.engine.layout import class_blocks
from kstar_utils.engine.reference import SQEUCLIDEAN, Distance

GB = 1e9
# (row, chunk) candidate pairs per row after pass 1a, and float64 pair decisions per row: measured 1-2.1 each on
# Gaussian classes and on an integer lattice (N = 10k); taken 4-8x larger, since the bound's width depends on the data
CANDIDATES_PER_ROW = 8
PAIRS_PER_ROW = 16
# bytes per candidate (row, chunk) in the candidate stages: indices, chunk statistics and bound arrays (float64)
CANDIDATE_BYTES = 160
# share of MemAvailable a computation may plan to use (the rest: the caller, other processes, allocator slack)
AVAILABLE_SHARE = 0.9
MIN_TILE = 64


class InsufficientMemoryError(ValueError, MemoryError):
    """A k* computation whose estimated peak exceeds the memory available (raised before any work is done).

    A ValueError (bad request: the command line reports it in one line) and a MemoryError. `plan` holds the
    estimate (MemoryPlan)."""

    def __init__(self, message: str, plan: "MemoryPlan | None" = None):
        super().__init__(message)
        self.plan = plan


@dataclass(frozen=True)
class MemoryPlan:
    """The estimate of one k* computation: tile edge, host peak (bytes), device peak (bytes, 0 on CPU), the parts
    of the largest phase {name: bytes}, and the limits it was checked against (bytes; None: not checked)."""

    tile: int
    host_bytes: int
    device_bytes: int = 0
    parts: dict = field(default_factory=dict)
    host_limit: int | None = None
    device_limit: int | None = None

    def fits(self) -> bool:
        return ((self.host_limit is None or self.host_bytes <= self.host_limit)
                and (self.device_limit is None or self.device_bytes <= self.device_limit))

    def describe(self, top: int = 4) -> str:
        """'2.41 GB (sorted float64 rows 1.23 GB, float32 GEMM operands 0.62 GB, ...)'."""
        big = sorted(self.parts.items(), key=lambda kv: -kv[1])[:top]
        return f"{self.host_bytes / GB:.2f} GB (" + ", ".join(f"{k} {v / GB:.2f} GB" for k, v in big) + ")"


@dataclass(frozen=True)
class Request:
    """What the estimate depends on (sizes only; nothing here holds data).

    n: query rows; m: pool rows (None: one set, queries are the pool); dim: D; itemsize and kind: the features'
    numpy dtype (kind "f" float, "i"/"u"/"b" integers and booleans, converted to float64 first); distance: the score
    (engine.reference); prep_copies: float64 copies of the rows alive at once while they are prepared before the
    engine (0: float32 / float64 rows go to the engine as they are; 2: a canonical rescale (float16 or integer input,
    the numpy backend); 3: a metric transform, cosine or Mahalanobis); backend: "torch", "faiss" or "numpy" as run;
    impl: the difference kernels' library ("torch" or "faiss"); bf16: pass 1 screens in bfloat16; workers: tile threads; device: "cpu" / "cuda";
    col_counts: class sizes of the pool (of the set, one-set case), in class order; None: unknown (a bound is used);
    n_classes: C; tensor_on_cuda: the features are a CUDA tensor (copied to the host first); block: "" for a whole
    computation, "rows" for a block of the set's own rows and "queries" for a block of other queries, both against
    a set prepared once (`prepared_bytes`, engine.run.PreparedSet), whose parts are then not counted here.
    """

    n: int
    m: int | None
    dim: int
    itemsize: int = 4
    kind: str = "f"
    distance: Distance = SQEUCLIDEAN
    prep_copies: int = 0
    backend: str = "torch"
    impl: str = "torch"
    bf16: bool = False
    workers: int = 1
    device: str = "cpu"
    col_counts: tuple | None = None
    n_classes: int = 2
    tensor_on_cuda: bool = False
    block: str = ""


def _width(d: int, mult: int, extra: int) -> int:
    return (d + extra + mult - 1) // mult * mult


def n_chunks(req: Request, tile: int) -> int:
    """Number of column chunks of the pass-1 table (exact when the class sizes are known, else a bound)."""
    return _grid(req, tile)[0]


def _grid(req: Request, tile: int) -> tuple[int, int]:
    """(column chunks of the pass-1 table, largest column block): exact when the class sizes are known, else
    bounds."""
    m = req.n if req.m is None else req.m
    ch = _chunk(m, tile)  # as TwoPassEngine.chunk_size
    if req.col_counts is not None:
        starts = np.concatenate([[0], np.cumsum(np.asarray(req.col_counts, dtype=np.int64))])
        blocks = class_blocks(starts, tile)
        return (int(sum(-(-(b1 - b0) // ch) for b0, b1 in blocks)),
                int(max((b1 - b0 for b0, b1 in blocks), default=1)))
    # class_blocks makes at most 7 m / T + 1 blocks (pieces of big classes, packed blocks closed by a big class or
    # by exceeding T / 2 rows), each adding at most one partial chunk
    return int(-(-m // ch) + 7 * m // tile + 1 + req.n_classes), min(tile, m)


def estimate(req: Request, tile: int) -> MemoryPlan:
    """The estimated peak (MemoryPlan with host and device bytes) of `req` run with tile edge `tile`."""
    n, d, T, w = req.n, req.dim, int(tile), max(1, req.workers)
    one = req.m is None
    m = n if one else req.m
    rows_all = n if one else n + m
    cuda = req.device == "cuda"
    W, W16 = _width(d, 8, 2), _width(d, 32, 4)
    # -- phase 1: conversion of the input and the metric's float64 rows ------------------------------------------
    prep: dict[str, float] = {}
    if req.kind != "f" or req.itemsize > 8:
        # integers: the float64 copy and the magnitude check's temporary
        prep["float64 copy of the input"] = 8.0 * rows_all * d * (2 if req.kind in "iu" else 1)
    if req.tensor_on_cuda:
        prep["host copy of the CUDA tensor"] = float(req.itemsize * rows_all * d)
    if req.prep_copies:
        # rescale: the float64 rows and their rescaled copy; cosine: unit rows, their rescaled copy, a temporary;
        # Mahalanobis: rescaled, centred and squared copies (Ledoit-Wolf), then the whitened rows and their copy
        prep["metric rows (float64 copies)"] = req.prep_copies * 8.0 * rows_all * d
    # -- phase 2: the engine ---------------------------------------------------------------------------------------
    eng: dict[str, float] = {}
    if req.prep_copies:
        eng["metric rows (float64)"] = 8.0 * rows_all * d
    small = 80.0 * rows_all  # per-row vectors: order, codes, norms, bounds, results (int64 / float64)
    if req.backend == "numpy":
        rows_blk = max(1, min(256, int(8e6 // max(1, m * d))))
        eng["row-block scores"] = 8.0 * rows_blk * m * d + 26.0 * rows_blk * m
        eng["per-row vectors"] = 24.0 * n
        return _plan(T, prep, eng, {}, req)
    own = n if req.block else rows_all  # rows whose operands this computation builds
    if req.block == "":
        eng["sorted float64 rows"] = 8.0 * rows_all * d
    elif req.block == "queries":
        eng["sorted float64 rows of the block"] = 8.0 * n * d
    eng["per-row vectors"] = 80.0 * own
    dev: dict[str, float] = {}
    if req.backend == "faiss" and req.distance.kind == "sqeuclidean":
        eng["float32 copies (faiss)"] = 4.0 * own * d + 4.0 * n * d  # + the gathered queries of one class
        eng["per-class table (faiss)"] = 4.0 * n * req.n_classes
        # pass 2 may count deep rows with the tile engine: its GEMM operands and tiles
        eng["float32 GEMM operands (pass-2 fallback)"] = 8.0 * n * W if one else 4.0 * (n + m) * W
        maxc = max(req.col_counts) if req.col_counts else m
        # searches: k <= 64 for whole query chunks, k = 2048 for at most a tenth of a class; faiss's own blocks
        eng["search results"] = min(n, 16384) * 64 * 12.0 + min(n, maxc // 10 + 1) * 2048 * 12.0 + 64e6
        if cuda:
            dev["faiss-gpu (data, search)"] = 4.0 * rows_all * d + 16384 * 2048 * 8.0 + 3 * 4.0 * T * T
        return _plan(T, prep, eng, dev, req)
    nch, col_block = _grid(req, T)
    gemm = req.distance.kind == "sqeuclidean"
    exact = req.distance.kind == "lp" and req.distance.p > 3
    if gemm:  # one set: left and right of the rows; a pool: the queries' left and the pool's right
        ops = 4.0 * n * W if req.block else (8.0 * n * W if one else 4.0 * (n + m) * W)
    elif exact:
        ops = 0.0
    else:
        ops = 4.0 * own * d  # the float32 rows of the difference loops
    (dev if cuda else eng)["float32 kernel operands" if not gemm else "float32 GEMM operands"] = ops
    val_b = 8.0 if exact else 4.0  # bytes of one screened score
    threads = 1 if cuda else w
    # per tile thread: pass 1 holds its tile; pass 2 its (smaller, one-class) tile, a comparison mask and the
    # ambiguous rows; the kernels' own temporaries come on top
    maxc = max(req.col_counts) if req.col_counts else m
    t2 = min(T, max(512, -(-maxc // 8))) if one else T
    # a pass-1 tile spans one row block and one column block (class-aligned, at most T each; one set: the same)
    tile1 = float((col_block if one else min(T, n)) * col_block)
    tile2 = float(min(t2, n) * min(t2, m))
    extra = 0.0
    if not gemm and req.impl == "torch" and req.distance.kind == "lp":
        extra += 2 * 4.0 * (1 << 22)  # the chunked |a - b|^p temporaries
    if exact:
        extra += 2 * 8.0 * (1 << 22)  # the float64 difference blocks
    if req.impl == "faiss" and not gemm:
        extra += 16e6  # faiss's own blocks
    # faiss's difference loops take one tile at a time (each call spreads over its own threads)
    pass1_tile = (1 if req.impl == "faiss" and not gemm else threads) * (val_b * tile1 + extra)
    pass2_tile = threads * ((val_b + 2.0) * tile2 + extra)
    cand = CANDIDATES_PER_ROW * n * CANDIDATE_BYTES + PAIRS_PER_ROW * n * 40.0
    ch = _chunk(m, T)
    # candidate re-screen: each thread screens one chunk's candidate rows at a time (a few hundred rows typically)
    rescreen = threads * (min(n, 2048) * ch * val_b * 2 + (0.0 if req.impl == "faiss" else extra))
    blk = min(n, max(256, (1 << 22) // max(1, nch))) * nch  # entries of one row block of the table scans
    # pass 1: the table, then either the tiles or (after them) the candidate stage
    phases = [{"pass-1 table": n * nch * val_b,
               "pass-1 tiles or candidates": max(pass1_tile, 13.0 * blk + cand + rescreen)}]
    if req.bf16:
        phases.append({"bfloat16 operands": 4.0 * n * W16 + (4.0 * m * W16 if not (one or req.block) else 0.0)
                       + 64.0 * own,
                       "pass-1 table": n * nch * 2.0,
                       "pass-1 tiles or candidates": max(threads * 2.0 * tile1, 3.0 * blk + cand + rescreen)})
    # pass 2 (pass 1's table is gone): per-thread counts and tiles, each tile's ambiguous pairs
    phases.append({"pass-2 counts and tiles": 8.0 * n * threads + pass2_tile})
    worst = max(phases, key=lambda p: sum(p.values()))
    if cuda:
        # the host keeps the float64 rows and the candidate bookkeeping; the device the operands, table and tiles
        for k, v in worst.items():
            dev[k] = dev.get(k, 0.0) + v
        if req.bf16:
            eng["bfloat16 operands (host)"] = 4.0 * n * W16 + (4.0 * m * W16 if not one else 0.0)
        eng["candidates"] = cand
        return _plan(T, prep, eng, dev, req)
    for k, v in worst.items():
        eng[k] = eng.get(k, 0.0) + v
    return _plan(T, prep, eng, dev, req)


def _chunk(m: int, T: int) -> int:
    ch = 128
    while ch * 1024 < m and ch < T:
        ch *= 2
    return max(1, min(ch, T))


def _plan(T, prep, eng, dev, req) -> MemoryPlan:
    a, b = sum(prep.values()), sum(eng.values())
    parts = prep if a > b else eng
    # a fixed allowance for the allocator, thread pools and library buffers the arrays above do not show
    slack = 32e6
    return MemoryPlan(T, int(max(a, b) + slack), int(sum(dev.values()) + (slack if dev else 0)),
                      {k: int(v) for k, v in parts.items()})


# -- limits and the tile choice ---------------------------------------------------------------------------------------
def available_bytes() -> int:
    """Host memory a computation may plan to use: AVAILABLE_SHARE of MemAvailable (4 GiB when unreadable), further
    capped by this process's cgroup memory limit and RLIMIT_AS where they are set."""
    from kstar_utils.engine.layout import available_ram_bytes

    avail = available_ram_bytes()
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                raw = f.read().strip()
            if raw.isdigit() and int(raw) < 1 << 60:
                used = _cgroup_usage(path)
                avail = min(avail, int(raw) - used)
                break
        except OSError:
            continue
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            avail = min(avail, soft - _vm_size())
    except (ImportError, ValueError, OSError):
        pass
    return int(max(0, avail) * AVAILABLE_SHARE)


def _cgroup_usage(limit_path: str) -> int:
    usage = limit_path.replace("memory.max", "memory.current").replace("limit_in_bytes", "usage_in_bytes")
    try:
        with open(usage) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tile_candidates(device: str, tile_size: int | None, device_free: int | None = None) -> list[int]:
    """Tile edges to try, largest first: the given one alone, else the default and its halvings down to 64."""
    from kstar_utils.engine.layout import auto_tile_size

    if tile_size is not None:
        return [int(tile_size)]
    t = auto_tile_size(device, device_free) if device == "cuda" else auto_tile_size("cpu")
    out = []
    while t >= MIN_TILE:
        out.append(t)
        t = t // 2 // 64 * 64 if t > 128 else t // 2
    return out


def choose(req: Request, *, tile_size: int | None, memory_limit: int | None, device_free: int | None = None,
           what: str = "") -> MemoryPlan:
    """The plan with the largest tile that fits `memory_limit` (bytes; None: `available_bytes()`) and, on CUDA,
    `device_free`; InsufficientMemoryError (before any allocation) when none does."""
    limit = available_bytes() if memory_limit is None else int(memory_limit)
    plans = []
    for t in tile_candidates(req.device, tile_size, device_free):
        p = estimate(req, t)
        p = MemoryPlan(p.tile, p.host_bytes, p.device_bytes, p.parts, limit,
                       device_free if req.device == "cuda" else None)
        if p.fits():
            return p
        plans.append(p)
    raise InsufficientMemoryError(refusal(req, plans, limit, what, explicit=memory_limit is not None,
                                          tile_given=tile_size is not None), plans[-1] if plans else None)


def refusal(req: Request, plans: list, limit: int, what: str, *, explicit: bool, tile_given: bool) -> str:
    """The one-paragraph refusal: estimate, what is available, what to do."""
    best = min(plans, key=lambda p: p.host_bytes)
    src = "the memory_limit given" if explicit else "MemAvailable"
    n, m = req.n, req.n if req.m is None else req.m
    msg = (f"not enough memory for k* of {what or f'{n:,} x {req.dim:,} features'}: the estimated peak is "
           f"{best.describe()} at tile {best.tile}, but {limit / GB:.2f} GB is available ({src})")
    if req.device == "cuda" and best.device_limit is not None and best.device_bytes > best.device_limit:
        msg += (f"; on the GPU {best.device_bytes / GB:.2f} GB is needed and {best.device_limit / GB:.2f} GB is "
                f"free")
    hints = []
    if tile_given and len(plans) == 1:
        smaller = estimate(req, MIN_TILE)
        if smaller.host_bytes < best.host_bytes * 0.9:
            hints.append("a smaller tile_size (or none: it is then chosen to fit)")
    if req.kind != "f" or req.itemsize > 8:
        hints.append("float32 features (an integer input is first copied to float64)")
    if req.prep_copies == 3:
        hints.append("transforming the rows once yourself and passing float32 rows with metric='euclidean' "
                     "(cosine: L2-normalised rows; Mahalanobis: whitened rows)")
    if req.backend == "faiss":
        hints.append("backend='torch' (faiss keeps an N x C table)")
    hints.append(distributed_hint(req))
    return msg + ". Try: " + "; ".join(hints) + "."


def distributed_hint(req: Request) -> str:
    """How many workers of what size the distributed engine would need for the same request."""
    one = Request(**{**req.__dict__, "workers": 1, "device": req.device})
    need = worker_bytes(one, query_rows=min(req.n, 4096))
    return (f"the distributed engine (compute_kstar(..., client=...)), which needs workers with at least "
            f"{need / GB:.1f} GB each for one thread (any number of workers: each holds the whole set, "
            f"{prepared_bytes(one) / GB:.1f} GB, and computes blocks of 4,096 queries, "
            f"{block_bytes(one, 4096) / GB:.2f} GB per thread; more workers divide the time)")


def prepared_bytes(req: Request, *, input_copy: bool = True) -> int:
    """Estimated memory of the whole set prepared once on a worker (engine.run.PreparedSet): class-sorted float64
    rows, the kernel's pool operands, the bfloat16 pool side, per-row vectors, and (input_copy) the worker's own copy
    of the features (scattered; a memory-mapped file is read through the page cache instead). req.m: the pool (the
    set itself when None)."""
    m, d = (req.n if req.m is None else req.m), req.dim
    W, W16 = _width(d, 8, 2), _width(d, 32, 4)
    b = 8.0 * m * d + 48.0 * m
    kind = req.distance.kind
    if req.backend == "faiss" and kind == "sqeuclidean":
        b += 4.0 * m * d
    elif kind == "sqeuclidean":
        b += 4.0 * m * W + (4.0 * m * W16 + 64.0 * m if req.bf16 else 0.0)
    elif not (kind == "lp" and req.distance.p > 3):
        b += 4.0 * m * d
    if input_copy:
        b += float(req.itemsize) * d * (m + (0 if req.m is None else req.n))
    return int(b + 32e6)


def block_bytes(req: Request, rows: int, tile: int = 2048) -> int:
    """Estimated peak of one block of `rows` queries computed against a set prepared once (bytes, excluding
    `prepared_bytes`): the block's own operands, pass-1 table, tiles and candidates."""
    m = req.n if req.m is None else req.m
    sub = Request(n=min(rows, req.n), m=m, dim=req.dim, itemsize=req.itemsize, kind=req.kind,
                  distance=req.distance, prep_copies=0, backend=req.backend, impl=req.impl, bf16=req.bf16,
                  workers=req.workers, device=req.device, col_counts=req.col_counts, n_classes=req.n_classes,
                  block="rows" if req.m is None else "queries")
    return estimate(sub, tile).host_bytes


def worker_bytes(req: Request, query_rows: int, tile: int = 2048, *, threads: int = 1,
                 input_copy: bool = True) -> int:
    """Estimated peak of one worker holding the prepared set and computing `threads` blocks of `query_rows`
    queries at once (bytes)."""
    return prepared_bytes(req, input_copy=input_copy) + threads * block_bytes(req, query_rows, tile)


# -- reading a request from the caller's arrays, without converting them ------------------------------------------
def shape_dtype(x) -> tuple[tuple, int, str, bool]:
    """(shape, itemsize, numpy kind, is a CUDA tensor) of an array, tensor or sequence, without copying it (a Python
    sequence is converted, as validation would)."""
    if hasattr(x, "detach") and hasattr(x, "is_floating_point"):
        kind = "f" if x.is_floating_point() else ("b" if str(x.dtype) == "torch.bool" else "i")
        return tuple(x.shape), x.element_size(), kind, x.device.type == "cuda"
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        x = np.asarray(x)
    dt = np.dtype(x.dtype) if not isinstance(x.dtype, np.dtype) else x.dtype
    return tuple(x.shape), dt.itemsize, dt.kind, False


def class_counts(labels) -> tuple | None:
    """Class sizes of plain numeric or string labels in sorted class order (the engine's), or None when the labels
    are of a kind only full validation can read (then the plan uses a bound)."""
    try:
        y = labels.detach().cpu().numpy() if hasattr(labels, "detach") else labels
        if not isinstance(y, np.ndarray):
            return None
        if y.ndim != 1 or y.dtype.kind not in "iuUSb" or y.size == 0:
            return None
        return tuple(int(c) for c in np.unique(y, return_counts=True)[1])
    except Exception:  # noqa: BLE001 - anything unusual is left to validation, which names it
        return None


def request_for(features, labels, pool_features, pool_labels, *, distance: Distance, transformed: bool,
                backend: str, impl: str, bf16: bool, workers: int, device: str) -> Request | None:
    """The Request of a compute_kstar call, read from shapes and dtypes only; None when the shapes are not those of
    a valid call (validation then names the problem). transformed: the metric transforms the rows (cosine,
    Mahalanobis)."""
    shape, itemsize, kind, on_cuda = shape_dtype(features)
    if len(shape) != 2 or min(shape) < 1 or kind not in "fiub":
        return None
    m = None
    cc = class_counts(labels if pool_features is None else pool_labels)
    ncls = len(cc) if cc is not None else 2
    if pool_features is not None:
        pshape, pitem, pkind, pcuda = shape_dtype(pool_features)
        if len(pshape) != 2 or min(pshape) < 1 or pkind not in "fiub":
            return None
        m = pshape[0]
        itemsize, on_cuda = max(itemsize, pitem), on_cuda or pcuda
        kind = kind if kind == pkind else ("i" if "i" in (kind, pkind) else kind)
    plain = kind == "f" and itemsize in (4, 8) and backend != "numpy"
    copies = 3 if transformed else (0 if plain else 2)
    return Request(n=shape[0], m=m, dim=shape[1], itemsize=itemsize, kind=kind, distance=distance,
                   prep_copies=copies, backend=backend, impl=impl, bf16=bf16, workers=workers, device=device,
                   col_counts=cc, n_classes=max(2, ncls), tensor_on_cuda=on_cuda)


def bytes_text(b: float) -> str:
    return f"{b / GB:.2f} GB" if b >= 1e8 else f"{b / 1e6:.0f} MB"


__all__ = ["InsufficientMemoryError", "MemoryPlan", "Request", "available_bytes", "block_bytes", "choose", "estimate", "prepared_bytes",
           "distributed_hint", "request_for", "worker_bytes"]
