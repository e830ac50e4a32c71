"""Exact k* on a Dask cluster: the queries in blocks, each block computed on a worker against the whole set.

`run_distributed` is what `compute_kstar(..., client=...)` runs. The set reaches every worker once: scattered with
broadcast (one copy per worker process), or, for a memory-mapped ``.npy`` whose rows need no transform, opened by
each worker from the same file. Each worker process prepares the set once (`engine.run.PreparedSet`: class-sorted
float64 rows, the kernel's pool operands, the bfloat16 pool side) and computes blocks of class-sorted rows against
it, self excluded (`PreparedSet.kstar_rows`), or, with a separate pool, blocks of queries against the pool
(`PreparedSet.kstar_queries`). For one set (not the faiss k-NN backend) the blocks give way to shares of the local
engine's own tiles (`run_distributed`, mode "shares"): the upper triangle of the class-sorted tile grid, shared out
by pairs of block groups, so each distance tile serves its rows and its columns as on one machine, in two rounds
(`PreparedSet.nearest_share`, then `count_share` with the merged minima). Every decision is the engine's float64
decision, so the result equals the local one element for element, the lowest-index nearest enemy included.

Blocks are sized from the workers' memory (the plan of engine.memory: the prepared set plus one block per worker
thread must fit each worker's memory limit); a request that fits no block size is refused before anything is sent,
saying what size of worker it needs. A block whose worker is lost is recomputed by Dask (the scheduler reschedules a
lost worker's tasks; `retries` re-runs a block that raised); every block is checked to have come back exactly once,
and every row to be covered exactly once, so nothing is silently missing.
"""
from __future__ import annotations

import contextlib
import os
import threading
import uuid

import numpy as np

from kstar_utils.engine.memory import GB, InsufficientMemoryError, Request, block_bytes, prepared_bytes
from kstar_utils.engine.reference import SQEUCLIDEAN, Distance

# share of a worker's memory limit the plan may fill: Dask pauses a worker at 80 % and restarts it at 95 %
WORKER_SHARE = 0.8
MIN_BLOCK = 256
MAX_BLOCK = 65536

_PREPARED: dict = {}  # per worker process: token -> PreparedSet (built by the first block that needs it)
_LOCK = threading.Lock()


# -- on the workers ---------------------------------------------------------------------------------------------------
_HEAP = {"depth": 0}
_HEAP_LOCK = threading.Lock()


@contextlib.contextmanager
def heap_reuse():
    """Let glibc reuse freed memory while a share or block runs, then give it back.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (so that freed memory shows in its reports); any
    such setting also fixes glibc's mmap threshold at 128 kB, so every tile and temporary of the engine becomes a
    fresh mapping, zero-filled page by page: measured, that made k* 35-65 % slower in CPU time (N = 20k, D = 768).
    Inside the block the thresholds are raised (mallopt); afterwards they are set back from the environment and the
    heap is trimmed, so the worker's memory reports stay right. A no-op where mallopt is unavailable."""
    lib = _libc()
    if lib is None:
        yield
        return
    with _HEAP_LOCK:
        if _HEAP["depth"] == 0:
            lib.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD (capped by glibc at 32 MB on 64-bit)
            lib.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        _HEAP["depth"] += 1
    try:
        yield
    finally:
        with _HEAP_LOCK:
            _HEAP["depth"] -= 1
            if _HEAP["depth"] == 0:
                lib.mallopt(-3, int(os.environ.get("MALLOC_MMAP_THRESHOLD_", 128 * 1024)))
                lib.mallopt(-1, int(os.environ.get("MALLOC_TRIM_THRESHOLD_", 128 * 1024)))
                lib.malloc_trim(0)


def _libc():
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        lib.mallopt, lib.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return lib


def _open(data):
    """The array a block reads: a scattered array as is, or a memory-mapped file opened read-only."""
    if isinstance(data, dict):
        try:
            return np.memmap(data["path"], dtype=np.dtype(data["dtype"]), mode="r", offset=data["offset"],
                             shape=tuple(data["shape"]), order="C")
        except (OSError, ValueError) as e:
            import socket

            raise ValueError(f"worker on {socket.gethostname()} cannot read the features file {data['path']}: {e}; "
                             f"the workers read memory-mapped features from the same path (a shared filesystem), "
                             f"or pass the features as an in-memory array") from None
    return data


