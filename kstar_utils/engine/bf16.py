"""The bfloat16 screen of pass 1 (squared Euclidean only): its rigorous bound and its runtime check.

Used where bfloat16 GEMMs are fast (CPU AMX / AVX512-BF16, CUDA tensor cores).

Rows are centred (Y = fl(x - mu), any mu: differences of the original rows are what is bounded) and rounded to
bfloat16 (yhat). The GEMM runs on [yhat, hi, lo, 1, 1] . [yhat, 1, 1, hi, lo] with bfloat16 inputs, products exact in
float32, float32 accumulation in any order, and a bfloat16 output rounded to nearest; it returns
w = kappa_p + kappa_q - ||yhat_p - yhat_q||^2 / 2 up to |error| <= gam_p + gam_q + 2^-8 |w_out| (see `Bf16Side`).
With rho_p >= ||(x_p - mu) - yhat_p|| (computed per row, with margins for its own rounding), the triangle inequality
puts ||x_p - x_q|| within rho_p + rho_q of ||yhat_p - yhat_q||, which gives rigorous [lb, ub] of s for a pair, and for
a chunk of columns from its largest w (`bf16_bounds`). No norm-relative term: the window scales with the distance and
the rounding residual of the centred rows (D = 512, the benchmark's data: about +-6 around s ~ 1000, against +-0.1 for
the float32 screen), so pass 1 keeps a few candidate chunks per row, which then go through the float32 screen and the
float64 decision above: m_p stays the reference value bit for bit. `check_bf16_screen` (run on a sample of the first
tile) raises when a library accumulates in bfloat16 or rounds its output otherwise.
"""
from __future__ import annotations

import numpy as np

from kstar_utils.engine.bounds import TINY32, U32, U64, _gamma
from kstar_utils.engine.layout import table_rows
from kstar_utils.engine.reference import pair_sq_distances
from kstar_utils.engine.threads import run_tiles

# Relative error of the GEMM's bfloat16 output: round-to-nearest-even (oneDNN's vcvtneps2bf16, CUDA's RN conversion)
# gives 2^-8 (the 1.001 covers float64 evaluation); a truncating conversion (errors up to 2^-7) fails the runtime check.
U16_OUT = 2.0**-8 * 1.001
BF16_MAX_SQNORM = 2.0**100  # larger rows would risk float32 overflow in the GEMM: the float32 screen is used then


