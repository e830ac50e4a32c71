"""The k* engine's own machinery: the reference arithmetic, the float32 and bfloat16 screen bounds and their checks, data
that stresses the screen offset and the tiling, faiss search depths, bad options. Exactness of every metric on every
engine against the oracle (ties, near-ties, scales, invariances, pools) is test_kstar_properties.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kstar_utils.method.kstar import compute_kstar, reference_sq_distances
from kstar_utils.engine import bf16
from kstar_utils.engine.bf16 import Bf16Side, bf16_bounds, bf16_threshold, check_bf16_screen
from kstar_utils.engine.bounds import check_screen, screen_eps
from kstar_utils.engine.reference import pair_sq_distances
from kstar_data import gaussian_classes, sphere_near_ties
from oracle import kstar_oracle

ENGINES = [
    pytest.param(dict(backend="torch", device="cpu", screen="bf16"), id="torch-cpu-bf16"),
    pytest.param(dict(backend="torch", device="cpu", screen="float32"), id="torch-cpu-f32"),
    pytest.param(dict(backend="torch", device="cpu", tile_size=5, screen="bf16"), id="torch-cpu-tile5-bf16"),
    pytest.param(dict(backend="torch", device="cpu", tile_size=5, screen="float32"), id="torch-cpu-tile5-f32"),
    pytest.param(dict(backend="faiss", device="cpu"), id="faiss-cpu"),
]


def kstar(X, y, engine, **kw):
    """compute_kstar with the engine options (backend, device, tile_size, screen)."""
    return compute_kstar(X, y, **engine, **kw)


def check(X, y, engine, **kw):
    ref = kstar_oracle(X, y, metric=kw.get("metric", "euclidean"))
    got = kstar(X, y, engine, **kw)
    assert got.dtype == np.int64 and got.shape == (len(y),)
    bad = np.flatnonzero(got != ref)
    assert bad.size == 0, f"{bad.size} samples differ, first {bad[:5]}: engine {got[bad[:5]]} vs oracle {ref[bad[:5]]}"
    return got


# -- the definition's arithmetic -------------------------------------------------------------------------------------
def test_pair_distances_are_the_reference_bit_for_bit():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(37, 123)) * 10.0 ** rng.integers(-3, 4, size=(37, 1))
    B = rng.normal(size=(29, 123))
    S = reference_sq_distances(A, B)
    ia, ib = np.meshgrid(np.arange(37), np.arange(29), indexing="ij")
    s = pair_sq_distances(A, B, ia.ravel(), ib.ravel(), chunk_elems=1000)
    assert np.array_equal(s, S.ravel())
    # symmetric bit for bit, so one evaluation serves both samples of a pair
    assert np.array_equal(pair_sq_distances(B, A, ib.ravel(), ia.ravel()), s)


def test_screen_bound_holds_and_the_check_catches_reduced_precision():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 512)) * 3 + 5
    a = torch.from_numpy(X.astype(np.float32))
    g = (a * a).sum(1)[:, None] + (a * a).sum(1)[None, :] - 2 * a @ a.T
    n = np.einsum("ij,ij->i", X, X)
    ia, ib = np.meshgrid(np.arange(200), np.arange(200), indexing="ij")
    eps = screen_eps(512)
    check_screen(g.double().numpy().ravel(), X, X, ia.ravel(), ib.ravel(), n, n, eps)  # float32: within the bound
    g16 = (a.bfloat16() @ a.bfloat16().T).float()
    g16 = (a * a).sum(1)[:, None] + (a * a).sum(1)[None, :] - 2 * g16
    with pytest.raises(RuntimeError, match="error bound"):
        check_screen(g16.double().numpy().ravel(), X, X, ia.ravel(), ib.ravel(), n, n, eps)


def _bf16_operands(side, d):
    return side.left, side.right


@pytest.mark.parametrize("c_scale", [1.0, 0.0, 5.0])  # offset c: typical distance, zero, far off
def test_bf16_bound_holds_for_every_pair(c_scale):
    rng = np.random.default_rng(31)
    X = (rng.normal(size=(150, 512)) * 3 + 5) * 10.0 ** rng.uniform(-1, 1, size=(150, 1))
    X[:10] = X[10:20] + 1e-3 * rng.normal(size=(10, 512))  # close pairs too
    S = reference_sq_distances(X, X)
    c = c_scale * float(np.median(S))
    side = Bf16Side(X, X.mean(0), c)
    L, R = _bf16_operands(side, 512)
    w = torch.mm(L, R.T).double().numpy()
    ia, ib = (a.ravel() for a in np.meshgrid(np.arange(150), np.arange(150), indexing="ij"))
    check_bf16_screen(w.ravel(), X, X, ia, ib, side, side)  # the GEMM accumulates in float32: within the bound
    k = side.kappa
    lb, ub = bf16_bounds(w, k[:, None], side.rho[:, None], side.gam[:, None], k[None, :], k[None, :],
                         side.rho[None, :], side.gam[None, :])
    assert (lb <= S).all() and (S <= ub).all()
    # chunk form: the worst-case column statistics bound the smallest s of any column set
    lbc, ubc = bf16_bounds(w.max(1), k, side.rho, side.gam, k.min(), k.max(), side.rho.max(), side.gam.max())
    assert (lbc <= S.min(1)).all() and (ubc >= S[np.arange(150), w.argmax(1)]).all()
    # the threshold never drops an entry whose lower bound reaches U
    U = np.quantile(S, 0.3, axis=1)
    thr = bf16_threshold(U[:, None], k[:, None], side.rho[:, None], side.gam[:, None], k[None, :], side.rho[None, :],
                         side.gam[None, :])
    assert ((lb > U[:, None]) | (w >= thr)).all()


def test_bf16_check_catches_bfloat16_accumulation():
    rng = np.random.default_rng(32)
    X = rng.normal(size=(40, 512)) + 2.0
    side = Bf16Side(X, X.mean(0), 2 * 512.0)
    L, R = _bf16_operands(side, 512)
    acc = torch.zeros(40, 40, dtype=torch.bfloat16)
    for i in range(L.shape[1]):  # a GEMM that accumulates in bfloat16
        acc = acc + L[:, i : i + 1] * R[:, i][None, :]
    ia, ib = (a.ravel() for a in np.meshgrid(np.arange(40), np.arange(40), indexing="ij"))
    with pytest.raises(RuntimeError, match="bfloat16 distance screen"):
        check_bf16_screen(acc.double().numpy().ravel(), X, X, ia, ib, side, side)


def test_bf16_check_catches_a_truncating_output_conversion():
    rng = np.random.default_rng(35)
    X = rng.normal(size=(60, 512)) + 1.0
    side = Bf16Side(X, X.mean(0), 0.0)  # c = 0: |w| ~ s / 2, so the output rounding dominates the error
    L, R = _bf16_operands(side, 512)
    w32 = (L.double() @ R.double().T).float()  # float32 result of exact products
    trunc = (w32.view(torch.int32) & ~0xFFFF).view(torch.float32)  # bfloat16 by truncation (error up to 2^-7)
    ia, ib = (a.ravel() for a in np.meshgrid(np.arange(60), np.arange(60), indexing="ij"))
    check_bf16_screen(w32.bfloat16().double().numpy().ravel(), X, X, ia, ib, side, side)  # round to nearest: fine
    with pytest.raises(RuntimeError, match="bfloat16 distance screen"):
        check_bf16_screen(trunc.double().numpy().ravel()[:64], X, X, ia[:64], ib[:64], side, side)


def test_engine_raises_when_the_bf16_screen_is_wrong(monkeypatch):
    X, y = gaussian_classes(33, 300, 64, 4)
    orig = bf16.tile_gemm

    def wrong(*a):
        g = orig(*a).float()
        return (g + 0.05 * g.abs() + 1.0).bfloat16()

    monkeypatch.setattr(bf16, "tile_gemm", wrong)
    with pytest.raises(RuntimeError, match="bfloat16 distance screen"):
        kstar(X, y, dict(device="cpu", screen="bf16"))


# -- data that stresses the screen and the tiles ---------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ENGINES)
def test_far_outliers_and_mixed_scales(engine):
    """Rows whose nearest foreign sample is far beyond the screen's offset c (all their chunk maxima negative)."""
    X, y = gaussian_classes(36, 400, 24, 4)
    X[::37] *= 300.0  # outliers: every screened value of these rows is far below zero
    X[5::41] *= 1e-3  # and some rows near the origin
    check(X, y, engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_tiny_classes_and_one_huge_class(engine):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(260, 10))
    y = np.zeros(260, dtype=int)
    y[0] = 1  # n_c = 1
    y[1:3] = 2  # n_c = 2
    y[3:5] = 3
    got = check(X, y, engine)
    assert got[0] == 1 and got[1:5].max() <= 2 and got[5:].max() <= 255