def _prepared(token: str, data, codes, spec: dict):
    from kstar_utils.engine.run import PreparedSet

    with _LOCK:
        p = _PREPARED.get(token)
        if p is None:
            p = PreparedSet(_open(data), codes, spec["n_classes"], scale=spec["scale"], distance=spec["distance"],
                            device=spec["device"], backend=spec["backend"], screen=spec["screen"], tile=spec["tile"],
                            workers=spec["workers"])
            _PREPARED[token] = p
    return p


def _block(token: str, data, codes, spec: dict, queries, query_codes, index: int, start: int, stop: int, rows=None):
    """One block: (index, original row indices (b,), k* (b,), nearest enemy (b,)). One set: the class-sorted rows
    start:stop, self excluded; a pool: the queries `rows` (class-sorted for locality)."""
    with heap_reuse():
        p = _prepared(token, data, codes, spec)
        if queries is None:
            k, enemy = p.kstar_rows(start, stop)
            return index, p.set.order[start:stop].copy(), k, enemy
        Xq = np.asarray(_open(queries)[rows])
        k, enemy = p.kstar_queries(Xq, np.asarray(query_codes)[rows])
        return index, rows, k, enemy


def _share1(token: str, data, codes, spec: dict, index: int, tiles):
    """Pass 1 over one share of the one-set tiles: (index, rows, m, enemy, original index of the rows)."""
    with heap_reuse():
        p = _prepared(token, data, codes, spec)
        rows, m, enemy = p.nearest_share(tiles)
        return index, rows, m, enemy, p.set.order[rows]


def _share2(token: str, data, codes, spec: dict, index: int, tiles, m):
    """Pass 2 over one share of the same-class tiles: (index, rows, counts)."""
    with heap_reuse():
        p = _prepared(token, data, codes, spec)
        rows, counts = p.count_share(tiles, m)
        return index, rows, counts


def _auto_tile(device) -> int:
    from kstar_utils.engine.run import _tile_for, resolve_device

    return _tile_for(resolve_device(device), None)


def _forget(token: str) -> None:
    with _LOCK:
        _PREPARED.pop(token, None)
    import gc

    gc.collect()


def _worker_memory() -> dict:
    """This worker process's resident memory and the host's available memory (bytes)."""
    import psutil

    from kstar_utils.engine.memory import available_bytes

    return {"rss": psutil.Process().memory_info().rss, "available": available_bytes()}


# -- on the client ----------------------------------------------------------------------------------------------------
def _client(client):
    """(Client, whether it was made here): a dask.distributed Client as is, or a scheduler address connected to."""
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - the environment ships distributed
        raise ValueError("client= needs the dask.distributed package") from None
    if isinstance(client, Client):
        return client, False
    if isinstance(client, str):
        try:
            return Client(client, timeout="30s"), True
        except (OSError, TimeoutError) as e:
            raise ValueError(f"cannot connect to the Dask scheduler at {client!r}: {e}") from None
    raise ValueError(f"client must be a dask.distributed.Client or a scheduler address; got {type(client).__name__}")


def memmap_source(X) -> dict | None:
    """Where the rows of X lie in a file, when X is (a C-contiguous view of) a read-only memory map, e.g.
    np.load(path, mmap_mode="r") or rows a:b of one: {path, offset, dtype, shape}, as the workers open it. None for
    anything else (an in-memory array, a copy, a strided view), which is scattered instead."""
    import mmap

    b = X
    while b is not None and not isinstance(b, np.memmap):  # np.asarray(memmap) is a plain view of it
        b = getattr(b, "base", None)
    if b is None or getattr(b, "filename", None) is None or getattr(b, "_mmap", None) is None:
        return None
    if not isinstance(X, np.ndarray) or not X.flags.c_contiguous or X.ndim != 2 or X.dtype.kind != "f":
        return None
    try:
        start = np.frombuffer(b._mmap, dtype=np.uint8).__array_interface__["data"][0]
    except (TypeError, ValueError):
        return None
    # np.memmap maps the file from `offset` rounded down to the allocation granularity
    where = b.offset - b.offset % mmap.ALLOCATIONGRANULARITY + (X.__array_interface__["data"][0] - start)
    src = {"path": str(b.filename), "offset": int(where), "dtype": X.dtype.str, "shape": list(X.shape)}
    try:
        Y = _open(src)
    except ValueError:
        return None
    if Y.shape != X.shape or not (np.array_equal(Y[:1], X[:1]) and np.array_equal(Y[-1:], X[-1:])):
        return None  # not the bytes it seemed to be: send the array instead
    return src


