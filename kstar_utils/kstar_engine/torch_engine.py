"""Tiled two-pass k* engine on torch (CPU BLAS or CUDA), exact via float64 re-decision (see exact.py).

Pass 1 (nearest foreign distance m_p): T x T float32 tiles of the class-sorted set, only the upper triangle in the
one-set case (each foreign tile updates both its rows' and its columns' bounds). Same-class rectangles of a tile are
set to +inf; tiles inside one class are skipped. Per tile: one GEMM of augmented rows (the norms ride along, so the
GEMM returns ||a||^2 + ||b||^2 - 2ab directly), one row-min and one column-min. Only rows/columns whose tile minimum
can still reach their upper bound are scanned for candidates, which are then evaluated in float64.

Pass 2 (count of classmates strictly closer than m_p): only same-class blocks, again the upper triangle. Entries
clearly below / above m_p are counted / dropped on the device; the thin band in between is re-decided in float64.

Memory: the float64 set on the host, two float32 augmented copies (N x (D + 8)) on the device, O(T^2) per tile.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from .exact import check_screen, pair_sq_distances
from .layout import SortedSet

_PAD = 8  # augmented width D + 2 rounded up to a multiple of 8 (friendlier to BLAS kernels)


@contextmanager
def exact_float32_matmul():
    """True float32 GEMMs (no TF32 / bf16) while the engine runs; the error bound depends on it."""
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_float32_matmul_precision(prev)


def _augmented(S: SortedSet, device, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Left: [a, n, 1, 0...]; right: [-2a, 1, n, 0...], so left_p . right_q = n_p + n_q - 2 a_p.a_q.

    a = fl32(x) (n, D); n = fl32(||a||^2) computed in float64. Returns (augmented (n, W) float32, n64 as float32 (n,)).
    """
    a = S.X.astype(np.float32)
    a64 = a.astype(np.float64)
    n32 = np.einsum("ij,ij->i", a64, a64).astype(np.float32)
    d = a.shape[1]
    width = (d + 2 + _PAD - 1) // _PAD * _PAD
    M = np.zeros((a.shape[0], width), dtype=np.float32)
    if left:
        M[:, :d] = a
        M[:, d] = n32
        M[:, d + 1] = 1.0
    else:
        M[:, :d] = -2.0 * a  # exact scaling by a power of two
        M[:, d] = 1.0
        M[:, d + 1] = n32
    bound_norm = torch.from_numpy(S.sqnorm.astype(np.float32)).to(device)
    return torch.from_numpy(M).to(device), bound_norm


