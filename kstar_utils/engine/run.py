"""Device / backend / tile selection and the two passes, on class-sorted data; results in the caller's order."""
from __future__ import annotations

import numpy as np

from kstar_utils.engine.bounds import screen_eps, screen_floor
from kstar_utils.engine.faiss_knn import faiss_available
from kstar_utils.engine.layout import SortedSet, auto_tile_size
from kstar_utils.engine.reference import SQEUCLIDEAN, Distance
from kstar_utils.engine.threads import exact_float32_matmul

BACKENDS = ("auto", "torch", "faiss")


def resolve_device(device=None):
    """The one device resolver of the workbook: None or "auto" -> cuda if available else cpu; "cpu", "cuda",
    "cuda:1" and torch.device accepted; ValueError for anything else, or for cuda where torch sees none."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda'; got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return dev


def _tile_for(dev, tile_size):
    if tile_size is not None:
        return int(tile_size)
    if dev.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(dev)
        return auto_tile_size("cuda", free)
    return auto_tile_size("cpu")


def kernel_impl(backend: str, dev, distance: Distance) -> str:
    """The difference kernels' library: faiss's L1 loop on the CPU for backend "auto" when faiss is installed (10x
    torch.cdist in benchmarks/RESULTS.md), faiss for backend "faiss", else torch."""
    if backend == "faiss" or (backend == "auto" and dev.type == "cpu" and faiss_available() and distance.kind == "l1"):
        return "faiss"
    return "torch"


def uses_bf16(screen: str, dev, distance: Distance, dim: int, backend: str) -> bool:
    """Whether pass 1 screens in bfloat16: squared Euclidean scores on the two-pass engine, screen "bf16", or "auto"
    where bfloat16 GEMMs are fast (passes.fast_bf16); D < 10^6 (bf16_bounds' relative slack)."""
    from kstar_utils.engine.passes import fast_bf16

    if distance.kind != "sqeuclidean" or backend not in ("auto", "torch") or dim > 10**6:
        return False
    return screen == "bf16" or (screen == "auto" and fast_bf16(dev))


def plan_run(features, labels, pool_features, pool_labels, *, distance: Distance, transformed: bool, backend: str,
             device, screen: str, tile_size, memory_limit, metric: str = ""):
    """The memory plan of a k* request (engine.memory.MemoryPlan: tile edge and estimated peak), from the arrays'
    shapes and dtypes alone, before anything is converted or allocated; None when the shapes are invalid (the
    validation that follows names the problem). Raises InsufficientMemoryError (a ValueError and a MemoryError) when
    no tile fits `memory_limit` (bytes; None: the memory available)."""
    import torch

    from kstar_utils.engine.memory import choose, request_for
    from kstar_utils.engine.threads import cpu_threads

    dev = resolve_device(device) if backend != "numpy" else torch.device("cpu")
    probe = request_for(features, labels, pool_features, pool_labels, distance=distance, transformed=transformed,
                        backend=backend, impl="torch", bf16=False, workers=1, device=dev.type)
    if probe is None:
        return None
    req = request_for(features, labels, pool_features, pool_labels, distance=distance, transformed=transformed,
                      backend="torch" if backend == "auto" else backend, impl=kernel_impl(backend, dev, distance),
                      bf16=uses_bf16(screen, dev, distance, probe.dim, backend),
                      workers=_workers(dev) if dev.type == "cpu" else 1, device=dev.type)
    free = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else None
    n_txt = f"{req.n:,}" if req.m is None else f"{req.n:,} queries against {req.m:,}"
    what = (f"{n_txt} x {req.dim:,} features ({metric or distance.kind}, backend {backend}, "
            f"{'bfloat16' if req.bf16 else 'float32'} screen, {max(1, min(cpu_threads(), req.workers))} thread(s))")
    return choose(req, tile_size=tile_size, memory_limit=memory_limit, device_free=free, what=what)


def run_engine(Xq, yq, Xp, yp, *, n_classes: int, device, backend: str, tile_size, progress, scale: int = 0,
               screen: str = "auto", distance: Distance = SQEUCLIDEAN) -> tuple[np.ndarray, np.ndarray]:
    """Raw k* (int64, (n,)) of queries Xq (n, D) with codes yq against pool Xp/yp (None: one set), and each query's
    nearest foreign sample (int64, (n,): its index in the pool, or in Xq for one set; the lowest among exact ties).

    Xq, Xp: float rows of the metric space; both are multiplied by 2**scale (exactly) while they are sorted, and the
    screens' error bounds assume the result lies in the canonical range of `method.metrics.scale_exponent` (largest
    magnitude below 2). distance: the score compared (engine.reference). backend: "auto"/"torch" (torch kernels; for
    l1 scores on the CPU, "auto" uses faiss's L1 loop when faiss is installed, 10x faster than torch.cdist in
    benchmarks/RESULTS.md; for lp faiss was slower there) or "faiss" (squared
    Euclidean: faiss k-NN searches as the screen; other scores: faiss's kernels in the two-pass engine).
    screen: the two-pass engine's pass-1 screen for squared Euclidean scores ("auto", "bf16", "float32").
    """
    from tqdm.auto import tqdm

    from kstar_utils.engine.kernels import make_kernel
    from kstar_utils.engine.passes import TwoPassEngine

    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    dev = resolve_device(device)
    T = _tile_for(dev, tile_size)
    dim = Xq.shape[1]
    floor = screen_floor(dim, distance)
    # without a screen (eps = 0) no bound is built from the norms, and ||x||_p^p of a large p can overflow float32
    norms = screen_eps(dim, distance) > 0.0
    rows = SortedSet.build(Xq, yq, n_classes, scale=scale, distance=distance, floor=floor, norms=norms)
    cols = rows if Xp is None else SortedSet.build(Xp, yp, n_classes, scale=scale, distance=distance, floor=floor,
                                                    norms=norms)
    if progress is None:
        progress = rows.n * cols.n >= 50_000 * 50_000
    if backend == "faiss" and not faiss_available():
        raise ValueError("backend='faiss' needs the faiss package (faiss-cpu, or faiss-gpu for CUDA)")
    impl = kernel_impl(backend, dev, distance)

    with exact_float32_matmul():
        if backend == "faiss" and distance.kind == "sqeuclidean":
            m, enemy, counts = _faiss_knn(rows, cols, dev, T, n_classes, progress, screen)
        else:
            kernel = make_kernel(rows, cols, distance, dev, _workers(dev), impl)
            eng = TwoPassEngine(rows, cols, kernel, tile=T, screen=screen)
            total = len(eng.pass1_tiles()) + len(eng.pass2_tiles())
            with tqdm(total=total, desc="k* tiles", unit="tile", disable=not progress) as bar:
                eng.bar = bar
                m, enemy = eng.nearest_foreign()
                counts = eng.count_closer(m)

    if not np.all(np.isfinite(m)) or (enemy < 0).any():  # every query has a foreign sample (>= 2 pool classes)
        raise RuntimeError("internal error: a sample has no nearest foreign sample")
    out = np.empty(rows.n, dtype=np.int64)
    out[rows.order] = 1 + counts
    nearest = np.empty(rows.n, dtype=np.int64)
    nearest[rows.order] = enemy
    return out, nearest


def _workers(dev) -> int:
    import torch

    return torch.get_num_threads() if dev.type == "cpu" else 1


def _faiss_knn(rows, cols, dev, T, n_classes, progress, screen):
    import faiss
    from tqdm.auto import tqdm

    from kstar_utils.engine.faiss_knn import FaissEngine
    from kstar_utils.engine.kernels import GemmKernel
    from kstar_utils.engine.passes import TwoPassEngine

    use_gpu = dev.type == "cuda"
    if use_gpu and faiss.get_num_gpus() == 0:
        raise ValueError("backend='faiss' on CUDA needs faiss-gpu; this faiss build has no GPU support")
    holder = {}

    def fallback():
        if "e" not in holder:
            holder["e"] = TwoPassEngine(rows, cols, GemmKernel(rows, cols, SQEUCLIDEAN, dev, _workers(dev)), tile=T,
                                        screen=screen)
        return holder["e"]

    eng = FaissEngine(rows, cols, eps=screen_eps(rows.X.shape[1]), use_gpu=use_gpu, fallback=fallback)
    with tqdm(total=2 * n_classes, desc="k* classes", unit="class", disable=not progress) as bar:
        eng.bar = bar
        m, enemy = eng.nearest_foreign()
        counts = eng.count_closer(m)
    return m, enemy, counts


class PreparedSet:
    """A labelled set made ready once for k* computed in blocks of queries against the whole of it.

    Holds the class-sorted float64 rows (SortedSet), the kernel's column side (pool operands and norms), and, for the
    bfloat16 screen, its column side: everything a block shares. A block then builds only its own rows' operands:
    `kstar_rows(s0, s1)` gives the k* of the set's own sorted rows s0:s1 against the whole set, self excluded (the
    one-set k*, block by block); `kstar_queries(Xq, yq)` the k* of other queries against the set as a pool.

    X: (n, D) float rows of the metric space (float16/32/64, e.g. a memory-mapped file: read in row blocks while
    sorting), codes (n,) class codes; scale, distance, device, backend, screen and tile as in `run_engine`; workers:
    tile threads per block (None: torch's thread count on the CPU).
    """

    def __init__(self, X, codes, n_classes: int, *, scale: int = 0, distance: Distance = SQEUCLIDEAN, device=None,
                 backend: str = "auto", screen: str = "auto", tile: int | None = None, workers: int | None = None):
        from kstar_utils.engine.kernels import pool_kernel

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        if backend == "faiss" and not faiss_available():
            raise ValueError("backend='faiss' needs the faiss package (faiss-cpu, or faiss-gpu for CUDA)")
        self.dev = resolve_device(device)
        self.T = _tile_for(self.dev, tile)
        self.distance, self.backend, self.screen, self.n_classes = distance, backend, screen, n_classes
        self.workers = workers or _workers(self.dev)
        dim = X.shape[1]
        floor = screen_floor(dim, distance)
        self.set = SortedSet.build(X, np.asarray(codes), n_classes, scale=scale, distance=distance, floor=floor,
                                   norms=screen_eps(dim, distance) > 0.0)
        self.scale = scale
        self.impl = kernel_impl(backend, self.dev, distance)
        self.knn = backend == "faiss" and distance.kind == "sqeuclidean"
        self.pool = None if self.knn else pool_kernel(self.set, distance, self.dev, self.workers, self.impl)
        self.pool_f32 = np.ascontiguousarray(self.set.X, dtype=np.float32) if self.knn else None
        self._bf16 = None

    @property
    def n(self) -> int:
        return self.set.n

    def _bf16_pool(self):
        """The bfloat16 screen's column side (bf16.pool_side), built on first use."""
        if self._bf16 is None:
            import types

            import torch

            from kstar_utils.engine.bf16 import pool_side
            from kstar_utils.engine.kernels import _augmented

            S, R = self.set, self.pool.R

            def rows_vs(it, j0, j1):  # the same left rows a whole run's kernel holds, for the sampled rows only
                left = _augmented(types.SimpleNamespace(X=S.X[it.cpu().numpy()]), self.dev, right=False)[0]
                return torch.mm(left, R[j0:j1].T)

            with exact_float32_matmul():
                self._bf16 = pool_side(S, rows_vs, self.dev, self.workers)
        return self._bf16

    def _block(self, rows: SortedSet, *, self_excluded: bool):
        """(k* (rows.n,) int64, enemy (rows.n,) int64 original index in the set), in the rows' (sorted) order."""
        from kstar_utils.engine.kernels import GemmKernel, make_kernel
        from kstar_utils.engine.passes import TwoPassEngine

        cols = self.set
        with exact_float32_matmul():
            if self.knn:
                from kstar_utils.engine.faiss_knn import FaissEngine

                import faiss

                use_gpu = self.dev.type == "cuda"
                if use_gpu and faiss.get_num_gpus() == 0:
                    raise ValueError("backend='faiss' on CUDA needs faiss-gpu; this faiss build has no GPU support")
                holder = {}

                def fallback():
                    if "e" not in holder:
                        holder["e"] = TwoPassEngine(rows, cols, GemmKernel(rows, cols, SQEUCLIDEAN, self.dev,
                                                                           self.workers), tile=self.T,
                                                    screen=self.screen)
                    return holder["e"]

                eng = FaissEngine(rows, cols, eps=screen_eps(rows.X.shape[1]), use_gpu=use_gpu, fallback=fallback,
                                  pool_f32=self.pool_f32)
                m, enemy = eng.nearest_foreign()
                counts = eng.count_closer(m)
            else:
                kernel = make_kernel(rows, cols, self.distance, self.dev, self.workers, self.impl, pool=self.pool)
                eng = TwoPassEngine(rows, cols, kernel, tile=self.T, screen=self.screen)
                if eng.use_bf16:
                    eng.bf16_pool = self._bf16_pool()
                m, enemy = eng.nearest_foreign()
                counts = eng.count_closer(m)
        if not np.all(np.isfinite(m)) or (enemy < 0).any():
            raise RuntimeError("internal error: a sample has no nearest foreign sample")
        if self_excluded:
            # each query is a row of the pool at score 0 from itself: counted exactly when 0 < m_p (the float64
            # decision of the pair (p, p)), i.e. whenever no foreign sample is an exact duplicate of p
            counts = counts - (m > 0)
        return 1 + counts, enemy

    def kstar_rows(self, s0: int, s1: int) -> tuple[np.ndarray, np.ndarray]:
        """k* of the set's sorted rows s0:s1 against the whole set, self excluded: equal, row for row, to the one-set
        k* of those rows. Returns (k* (s1 - s0,) int64, enemy (s1 - s0,) int64 original index), in sorted order
        (the original index of sorted row i is `self.set.order[i]`)."""
        if not 0 <= s0 < s1 <= self.n:
            raise ValueError(f"rows {s0}:{s1} are not a block of the {self.n} rows")
        return self._block(self.set.slice(s0, s1), self_excluded=True)

    def kstar_queries(self, Xq, yq) -> tuple[np.ndarray, np.ndarray]:
        """k* of queries Xq (n, D) with codes yq against the set as a pool (no self exclusion), in the queries'
        order: (k* (n,) int64, enemy (n,) int64 original index in the set)."""
        dim = self.set.X.shape[1]
        rows = SortedSet.build(Xq, np.asarray(yq), self.n_classes, scale=self.scale, distance=self.distance,
                               floor=screen_floor(dim, self.distance), norms=screen_eps(dim, self.distance) > 0.0)
        k, enemy = self._block(rows, self_excluded=False)
        out = np.empty(rows.n, dtype=np.int64)
        out[rows.order] = k
        nearest = np.empty(rows.n, dtype=np.int64)
        nearest[rows.order] = enemy
        return out, nearest

    # -- the one-set work in shares (a cluster's tasks; TwoPassEngine.restrict) -----------------------------------
    def _share_engine(self):
        from kstar_utils.engine.passes import TwoPassEngine

        if self.knn:
            raise ValueError("the faiss k-NN backend computes in blocks of queries (kstar_rows), not in shares")
        eng = TwoPassEngine(self.set, self.set, self.pool, tile=self.T, screen=self.screen)
        if eng.use_bf16:
            eng.bf16_pool = self._bf16_pool()
        return eng

    def nearest_share(self, tiles) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pass 1 over a share of the one-set tiles (passes.one_set_shares): (rows (k,) sorted positions, m (k,)
        float64, enemy (k,) original index) for the rows with a foreign sample in those tiles: the exact nearest
        among them, lowest index among ties. Minimum and tie rule over all shares give the whole set's."""
        eng = self._share_engine()
        eng.restrict(pass1=tiles)
        with exact_float32_matmul():
            m, enemy = eng.nearest_foreign()
        rows = np.flatnonzero(np.isfinite(m))
        return rows, m[rows], enemy[rows]

    def count_share(self, tiles, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pass 2 over a share of the same-class tiles with the whole set's m (float64, (n,), sorted order):
        (rows (k,), counts (k,)) of the rows with classmates closer than m_p in those tiles (self excluded). The
        sum over all shares is the whole set's count."""
        eng = self._share_engine()
        eng.restrict(pass2=tiles)
        with exact_float32_matmul():
            counts = eng.count_closer(np.asarray(m, dtype=np.float64))
        rows = np.flatnonzero(counts)
        return rows, counts[rows]