class Bf16Side:
    """One side of the bfloat16 screen (docs: `bf16_bounds`).

    For rows x_p (float64) and a centre mu: Y = fl(x - mu); yhat = bf16(Y) (any rounding within a factor 2);
    alpha = c / 4 - ||yhat||^2 / 2 split into two bfloat16 numbers hi + lo. The GEMM operands are
    left = [yhat, hi, lo, 1, 1] and right = [yhat, 1, 1, hi, lo], so left_p . right_q = w_pq with the real value
    w_pq = yhat_p . yhat_q + alpha'_p + alpha'_q = kappa_p + kappa_q - ||yhat_p - yhat_q||^2 / 2, where
    alpha' = hi + lo and kappa = ||yhat||^2 / 2 + alpha' (~ c / 4, so w ~ (c - s) / 2 stays small near the decisions).

    Per row (float64, (n,)): kappa; rho >= ||(x - mu) - yhat|| (rounding of the centred row to bfloat16, plus the
    float64 rounding of x - mu); gam = 1.01 gamma_{D+4}(2^-24) (||yhat||^2 / 2 + |hi| + |lo|) + small absolute and
    relative slack, so |w_computed_fp32 - w| <= gam_p + gam_q for any float32 accumulation order.
    left, right: the GEMM operands, bfloat16 (n, width) CPU tensors; hi, lo: float32 (n,) (bfloat16 values).
    """

    def __init__(self, X: np.ndarray, mu: np.ndarray, c: float, workers: int = 1, width: int | None = None):
        import torch

        n, d = X.shape
        width = (d + 4 + 31) // 32 * 32 if width is None else width
        left = torch.zeros((n, width), dtype=torch.bfloat16)
        nu = np.empty(n)
        rho = np.empty(n)

        def block(s0):  # row blocks stay in cache; on `workers` threads
            Y = X[s0 : s0 + 1024] - mu[None, :]
            t = torch.from_numpy(Y.astype(np.float32)).to(torch.bfloat16)  # faster than from float64
            left[s0 : s0 + 1024, :d] = t
            yd = t.double().numpy()
            nu[s0 : s0 + 1024] = np.einsum("ij,ij->i", yd, yd)
            Y -= yd  # exact (Sterbenz: yd is within a factor 2 of Y, even after the double rounding)
            rho[s0 : s0 + 1024] = np.sqrt(np.einsum("ij,ij->i", Y, Y))

        run_tiles(list(range(0, n, 1024)), block, workers)
        # ||(x - mu) - yhat|| <= ||Y - yhat|| + ||(x - mu) - Y||,
        # the latter <= u64 ||Y|| <= u64 (||yhat|| + ||Y - yhat||)
        self.rho = rho * (1 + 1e-12) + 2 * U64 * (np.sqrt(nu) + rho) + 1e-300
        alpha = 0.25 * c - 0.5 * nu
        hi = torch.from_numpy(alpha).to(torch.bfloat16)
        lo = torch.from_numpy(alpha - hi.double().numpy()).to(torch.bfloat16)
        self.hi, self.lo = hi.float().numpy(), lo.float().numpy()
        hi64, lo64 = self.hi.astype(np.float64), self.lo.astype(np.float64)
        self.kappa = 0.5 * nu + hi64 + lo64
        # float32 accumulation, plus underflow: a GEMM may flush subnormal inputs (each |yhat_i| < 2^-126, so the dot
        # product moves by <= 2^-126 (||yhat_p||_1 + ||yhat_q||_1) <= 2^-126 sqrt(D) (||yhat_p|| + ||yhat_q||)) and
        # subnormal products / partial sums (<= 2^-126 each, D + 4 of them)
        self.gam = 1.01 * _gamma(d + 4, U32) * (0.5 * nu + np.abs(hi64) + np.abs(lo64)) + 1e-9 * (
            nu + abs(c) + np.abs(self.kappa)) + TINY32 * (1.01 * np.sqrt(d * nu) + d + 4)
        self.max_sqnorm = float(nu.max(initial=0.0))
        # GEMM operands (bfloat16, (n, width)): left = [yhat, hi, lo, 1, 1, 0...], right = [yhat, 1, 1, hi, lo, 0...]
        right = left.clone()
        left[:, d], left[:, d + 1], left[:, d + 2], left[:, d + 3] = hi, lo, 1.0, 1.0
        right[:, d], right[:, d + 1], right[:, d + 2], right[:, d + 3] = 1.0, 1.0, hi, lo
        self.left, self.right, self.dim = left, right, d

    def yhat(self, idx) -> np.ndarray:
        """The bfloat16 rows yhat[idx] as float64 (exact)."""
        return self.left[idx, : self.dim].double().numpy()


