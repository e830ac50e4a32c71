"""Memory planned before work: compute_kstar's estimate, the tile it picks to fit, and its refusal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from kstar_utils import compute_kstar
from kstar_utils.engine.memory import InsufficientMemoryError, Request, estimate
from kstar_utils.engine.run import plan_run
from kstar_utils.engine.reference import SQEUCLIDEAN
from oracle import kstar_oracle

ROOT = Path(__file__).resolve().parents[1]


def huge_view(n, d, dtype=np.float32):
    """An (n, d) array that occupies no memory (a broadcast view of one zero): only its shape and dtype are real."""
    return np.broadcast_to(np.zeros((), dtype=dtype), (n, d))


def plan_of(X, y, **kw):
    opts = dict(distance=SQEUCLIDEAN, transformed=False, backend="torch", device="cpu", screen="auto",
                tile_size=None, memory_limit=1 << 62)
    opts.update(kw)
    return plan_run(X, y, None, None, **opts)


def test_a_request_beyond_the_limit_is_refused_before_any_work():
    n, d = 300_000, 1024
    X = huge_view(n, d)
    y = np.arange(n) % 10
    plan_of(X[:10], y[:10])  # imports (torch, faiss) happen outside the measurement
    tracemalloc.start()
    try:
        with pytest.raises(InsufficientMemoryError) as err:
            compute_kstar(X, y, memory_limit=2 * 10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6  # nothing of the size of the data (1.2 GB as float32) was allocated
    e = err.value
    assert isinstance(e, ValueError) and isinstance(e, MemoryError)
    msg = str(e)
    assert "300,000 x 1,024" in msg and "GB" in msg and "2.00 GB is available" in msg
    assert "client=" in msg and "workers with at least" in msg
    assert e.plan is not None and e.plan.host_bytes > 2 * 10**9
    # the estimate covers the float64 sorted copy and the float32 GEMM operands at least
    assert e.plan.host_bytes >= 8 * n * d + 8 * n * (d + 8)


def test_the_refusal_comes_before_the_pass_over_the_data():
    """A NaN would be found by validation; the memory refusal comes first (it reads no value)."""
    X = np.zeros((4000, 64), dtype=np.float32)
    X[5, 3] = np.nan
    y = np.arange(4000) % 3
    with pytest.raises(InsufficientMemoryError):
        compute_kstar(X, y, memory_limit=10**6)
    with pytest.raises(ValueError, match="NaN"):
        compute_kstar(X, y)


def test_a_given_tile_that_does_not_fit_is_refused_naming_a_smaller_tile():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 16)).astype(np.float32)
    y = rng.integers(0, 3, 3000)
    small, big = plan_of(X, y, tile_size=64), plan_of(X, y, tile_size=2048)
    assert small.host_bytes < big.host_bytes
    limit = (small.host_bytes + big.host_bytes) // 2
    with pytest.raises(InsufficientMemoryError, match="smaller tile_size"):
        compute_kstar(X, y, tile_size=2048, memory_limit=limit)


def test_under_a_limit_a_smaller_tile_is_chosen_and_the_result_is_exact():
    rng = np.random.default_rng(1)
    X = rng.integers(-2, 3, size=(3000, 6)).astype(np.float32)  # ties everywhere
    y = rng.integers(0, 3, 3000)
    default = plan_of(X, y)
    assert default.tile == 2048
    limit = (plan_of(X, y, tile_size=256).host_bytes + default.host_bytes) // 2
    chosen = plan_of(X, y, memory_limit=limit)
    assert chosen.tile < default.tile and chosen.host_bytes <= limit
    got = compute_kstar(X, y, memory_limit=limit, screen="float32")
    np.testing.assert_array_equal(got, compute_kstar(X, y, screen="float32"))
    sub = np.arange(0, 3000, 10)  # the oracle on a subset: its own k* definition
    np.testing.assert_array_equal(compute_kstar(X[sub], y[sub], memory_limit=limit), kstar_oracle(X[sub], y[sub]))


@pytest.mark.parametrize("bad", [0, -5, 1.5e9, "4GB"])
def test_bad_memory_limits_are_refused(bad):
    with pytest.raises(ValueError, match="memory_limit"):
        compute_kstar(np.zeros((4, 2)), [0, 0, 1, 1], memory_limit=bad)


def test_the_estimate_grows_with_the_request():
    base = dict(n=10_000, m=None, dim=256)
    e = estimate(Request(**base), 2048).host_bytes
    assert estimate(Request(**dict(base, n=20_000)), 2048).host_bytes > 1.9 * e - 64e6
    assert estimate(Request(**dict(base, dim=512)), 2048).host_bytes > e
    assert estimate(Request(**base, bf16=True), 2048).host_bytes >= e  # (its float32 fallback is included)
    assert estimate(Request(**base, prep_copies=3), 2048).host_bytes > e
    assert estimate(Request(**base, kind="i", itemsize=2, prep_copies=2), 2048).host_bytes > e


@pytest.mark.slow
@pytest.mark.parametrize("case", [dict(metric="euclidean", screen="bf16"), dict(metric="euclidean", screen="float32"),
                                  dict(metric="cosine", screen="auto"), dict(metric="manhattan", screen="auto")],
                         ids=["bf16", "float32", "cosine", "manhattan"])
def test_the_estimate_is_an_upper_bound_of_the_measured_peak(case):
    """The call's own peak resident memory (VmHWM in a child process) is at most the estimate, and the estimate at
    most FACTOR times the peak (benchmarks/memory_check.py; RESULTS.md has the larger sizes)."""
    FACTOR = 3.0
    spec = dict(n=8000, d=256, c=10, backend="auto", dtype="float32", **case)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "memory_check.py"), "--child", json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    line = next((s for s in out.stdout.splitlines() if s.startswith("RESULT ")), None)
    assert line is not None, out.stderr[-2000:]
    r = json.loads(line[7:])
    assert r["measured_mb"] <= r["estimate_mb"] <= FACTOR * r["measured_mb"], r
