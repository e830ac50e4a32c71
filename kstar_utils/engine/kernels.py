"""Screened-score kernels: the fast part of the two-pass engine, one per score kind and library.

A kernel computes screened scores g of blocks of rows against blocks of columns (torch tensors of `dtype` on the
engine's device) and carries the bound norms nr, nc and eps with |g - s| <= eps * (nr_p + nc_q) for the reference
score s (engine.bounds). The engine never looks inside a kernel:

- GemmKernel   squared Euclidean: one float32 GEMM of augmented rows per tile (torch BLAS / cuBLAS).
- DiffKernel   l1 / linf / lp: float32 difference loops, from faiss (fvec_L1 / fvec_Linf / Lp, CPU) or torch
               (torch.cdist for l1 and linf, chunked powers for lp).
- ExactKernel  lp beyond bounds.P_MAX_SCREEN: every score in float64 with the reference arithmetic (eps = 0).
"""
from __future__ import annotations

import numpy as np
import torch

from kstar_utils.engine.bounds import P_MAX_SCREEN, screen_eps
from kstar_utils.engine.layout import SortedSet
from kstar_utils.engine.reference import Distance
from kstar_utils.engine.threads import run_tiles

IMPLS = ("torch", "faiss")
_PAD = 8  # augmented width D + 2 rounded up to a multiple of 8 (friendlier to BLAS kernels)


class Kernel:
    """Base: the rows and columns (SortedSet, the same object in the one-set case), device, bound norms."""

    dtype = torch.float32
    parallel_tiles = True  # whole tiles may run on parallel threads (one intra-op thread each)

    def __init__(self, rows: SortedSet, cols: SortedSet, distance: Distance, device, workers: int,
                 pool: "Kernel | None" = None):
        self.rows, self.cols, self.distance = rows, cols, distance
        self.device = torch.device(device)
        self.workers = workers
        self.eps = screen_eps(rows.X.shape[1], distance)
        self.nr = torch.from_numpy(rows.sqnorm.astype(np.float32)).to(self.device)
        if pool is not None:  # the columns' side built once, shared by every block of queries (see make_kernel)
            self.nc = pool.nc
        else:
            self.nc = self.nr if rows is cols else torch.from_numpy(cols.sqnorm.astype(np.float32)).to(self.device)

    def tile(self, i0: int, i1: int, j0: int, j1: int) -> torch.Tensor:
        """Screened scores of rows[i0:i1] against cols[j0:j1]: (i1 - i0, j1 - j0)."""
        raise NotImplementedError

    def rows_vs(self, ridx: torch.Tensor, j0: int, j1: int) -> torch.Tensor:
        """Screened scores of the rows ridx (k,) against cols[j0:j1]: (k, j1 - j0)."""
        raise NotImplementedError


