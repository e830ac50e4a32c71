"""The tiled two-pass k* engine (torch, CPU or CUDA), exact via float64 re-decision; any score kind, through a kernel.

Pass 1 (nearest foreign score m_p, and the sample attaining it): T x T tiles of the class-sorted set, only the upper
triangle in the one-set case (each foreign tile updates both its rows' and its columns' bounds); tiles inside one
class are skipped. Per tile the kernel returns screened scores, and per row and per column the best value of every
chunk of columns / rows is kept. A rigorous bound (engine.bounds) turns that table into U_p >= m_p and a few candidate
chunks per row, which are screened again and whose surviving pairs are evaluated in float64. For squared Euclidean
scores where bfloat16 GEMMs are fast, pass 1 screens in bfloat16 first (engine.bf16).

Pass 2 (count of classmates strictly closer than m_p): only same-class blocks, again the upper triangle. Entries
clearly below / above m_p are counted / dropped on the device; the thin band in between is re-decided in float64.

On CPU whole tiles run on parallel threads (one intra-op thread each). Memory: the float64 set on the host, the
kernel's operands (float32 copies) on the device, O(T^2) per tile.
"""
from __future__ import annotations

import math
import threading

import numpy as np
import torch

from kstar_utils.engine.bounds import SCREENS, check_screen
from kstar_utils.engine.kernels import GemmKernel, Kernel
from kstar_utils.engine.layout import SortedSet, class_blocks, table_rows
from kstar_utils.engine.ops import chunk_reduce, count_less
from kstar_utils.engine.reference import merge_nearest
from kstar_utils.engine.threads import run_tiles, single_thread


def pass1_tiles_of(rcodes, ccodes, rblocks, cblocks, symmetric: bool) -> list[tuple[int, int, int, int, int, int]]:
    """Pass-1 tiles (i0, i1, j0, j1, bi, bj) of class-sorted codes over class-aligned blocks; the upper triangle in
    the one-set case; tiles of one class on both sides are left out (nothing foreign)."""
    tiles = []
    for bi, (i0, i1) in enumerate(rblocks):
        for bj in range(bi if symmetric else 0, len(cblocks)):
            j0, j1 = cblocks[bj]
            c = rcodes[i0]
            if rcodes[i1 - 1] == c and ccodes[j0] == c and ccodes[j1 - 1] == c:
                continue
            tiles.append((i0, i1, j0, j1, bi, bj))
    return tiles