def plan_blocks(req: Request, workers: dict, *, memory_limit: int | None, block_rows: int | None,
                input_copy: bool, rss: dict | None = None, largest: bool = False) -> int:
    """Rows per block: the largest that lets every worker hold the prepared set and one block per thread within
    WORKER_SHARE of its memory limit (or `memory_limit` bytes per worker), then no larger than needed to give each
    worker thread two blocks (largest=True: the largest that fits); InsufficientMemoryError naming the worker size
    the request needs when none fits. workers: the scheduler's {address: info} (memory_limit, nthreads); rss:
    {address: {"rss", "available"}}."""
    n = req.n
    threads = {a: max(1, int(w.get("nthreads", 1))) for a, w in workers.items()}
    total_threads = sum(threads.values())
    fixed = prepared_bytes(req, input_copy=input_copy)
    sizes = [b for b in (MAX_BLOCK >> i for i in range(9)) if b < n] + [n]
    sizes = sorted({min(n, b) for b in sizes if b >= min(n, MIN_BLOCK)}, reverse=True)

    def budget(addr):
        w = workers[addr]
        lim = memory_limit or int(w.get("memory_limit") or 0)
        info = (rss or {}).get(addr, {})
        if not lim:  # no limit set: the host's available memory (read on the worker)
            return int(info.get("available", 0)) or None
        return int(lim * WORKER_SHARE) - int(info.get("rss", 0))

    budgets = {a: budget(a) for a in workers}
    fits = None
    for b in ([block_rows] if block_rows else sizes):
        need = {a: fixed + threads[a] * block_bytes(req, b) for a in workers}
        if all(budgets[a] is None or need[a] <= budgets[a] for a in workers):
            fits = b
            break
    if fits is None:
        b = sizes[-1] if not block_rows else block_rows
        one = fixed + block_bytes(req, b)
        lims = sorted({(budgets[a] or 0) for a in workers})
        raise InsufficientMemoryError(
            f"the cluster's workers cannot hold this k* ({n:,} x {req.dim:,}): each worker needs at least "
            f"{one / GB:.2f} GB for one thread ({fixed / GB:.2f} GB for the whole set, which every worker holds, "
            f"plus {block_bytes(req, b) / GB:.2f} GB per concurrent block of {b:,} queries), and "
            f"{max(threads.values())} thread(s) per worker need {(fixed + max(threads.values()) * block_bytes(req, b)) / GB:.2f} GB; "
            f"the workers can use {', '.join(f'{x / GB:.2f}' for x in lims)} GB ({WORKER_SHARE:.0%} of their memory "
            f"limit less what they hold). Start workers with more memory (dask worker --memory-limit) or fewer "
            f"threads; any number of such workers will do (more workers divide the time)")
    if block_rows:
        return int(min(n, block_rows))
    if largest:
        return int(fits)
    # at least two blocks per worker thread, for balance and so that a lost worker costs little
    return int(max(min(n, MIN_BLOCK), min(fits, -(-n // (2 * total_threads)))))


MODE = "auto"  # "shares" (one set, symmetric), "blocks" (queries against the whole set) or "auto"


def run_distributed(Xq, yq, Xp, yp, *, n_classes: int, client, device=None, backend: str = "auto", tile_size=None,
                    progress=None, scale: int = 0, screen: str = "auto", distance: Distance = SQEUCLIDEAN,
                    memory_limit: int | None = None, block_rows: int | None = None, retries: int = 2,
                    mode: str | None = None):
    """Raw k* (int64, (n,)) and nearest enemies (int64, (n,)) as `run_engine` returns them, computed on a Dask
    cluster. Xq (n, D) rows with codes yq; Xp / yp: a separate pool, or None (one set). client: a
    dask.distributed Client or a scheduler address. memory_limit: bytes per worker (None: each worker's own limit);
    block_rows: rows per block (None: planned).

    mode (None: MODE): "blocks": blocks of queries, each against the whole set (self excluded) or the pool: every
    distance tile is computed for its rows only, about twice the arithmetic of the local one-set engine; "shares"
    (one set, not the faiss k-NN backend): the local engine's own tiles (the upper triangle) shared out by pairs of
    block groups, each tile serving its rows and its columns, in two rounds (nearest foreign samples, merged with the
    lowest-index tie rule; then the counts, summed); "auto": shares where they apply, else blocks."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    from kstar_utils.engine.memory import shape_dtype
    from kstar_utils.engine.run import kernel_impl, uses_bf16

    if backend not in ("auto", "torch", "faiss"):
        raise ValueError(f"backend {backend!r} does not run on a cluster; choose 'auto', 'torch' or 'faiss'")
    if block_rows is not None and (not isinstance(block_rows, (int, np.integer)) or block_rows < 1):
        raise ValueError(f"block_rows must be a positive integer; got {block_rows!r}")
    cl, own = _client(client)
    token = uuid.uuid4().hex
    futures = []
    try:
        workers = cl.scheduler_info(n_workers=-1)["workers"] if _takes_n_workers(cl) else cl.scheduler_info()["workers"]
        if not workers:
            raise ValueError("the Dask cluster has no workers")
        import torch

        dev_type = "cuda" if (device is not None and "cuda" in str(device)) else "cpu"
        one_set = Xp is None
        S, Sc = (Xq, yq) if one_set else (Xp, yp)
        _, itemsize, _, _ = shape_dtype(S)
        src = memmap_source(S)
        qsrc = None if one_set else memmap_source(Xq)
        dev = torch.device(dev_type)
        req = Request(n=Xq.shape[0], m=None if one_set else Xp.shape[0], dim=S.shape[1], itemsize=itemsize,
                      distance=distance, backend="torch" if backend == "auto" else backend,
                      impl=kernel_impl(backend, dev, distance),
                      bf16=uses_bf16(screen, dev, distance, S.shape[1], backend) if dev_type == "cpu" else
                      distance.kind == "sqeuclidean" and screen != "float32",
                      workers=1, device=dev_type,
                      col_counts=tuple(np.bincount(Sc, minlength=n_classes).tolist()), n_classes=n_classes)
        mode = mode or MODE
        knn = backend == "faiss" and distance.kind == "sqeuclidean"
        if mode not in ("auto", "blocks", "shares"):
            raise ValueError(f"unknown mode {mode!r}; choose 'auto', 'blocks' or 'shares'")
        if mode == "shares" and (not one_set or knn):
            raise ValueError("mode='shares' needs one set and the two-pass engine (not the faiss k-NN backend)")
        shares = mode == "shares" or (mode == "auto" and one_set and not knn)
        rss = cl.run(_worker_memory)
        b = plan_blocks(req, workers, memory_limit=memory_limit, block_rows=block_rows,
                        input_copy=src is None, rss=rss, largest=shares)
        # one tile edge for the client and every worker: the shares are made of the engine's own tiles
        tile = int(tile_size) if tile_size is not None else min(cl.run(_auto_tile, device).values())
        spec = dict(n_classes=n_classes, scale=scale, distance=distance, device=device, backend=backend,
                    screen=screen, tile=tile, workers=None)
        # the set reaches each worker once: broadcast now, or read by each worker from its file
        data = src if src is not None else cl.scatter(np.ascontiguousarray(S), broadcast=True, hash=False)
        codes = cl.scatter(np.asarray(Sc, dtype=np.int64), broadcast=True, hash=False)
        show = progress if progress is not None else Xq.shape[0] * S.shape[0] >= 50_000 ** 2
        if shares:
            threads = sum(max(1, int(w.get("nthreads", 1))) for w in workers.values())
            return _run_shares(cl, token, futures, data, codes, spec, np.asarray(Sc, dtype=np.int64), tile,
                               threads=threads, rows_per_share=b, retries=retries, show=show,
                               n_workers=len(workers))
        queries = qcodes = None
        n = Xq.shape[0]
        if not one_set:
            queries = qsrc if qsrc is not None else cl.scatter(np.ascontiguousarray(Xq), broadcast=True, hash=False)
            qcodes = cl.scatter(np.asarray(yq, dtype=np.int64), broadcast=True, hash=False)
            order = np.argsort(yq, kind="stable")
        bounds = [(s, min(n, s + b)) for s in range(0, n, b)]
        for i, (s0, s1) in enumerate(bounds):
            futures.append(cl.submit(_block, token, data, codes, spec, queries, qcodes, i, s0, s1,
                                     None if one_set else order[s0:s1], key=f"kstar-block-{i}-{token}", pure=False,
                                     retries=retries))
        k = np.zeros(n, dtype=np.int64)
        enemy = np.full(n, -1, dtype=np.int64)
        seen = np.zeros(len(bounds), dtype=np.int64)
        covered = np.zeros(n, dtype=np.int64)
        with tqdm(total=len(bounds), desc=f"k* blocks ({len(workers)} workers)", unit="block",
                  disable=not show) as bar:
            for fut, (i, rows, kb, eb) in as_completed(futures, with_results=True):
                s0, s1 = bounds[i]
                if len(rows) != s1 - s0 or kb.shape != (s1 - s0,) or eb.shape != (s1 - s0,):
                    raise RuntimeError(f"k* block {i} came back with {len(rows)} rows instead of {s1 - s0}")
                seen[i] += 1
                np.add.at(covered, rows, 1)
                k[rows] = kb
                enemy[rows] = eb
                bar.update(1)
        if (seen != 1).any() or (covered != 1).any():
            bad = np.flatnonzero(seen != 1)
            raise RuntimeError(f"k* blocks missing or repeated: {bad[:10].tolist()} (of {len(bounds)}); rows covered "
                               f"other than once: {int((covered != 1).sum())}")
        return k, enemy
    finally:
        if futures:
            cl.cancel(futures)
        try:
            cl.run(_forget, token)  # each worker drops its prepared set
        except Exception:  # noqa: BLE001 - a cluster that is going down keeps nothing to forget
            pass
        if own:
            cl.close()


def _run_shares(cl, token, futures, data, codes, spec, y, tile: int, *, threads: int, rows_per_share: int,
                retries: int, show: bool, n_workers: int):
    """The one-set engine's tiles in shares on the cluster (module docstring; TwoPassEngine.restrict)."""
    from distributed import as_completed
    from tqdm.auto import tqdm

    from kstar_utils.engine.passes import one_set_shares

    n = y.shape[0]
    order = np.argsort(y, kind="stable")  # as SortedSet.build sorts: checked against the workers' below
    # groups: enough pairs for every worker thread to take several, few enough rows for a share to fit a worker
    balance = int(np.ceil((np.sqrt(1 + 24 * threads) - 1) / 2))
    groups = max(1, balance, -(-2 * n // max(1, rows_per_share)))
    p1, p2 = one_set_shares(y[order], spec["n_classes"], tile, groups, 2 * threads)
    m = np.full(n, np.inf)
    enemy = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    seen1 = np.zeros(len(p1), dtype=np.int64)
    with tqdm(total=len(p1) + len(p2), desc=f"k* shares ({n_workers} workers)", unit="share", disable=not show) as bar:
        for i, tiles in enumerate(p1):
            futures.append(cl.submit(_share1, token, data, codes, spec, i, tiles, key=f"kstar-share1-{i}-{token}",
                                     pure=False, retries=retries))
        for _, (i, rows, mm, ee, orig) in as_completed(futures, with_results=True):
            if not np.array_equal(orig, order[rows]):
                raise RuntimeError("a worker sorted the set differently from the client")
            seen1[i] += 1
            # the exact minimum over all shares, and among the shares attaining it the lowest index
            better = (mm < m[rows]) | ((mm == m[rows]) & (ee < enemy[rows]))
            m[rows[better]] = mm[better]
            enemy[rows[better]] = ee[better]
            bar.update(1)
        if (seen1 != 1).any() or not np.isfinite(m).all():
            raise RuntimeError(f"k* pass-1 shares missing or repeated: {np.flatnonzero(seen1 != 1)[:10].tolist()} "
                               f"(of {len(p1)}); rows without a nearest foreign sample: {int((~np.isfinite(m)).sum())}")
        cl.cancel(futures)
        futures.clear()
        mf = cl.scatter(m, broadcast=True, hash=False)
        counts = np.zeros(n, dtype=np.int64)
        seen2 = np.zeros(len(p2), dtype=np.int64)
        for i, tiles in enumerate(p2):
            futures.append(cl.submit(_share2, token, data, codes, spec, i, tiles, mf, key=f"kstar-share2-{i}-{token}",
                                     pure=False, retries=retries))
        for _, (i, rows, c) in as_completed(futures, with_results=True):
            seen2[i] += 1
            counts[rows] += c
            bar.update(1)
        if (seen2 != 1).any():
            raise RuntimeError(f"k* pass-2 shares missing or repeated: {np.flatnonzero(seen2 != 1)[:10].tolist()} "
                               f"(of {len(p2)})")
    k = np.empty(n, dtype=np.int64)
    k[order] = 1 + counts
    nearest = np.empty(n, dtype=np.int64)
    nearest[order] = enemy
    return k, nearest


def _takes_n_workers(cl) -> bool:
    import inspect

    return "n_workers" in inspect.signature(cl.scheduler_info).parameters
