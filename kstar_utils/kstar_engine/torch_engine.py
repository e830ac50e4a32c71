"""Tiled two-pass k* engine on torch (CPU BLAS or CUDA), exact via float64 re-decision (see exact.py).

Pass 1 (nearest foreign distance m_p): T x T tiles of the class-sorted set, only the upper triangle in the one-set
case (each foreign tile updates both its rows' and its columns' bounds); tiles inside one class are skipped. Per tile:
one GEMM of augmented rows (the norms ride along, so the GEMM returns the screened distance, or with the bfloat16
screen w ~ (c - s) / 2, directly), then per row and per column the best value of every chunk of columns / rows. A
rigorous bound turns that table into U_p >= m_p and a few candidate chunks per row, which are screened again in
float32 and whose surviving pairs are evaluated in float64.
Screens: bfloat16 (default where bfloat16 GEMMs are fast: CPU AMX / AVX512-BF16, CUDA tensor cores; bound in
exact.bf16_bounds) or float32 (exact.screen_eps). Both end in the same float32 re-screen and float64 decisions.

Pass 2 (count of classmates strictly closer than m_p): only same-class blocks, again the upper triangle, float32
screen. Entries clearly below / above m_p are counted / dropped on the device; the thin band in between is re-decided
in float64.

On CPU whole tiles run on parallel threads (one intra-op thread each). Memory: the float64 set on the host, two
float32 augmented copies (N x (D + 8)) and two bfloat16 ones (N x (D + 4), padded) on the device, O(T^2) per tile.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from .exact import (BF16_MAX_SQNORM, Bf16Side, bf16_bounds, bf16_threshold, check_bf16_screen, check_screen,
                    pair_sq_distances)
from .layout import SortedSet, class_blocks

_PAD = 8  # augmented width D + 2 rounded up to a multiple of 8 (friendlier to BLAS kernels)


@contextmanager
def exact_float32_matmul():
    """True float32 GEMMs (no TF32 / bf16) while the engine runs; the error bound depends on it."""
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


def fast_bf16(device: torch.device) -> bool:
    """Whether bfloat16 GEMMs are much faster than float32 ones here (CUDA tensor cores; CPU AMX / AVX512-BF16)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


@contextmanager
def single_thread(device: torch.device):
    """One CPU thread for bursts of tiny ops: OpenMP start-up per op costs more than the op (ms each on a busy box)."""
    if device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _run_tiles(tiles, fn, workers: int) -> None:
    """fn(tile) for every tile; on `workers` > 1 Python threads (torch and numpy release the GIL in their kernels).

    With intra-op threading off, whole tiles run in parallel: no per-op thread start-up, and every cheap pass of a
    tile (masking, minima, counting) is spread over the cores as well as its GEMM.
    """
    if workers <= 1 or len(tiles) <= 1:
        for t in tiles:
            fn(t)
        return
    from concurrent.futures import ThreadPoolExecutor

    def run(t):
        with torch.inference_mode():
            fn(t)

    with ThreadPoolExecutor(max_workers=workers) as ex:
        for f in [ex.submit(run, t) for t in tiles]:
            f.result()


