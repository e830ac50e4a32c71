"""The float64 arithmetic that defines "exact" k*, and the error bound of the float32 screen.

The definition (docs/METHOD.md section 1, evaluated in float64)
----------------------------------------------------------------
Rows x_p are float64 (after `prepare_metric`; cosine = Euclidean on L2-normalised float64 rows). The squared distance
of a pair is

    s(p, q) = numpy.sum((x_p - x_q) ** 2, axis=-1)

on C-contiguous float64 arrays: elementwise IEEE differences, squared, then numpy's (pairwise) sum over the contiguous
last axis of length D. `kstar.reference_sq_distances` and `pair_sq_distances` below perform exactly these operations,
so they give bit-identical values for the same pair. s(p, q) == s(q, p) bit for bit (x_q - x_p is the exact negation
of x_p - x_q). Decisions compare squared distances:

    m_p  = min over foreign q of s(p, q)            (exact float64 value)
    k*_p = 1 + #{classmates q != p : s(p, q) < m_p}  (strict)

Fast screen and its rigorous bound
----------------------------------
The engines screen pairs with float32 g(p, q) ~ ||a_p||^2 + ||a_q||^2 - 2 a_p.a_q, where a = fl32(x). Write
R = ||x_p||^2 + ||x_q||^2, u = 2^-24 (float32 unit roundoff), u64 = 2^-53 and gamma_n(u) = n u / (1 - n u).

1. Rounding the inputs: ||a - x|| <= u ||x||, hence | ||a_p - a_q||^2 - ||x_p - x_q||^2 | <= (4u + 2u^2) R.
2. The float32 formula, evaluated as one inner product of length D + 2 in ANY order, with or without FMA (BLAS
   blocking, split-K on GPU, faiss's norms + GEMM, faiss's direct difference loop): the squared norms are rounded
   once to float32 (relative error <= u + gamma_D(u64)), and a sum of D + 2 terms has absolute error at most
   gamma_{D+2}(u) times the sum of the terms' magnitudes, which is <= (2 + 2u) R_a with R_a <= (1 + u)^2 R.
   So |g - ||a_p - a_q||^2| <= (1 + u)^2 (2u + (2 + 2u) gamma_{D+2}(u)) R.
3. The reference itself: |s - ||x_p - x_q||^2| <= gamma_{D+2}(u64) ||x_p - x_q||^2 <= 2 gamma_{D+2}(u64) R.

Hence |g - s| <= eps_theory * R with eps_theory the sum of the three terms (D = 512: 6.2e-5), as long as nothing
underflows. Underflow and overflow: the rows reach the engines at the canonical scale of `kstar.scale_exponent`
(largest |x_i| in [1, 2), an exact power-of-two rescale), so R <= 8 D and no float32 or float64 value overflows. What
can still underflow are tiny coordinates and products, and a GEMM may flush subnormals to zero: each rounding of an
input to float32 then errs by at most u |x_i| + 2^-126 absolute, each product and partial sum of the length-(D + 2)
inner product, each rounded norm and each float32 threshold by at most 2^-126 more. Carried through step 1 with
||x_p - x_q|| <= sqrt(2 R) <= 4 sqrt(D), these add at most 18 (D + 2) 2^-126 to the bound; the engines use
eta = 128 (D + 2) 2^-126 (D = 512: 7.7e-35, far below any distance that is not itself near underflow) and enforce it
as a floor on the bound norms: eps * ((n_p + tau) + (n_q + tau)) = eps * R + eta with tau = eta / (2 eps)
(`screen_floor`). The engines use
eps = 1.25 eps_theory + 32u: the extra quarter absorbs the float32 rounding of the thresholds they compare g with
(a few u times values of order R; when a threshold is far above 2R the decision is clear-cut anyway). With E(p, q) =
eps * (n_p + n_q) (n = ||x||^2 in float64, or an upper bound such as the tile's largest n_q):

    g + E <  m_p   =>  s < m_p   (counted without re-evaluation)
    g - E >= m_p   =>  s >= m_p  (not counted)
    otherwise          s is evaluated with the reference arithmetic and compared exactly.

For pass 1, U_p = min over screened foreign q of (g + E) >= m_p, and every foreign q with g - E <= U_p (which
includes every exact minimiser) is evaluated exactly, so the engine's m_p equals the reference's bit for bit.
The bound assumes true float32 arithmetic: the engines force `torch.set_float32_matmul_precision("highest")`
(no TF32 / bf16) while they run and check a sample of screened values against the bound (`check_screen`).

bfloat16 screen (pass 1 of the torch engine where bfloat16 GEMMs are fast)
-------------------------------------------------------------------------
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

U32 = 2.0**-24
U64 = 2.0**-53
TINY32 = 2.0**-126  # float32 / bfloat16 smallest normal (GEMMs may flush smaller values to zero)


def _gamma(n: int, u: float) -> float:
    return n * u / (1.0 - n * u)


def screen_eps(dim: int) -> float:
    """Relative error bound eps (with safety margin) such that |g - s| <= eps * (||x_p||^2 + ||x_q||^2)."""
    u = U32
    theory = (4 * u + 2 * u * u) + (1 + u) ** 2 * (2 * u + (2 + 2 * u) * _gamma(dim + 2, u)) + 2 * _gamma(dim + 2, U64)
    return 1.25 * theory + 32 * u


def screen_floor(dim: int) -> float:
    """tau = eta / (2 eps): added to every bound norm, it adds the absolute (underflow) part eta of the float32 screen's
    error bound, eta = 128 (D + 2) 2^-126, to E = eps * (n_p + n_q)."""
    return 128 * (dim + 2) * TINY32 / (2 * screen_eps(dim))


def pair_sq_distances(A: np.ndarray, B: np.ndarray, ia: np.ndarray, ib: np.ndarray, *, chunk_elems: int = 1 << 16):
    """Reference squared distances of the pairs (A[ia[k]], B[ib[k]]): float64 (k,).

    A: (n, D), B: (m, D) float64 C-contiguous; ia, ib: (k,) int. Same operations as `reference_sq_distances`
    (difference, square, numpy sum over the contiguous last axis), in small, cache-resident chunks (the per-row
    result does not depend on the chunking).
    """
    ia = np.asarray(ia, dtype=np.int64)
    ib = np.asarray(ib, dtype=np.int64)
    out = np.empty(ia.shape[0], dtype=np.float64)
    step = max(1, chunk_elems // max(1, A.shape[1]))
    for s in range(0, ia.shape[0], step):
        d = A[ia[s : s + step]]
        d -= B[ib[s : s + step]]
        np.square(d, out=d)
        out[s : s + step] = np.sum(d, axis=-1)
    return out


def check_screen(g: np.ndarray, A: np.ndarray, B: np.ndarray, ia, ib, na, nb, eps: float) -> None:
    """Raise RuntimeError when screened values g (k,) violate the bound for the pairs (ia, ib).

    Guards against matmul settings that break the float32 assumption (TF32, bf16, fp16 reductions).
    """
    s = pair_sq_distances(A, B, ia, ib)
    bound = (eps - 32 * U32) / 1.25 * (na[ia] + nb[ib])
    err = np.abs(np.asarray(g, dtype=np.float64) - s)
    if np.any(err > bound):
        k = int(np.argmax(err - bound))
        raise RuntimeError(
            f"float32 distance screen exceeds its error bound (error {err[k]:.3g} > bound {bound[k]:.3g}); "
            "is reduced-precision matmul (TF32/bf16) forced on? k* needs true float32 GEMMs"
        )


# -- bfloat16 screen --------------------------------------------------------------------------------------------------
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

        from .torch_engine import _run_tiles

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

        _run_tiles(list(range(0, n, 1024)), block, workers)
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