def bf16_bounds(W, kap_p, rho_p, gam_p, kap_min, kap_max, rho_q, gam_q):
    """Bounds [lb, ub] of the reference s(p, q) from the bfloat16 screen, float64 arrays (broadcasting).

    W: computed GEMM value (the largest of a chunk of columns, -inf when the chunk has no foreign column);
    kap_min / kap_max / rho_q / gam_q: the column side's kappa range, largest rho and gam over the chunk (or the
    column's own values for single pairs). Derivation, with w the real value (see `Bf16Side`):
    |W - w| <= gam_p + gam_q + U16_OUT |W| for the column attaining W, and w + U16_OUT |w| is increasing, so
        every q of the chunk:  ||yhat_p - yhat_q||^2 >= 2 kap_p + 2 kap_min - 2 (W + U16_OUT |W| + gam_p + gam_q)
        the attaining q:       ||yhat_p - yhat_q||^2 <= 2 kap_p + 2 kap_max - 2 (W - U16_OUT |W| - gam_p - gam_q).
    x_p - x_q = (yhat_p - yhat_q) + (errors of norm <= rho_p + rho_q): by the triangle inequality the true
    ||x_p - x_q|| lies within rho_p + rho_q of ||yhat_p - yhat_q||, and s is within gamma_{D+2}(2^-53) (relative)
    of ||x_p - x_q||^2. lb <= min over the chunk of s; ub >= s of the attaining column. (The float64 evaluation of
    these expressions errs by a few 2^-53 relative: covered by the 1e-9 terms of gam and the factors below.)
    """
    W = np.asarray(W, dtype=np.float64)
    fin = np.isfinite(W)
    Wf = np.where(fin, W, 0.0)
    G = gam_p + gam_q
    r = rho_p + rho_q
    lo_y = 2 * kap_p + 2 * kap_min - 2 * (Wf + U16_OUT * np.abs(Wf) + G)
    hi_y = 2 * kap_p + 2 * kap_max - 2 * (Wf - U16_OUT * np.abs(Wf) - G)
    lb = np.maximum(np.sqrt(np.maximum(lo_y, 0.0)) * (1 - 1e-12) - r, 0.0) ** 2 * (1 - 1e-9)
    ub = (np.sqrt(np.maximum(hi_y, 0.0)) * (1 + 1e-12) + r) ** 2 * (1 + 1e-9)
    return np.where(fin, lb, np.inf), np.where(fin, ub, np.inf)


def bf16_threshold(U, kap_p, rho_p, gam_p, kap_min, rho_q, gam_q):
    """Smallest W that `bf16_bounds` can give lb <= U (float64, broadcasting): lb(W) <= U implies W >= threshold.

    lb is non-increasing in W, so chunks with W below the threshold cannot hold a column with s <= U. The value is
    lowered by a relative 1e-9 (and an absolute 1e-9 of the magnitudes) to cover the float64 evaluation.
    """
    r = rho_p + rho_q
    t = kap_p + kap_min - (gam_p + gam_q) - 0.5 * ((np.sqrt(U) * (1 + 1e-12) + r) ** 2 * (1 + 1e-9))
    thr = np.where(t >= 0, t / (1 + U16_OUT), t / (1 - U16_OUT))
    return thr - 1e-9 * (np.abs(thr) + np.abs(kap_p) + np.abs(kap_min) + U) - 1e-300


def check_bf16_screen(w: np.ndarray, A: np.ndarray, B: np.ndarray, ia, ib, sa: Bf16Side, sb: Bf16Side) -> None:
    """Raise RuntimeError when GEMM values w (k,) of the bfloat16 screen break its assumptions for pairs (ia, ib).

    Two checks: the GEMM itself (|w - w_real| <= gam_a + gam_b + U16_OUT |w|, w_real from the bfloat16 operands in
    float64: catches bfloat16 accumulation or reduced-precision reductions) and the final bounds lb <= s <= ub.
    """
    ia = np.asarray(ia, dtype=np.int64)
    ib = np.asarray(ib, dtype=np.int64)
    w = np.asarray(w, dtype=np.float64)
    ya = sa.yhat(ia)
    yb = sb.yhat(ib)
    w_real = np.einsum("ij,ij->i", ya, yb) + sa.hi[ia] + sa.lo[ia] + sb.hi[ib] + sb.lo[ib]
    tol = sa.gam[ia] + sb.gam[ib] + U16_OUT * np.abs(w) + 1e-12 * (np.abs(w_real) + sa.gam[ia])
    err = np.abs(w - w_real)
    if np.any(err > tol):
        k = int(np.argmax(err - tol))
        raise RuntimeError(
            f"bfloat16 distance screen exceeds its error bound (GEMM error {err[k]:.3g} > bound {tol[k]:.3g}); "
            "the bfloat16 GEMM must accumulate in float32"
        )
    s = pair_sq_distances(A, B, ia, ib)
    lb, ub = bf16_bounds(w, sa.kappa[ia], sa.rho[ia], sa.gam[ia], sb.kappa[ib], sb.kappa[ib], sb.rho[ib], sb.gam[ib])
    if np.any((s < lb) | (s > ub)):
        k = int(np.argmax(np.maximum(lb - s, s - ub)))
        raise RuntimeError(f"bfloat16 distance screen exceeds its error bound (s = {s[k]!r} outside "
                           f"[{lb[k]!r}, {ub[k]!r}])")