def _scatter_min(target: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    np.minimum.at(target, idx, vals)


class TorchEngine:
    """k* of `rows` against `cols` (the same SortedSet object in the one-set case, self excluded).

    rows, cols: SortedSet; eps: screen bound (exact.screen_eps); tile: T; bar: tqdm-like or None.
    """

    def __init__(self, rows: SortedSet, cols: SortedSet, *, device, tile: int, eps: float, bar=None):
        self.rows, self.cols = rows, cols
        self.symmetric = rows is cols
        self.device = torch.device(device)
        self.T = int(tile)
        self.eps = float(eps)
        self.bar = bar
        self.L, self.nr = _augmented(rows, self.device, left=True)
        if self.symmetric:
            self.R, self.nc = _augmented(cols, self.device, left=False)
        else:
            self.R, self.nc = _augmented(cols, self.device, left=False)
        self._screen_checked = False

    # -- tile bookkeeping -------------------------------------------------------------------------------------------
    def pass1_tiles(self) -> list[tuple[int, int, int, int]]:
        rows, cols, T = self.rows, self.cols, self.T
        tiles = []
        for i0 in range(0, rows.n, T):
            i1 = min(i0 + T, rows.n)
            for j0 in range(i0 if self.symmetric else 0, cols.n, T):
                j1 = min(j0 + T, cols.n)
                c = rows.codes[i0]
                if rows.codes[i1 - 1] == c and cols.codes[j0] == c and cols.codes[j1 - 1] == c:
                    continue  # entirely one class: nothing foreign
                tiles.append((i0, i1, j0, j1))
        return tiles

    def pass2_tiles(self) -> list[tuple[int, int, int, int]]:
        rows, cols, T = self.rows, self.cols, self.T
        tiles = []
        for c in range(rows.starts.shape[0] - 1):
            r0, r1 = rows.class_range(c)
            c0, c1 = cols.class_range(c)
            if r0 == r1 or c0 == c1:
                continue
            for i0 in range(r0, r1, T):
                i1 = min(i0 + T, r1)
                for j0 in range(i0 if self.symmetric else c0, c1, T):
                    tiles.append((i0, i1, j0, min(j0 + T, c1)))
        return tiles

    def _tile(self, i0, i1, j0, j1) -> torch.Tensor:
        return torch.mm(self.L[i0:i1], self.R[j0:j1].T)

    def _check(self, g: torch.Tensor, i0: int, j0: int) -> None:
        """Compare up to 64 finite screened entries of the first tile with the reference (cheap insurance)."""
        gen = np.random.default_rng(0)
        ri = gen.integers(0, g.shape[0], 256)
        ci = gen.integers(0, g.shape[1], 256)
        vals = g[torch.from_numpy(ri).to(g.device), torch.from_numpy(ci).to(g.device)].double().cpu().numpy()
        ok = np.isfinite(vals)[:64]
        ri, ci, vals = ri[:64][ok], ci[:64][ok], vals[:64][ok]
        check_screen(vals, self.rows.X, self.cols.X, i0 + ri, j0 + ci, self.rows.sqnorm, self.cols.sqnorm, self.eps)
        self._screen_checked = True

    # -- pass 1 -----------------------------------------------------------------------------------------------------
    def nearest_foreign(self) -> np.ndarray:
        """Exact m_p = min over foreign q of s(p, q), float64 (rows.n,)."""
        rows, cols, eps, sym = self.rows, self.cols, self.eps, self.symmetric
        inf = math.inf
        ub_r = torch.full((rows.n,), inf, device=self.device)
        ub_c = ub_r if sym else None
        best = np.full(rows.n, inf)
        for i0, i1, j0, j1 in self.pass1_tiles():
            g = self._tile(i0, i1, j0, j1)
            for r0, r1, c0, c1 in rows.same_class_rects(i0, i1, cols, j0, j1):
                g[r0:r1, c0:c1] = inf
            if not self._screen_checked:
                self._check(g, i0, j0)
            ia, ib = [], []
            # rows of the tile
            Er = eps * (self.nr[i0:i1] + self.nc[j0:j1].max())
            rmin = g.amin(1)
            ub = torch.minimum(ub_r[i0:i1], rmin + Er)
            ub_r[i0:i1] = ub
            thr = ub + Er
            sel = torch.nonzero((rmin <= thr) & torch.isfinite(rmin)).squeeze(1)
            if sel.numel():
                rr, cc = torch.nonzero(g.index_select(0, sel) <= thr[sel, None], as_tuple=True)
                ia.append((i0 + sel[rr]).cpu().numpy())
                ib.append((j0 + cc).cpu().numpy())
            # columns of the tile: the same distances seen from the other side (one-set case, off-diagonal tiles)
            if sym and j0 != i0:
                Ec = eps * (self.nc[j0:j1] + self.nr[i0:i1].max())
                cmin = g.amin(0)
                ub = torch.minimum(ub_c[j0:j1], cmin + Ec)
                ub_c[j0:j1] = ub
                thc = ub + Ec
                selc = torch.nonzero((cmin <= thc) & torch.isfinite(cmin)).squeeze(1)
                if selc.numel():
                    rr, cc = torch.nonzero(g.index_select(1, selc) <= thc[selc][None, :], as_tuple=True)
                    ia.append((i0 + rr).cpu().numpy())
                    ib.append((j0 + selc[cc]).cpu().numpy())
            if ia:
                self._resolve_pass1(best, np.concatenate(ia), np.concatenate(ib), ub_r)
            if self.bar is not None:
                self.bar.update(1)
        return best

    def _resolve_pass1(self, best, ia, ib, ub_r) -> None:
        if ia.size == 0:
            return
        s = pair_sq_distances(self.rows.X, self.cols.X, ia, ib)
        _scatter_min(best, ia, s)
        touched = ia
        if self.symmetric:  # s(p, q) == s(q, p): the pair is a foreign distance of both samples
            _scatter_min(best, ib, s)
            touched = np.concatenate([ia, ib])
        touched = np.unique(touched)
        t = torch.from_numpy(touched).to(self.device)
        exact = torch.from_numpy(best[touched].astype(np.float32)).to(self.device)
        ub_r[t] = torch.minimum(ub_r[t], exact)

    # -- pass 2 -----------------------------------------------------------------------------------------------------
    def count_closer(self, m: np.ndarray) -> np.ndarray:
        """#{classmates q != p : s(p, q) < m_p} for every row, int64 (rows.n,)."""
        sym = self.symmetric
        m32 = torch.from_numpy(m.astype(np.float32)).to(self.device)
        cnt = torch.zeros(self.rows.n, dtype=torch.int64, device=self.device)
        extra = np.zeros(self.rows.n, dtype=np.int64)
        for i0, i1, j0, j1 in self.pass2_tiles():
            g = self._tile(i0, i1, j0, j1)
            if sym and i0 == j0:
                g.fill_diagonal_(math.inf)  # the sample itself
            Er = self.eps * (self.nr[i0:i1] + self.nc[j0:j1].max())
            self._count_side(g, m32[i0:i1], Er, cnt[i0:i1], m, extra, i0, j0, axis=1)
            if sym and j0 != i0:
                Ec = self.eps * (self.nc[j0:j1] + self.nr[i0:i1].max())
                self._count_side(g, m32[j0:j1], Ec, cnt[j0:j1], m, extra, i0, j0, axis=0)
            if self.bar is not None:
                self.bar.update(1)
        return cnt.cpu().numpy() + extra

    def _count_side(self, g, mt, E, cnt_view, m, extra, i0, j0, *, axis: int) -> None:
        """Count along `axis` (1: tile rows are the queries; 0: tile columns are). Ambiguous pairs go to float64."""
        shape = (-1, 1) if axis == 1 else (1, -1)
        lo = (mt - E).view(shape)
        hi = (mt + E).view(shape)
        below = (g < lo).sum(axis)
        maybe = (g < hi).sum(axis)
        cnt_view += below
        amb = torch.nonzero(maybe > below).squeeze(1)
        if not amb.numel():
            return
        sub = g.index_select(1 - axis, amb)
        if axis == 1:
            rr, cc = torch.nonzero((sub >= lo[amb]) & (sub < hi[amb]), as_tuple=True)
            q = (i0 + amb[rr]).cpu().numpy()  # the query sample (row)
            o = (j0 + cc).cpu().numpy()
        else:
            rr, cc = torch.nonzero((sub >= lo[:, amb]) & (sub < hi[:, amb]), as_tuple=True)
            q = (j0 + amb[cc]).cpu().numpy()  # the query sample (column)
            o = (i0 + rr).cpu().numpy()
        s = pair_sq_distances(self.rows.X, self.cols.X, q, o) if axis == 1 else pair_sq_distances(
            self.cols.X, self.rows.X, q, o
        )
        np.add.at(extra, q, (s < m[q]).astype(np.int64))

    def count_rows(self, ridx: np.ndarray, c0: int, c1: int, m: np.ndarray) -> np.ndarray:
        """Counts for an arbitrary subset of rows against pool rows [c0, c1) (one class), self excluded.

        Used by the faiss backend for rows whose k* exceeds its k-NN limit. Returns int64 (len(ridx),).
        """
        out = np.zeros(ridx.shape[0], dtype=np.int64)
        for s0 in range(0, ridx.shape[0], self.T):
            r = ridx[s0 : s0 + self.T]
            rt = torch.from_numpy(r).to(self.device)
            Lr = self.L.index_select(0, rt)
            mt = torch.from_numpy(m[r].astype(np.float32)).to(self.device)
            cnt = torch.zeros(r.shape[0], dtype=torch.int64, device=self.device)
            extra = np.zeros(self.rows.n, dtype=np.int64)
            for j0 in range(c0, c1, self.T):
                j1 = min(j0 + self.T, c1)
                g = torch.mm(Lr, self.R[j0:j1].T)
                if self.symmetric:
                    own = np.flatnonzero((r >= j0) & (r < j1))
                    if own.size:
                        g[torch.from_numpy(own).to(self.device), torch.from_numpy(r[own] - j0).to(self.device)] = math.inf
                E = self.eps * (self.nr.index_select(0, rt) + self.nc[j0:j1].max())
                lo = (mt - E)[:, None]
                hi = (mt + E)[:, None]
                below = (g < lo).sum(1)
                cnt += below
                amb = torch.nonzero((g < hi).sum(1) > below).squeeze(1)
                if amb.numel():
                    rr, cc = torch.nonzero((g[amb] >= lo[amb]) & (g[amb] < hi[amb]), as_tuple=True)
                    q = r[amb[rr].cpu().numpy()]
                    o = (j0 + cc).cpu().numpy()
                    s = pair_sq_distances(self.rows.X, self.cols.X, q, o)
                    np.add.at(extra, q, (s < m[q]).astype(np.int64))
            out[s0 : s0 + self.T] = cnt.cpu().numpy() + extra[r]
        return out