class GemmKernel(Kernel):
    """Squared Euclidean through one GEMM: left [a, n, 1, 0...] . right [-2a, 1, n, 0...] = n_p + n_q - 2 a_p.a_q,
    with a = fl32(x) and n = fl32(||a||^2) (summed in float64)."""

    def __init__(self, rows, cols, distance, device, workers, pool=None, *, left: bool = True):
        super().__init__(rows, cols, distance, device, workers, pool)
        if pool is not None:
            self.L, self.R = _augmented(rows, self.device, workers, right=False)[0], pool.R
        elif rows is cols:  # left=False: a pool's operands alone (queries come in blocks, with their own left)
            self.L, self.R = _augmented(rows, self.device, workers, left=left)
        else:  # only the sides the GEMMs read: the queries' left operand, the pool's right one
            self.L = _augmented(rows, self.device, workers, right=False)[0]
            self.R = _augmented(cols, self.device, workers, left=False)[1]
        self.gemm_threads = torch.get_num_threads()
        self.dim = rows.X.shape[1]

    def _left(self, rows_of_right: torch.Tensor) -> torch.Tensor:
        """Left rows [a, n, 1, 0...] from right rows [-2a, 1, n, 0...] (exact: -2a times -1/2 is a), for a kernel
        built with the right operand alone."""
        d = self.dim
        out = torch.zeros_like(rows_of_right)
        torch.mul(rows_of_right[:, :d], -0.5, out=out[:, :d])
        out[:, d] = rows_of_right[:, d + 1]
        out[:, d + 1] = 1.0
        return out

    def tile(self, i0, i1, j0, j1):
        left = self.L[i0:i1] if self.L is not None else self._left(self.R[i0:i1])
        if self.device.type == "cpu" and self.workers <= 1 and (i1 - i0) * (j1 - j0) * left.shape[1] >= 1 << 28:
            torch.set_num_threads(self.gemm_threads)  # the GEMM scales; the cheap passes around it run on one thread
            try:
                return torch.mm(left, self.R[j0:j1].T)
            finally:
                torch.set_num_threads(1)
        return torch.mm(left, self.R[j0:j1].T)

    def rows_vs(self, ridx, j0, j1):
        left = self.L.index_select(0, ridx) if self.L is not None else self._left(self.R.index_select(0, ridx))
        return torch.mm(left, self.R[j0:j1].T)