@pytest.mark.parametrize("engine", ENGINES)
def test_two_far_apart_classes_reach_n_c(engine):
    X, y = gaussian_classes(9, 150, 5, 2, spread=50.0)
    got = check(X, y, engine)
    assert np.array_equal(got, np.bincount(y)[y])  # every sample ranks all classmates first


@pytest.mark.parametrize("screen", ["bf16", "float32"])
@pytest.mark.parametrize("tile", [1, 2, 3, 17, 64, 1000])
def test_tile_sizes_smaller_than_a_class(tile, screen):
    X, y = gaussian_classes(10, 150, 7, 3)
    X = np.round(X * 2)  # some ties too
    check(X, y, dict(backend="torch", device="cpu", tile_size=tile, screen=screen))


def test_translation_invariance_on_integer_data():
    rng = np.random.default_rng(13)
    X = rng.integers(-4, 5, size=(180, 5)).astype(np.float64)
    y = rng.integers(0, 3, 180)
    base = check(X, y, dict(device="cpu"))
    shift = rng.integers(-1000, 1000, size=5).astype(np.float64)  # exact in float64: differences are unchanged
    assert np.array_equal(compute_kstar(X + shift, y, device="cpu"), base)
    assert np.array_equal(compute_kstar(X + shift, y, backend="faiss", device="cpu"), base)


