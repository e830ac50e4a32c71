"""Rigorous error bounds of the float32 screens, one per score kind (the scores are defined in engine.reference).

Every screen computes g(p, q) in float32 and guarantees |g - s| <= eps * (n_p + n_q) for the reference score s,
where n is the row's bound norm (`Distance.norms` plus a floor that carries the absolute, underflow part of the
bound). The engines then decide

    g + E <  m_p   =>  s < m_p   (counted without re-evaluation)
    g - E >= m_p   =>  s >= m_p  (not counted)
    otherwise          s is evaluated with the reference arithmetic and compared exactly,

with E = eps * (n_p + n_q), and find m_p from every foreign q with g - E <= U_p, an upper bound of m_p.

Squared Euclidean (the GEMM screen)
-----------------------------------
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
eta = 128 (D + 2) 2^-126 (D = 512: 7.7e-34, far below any distance that is not itself near underflow) and enforce it
as a floor on the bound norms: eps * ((n_p + tau) + (n_q + tau)) = eps * R + eta with tau = eta / (2 eps)
(`screen_floor`). The engines use
eps = 1.25 eps_theory + 32u: the extra quarter absorbs the float32 rounding of the thresholds they compare g with
(a few u times values of order R; when a threshold is far above 2R the decision is clear-cut anyway). With E(p, q) =
eps * (n_p + n_q) (n = ||x||^2 in float64, or an upper bound such as the tile's largest n_q):

For pass 1, U_p = min over screened foreign q of (g + E) >= m_p, and every foreign q with g - E <= U_p (which
includes every exact minimiser) is evaluated exactly, so the engine's m_p equals the reference's bit for bit.
The bound assumes true float32 arithmetic: the engines force `torch.set_float32_matmul_precision("highest")`
(no TF32 / bf16) while they run and check a sample of screened values against the bound (`check_screen`).

Manhattan, Chebyshev and Minkowski (the difference screens)
----------------------------------------------------------
These screens evaluate the score from float32 differences d^_i = fl32(a_i - b_i) (faiss's fvec_L1 / Lp loops,
torch.cdist), summed or maximised in any order. With t_i = |x_i| + |y_i| and, as above, each input rounded to float32
within u |x_i| + 2^-126:  |d^_i - d_i| <= (2u + u^2) t_i + 3 * 2^-126, where d_i = x_i - y_i exactly.
- l1: | sum |d^_i| - sum |d_i| | <= (2u + u^2) sum t_i, the float32 sum adds gamma_D(u) (1 + u)^2 sum t_i, the float64
  reference gamma_D(u64) sum t_i + u64 sum t_i (its own differences): |g - s| <= eps_1 (||x||_1 + ||y||_1).
- linf: a maximum of exactly computed magnitudes adds no rounding: |g - s| <= (2u + u^2 + u64) max t_i
  <= eps_inf (||x||_inf + ||y||_inf).
- lp (1 < p <= P_MAX_SCREEN): by the mean value theorem | |d^_i|^p - |d_i|^p | <= p t'_i^(p-1) |d^_i - d_i| with
  t'_i = (1 + u)^2 t_i, powf adds 4u relative, the sum gamma_D(u); the reference's pow and sum add p u64 (1 + u64)^p +
  2 u64 + gamma_D(u64), and sum t_i^p <= 2^(p - 1) (||x||_p^p + ||y||_p^p). So |g - s| <= eps_p (n_p + n_q) with
  eps_p = 2^(p - 1) [p (2u + u^2) (1 + u)^(2p) + 4u (1 + u)^(2p) + gamma_D(u) (1 + 5u)(1 + u)^(2p) + p u64 (1 + u64)^p
  + 2 u64 + gamma_D(u64)]. The factor 2^(p - 1) makes this screen loose for large p: above P_MAX_SCREEN the engine
  evaluates every pair in float64 (eps = 0, nothing to re-decide). At the canonical scale t_i < 4, so t_i^p stays
  within float32 for p <= P_MAX_SCREEN.
Each of these gets the same margin as above (1.25 eps + 32u) and an absolute floor for the underflow terms
(2^-126 per coordinate, times p 4^(p-1) for lp), enforced through the bound norms.
"""
from __future__ import annotations

