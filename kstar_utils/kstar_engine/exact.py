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

Hence |g - s| <= eps_theory * R with eps_theory the sum of the three terms (D = 512: 6.2e-5). The engines use
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
"""
from __future__ import annotations

import numpy as np

U32 = 2.0**-24
U64 = 2.0**-53


def _gamma(n: int, u: float) -> float:
    return n * u / (1.0 - n * u)


def screen_eps(dim: int) -> float:
    """Relative error bound eps (with safety margin) such that |g - s| <= eps * (||x_p||^2 + ||x_q||^2)."""
    u = U32
    theory = (4 * u + 2 * u * u) + (1 + u) ** 2 * (2 * u + (2 + 2 * u) * _gamma(dim + 2, u)) + 2 * _gamma(dim + 2, U64)
    return 1.25 * theory + 32 * u


def pair_sq_distances(A: np.ndarray, B: np.ndarray, ia: np.ndarray, ib: np.ndarray, *, chunk_elems: int = 1 << 22):
    """Reference squared distances of the pairs (A[ia[k]], B[ib[k]]): float64 (k,).

    A: (n, D), B: (m, D) float64 C-contiguous; ia, ib: (k,) int. Same operations as `reference_sq_distances`
    (difference, square, numpy sum over the contiguous last axis), chunked to bound memory.
    """
    ia = np.asarray(ia, dtype=np.int64)
    ib = np.asarray(ib, dtype=np.int64)
    out = np.empty(ia.shape[0], dtype=np.float64)
    step = max(1, chunk_elems // max(1, A.shape[1]))
    for s in range(0, ia.shape[0], step):
        d = A[ia[s : s + step]] - B[ib[s : s + step]]
        out[s : s + step] = np.sum(d**2, axis=-1)
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