def _augmented(S: SortedSet, device, workers: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left [a, n, 1, 0...] and right [-2a, 1, n, 0...] (n, W) float32, so left_p . right_q = n_p + n_q - 2 a_p.a_q.

    a = fl32(x); n = fl32(||a||^2) summed in float64. Also returns the float64 ||x||^2 as float32 (n,) for bounds.
    Built in row blocks (cache-sized, on `workers` threads).
    """
    n, d = S.X.shape
    width = (d + 2 + _PAD - 1) // _PAD * _PAD
    left = np.zeros((n, width), dtype=np.float32)
    right = np.zeros((n, width), dtype=np.float32)

    def block(s):
        e = min(n, s + 1024)
        a = left[s:e, :d]
        a[...] = S.X[s:e]
        b = a.astype(np.float64)  # float64 squares of float32 values are exact
        n32 = np.einsum("ij,ij->i", b, b).astype(np.float32)
        np.multiply(a, -2.0, out=right[s:e, :d])  # exact scaling by a power of two
        left[s:e, d], left[s:e, d + 1] = n32, 1.0
        right[s:e, d], right[s:e, d + 1] = 1.0, n32

    _run_tiles(list(range(0, n, 1024)), block, workers)
    bound_norm = torch.from_numpy(S.sqnorm.astype(np.float32)).to(device)
    return torch.from_numpy(left).to(device), torch.from_numpy(right).to(device), bound_norm


def _chunk_reduce(g: torch.Tensor, ch: int, *, dim: int, op: str) -> torch.Tensor:
    """Reduction `op` ("amin" or "amax") over consecutive groups of ch entries along `dim` (last group may be short).

    g: (a, b). dim=1 -> (a, ceil(b / ch)); dim=0 -> (ceil(a / ch), b).
    """
    n = g.shape[dim]
    full = n // ch * ch
    parts = []
    if dim == 1:
        if full:
            parts.append(getattr(g[:, :full].reshape(g.shape[0], full // ch, ch), op)(2))
        if full < n:
            parts.append(getattr(g[:, full:], op)(1, keepdim=True))
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]
    if full:
        parts.append(getattr(g[:full].reshape(full // ch, ch, g.shape[1]), op)(1))
    if full < n:
        parts.append(getattr(g[full:], op)(0, keepdim=True))
    return torch.cat(parts, 0) if len(parts) > 1 else parts[0]


def _chunk_max(g: torch.Tensor, ch: int, *, dim: int) -> torch.Tensor:
    return _chunk_reduce(g, ch, dim=dim, op="amax")


def _chunk_min(g: torch.Tensor, ch: int, *, dim: int) -> torch.Tensor:
    return _chunk_reduce(g, ch, dim=dim, op="amin")


def _round_up_f32(v: np.ndarray) -> np.ndarray:
    """float32 values >= the float64 values v."""
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) < v, np.nextafter(f, np.float32(np.inf)), f)


def _round_down_f32(v: np.ndarray) -> np.ndarray:
    """float32 values <= the float64 values v."""
    f = v.astype(np.float32)
    return np.where(f.astype(np.float64) > v, np.nextafter(f, np.float32(-np.inf)), f)


def _scatter_min(target: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> None:
    np.minimum.at(target, idx, vals)


def _count_less(g: torch.Tensor, thr: torch.Tensor, axis: int) -> torch.Tensor:
    """#(g < thr) along `axis` (thr broadcasts). On CPU numpy's compare + uint8 sum is several times faster."""
    if g.device.type == "cpu":
        b = np.less(g.numpy(), thr.numpy())
        acc = np.uint16 if g.shape[axis] < 1 << 16 else np.int64  # narrow accumulator: less memory traffic per sum
        return torch.from_numpy(b.view(np.uint8).sum(axis, dtype=acc).astype(np.int64))
    return (g < thr).sum(axis)


class TorchEngine:
    """k* of `rows` against `cols` (the same SortedSet object in the one-set case, self excluded).

    rows, cols: SortedSet; eps: screen bound (exact.screen_eps); tile: T; bar: tqdm-like or None; screen: pass-1
    screen, "auto" (bfloat16 where the hardware has fast bfloat16 GEMMs), "bf16" or "float32".
    """

    def __init__(self, rows: SortedSet, cols: SortedSet, *, device, tile: int, eps: float, bar=None,
                 screen: str = "auto"):
        self.rows, self.cols = rows, cols
        self.symmetric = rows is cols
        self.device = torch.device(device)
        self.T = int(tile)
        self.eps = float(eps)
        self.bar = bar
        self.gemm_threads = torch.get_num_threads()
        self.workers = self.gemm_threads if self.device.type == "cpu" else 1  # tile-level threads (CPU)
        self.L, R, self.nr = _augmented(rows, self.device, self.workers)
        if self.symmetric:
            self.R, self.nc = R, self.nr
        else:
            del R
            _, self.R, self.nc = _augmented(cols, self.device, self.workers)
        self._screen_checked = False
        self.rblocks = class_blocks(rows.starts, self.T)
        self.cblocks = self.rblocks if self.symmetric else class_blocks(cols.starts, self.T)
        self.ch = self.chunk_size()
        self.screen = screen
        if self.screen not in ("auto", "bf16", "float32"):
            raise ValueError(f"screen must be 'auto', 'bf16' or 'float32'; got {self.screen!r}")
        self.use_bf16 = self.screen == "bf16" or (self.screen == "auto" and fast_bf16(self.device))
        self.use_bf16 = self.use_bf16 and rows.X.shape[1] <= 10**6  # bf16_bounds' relative slack assumes D < 10^6

    # -- tile bookkeeping -------------------------------------------------------------------------------------------
    def pass1_tiles(self) -> list[tuple[int, int, int, int, int, int]]:
        """(i0, i1, j0, j1, bi, bj) over class-aligned blocks; the upper triangle in the one-set case."""
        rows, cols = self.rows, self.cols
        tiles = []
        for bi, (i0, i1) in enumerate(self.rblocks):
            for bj in range(bi if self.symmetric else 0, len(self.cblocks)):
                j0, j1 = self.cblocks[bj]
                c = rows.codes[i0]
                if rows.codes[i1 - 1] == c and cols.codes[j0] == c and cols.codes[j1 - 1] == c:
                    continue  # one class on both sides: nothing foreign
                tiles.append((i0, i1, j0, j1, bi, bj))
        return tiles

    def pass2_tiles(self) -> list[tuple[int, int, int, int]]:
        """Same-class tiles. One-set case: each class in sub-blocks of max(512, n_c / 8) rows, upper triangle only."""
        rows, cols = self.rows, self.cols
        tiles = []
        for c in range(rows.starts.shape[0] - 1):
            r0, r1 = rows.class_range(c)
            c0, c1 = cols.class_range(c)
            if r0 == r1 or c0 == c1:
                continue
            t = min(self.T, max(512, -(-(r1 - r0) // 8))) if self.symmetric else self.T
            for i0 in range(r0, r1, t):
                i1 = min(i0 + t, r1)
                for j0 in range(i0 if self.symmetric else c0, c1, t):
                    tiles.append((i0, i1, j0, min(j0 + t, c1)))
        return tiles

    def _chunk_grid(self, blocks) -> tuple[np.ndarray, np.ndarray]:
        """Chunks of <= ch columns inside each block: (first chunk index per block (nb,), chunk starts (nch,))."""
        offs, starts = [], []
        for b0, b1 in blocks:
            offs.append(len(starts))
            starts.extend(range(b0, b1, self.ch))
        return np.array(offs, dtype=np.int64), np.array(starts, dtype=np.int64)

    def _tile(self, i0, i1, j0, j1) -> torch.Tensor:
        if self.device.type == "cpu" and self.workers <= 1 and (i1 - i0) * (j1 - j0) * self.L.shape[1] >= 1 << 28:
            torch.set_num_threads(self.gemm_threads)  # the GEMM scales; the cheap passes around it run on one thread
            try:
                return torch.mm(self.L[i0:i1], self.R[j0:j1].T)
            finally:
                torch.set_num_threads(1)
        return torch.mm(self.L[i0:i1], self.R[j0:j1].T)

    @staticmethod
    def _sample_tile(g: torch.Tensor):
        """Up to 64 finite entries of a screened tile at seeded positions: (row idx, col idx, float64 values)."""
        gen = np.random.default_rng(0)
        ri = gen.integers(0, g.shape[0], 256)
        ci = gen.integers(0, g.shape[1], 256)
        vals = g[torch.from_numpy(ri).to(g.device), torch.from_numpy(ci).to(g.device)].double().cpu().numpy()
        ok = np.isfinite(vals)[:64]
        return ri[:64][ok], ci[:64][ok], vals[:64][ok]

    def _check(self, g: torch.Tensor, i0: int, j0: int) -> None:
        """Compare up to 64 finite screened entries of the first tile with the reference (cheap insurance)."""
        ri, ci, vals = self._sample_tile(g)
        check_screen(vals, self.rows.X, self.cols.X, i0 + ri, j0 + ci, self.rows.sqnorm, self.cols.sqnorm, self.eps)
        self._screen_checked = True

    # -- pass 1 -----------------------------------------------------------------------------------------------------
    def chunk_size(self) -> int:
        """Column-chunk width of the pass-1 table: a power of two >= max(128, cols.n / 1024) (the table stays small;
        fewer, larger chunks make the candidate re-screen cheaper: measured 128 < 64 < 32 at N = 20k)."""
        ch = 128
        while ch * 1024 < self.cols.n and ch < self.T:
            ch *= 2
        return max(1, min(ch, self.T))

    def nearest_foreign(self) -> np.ndarray:
        with single_thread(self.device):
            return self._nearest_foreign()

    def _nearest_foreign(self) -> np.ndarray:
        if self.use_bf16 and self._setup_bf16():
            return self._nearest_foreign_bf16()
        return self._nearest_foreign_f32()

    def _nearest_foreign_f32(self) -> np.ndarray:
        """Exact m_p = min over foreign q of s(p, q), float64 (rows.n,).

        Pass 1a keeps, for every row and every chunk of ch columns, the smallest screened foreign distance (an
        (n, n / ch) float32 table: one strided min per tile side, no candidate lists). The bound U_p follows; only
        chunks whose minimum is within U_p + E are recomputed (tiny GEMMs) and their candidates evaluated in float64.
        """
        rows, cols, sym, ch = self.rows, self.cols, self.symmetric, self.ch
        coff, cstarts = self._chunk_grid(self.cblocks)
        roff = coff if sym else None
        M = torch.full((rows.n, cstarts.shape[0]), math.inf, device=self.device)
        for i0, i1, j0, j1, bi, bj in self.pass1_tiles():
            g = self._tile(i0, i1, j0, j1)
            for r0, r1, c0, c1 in rows.same_class_rects(i0, i1, cols, j0, j1):
                g[r0:r1, c0:c1] = math.inf
            if not self._screen_checked:
                self._check(g, i0, j0)
            M[i0:i1, coff[bj] : coff[bj] + -(-(j1 - j0) // ch)] = _chunk_min(g, ch, dim=1)
            if sym and bi != bj:  # the same distances seen from the columns' side
                M[j0:j1, roff[bi] : roff[bi] + -(-(i1 - i0) // ch)] = _chunk_min(g, ch, dim=0).T
            if self.bar is not None:
                self.bar.update(1)
        return self._resolve_candidates(M, cstarts)

    def _resolve_candidates(self, M: torch.Tensor, cstarts: np.ndarray) -> np.ndarray:
        rows, cols, eps = self.rows, self.cols, self.eps
        nmax = torch.from_numpy(np.maximum.reduceat(cols.sqnorm, cstarts).astype(np.float32)).to(self.device)
        pairs = []
        for s0 in range(0, rows.n, 1 << 16):  # row blocks keep the (rows, nch) temporaries small
            Mb = M[s0 : s0 + (1 << 16)]
            slack = eps * (self.nr[s0 : s0 + (1 << 16), None] + nmax[None, :])
            ub = (Mb + slack).amin(1, keepdim=True)  # >= m_p
            rr, kk = torch.nonzero(Mb <= ub + slack, as_tuple=True)  # chunks that may hold a minimiser
            pairs.append((rr + s0, kk, ub[rr, 0]))
        rr = torch.cat([p[0] for p in pairs])
        kk = torch.cat([p[1] for p in pairs])
        ub = torch.cat([p[2] for p in pairs])
        return self._evaluate_chunks(rr, kk, ub, cstarts)

    def _evaluate_chunks(self, rr: torch.Tensor, kk: torch.Tensor, ub: torch.Tensor, cstarts: np.ndarray) -> np.ndarray:
        """m_p from candidate (row, column chunk) pairs; ub (float32) >= m_p of each pair's row.

        Each chunk's rows are screened again in float32 (tiny GEMMs). The float32 values tighten the bound first:
        U_p = min(ub, min over the screened foreign columns of g + E) >= m_p. Then every column with g <= U_p + E
        (which includes every exact minimiser) is evaluated with the reference arithmetic.
        """
        rows, cols, eps = self.rows, self.cols, self.eps
        cends = np.append(cstarts[1:], cols.n)
        best = np.full(rows.n, math.inf)
        order = torch.argsort(kk, stable=True)
        rr, kk, ub = rr[order], kk[order], ub[order]
        ks, counts = torch.unique_consecutive(kk, return_counts=True)
        rcodes = torch.from_numpy(rows.codes).to(self.device)
        ccodes = torch.from_numpy(cols.codes).to(self.device)
        U = torch.full((rows.n,), math.inf, device=self.device)
        U.scatter_reduce_(0, rr, ub, reduce="amin")
        groups, kidx = [], []
        start = 0
        one_class = cols.codes[cstarts] == cols.codes[cends - 1]
        rr_np = rr.cpu().numpy()
        mask_needed = []
        for k, cnt in zip(ks.tolist(), counts.tolist()):
            groups.append((len(groups), rr[start : start + cnt], int(cstarts[k]), int(cends[k])))
            # a chunk of one class needs no mask when none of its rows is of that class
            mask_needed.append(not one_class[k] or bool((rows.codes[rr_np[start : start + cnt]] == cols.codes[
                cstarts[k]]).any()))
            kidx.append(k)
            start += cnt
        screened = [None] * len(groups)

        ncmax = torch.from_numpy(np.maximum.reduceat(cols.sqnorm, cstarts).astype(np.float32)).to(self.device)

        def screen(grp):
            i, r, j0, j1 = grp
            g = torch.mm(self.L.index_select(0, r), self.R[j0:j1].T)
            if mask_needed[i]:
                g[rcodes[r][:, None] == ccodes[None, j0:j1]] = math.inf
            E = eps * (self.nr[r] + ncmax[kidx[i]])  # the chunk's largest norm: a larger, still valid E
            screened[i] = (g, E, g.amin(1) + E)

        _run_tiles(groups, screen, self.workers)
        for (i, r, j0, j1), (g, E, umin) in zip(groups, screened):
            U.scatter_reduce_(0, r, umin, reduce="amin")
        found = [None] * len(groups)

        def select(grp):
            i, r, j0, j1 = grp
            g, E, _ = screened[i]
            a, b = torch.nonzero(g <= (U[r] + E)[:, None], as_tuple=True)
            found[i] = (r[a].cpu().numpy(), (j0 + b).cpu().numpy())

        _run_tiles(groups, select, self.workers)
        ia = np.concatenate([f[0] for f in found]) if found else np.zeros(0, dtype=np.int64)
        ib = np.concatenate([f[1] for f in found]) if found else np.zeros(0, dtype=np.int64)
        s = self._decide_pairs(ia, ib)
        _scatter_min(best, ia, s)
        return best

    # -- pass 1 with the bfloat16 screen ------------------------------------------------------------------------------
    def _setup_bf16(self) -> bool:
        """bfloat16 operands (see exact.Bf16Side); False when the data's magnitude does not suit bfloat16."""
        rows, cols = self.rows, self.cols
        mu = cols.X.mean(0)  # centring shrinks the rounding errors (which scale with the centred norms)
        c = self._offset_estimate()
        sr = Bf16Side(rows.X, mu, c, workers=self.workers)
        sc = sr if self.symmetric else Bf16Side(cols.X, mu, c, workers=self.workers)
        if not (np.isfinite(c) and max(sr.max_sqnorm, sc.max_sqnorm) < BF16_MAX_SQNORM):
            return False
        self.s16r, self.s16c = sr, sc
        self.L16 = sr.left.to(self.device)
        self.R16 = sc.right.to(self.device)
        if self.device.type != "cpu":
            sc.right = None  # the host keeps `left` only (the runtime check reads yhat from it)
        return True

    def _offset_estimate(self) -> float:
        """Offset c: 1.25 x the largest nearest-foreign squared distance of up to 32 sample rows (float32 screen).

        With w ~ (c - s) / 2 the chunk maxima that matter are positive (see `_nearest_foreign_bf16`) yet small.
        Returned as a bfloat16 number.
        """
        rows, cols = self.rows, self.cols
        idx = np.unique(np.linspace(0, rows.n - 1, min(32, rows.n)).round().astype(np.int64))
        it = torch.from_numpy(idx).to(self.device)
        g = torch.mm(self.L.index_select(0, it), self.R.T)
        g[torch.from_numpy(rows.codes[idx][:, None] == cols.codes[None, :]).to(self.device)] = math.inf
        mins = g.amin(1)
        mins = mins[torch.isfinite(mins)]
        if not mins.numel():
            return 0.0
        c = 1.25 * float(mins.double().max().clamp_min(0.0))
        return float(torch.tensor(c, dtype=torch.float64).to(torch.bfloat16).double())

    def _tile16(self, i0, i1, j0, j1) -> torch.Tensor:
        """bfloat16 GEMM values w (see exact.Bf16Side) of the tile."""
        return torch.mm(self.L16[i0:i1], self.R16[j0:j1].T)

    def _check16(self, g: torch.Tensor, i0: int, j0: int) -> None:
        ri, ci, vals = self._sample_tile(g)
        check_bf16_screen(vals, self.rows.X, self.cols.X, i0 + ri, j0 + ci, self.s16r, self.s16c)

    def _nearest_foreign_bf16(self) -> np.ndarray:
        """Exact m_p with the bfloat16 screen.

        Pass 1a keeps, per row and chunk of ch columns, the largest bfloat16 GEMM value w (~ (c - s) / 2: the largest
        w is the nearest column) over the chunk's foreign columns. The maximum is taken over the int16 bit patterns
        (several times faster than a bfloat16 reduction): over positive values it is the largest value; when all are
        negative it is the most negative one. Same-class entries are set to the smallest pattern (-0.0, int16
        -32768), so they never win over a foreign entry. Decoding (exact, see `_bf16_candidates`): a value v >= 0 is
        the chunk's maximum; a negative v is some foreign entry of the chunk and the maximum lies in [v, 0].
        `exact.bf16_bounds` then gives a rigorous lb of the chunk's smallest reference distance (from the largest
        possible maximum) and an ub of an attained one; U_p = min ub >= m_p and only chunks with lb <= U_p (every
        chunk holding a minimiser) are evaluated further (float32 re-screen, then float64).
        """
        rows, cols, sym, ch = self.rows, self.cols, self.symmetric, self.ch
        coff, cstarts = self._chunk_grid(self.cblocks)
        roff = coff if sym else None
        M = torch.full((rows.n, cstarts.shape[0]), -32768, dtype=torch.int16, device=self.device)

        def tile(t):  # tiles write disjoint parts of M (rows of one block x chunks of another)
            i0, i1, j0, j1, bi, bj = t
            g = self._tile16(i0, i1, j0, j1)
            if t is first:
                self._check16(g, i0, j0)
            g = g.view(torch.int16)
            for r0, r1, c0, c1 in rows.same_class_rects(i0, i1, cols, j0, j1):
                g[r0:r1, c0:c1] = -32768
            M[i0:i1, coff[bj] : coff[bj] + -(-(j1 - j0) // ch)] = _chunk_max(g, ch, dim=1)
            if sym and bi != bj:
                M[j0:j1, roff[bi] : roff[bi] + -(-(i1 - i0) // ch)] = _chunk_max(g, ch, dim=0).T
            if self.bar is not None:
                self.bar.update(1)

        tiles = self.pass1_tiles()
        first = tiles[0] if tiles else None  # its values are checked (an error stops the run before any decision)
        _run_tiles(tiles, tile, self.workers)
        return self._bf16_candidates(M, cstarts)

    def _bf16_candidates(self, M: torch.Tensor, cstarts: np.ndarray) -> np.ndarray:
        """Rigorous U_p and candidate chunks from the int16 table M of chunk maxima, then `_evaluate_chunks`.

        First with the whole column set's worst-case statistics (an upper bound U_p from each row's largest entry, and
        a per-row threshold: one comparison over the table), then per candidate with its chunk's own statistics
        (tighter U_p and fewer chunks). Both stages keep every chunk that holds a minimiser.
        """
        rows, cols, sr, sc = self.rows, self.cols, self.s16r, self.s16c
        g_kmin, g_kmax = sc.kappa.min(), sc.kappa.max()
        g_rmax, g_gmax = sc.rho.max(), sc.gam.max()
        if bool(((M & 0x7FFF) > 0x7F80).any()):  # NaN bit patterns (either sign)
            raise RuntimeError("bfloat16 distance screen produced NaN")
        # each row's int16-largest entry is an attained foreign value (rows always have a foreign chunk)
        vrow = M.amax(1).view(torch.bfloat16).float().cpu().numpy().astype(np.float64)
        _, U = bf16_bounds(vrow, sr.kappa, sr.rho, sr.gam, g_kmin, g_kmax, g_rmax, g_gmax)
        thr = bf16_threshold(U, sr.kappa, sr.rho, sr.gam, g_kmin, g_rmax, g_gmax)
        # A chunk's largest possible maximum is v when v >= 0, else 0. Keep it when that is >= thr: for thr > 0 that
        # is v >= thr, i.e. bits >= the bits of a bfloat16 number <= thr (positive patterns order like the values,
        # negative patterns are below them); for thr <= 0 every chunk is kept.
        t32 = torch.from_numpy(_round_down_f32(np.maximum(thr, 0.0)))  # <= thr where thr > 0
        k16 = t32.to(torch.bfloat16)
        key = k16.view(torch.int16) - (k16.float() > t32).to(torch.int16)  # one bfloat16 step down if rounded up
        key = torch.where(torch.from_numpy(thr > 0), key, torch.full_like(key, -32768)).to(self.device)
        rr, kk = torch.nonzero(M >= key[:, None], as_tuple=True)
        bits = M[rr, kk]
        v = bits.view(torch.bfloat16).float().cpu().numpy().astype(np.float64)
        neg = (bits < 0).cpu().numpy()
        r, k = rr.cpu().numpy(), kk.cpu().numpy()
        cends = np.append(cstarts[1:], cols.n)
        one_class = np.where(cols.codes[cstarts] == cols.codes[cends - 1], cols.codes[cstarts], -1)
        foreign = one_class[k] != rows.codes[r]  # False: the chunk is all the row's own class
        kmin = np.minimum.reduceat(sc.kappa, cstarts)[k]
        kmax = np.maximum.reduceat(sc.kappa, cstarts)[k]
        rmax = np.maximum.reduceat(sc.rho, cstarts)[k]
        gmax = np.maximum.reduceat(sc.gam, cstarts)[k]
        lb, _ = bf16_bounds(np.where(neg, 0.0, v), sr.kappa[r], sr.rho[r], sr.gam[r], kmin, kmax, rmax, gmax)
        _, ub = bf16_bounds(v, sr.kappa[r], sr.rho[r], sr.gam[r], kmin, kmax, rmax, gmax)
        lb[~foreign] = np.inf
        ub[~foreign] = np.inf
        np.minimum.at(U, r, ub)
        keep = lb <= U[r]
        kt = torch.from_numpy(keep).to(self.device)
        ub32 = torch.from_numpy(_round_up_f32(U[r[keep]])).to(self.device)
        return self._evaluate_chunks(rr[kt], kk[kt], ub32, cstarts)

    # -- pass 2 -----------------------------------------------------------------------------------------------------
    def count_closer(self, m: np.ndarray) -> np.ndarray:
        with single_thread(self.device):
            return self._count_closer(m)

    def _count_closer(self, m: np.ndarray) -> np.ndarray:
        """#{classmates q != p : s(p, q) < m_p} for every row, int64 (rows.n,)."""
        import threading

        sym = self.symmetric
        m32 = torch.from_numpy(m.astype(np.float32)).to(self.device)
        acc: dict = {}  # per thread: (cnt, extra), summed at the end (tiles of one class share rows)
        lock = threading.Lock()

        def tile(t):
            i0, i1, j0, j1 = t
            key = threading.get_ident()
            if key not in acc:
                with lock:
                    acc[key] = (torch.zeros(self.rows.n, dtype=torch.int64, device=self.device), [])
            cnt, extra = acc[key]
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

        _run_tiles(self.pass2_tiles(), tile, self.workers)
        total = np.zeros(self.rows.n, dtype=np.int64)
        pend = []
        for cnt, extra in acc.values():
            total += cnt.cpu().numpy()
            pend += extra
        if pend:
            q = np.concatenate([p[0] for p in pend])
            o = np.concatenate([p[1] for p in pend])
            s = self._decide_pairs(q, o)
            total += np.bincount(q[s < m[q]], minlength=self.rows.n)
        return total

    def _decide_pairs(self, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        """Reference s(rows[ia], cols[ib]) (float64), sorted by ia for locality, on the tile threads."""
        order = np.argsort(ia, kind="stable")
        out = np.empty(ia.shape[0])
        step = 1 << 12
        sl = [(s, order[s : s + step]) for s in range(0, ia.shape[0], step)]

        def part(a):
            s, o = a
            out[o] = pair_sq_distances(self.rows.X, self.cols.X, ia[o], ib[o])

        _run_tiles(sl, part, self.workers)
        return out

    def _count_side(self, g, mt, E, cnt_view, m, extra, i0, j0, *, axis: int) -> None:
        """Count along `axis` (1: tile rows are the queries; 0: tile columns are).

        Ambiguous pairs (query, other) are appended to the list `extra` for the float64 decision. Axis 0 occurs only
        in the one-set case, where rows and cols are the same set.
        """
        shape = (-1, 1) if axis == 1 else (1, -1)
        lo = (mt - E).view(shape)
        hi = (mt + E).view(shape)
        below = _count_less(g, lo, axis)
        maybe = _count_less(g, hi, axis)
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
        extra.append((q, o))  # evaluated together at the end (`_decide_pairs`)

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