# -- pass 1 with the bfloat16 screen ----------------------------------------------------------------------------------
def tile_gemm(left, right):
    """The bfloat16 GEMM of one tile: w = left . right^T (bfloat16 inputs, float32 accumulation, bfloat16 output)."""
    import torch

    return torch.mm(left, right.T)


def nearest_foreign_bf16(engine):
    """Exact (m_p, enemy_p) of a TwoPassEngine whose kernel is the squared-Euclidean GEMM, with the bfloat16 screen;
    None when the data's magnitude does not suit bfloat16 (the caller then uses the float32 screen).

    Pass 1a keeps, per row and chunk of ch columns, the largest bfloat16 GEMM value w (~ (c - s) / 2: the largest w is
    the nearest column) over the chunk's foreign columns. The maximum is taken over the int16 bit patterns (several
    times faster than a bfloat16 reduction): over positive values it is the largest value; when all are negative it is
    the most negative one. Same-class entries are set to the smallest pattern (-0.0, int16 -32768), so they never win
    over a foreign entry. Decoding (exact, see `_candidates`): a value v >= 0 is the chunk's maximum; a negative v is
    some foreign entry of the chunk and the maximum lies in [v, 0]. `bf16_bounds` then gives a rigorous lb of the
    chunk's smallest reference distance (from the largest possible maximum) and an ub of an attained one;
    U_p = min ub >= m_p and only chunks with lb <= U_p (every chunk holding a minimiser) are evaluated further
    (float32 re-screen, then float64).
    """
    import torch

    from kstar_utils.engine.ops import chunk_reduce

    sides = _setup(engine)
    if sides is None:
        return None
    sr, sc, L16, R16 = sides
    rows, cols, sym, ch = engine.rows, engine.cols, engine.symmetric, engine.ch
    coff, cstarts = engine.chunk_grid(engine.cblocks)
    roff = coff if sym else None
    M = torch.full((engine.table_rows_count(), cstarts.shape[0]), -32768, dtype=torch.int16, device=engine.device)
    toff = engine._toff  # first table row of each block

    def tile(t):  # tiles write disjoint parts of M (rows of one block x chunks of another)
        i0, i1, j0, j1, bi, bj = t
        g = tile_gemm(L16[i0:i1], R16[j0:j1])
        if t is first:
            ri, ci, vals = engine.sample_tile(g)
            check_bf16_screen(vals, rows.X, cols.X, i0 + ri, j0 + ci, sr, sc)
        g = g.view(torch.int16)
        for r0, r1, c0, c1 in rows.same_class_rects(i0, i1, cols, j0, j1):
            g[r0:r1, c0:c1] = -32768
        a = toff[bi]
        M[a : a + i1 - i0, coff[bj] : coff[bj] + -(-(j1 - j0) // ch)] = chunk_reduce(g, ch, dim=1, op="amax")
        if sym and bi != bj:
            a = toff[bj]
            M[a : a + j1 - j0, roff[bi] : roff[bi] + -(-(i1 - i0) // ch)] = chunk_reduce(g, ch, dim=0, op="amax").T
        if engine.bar is not None:
            engine.bar.update(1)

    tiles = engine.pass1_tiles()
    first = tiles[0] if tiles else None  # its values are checked (an error stops the run before any decision)
    run_tiles(tiles, tile, engine.workers)
    return _candidates(engine, M, cstarts, sr, sc)


def _setup(engine):
    """bfloat16 operands (see Bf16Side): (row side, column side, left GEMM operand, right GEMM operand), or None.

    An engine over a block of queries may carry `bf16_pool` (`pool_side`): the column side built once for every
    block, with its centre and offset."""
    rows, cols = engine.rows, engine.cols
    shared = getattr(engine, "bf16_pool", None)
    if shared is not None:
        mu, c, sc, R16 = shared
        # the set itself (a share of a one-set run): its own side; a block of queries: their side
        sr = sc if engine.symmetric else Bf16Side(rows.X, mu, c, workers=engine.workers)
    else:
        mu = cols.X.mean(0)  # centring shrinks the rounding errors (which scale with the centred norms)
        c = _offset_estimate(engine)
        sr = Bf16Side(rows.X, mu, c, workers=engine.workers)
        sc = sr if engine.symmetric else Bf16Side(cols.X, mu, c, workers=engine.workers)
    if not (np.isfinite(c) and max(sr.max_sqnorm, sc.max_sqnorm) < BF16_MAX_SQNORM):
        return None
    L16 = sr.left.to(engine.device)
    if shared is None:
        R16 = sc.right.to(engine.device)
        if engine.device.type != "cpu":
            sc.right = None  # the host keeps `left` only (the runtime check reads yhat from it)
    return sr, sc, L16, R16


def pool_side(cols, rows_vs, device, workers: int = 1):
    """The column side of the bfloat16 screen for a set `cols` (SortedSet) whose rows are also the queries, built once
    for every block of them: (mu, c, Bf16Side, right operand on `device`). rows_vs(idx, j0, j1): float32 screened
    scores of the set's rows idx against its rows j0:j1 (the offset c is estimated from them, as in a whole run)."""
    mu = cols.X.mean(0)
    c = offset_estimate(cols, cols, rows_vs, device)
    sc = Bf16Side(cols.X, mu, c, workers=workers)
    return mu, c, sc, sc.right.to(device)


def _offset_estimate(engine) -> float:
    return offset_estimate(engine.rows, engine.cols, engine.kernel.rows_vs, engine.device)


def offset_estimate(rows, cols, rows_vs, device) -> float:
    """Offset c: 1.25 x the largest nearest-foreign squared distance of up to 32 sample rows (float32 screen,
    rows_vs(idx tensor, j0, j1) -> (k, j1 - j0) scores of rows[idx] against cols[j0:j1]).

    With w ~ (c - s) / 2 the chunk maxima that matter are positive (see `nearest_foreign_bf16`) yet small.
    Returned as a bfloat16 number.
    """
    import math

    import torch

    idx = np.unique(np.linspace(0, rows.n - 1, min(32, rows.n)).round().astype(np.int64))
    it = torch.from_numpy(idx).to(device)
    g = rows_vs(it, 0, cols.n)
    g[torch.from_numpy(rows.codes[idx][:, None] == cols.codes[None, :]).to(device)] = math.inf
    mins = g.amin(1)
    mins = mins[torch.isfinite(mins)]
    if not mins.numel():
        return 0.0
    c = 1.25 * float(mins.double().max().clamp_min(0.0))
    return float(torch.tensor(c, dtype=torch.float64).to(torch.bfloat16).double())


def _candidates(engine, M, cstarts: np.ndarray, sr: Bf16Side, sc: Bf16Side):
    """Rigorous U_p and candidate chunks from the int16 table M of chunk maxima, then `engine.evaluate_chunks`.

    First with the whole column set's worst-case statistics (an upper bound U_p from each row's largest entry, and
    a per-row threshold: one comparison over the table), then per candidate with its chunk's own statistics
    (tighter U_p and fewer chunks). Both stages keep every chunk that holds a minimiser.
    """
    import torch

    from kstar_utils.engine.ops import round_down, round_up

    rows, cols = engine.rows, engine.cols
    g_kmin, g_kmax = sc.kappa.min(), sc.kappa.max()
    g_rmax, g_gmax = sc.rho.max(), sc.gam.max()
    # the table's rows are the rows, or (a share of the work, TwoPassEngine.restrict) the rows of some blocks
    gi = engine.table_index
    kap, rho, gam = (sr.kappa, sr.rho, sr.gam) if gi is None else (sr.kappa[gi], sr.rho[gi], sr.gam[gi])
    step = table_rows(M.shape[1])  # table scans in row blocks: no temporary the size of the table
    if any(bool(((M[s0 : s0 + step] & 0x7FFF) > 0x7F80).any()) for s0 in range(0, M.shape[0], step)):
        raise RuntimeError("bfloat16 distance screen produced NaN")  # NaN bit patterns (either sign)
    # each row's int16-largest entry is an attained foreign value (every row has a foreign chunk; in a share of the
    # work, every row of `has_foreign`: the others are left out below)
    vrow = M.amax(1).view(torch.bfloat16).float().cpu().numpy().astype(np.float64)
    _, U = bf16_bounds(vrow, kap, rho, gam, g_kmin, g_kmax, g_rmax, g_gmax)
    thr = bf16_threshold(U, kap, rho, gam, g_kmin, g_rmax, g_gmax)
    # A chunk's largest possible maximum is v when v >= 0, else 0. Keep it when that is >= thr: for thr > 0 that
    # is v >= thr, i.e. bits >= the bits of a bfloat16 number <= thr (positive patterns order like the values,
    # negative patterns are below them); for thr <= 0 every chunk is kept.
    t32 = torch.from_numpy(round_down(np.maximum(thr, 0.0)))  # <= thr where thr > 0
    k16 = t32.to(torch.bfloat16)
    key = k16.view(torch.int16) - (k16.float() > t32).to(torch.int16)  # one bfloat16 step down if rounded up
    key = torch.where(torch.from_numpy(thr > 0), key, torch.full_like(key, -32768))
    if engine.has_foreign is not None:  # no foreign column computed for the row: no chunk (0x7FFF is NaN, never kept)
        key = torch.where(torch.from_numpy(engine.has_foreign), key, torch.full_like(key, 0x7FFF))
    key = key.to(engine.device)
    hits = [torch.nonzero(M[s0 : s0 + step] >= key[s0 : s0 + step, None], as_tuple=True)
            for s0 in range(0, M.shape[0], step)]
    rr = torch.cat([h[0] + s0 for h, s0 in zip(hits, range(0, M.shape[0], step))])
    kk = torch.cat([h[1] for h in hits])
    bits = M[rr, kk]
    v = bits.view(torch.bfloat16).float().cpu().numpy().astype(np.float64)
    neg = (bits < 0).cpu().numpy()
    r, k = rr.cpu().numpy(), kk.cpu().numpy()  # table rows, chunks
    rg = r if gi is None else gi[r]  # the rows themselves
    cends = np.append(cstarts[1:], cols.n)
    one_class = np.where(cols.codes[cstarts] == cols.codes[cends - 1], cols.codes[cstarts], -1)
    foreign = one_class[k] != rows.codes[rg]  # False: the chunk is all the row's own class
    if engine.computed is not None:  # a share of the work: chunks of blocks not computed with the row's hold nothing
        foreign &= engine.computed[engine.table_block[r], engine.chunk_block[k]]
    kmin = np.minimum.reduceat(sc.kappa, cstarts)[k]
    kmax = np.maximum.reduceat(sc.kappa, cstarts)[k]
    rmax = np.maximum.reduceat(sc.rho, cstarts)[k]
    gmax = np.maximum.reduceat(sc.gam, cstarts)[k]
    lb, _ = bf16_bounds(np.where(neg, 0.0, v), sr.kappa[rg], sr.rho[rg], sr.gam[rg], kmin, kmax, rmax, gmax)
    _, ub = bf16_bounds(v, sr.kappa[rg], sr.rho[rg], sr.gam[rg], kmin, kmax, rmax, gmax)
    lb[~foreign] = np.inf
    ub[~foreign] = np.inf
    np.minimum.at(U, r, ub)
    keep = lb <= U[r]
    kt = torch.from_numpy(keep).to(engine.device)
    ub32 = torch.from_numpy(round_up(U[r[keep]])).to(engine.device)
    rows_of = rr if gi is None else torch.from_numpy(gi).to(engine.device)[rr]
    return engine.evaluate_chunks(rows_of[kt], kk[kt], ub32, cstarts)