def _augmented(S: SortedSet, device, workers: int = 1, *, left: bool = True,
               right: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Left [a, n, 1, 0...] and right [-2a, 1, n, 0...] (n, W) float32, so left_p . right_q = n_p + n_q - 2 a_p.a_q.

    a = fl32(x); n = fl32(||a||^2) summed in float64. Built in row blocks (cache-sized, on `workers` threads); a side
    not asked for is None.
    """
    n, d = S.X.shape
    width = (d + 2 + _PAD - 1) // _PAD * _PAD
    lt = np.zeros((n, width), dtype=np.float32) if left else None
    rt = np.zeros((n, width), dtype=np.float32) if right else None

    def block(s):
        e = min(n, s + 1024)
        a = S.X[s:e].astype(np.float32)
        b = a.astype(np.float64)  # float64 squares of float32 values are exact
        n32 = np.einsum("ij,ij->i", b, b).astype(np.float32)
        if lt is not None:
            lt[s:e, :d] = a
            lt[s:e, d], lt[s:e, d + 1] = n32, 1.0
        if rt is not None:
            np.multiply(a, -2.0, out=rt[s:e, :d])  # exact scaling by a power of two
            rt[s:e, d], rt[s:e, d + 1] = 1.0, n32

    run_tiles(list(range(0, n, 1024)), block, workers)
    return (None if lt is None else torch.from_numpy(lt).to(device),
            None if rt is None else torch.from_numpy(rt).to(device))


class DiffKernel(Kernel):
    """l1 / linf / lp scores from float32 differences (faiss's or torch's loops)."""

    def __init__(self, rows, cols, distance, device, workers, impl: str = "torch", pool=None):
        super().__init__(rows, cols, distance, device, workers, pool)
        if impl not in IMPLS:
            raise ValueError(f"unknown kernel implementation {impl!r}; choose one of {list(IMPLS)}")
        if impl == "faiss" and self.device.type != "cpu":
            impl = "torch"  # faiss's extra metrics run on the CPU only
        self.impl = impl
        self.A = np.ascontiguousarray(rows.X, dtype=np.float32)
        if pool is not None:
            self.B = pool.B
        else:
            self.B = self.A if rows is cols else np.ascontiguousarray(cols.X, dtype=np.float32)
        if impl == "torch":
            self.At = torch.from_numpy(self.A).to(self.device)
            if pool is not None:
                self.Bt = pool.Bt
            else:
                self.Bt = self.At if rows is cols else torch.from_numpy(self.B).to(self.device)
        else:
            import faiss

            self.faiss = faiss
            self.parallel_tiles = False  # faiss spreads each call over its own OpenMP threads
            self.metric = {"l1": faiss.METRIC_L1, "linf": faiss.METRIC_Linf, "lp": faiss.METRIC_Lp}[distance.kind]

    def _scores(self, a_np: np.ndarray, a_t, j0: int, j1: int) -> torch.Tensor:
        if self.impl == "faiss":
            out = self.faiss.pairwise_distances(a_np, self.B[j0:j1], self.metric,
                                                float(self.distance.p) if self.distance.kind == "lp" else 0.0)
            return torch.from_numpy(out)
        b = self.Bt[j0:j1]
        if self.distance.kind == "l1":
            return torch.cdist(a_t, b, p=1.0)
        if self.distance.kind == "linf":
            return torch.cdist(a_t, b, p=float("inf"))
        out = torch.zeros((a_t.shape[0], b.shape[0]), dtype=torch.float32, device=self.device)
        step = max(1, (1 << 22) // max(1, a_t.shape[0] * b.shape[0]))  # bound the (rows, cols, step) temporary
        for s in range(0, a_t.shape[1], step):
            out += (a_t[:, None, s : s + step] - b[None, :, s : s + step]).abs().pow(self.distance.p).sum(-1)
        return out

    def tile(self, i0, i1, j0, j1):
        return self._scores(self.A[i0:i1], None if self.impl == "faiss" else self.At[i0:i1], j0, j1)

    def rows_vs(self, ridx, j0, j1):
        if self.impl == "faiss":
            return self._scores(self.A[ridx.cpu().numpy()], None, j0, j1)
        return self._scores(None, self.At.index_select(0, ridx), j0, j1)


class ExactKernel(Kernel):
    """Reference float64 scores (lp with p > P_MAX_SCREEN, where a float32 screen costs more than it saves)."""

    dtype = torch.float64

    def __init__(self, rows, cols, distance, device, workers, pool=None):
        super().__init__(rows, cols, distance, device, workers, pool)
        self.eps = 0.0

    def _block(self, ridx: np.ndarray, j0: int, j1: int) -> torch.Tensor:
        out = np.empty((ridx.shape[0], j1 - j0))
        step = max(1, (1 << 22) // max(1, (j1 - j0) * self.rows.X.shape[1]))
        for s in range(0, ridx.shape[0], step):
            out[s : s + step] = self.distance.block(self.rows.X[ridx[s : s + step]], self.cols.X[j0:j1])
        return torch.from_numpy(out).to(self.device)

    def tile(self, i0, i1, j0, j1):
        return self._block(np.arange(i0, i1), j0, j1)

    def rows_vs(self, ridx, j0, j1):
        return self._block(ridx.cpu().numpy(), j0, j1)


def make_kernel(rows: SortedSet, cols: SortedSet, distance: Distance, device, workers: int, impl: str,
                pool: Kernel | None = None) -> Kernel:
    """The kernel for `distance`: GEMM for squared Euclidean, difference loops (faiss or torch) otherwise.

    pool: a kernel of `cols` against itself made by `pool_kernel`, whose column side (operands, norms) is reused:
    a block of queries then builds only its own rows' operands."""
    if distance.kind == "sqeuclidean":
        return GemmKernel(rows, cols, distance, device, workers, pool)
    if distance.kind == "lp" and distance.p > P_MAX_SCREEN:
        return ExactKernel(rows, cols, distance, device, workers, pool)
    return DiffKernel(rows, cols, distance, device, workers, impl=impl, pool=pool)


def pool_kernel(cols: SortedSet, distance: Distance, device, workers: int, impl: str) -> Kernel:
    """The column side of `make_kernel` for the set `cols`, built once (the GEMM's right operand only)."""
    if distance.kind == "sqeuclidean":
        return GemmKernel(cols, cols, distance, device, workers, left=False)
    return make_kernel(cols, cols, distance, device, workers, impl)