def pass2_tiles_of(rstarts, cstarts, T: int, symmetric: bool) -> list[tuple[int, int, int, int]]:
    """Pass-2 (same-class) tiles (i0, i1, j0, j1) from the class offsets; one set: each class in sub-blocks of
    max(512, n_c / 8) rows, upper triangle only."""
    tiles = []
    for c in range(rstarts.shape[0] - 1):
        r0, r1 = int(rstarts[c]), int(rstarts[c + 1])
        c0, c1 = int(cstarts[c]), int(cstarts[c + 1])
        if r0 == r1 or c0 == c1:
            continue
        t = min(T, max(512, -(-(r1 - r0) // 8))) if symmetric else T
        for i0 in range(r0, r1, t):
            i1 = min(i0 + t, r1)
            for j0 in range(i0 if symmetric else c0, c1, t):
                tiles.append((i0, i1, j0, min(j0 + t, c1)))
    return tiles


def one_set_shares(codes_sorted: np.ndarray, n_classes: int, T: int, groups: int, pass2_parts: int):
    """The one-set engine's work in shares whose results combine exactly (TwoPassEngine.restrict): pass-1 tiles by
    pairs of block groups (g <= h; each share touches the rows of two groups only) and pass-2 tiles in parts of about
    equal area. codes_sorted: (n,) class codes in sorted order. Returns (pass-1 shares, pass-2 shares), lists of
    tile lists, none empty."""
    starts = np.searchsorted(codes_sorted, np.arange(n_classes + 1)).astype(np.int64)
    blocks = class_blocks(starts, T)
    n = codes_sorted.shape[0]
    # groups of consecutive blocks with about n / groups rows each
    group_of = np.minimum(np.array([b0 for b0, _ in blocks], dtype=np.int64) * groups // max(1, n), groups - 1)
    p1: dict = {}
    for t in pass1_tiles_of(codes_sorted, codes_sorted, blocks, blocks, True):
        p1.setdefault((int(group_of[t[4]]), int(group_of[t[5]])), []).append(t)
    tiles2 = pass2_tiles_of(starts, starts, T, True)
    area = np.cumsum([(i1 - i0) * (j1 - j0) for i0, i1, j0, j1 in tiles2]) if tiles2 else np.zeros(0)
    part = np.minimum((area - 1) * pass2_parts // max(1, int(area[-1]) if area.size else 1), pass2_parts - 1)
    p2: dict = {}
    for t, k in zip(tiles2, part):
        p2.setdefault(int(k), []).append(t)
    return [p1[k] for k in sorted(p1)], [p2[k] for k in sorted(p2)]


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 GEMMs are much faster than float32 ones here (CUDA tensor cores; CPU AMX / AVX512-BF16)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


class TwoPassEngine:
    """k* of `rows` against `cols` (the same SortedSet object in the one-set case, self excluded).

    kernel: screened scores and their bound (engine.kernels); tile: T; bar: tqdm-like or None; screen: pass-1 screen,
    "auto" (bfloat16 where the hardware has fast bfloat16 GEMMs and the kernel is a GEMM), "bf16" or "float32".
    """

    def __init__(self, rows: SortedSet, cols: SortedSet, kernel: Kernel, *, tile: int, bar=None, screen: str = "auto"):
        if screen not in SCREENS:
            raise ValueError(f"screen must be one of {list(SCREENS)}; got {screen!r}")
        self.rows, self.cols, self.kernel = rows, cols, kernel
        self.symmetric = rows is cols
        self.device = kernel.device
        self.T = int(tile)
        self.bar = bar
        self.workers = torch.get_num_threads() if self.device.type == "cpu" else 1  # tile-level threads (CPU)
        self._screen_checked = False
        self.rblocks = class_blocks(rows.starts, self.T)
        self.cblocks = self.rblocks if self.symmetric else class_blocks(cols.starts, self.T)
        self.ch = self.chunk_size()
        gemm = isinstance(kernel, GemmKernel)
        self.use_bf16 = gemm and (screen == "bf16" or (screen == "auto" and fast_bf16(self.device)))
        self.use_bf16 = self.use_bf16 and rows.X.shape[1] <= 10**6  # bf16_bounds' relative slack assumes D < 10^6
        self._only1 = self._only2 = None
        self.table_index = None  # global row of each pass-1 table row (None: the table's rows are the rows)
        self.has_foreign = None  # per table row: some computed tile holds a foreign column (None: every row)
        self.computed = None  # (blocks, blocks) pairs computed (None: all)
        self._toff = np.array([b0 for b0, _ in self.rblocks], dtype=np.int64)

    def restrict(self, pass1=None, pass2=None) -> None:
        """Compute only these tiles (sublists of `pass1_tiles()` / `pass2_tiles()`) of a one-set engine: a share of
        the work, as on a cluster, whose results combine exactly. `nearest_foreign` then gives each row the nearest
        foreign sample among the columns of its computed tiles (m_p = inf, enemy -1 for rows with none) and
        `count_closer(m)` the count over the computed same-class tiles: minima merged with the lowest-index tie rule
        and counts summed over a partition of the tiles are the whole computation's. The pass-1 table holds only the
        rows of the blocks the tiles touch."""
        if not self.symmetric:
            raise ValueError("restrict() shares the work of a one-set engine")
        self._only1, self._only2 = pass1, pass2
        if pass1 is None:
            return
        touched = sorted({t[4] for t in pass1} | {t[5] for t in pass1})
        self._toff = np.full(len(self.rblocks), -1, dtype=np.int64)
        index, at = [], 0
        has = np.zeros(self.rows.n, dtype=bool)
        codes = self.rows.codes
        for b in touched:
            b0, b1 = self.rblocks[b]
            self._toff[b] = at
            index.append(np.arange(b0, b1))
            at += b1 - b0

        def single(x0, x1):  # the block's one class, or -1 when it holds several
            return int(codes[x0]) if codes[x0] == codes[x1 - 1] else -1

        nb = len(self.rblocks)
        self.computed = np.zeros((nb, nb), dtype=bool)  # block pairs whose tile is computed (either orientation)
        for i0, i1, j0, j1, bi, bj in pass1:  # a row has a foreign column in a tile unless the other side is its class
            has[i0:i1] |= codes[i0:i1] != single(j0, j1)
            has[j0:j1] |= codes[j0:j1] != single(i0, i1)
            self.computed[bi, bj] = self.computed[bj, bi] = True
        self.table_index = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
        self.has_foreign = has[self.table_index]
        # the block of each table row and of each column chunk: a table entry is meaningful only where its pair of
        # blocks was computed (the bfloat16 table cannot mark the others apart from masked same-class entries)
        self.table_block = np.repeat(np.arange(nb), [(b1 - b0) if self._toff[b] >= 0 else 0
                                                     for b, (b0, b1) in enumerate(self.rblocks)])
        coff, cst = self.chunk_grid(self.cblocks)
        self.chunk_block = np.searchsorted(coff, np.arange(cst.shape[0]), side="right") - 1

    def table_rows_count(self) -> int:
        return self.rows.n if self.table_index is None else int(self.table_index.shape[0])

    # -- tile bookkeeping -------------------------------------------------------------------------------------------
    def pass1_tiles(self) -> list[tuple[int, int, int, int, int, int]]:
        """(i0, i1, j0, j1, bi, bj) over class-aligned blocks; the upper triangle in the one-set case."""
        if self._only1 is not None:
            return list(self._only1)
        return pass1_tiles_of(self.rows.codes, self.cols.codes, self.rblocks, self.cblocks, self.symmetric)

    def pass2_tiles(self) -> list[tuple[int, int, int, int]]:
        """Same-class tiles. One-set case: each class in sub-blocks of max(512, n_c / 8) rows, upper triangle only."""
        if self._only2 is not None:
            return list(self._only2)
        return pass2_tiles_of(self.rows.starts, self.cols.starts, self.T, self.symmetric)

    def chunk_grid(self, blocks) -> tuple[np.ndarray, np.ndarray]:
        """Chunks of <= ch columns inside each block: (first chunk index per block (nb,), chunk starts (nch,))."""
        offs, starts = [], []
        for b0, b1 in blocks:
            offs.append(len(starts))
            starts.extend(range(b0, b1, self.ch))
        return np.array(offs, dtype=np.int64), np.array(starts, dtype=np.int64)

    def chunk_size(self) -> int:
        """Column-chunk width of the pass-1 table: a power of two >= max(128, cols.n / 1024) (the table stays small;
        fewer, larger chunks make the candidate re-screen cheaper: measured 128 < 64 < 32 at N = 20k)."""
        ch = 128
        while ch * 1024 < self.cols.n and ch < self.T:
            ch *= 2
        return max(1, min(ch, self.T))

    @staticmethod
    def sample_tile(g: torch.Tensor):
        """Up to 64 finite entries of a screened tile at seeded positions: (row idx, col idx, float64 values)."""
        gen = np.random.default_rng(0)
        ri = gen.integers(0, g.shape[0], 256)
        ci = gen.integers(0, g.shape[1], 256)
        vals = g[torch.from_numpy(ri).to(g.device), torch.from_numpy(ci).to(g.device)].double().cpu().numpy()
        ok = np.isfinite(vals)[:64]
        return ri[:64][ok], ci[:64][ok], vals[:64][ok]

    def _check(self, g: torch.Tensor, i0: int, j0: int) -> None:
        """Compare up to 64 finite screened entries of the first tile with the reference (cheap insurance)."""
        if self.kernel.eps == 0.0:
            return  # the kernel is the reference itself
        ri, ci, vals = self.sample_tile(g)
        check_screen(vals, self.rows.X, self.cols.X, i0 + ri, j0 + ci, self.rows.sqnorm, self.cols.sqnorm,
                     self.kernel.eps, self.kernel.distance)
        self._screen_checked = True

    def decide_pairs(self, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        """Reference s(rows[ia], cols[ib]) (float64), sorted by ia for locality, on the tile threads."""
        order = np.argsort(ia, kind="stable")
        out = np.empty(ia.shape[0])
        step = 1 << 12
        sl = [(s, order[s : s + step]) for s in range(0, ia.shape[0], step)]
        pairs = self.kernel.distance.pairs

        def part(a):
            s, o = a
            out[o] = pairs(self.rows.X, self.cols.X, ia[o], ib[o])

        run_tiles(sl, part, self.workers)
        return out

    # -- pass 1 -----------------------------------------------------------------------------------------------------
    def nearest_foreign(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact m_p (float64, (rows.n,)) and the original index of the foreign sample attaining it (int64, (rows.n,);
        the lowest among exact ties), for the class-sorted rows."""
        with single_thread(self.device):
            if self.use_bf16:
                from kstar_utils.engine.bf16 import nearest_foreign_bf16

                found = nearest_foreign_bf16(self)
                if found is not None:
                    return found
            return self._nearest_foreign_screened()

    def _nearest_foreign_screened(self) -> tuple[np.ndarray, np.ndarray]:
        """Pass 1a keeps, for every row and every chunk of ch columns, the smallest screened foreign score (an
        (n, n / ch) table: one strided min per tile side, no candidate lists). The bound U_p follows; only chunks
        whose minimum is within U_p + E are screened again and their candidates evaluated in float64."""
        rows, cols, sym, ch, k = self.rows, self.cols, self.symmetric, self.ch, self.kernel
        coff, cstarts = self.chunk_grid(self.cblocks)
        roff = coff if sym else None
        M = torch.full((self.table_rows_count(), cstarts.shape[0]), math.inf, dtype=k.dtype, device=self.device)
        toff = self._toff  # first table row of each block

        def tile(t):  # tiles write disjoint parts of M (rows of one block x chunks of another): no lock needed
            i0, i1, j0, j1, bi, bj = t
            g = k.tile(i0, i1, j0, j1)
            for r0, r1, c0, c1 in rows.same_class_rects(i0, i1, cols, j0, j1):
                g[r0:r1, c0:c1] = math.inf
            if t is first:
                self._check(g, i0, j0)
            a = toff[bi]
            M[a : a + i1 - i0, coff[bj] : coff[bj] + -(-(j1 - j0) // ch)] = chunk_reduce(g, ch, dim=1, op="amin")
            if sym and bi != bj:  # the same scores seen from the columns' side
                a = toff[bj]
                M[a : a + j1 - j0, roff[bi] : roff[bi] + -(-(i1 - i0) // ch)] = chunk_reduce(g, ch, dim=0,
                                                                                          op="amin").T
            if self.bar is not None:
                self.bar.update(1)

        tiles = self.pass1_tiles()
        first = tiles[0] if tiles else None  # its values are checked (an error stops the run before any decision)
        run_tiles(tiles, tile, self.workers if k.parallel_tiles else 1)
        nmax = torch.from_numpy(np.maximum.reduceat(cols.sqnorm, cstarts).astype(np.float32)).to(self.device)
        pairs = []
        step = table_rows(M.shape[1])
        gi = None if self.table_index is None else torch.from_numpy(self.table_index).to(self.device)
        for s0 in range(0, M.shape[0], step):  # row blocks keep the (rows, nch) temporaries small
            Mb = M[s0 : s0 + step]
            grow = torch.arange(s0, s0 + Mb.shape[0], device=self.device) if gi is None else gi[s0 : s0 + step]
            slack = k.eps * (k.nr[grow, None] + nmax[None, :])
            ub = (Mb + slack).amin(1, keepdim=True)  # >= m_p
            hit = Mb <= ub + slack  # chunks that may hold a minimiser
            if gi is not None:
                hit &= torch.isfinite(ub)  # a row without a foreign column in the computed tiles has none to find
            rr, kk = torch.nonzero(hit, as_tuple=True)
            pairs.append((grow[rr], kk, ub[rr, 0]))
        rr = torch.cat([p[0] for p in pairs])
        kk = torch.cat([p[1] for p in pairs])
        ub = torch.cat([p[2] for p in pairs])
        return self.evaluate_chunks(rr, kk, ub, cstarts)

    def evaluate_chunks(self, rr: torch.Tensor, kk: torch.Tensor, ub: torch.Tensor, cstarts: np.ndarray):
        """m_p and its sample from candidate (row, column chunk) pairs; ub (kernel dtype) >= m_p of each pair's row.

        Each chunk's rows are screened again by the kernel. The screened values tighten the bound first:
        U_p = min(ub, min over the screened foreign columns of g + E) >= m_p. Then every column with g <= U_p + E
        (which includes every exact minimiser) is evaluated with the reference arithmetic. Returns (best (rows.n,)
        float64, arg (rows.n,) int64 original column index, lowest among exact ties).
        """
        rows, cols, k = self.rows, self.cols, self.kernel
        cends = np.append(cstarts[1:], cols.n)
        order = torch.argsort(kk, stable=True)
        rr, kk, ub = rr[order], kk[order], ub[order]
        ks, counts = torch.unique_consecutive(kk, return_counts=True)
        rcodes = torch.from_numpy(rows.codes).to(self.device)
        ccodes = torch.from_numpy(cols.codes).to(self.device)
        U = torch.full((rows.n,), math.inf, dtype=k.dtype, device=self.device)
        U.scatter_reduce_(0, rr, ub.to(k.dtype), reduce="amin")
        groups, kidx, mask_needed = [], [], []
        start = 0
        one_class = cols.codes[cstarts] == cols.codes[cends - 1]
        rr_np = rr.cpu().numpy()
        for kc, cnt in zip(ks.tolist(), counts.tolist()):
            groups.append((len(groups), rr[start : start + cnt], int(cstarts[kc]), int(cends[kc])))
            # a chunk of one class needs no mask when none of its rows is of that class
            mask_needed.append(not one_class[kc] or bool((rows.codes[rr_np[start : start + cnt]] == cols.codes[
                cstarts[kc]]).any()))
            kidx.append(kc)
            start += cnt
        ncmax = torch.from_numpy(np.maximum.reduceat(cols.sqnorm, cstarts).astype(np.float32)).to(self.device)
        U_pre = U.clone()  # >= the final U: every entry the final test keeps passes the test with it
        kept = [None] * len(groups)

        def screen(grp):
            # only the entries that can pass the final test are kept (g <= U_p + E with a U_p >= the final one):
            # the screened chunks themselves are never all held at once
            i, r, j0, j1 = grp
            g = k.rows_vs(r, j0, j1)
            if mask_needed[i]:
                g[rcodes[r][:, None] == ccodes[None, j0:j1]] = math.inf
            E = k.eps * (k.nr[r] + ncmax[kidx[i]])  # the chunk's largest norm: a larger, still valid E
            umin = g.amin(1) + E
            a, b = torch.nonzero(g <= (torch.minimum(U_pre[r], umin) + E)[:, None], as_tuple=True)
            kept[i] = (r, umin, a, j0 + b, g[a, b], E[a])

        run_tiles(groups, screen, self.workers)
        for r, umin, *_ in kept:
            U.scatter_reduce_(0, r, umin.to(k.dtype), reduce="amin")
        found = []
        for r, _, a, b, gv, Ea in kept:
            sel = gv <= U[r[a]] + Ea
            found.append((r[a][sel].cpu().numpy(), b[sel].cpu().numpy()))
        ia = np.concatenate([f[0] for f in found]) if found else np.zeros(0, dtype=np.int64)
        ib = np.concatenate([f[1] for f in found]) if found else np.zeros(0, dtype=np.int64)
        best = np.full(rows.n, math.inf)
        arg = np.full(rows.n, -1, dtype=np.int64)
        merge_nearest(best, arg, ia, self.decide_pairs(ia, ib), cols.order[ib])
        return best, arg

    # -- pass 2 -----------------------------------------------------------------------------------------------------
    def count_closer(self, m: np.ndarray) -> np.ndarray:
        """#{classmates q != p : s(p, q) < m_p} for every row, int64 (rows.n,)."""
        with single_thread(self.device):
            return self._count_closer(m)

    def _count_closer(self, m: np.ndarray) -> np.ndarray:
        sym, k = self.symmetric, self.kernel
        mt = torch.from_numpy(m.astype(np.float32 if k.dtype == torch.float32 else np.float64)).to(self.device)
        acc: dict = {}  # per thread: (cnt, extra), summed at the end (tiles of one class share rows)
        lock = threading.Lock()

        def tile(t):
            i0, i1, j0, j1 = t
            key = threading.get_ident()
            if key not in acc:
                with lock:
                    acc[key] = (torch.zeros(self.rows.n, dtype=torch.int64, device=self.device), [])
            cnt, _ = acc[key]
            extra: list = []
            g = k.tile(i0, i1, j0, j1)
            if sym and i0 == j0:
                g.fill_diagonal_(math.inf)  # the sample itself
            Er = k.eps * (k.nr[i0:i1] + k.nc[j0:j1].max())
            self._count_side(g, mt[i0:i1], Er, cnt[i0:i1], extra, i0, j0, axis=1)
            if sym and j0 != i0:
                Ec = k.eps * (k.nc[j0:j1] + k.nr[i0:i1].max())
                self._count_side(g, mt[j0:j1], Ec, cnt[j0:j1], extra, i0, j0, axis=0)
            del g
            if extra:  # the tile's ambiguous pairs, decided now: memory stays bounded by one tile's band
                q = np.concatenate([e[0] for e in extra])
                o = np.concatenate([e[1] for e in extra])
                closer = q[k.distance.pairs(self.rows.X, self.cols.X, q, o) < m[q]]
                if closer.size:
                    cnt.index_add_(0, torch.from_numpy(closer).to(self.device),
                                   torch.ones(closer.shape[0], dtype=torch.int64, device=self.device))
            if self.bar is not None:
                self.bar.update(1)

        run_tiles(self.pass2_tiles(), tile, self.workers)
        total = np.zeros(self.rows.n, dtype=np.int64)
        for cnt, _ in acc.values():
            total += cnt.cpu().numpy()
        return total

    def _count_side(self, g, mt, E, cnt_view, extra, i0, j0, *, axis: int) -> None:
        """Count along `axis` (1: tile rows are the queries; 0: tile columns are).

        Ambiguous pairs (query, other) are appended to the list `extra` for the float64 decision (made per tile by the
        caller). Axis 0 occurs only in the one-set case, where rows and cols are the same set.
        """
        shape = (-1, 1) if axis == 1 else (1, -1)
        lo = (mt - E).view(shape)
        hi = (mt + E).view(shape)
        below = count_less(g, lo, axis)
        maybe = count_less(g, hi, axis)
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
        extra.append((q, o))  # evaluated together at the end (`decide_pairs`)

    def count_rows(self, ridx: np.ndarray, c0: int, c1: int, m: np.ndarray) -> np.ndarray:
        """Counts for an arbitrary subset of rows against pool rows [c0, c1) (one class), self excluded.

        Used by the faiss k-NN backend for rows whose k* exceeds its k-NN limit. Returns int64 (len(ridx),).
        """
        k = self.kernel
        out = np.zeros(ridx.shape[0], dtype=np.int64)
        for s0 in range(0, ridx.shape[0], self.T):
            r = ridx[s0 : s0 + self.T]
            rt = torch.from_numpy(r).to(self.device)
            mt = torch.from_numpy(m[r].astype(np.float32)).to(self.device)
            cnt = torch.zeros(r.shape[0], dtype=torch.int64, device=self.device)
            extra = np.zeros(self.rows.n, dtype=np.int64)
            for j0 in range(c0, c1, self.T):
                j1 = min(j0 + self.T, c1)
                g = k.rows_vs(rt, j0, j1)
                if self.symmetric:
                    own = np.flatnonzero((r >= j0) & (r < j1))
                    if own.size:
                        g[torch.from_numpy(own).to(self.device), torch.from_numpy(r[own] - j0).to(self.device)] = math.inf
                E = k.eps * (k.nr.index_select(0, rt) + k.nc[j0:j1].max())
                lo = (mt - E)[:, None]
                hi = (mt + E)[:, None]
                below = (g < lo).sum(1)
                cnt += below
                amb = torch.nonzero((g < hi).sum(1) > below).squeeze(1)
                if amb.numel():
                    rr, cc = torch.nonzero((g[amb] >= lo[amb]) & (g[amb] < hi[amb]), as_tuple=True)
                    q = r[amb[rr].cpu().numpy()]
                    o = (j0 + cc).cpu().numpy()
                    s = k.distance.pairs(self.rows.X, self.cols.X, q, o)
                    np.add.at(extra, q, (s < m[q]).astype(np.int64))
            out[s0 : s0 + self.T] = cnt.cpu().numpy() + extra[r]
        return out