# -- the canonical scale ---------------------------------------------------------------------------------------------
def test_rescale_is_exact_and_canonical():
    from kstar_utils.method.metrics import prepare_metric, scale_exponent

    X = np.random.default_rng(2).normal(size=(30, 4))
    base = prepare_metric(X, "euclidean")
    assert 1 <= np.abs(base).max() < 2
    for e in (-1000, -7, 0, 9, 1000):
        assert np.array_equal(prepare_metric(np.ldexp(X, e), "euclidean"), base)
    assert scale_exponent(np.zeros((3, 2))) == 0
    Xq, Xp = prepare_metric(X[:10], "euclidean", X * 8.0)  # query and pool share one factor
    assert np.array_equal(Xq * 8.0, Xp[:10])


# -- separate neighbour pool -----------------------------------------------------------------------------------------
def test_pool_equal_to_queries_counts_self():
    X, y = gaussian_classes(17, 100, 4, 3)
    one_set = compute_kstar(X, y, device="cpu")
    pooled = compute_kstar(X, y, pool_features=X, pool_labels=y, device="cpu")
    assert np.array_equal(pooled, one_set + 1)  # the query itself (distance 0) is a classmate in the pool


# -- larger runs -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_medium_set_against_numpy_definition(backend):
    X, y = gaussian_classes(18, 3000, 64, 10, spread=0.35)
    X[100:150] = X[:50]
    assert np.array_equal(compute_kstar(X, y, backend=backend, device="cpu"), compute_kstar(X, y, backend="numpy"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_oracle():
    X, y = sphere_near_ties(19)
    check(X, y, dict(device="cuda", tile_size=8))
    X, y = gaussian_classes(20, 300, 32, 5)
    check(X, y, dict(device="cuda"))


# -- bad options -----------------------------------------------------------------------------------------------------
def test_bad_options_raise():
    X, y = gaussian_classes(22, 20, 3, 2)
    with pytest.raises(ValueError, match="did you mean 'manhattan'"):
        compute_kstar(X, y, metric="manhatan")
    with pytest.raises(ValueError, match="needs p"):
        compute_kstar(X, y, metric="minkowski")
    with pytest.raises(ValueError, match="p must lie"):
        compute_kstar(X, y, metric="minkowski", p=0.5)
    with pytest.raises(ValueError, match="'minkowski' only"):
        compute_kstar(X, y, p=3)
    with pytest.raises(ValueError, match="'mahalanobis' only"):
        compute_kstar(X, y, metric="cosine", cov="total")
    with pytest.raises(ValueError, match="cov must be"):
        compute_kstar(X, y, metric="mahalanobis", cov="diagonal")
    with pytest.raises(ValueError, match="backend"):
        compute_kstar(X, y, backend="annoy")
    with pytest.raises(ValueError, match="device"):
        compute_kstar(X, y, device="tpu")
    with pytest.raises(ValueError, match="tile_size"):
        compute_kstar(X, y, tile_size=0)
    with pytest.raises(ValueError, match="pool"):
        compute_kstar(X, y, pool_features=X)
    with pytest.raises(ValueError, match="dimension"):
        compute_kstar(X, y, pool_features=X[:, :2], pool_labels=y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        compute_kstar(X, y, pool_features=X, pool_labels=np.zeros_like(y))
    with pytest.raises(ValueError, match="all-zero"):
        compute_kstar(np.zeros_like(X), y, metric="cosine")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            compute_kstar(X, y, device="cuda")


@pytest.mark.parametrize("spread", [0.8, 3.0])
def test_faiss_large_k_paths(spread):
    """Classes larger than faiss's first k: a few deep rows (second, larger-k search) or many (dense count)."""
    X, y = gaussian_classes(30, 600, 16, 3, spread=spread)
    check(X, y, dict(backend="faiss", device="cpu"))