import numpy as np

from kstar_utils.engine.reference import SQEUCLIDEAN, Distance

U32 = 2.0**-24
U64 = 2.0**-53
TINY32 = 2.0**-126  # float32 / bfloat16 smallest normal (GEMMs may flush smaller values to zero)
# above this exponent pairs are scored in float64 without a screen: the screen's bound grows with 2^(p - 1) and
# re-decides too many pairs (benchmarks/bench_minkowski_screen.py in benchmarks/RESULTS.md: the float32 screen takes
# 0.61-0.76x the unscreened time at p = 3 and 0.93-3.0x from p = 4 on)
P_MAX_SCREEN = 3
SCREENS = ("auto", "bf16", "float32")  # the two-pass engine's pass-1 screens for squared Euclidean scores


def _gamma(n: int, u: float) -> float:
    return n * u / (1.0 - n * u)


def screen_eps(dim: int, distance: Distance = SQEUCLIDEAN) -> float:
    """Relative error bound eps (with safety margin) such that |g - s| <= eps * (n_p + n_q) for the float32 screen of
    `distance` in dimension `dim` (n = `Distance.norms`). 0.0 for an lp score above P_MAX_SCREEN (no screen)."""
    u, d = U32, dim
    if distance.kind == "sqeuclidean":
        theory = (4 * u + 2 * u * u) + (1 + u) ** 2 * (2 * u + (2 + 2 * u) * _gamma(d + 2, u)) + 2 * _gamma(d + 2, U64)
    elif distance.kind == "l1":
        theory = (2 * u + u * u) + _gamma(d, u) * (1 + u) ** 2 + _gamma(d, U64) + U64
    elif distance.kind == "linf":
        theory = 2 * u + u * u + U64
    else:
        p = distance.p
        if p > P_MAX_SCREEN:
            return 0.0
        grow = (1 + u) ** (2 * p)
        theory = 2 ** (p - 1) * (p * (2 * u + u * u) * grow + 4 * u * grow + _gamma(d, u) * (1 + 5 * u) * grow
                                 + p * U64 * (1 + U64) ** p + 2 * U64 + _gamma(d, U64))
    return 1.25 * theory + 32 * u


def screen_floor(dim: int, distance: Distance = SQEUCLIDEAN) -> float:
    """tau = eta / (2 eps): added to every bound norm, it adds the absolute (underflow) part eta of the screen's error
    bound to E = eps * (n_p + n_q). eta = 128 (D + 2) 2^-126, times p 4^(p - 1) for an lp score."""
    eps = screen_eps(dim, distance)
    if eps == 0.0:
        return 0.0
    eta = 128 * (dim + 2) * TINY32
    if distance.kind == "lp":
        eta *= distance.p * 4.0 ** (distance.p - 1)
    return eta / (2 * eps)


def check_screen(g: np.ndarray, A: np.ndarray, B: np.ndarray, ia, ib, na, nb, eps: float,
                 distance: Distance = SQEUCLIDEAN) -> None:
    """Raise RuntimeError when screened values g (k,) violate the bound for the pairs (ia, ib).

    Guards against library settings that break the float32 assumption (TF32, bf16 or fp16 reductions, a kernel
    that is not what it says). na, nb: bound norms of A's and B's rows.
    """
    s = distance.pairs(A, B, ia, ib)
    bound = (eps - 32 * U32) / 1.25 * (na[ia] + nb[ib])
    err = np.abs(np.asarray(g, dtype=np.float64) - s)
    if np.any(err > bound):
        k = int(np.argmax(err - bound))
        raise RuntimeError(
            f"float32 distance screen ({distance.kind}) exceeds its error bound (error {err[k]:.3g} > bound "
            f"{bound[k]:.3g}); is reduced-precision matmul (TF32/bf16) forced on? k* needs true float32 arithmetic"
        )

