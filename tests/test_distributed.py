"""k* on a Dask cluster equals the local k*: every metric on tie-heavy data, a separate pool, memory-mapped features,
a worker killed mid-run, the memory plan of the workers, the pipeline and the `kstar kstar` command."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from kstar_utils import compute_kstar
from kstar_utils.engine.distributed import memmap_source, plan_blocks
from kstar_utils.engine.memory import InsufficientMemoryError, Request
from oracle import kstar_oracle

distributed = pytest.importorskip("distributed")

METRICS = [
    pytest.param(dict(metric="euclidean"), id="euclidean"),
    pytest.param(dict(metric="euclidean", screen="float32"), id="euclidean-float32"),
    pytest.param(dict(metric="euclidean", backend="faiss"), id="euclidean-faiss"),
    pytest.param(dict(metric="cosine"), id="cosine"),
    pytest.param(dict(metric="mahalanobis", shrinkage=0.1), id="mahalanobis-pooled"),
    pytest.param(dict(metric="mahalanobis", cov="total", shrinkage=0.0), id="mahalanobis-total"),
    pytest.param(dict(metric="manhattan"), id="manhattan"),
    pytest.param(dict(metric="chebyshev"), id="chebyshev"),
    pytest.param(dict(metric="minkowski", p=3), id="minkowski3"),
    pytest.param(dict(metric="minkowski", p=24), id="minkowski24-float64"),
]


def lattice(seed, n=400, d=4, c=3, span=2):
    """Small integers: masses of exactly equal scores under every metric, exact duplicates across classes, and no
    all-zero row (cosine needs a direction)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(-span, span + 1, size=(n, d)).astype(np.float64)
    X[np.abs(X).sum(1) == 0, 0] = 1.0
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    return X, y


@pytest.fixture(scope="module")
def client():
    """Two workers of one thread each, as threads of this process (the blocks still run as separate Dask tasks)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as c:
        yield c


def same(a, b):
    (k1, e1), (k2, e2) = a, b
    bad = np.flatnonzero((k1 != k2) | (e1 != e2))
    assert bad.size == 0, f"{bad.size} samples differ, first {bad[:5]}: k* {k1[bad[:5]]} vs {k2[bad[:5]]}"


@pytest.fixture(params=["shares", "blocks"])
def mode(request, monkeypatch):
    """Both ways of sharing one set out: the local engine's tiles in shares, and blocks of queries."""
    import kstar_utils.engine.distributed as dist

    monkeypatch.setattr(dist, "MODE", request.param)
    return request.param


@pytest.mark.slow
@pytest.mark.parametrize("metric", METRICS)
def test_distributed_equals_local_on_tie_heavy_data(client, metric, mode):
    X, y = lattice(1)
    if mode == "shares" and metric.get("backend") == "faiss":
        pytest.skip("the faiss k-NN backend computes in blocks of queries")
    local = compute_kstar(X, y, return_enemy=True, **metric)
    # blocks of 37 rows: uneven, cutting through classes, many per worker; tiles of 32: many shares of tiles
    dist = compute_kstar(X, y, return_enemy=True, client=client, block_rows=37, tile_size=32, **metric)
    same(local, dist)
    options = {k: v for k, v in metric.items() if k not in ("backend", "screen")}
    np.testing.assert_array_equal(dist[0], kstar_oracle(X, y, **options))


@pytest.mark.slow
def test_blocks_sized_from_the_workers_memory_and_a_scheduler_address(client):
    X, y = lattice(2, n=300)
    local = compute_kstar(X, y, return_enemy=True)
    same(local, compute_kstar(X, y, return_enemy=True, client=client))  # planned block size
    same(local, compute_kstar(X, y, return_enemy=True, client=client.scheduler.address, block_rows=50))


@pytest.mark.slow
@pytest.mark.parametrize("metric", [dict(metric="euclidean"), dict(metric="cosine"), dict(metric="manhattan")],
                         ids=["euclidean", "cosine", "manhattan"])
def test_queries_against_a_pool(client, metric):
    X, y = lattice(3, n=300)
    Q, yq = lattice(4, n=70)
    local = compute_kstar(Q, yq, pool_features=X, pool_labels=y, return_enemy=True, **metric)
    dist = compute_kstar(Q, yq, pool_features=X, pool_labels=y, return_enemy=True, client=client, block_rows=16,
                         **metric)
    same(local, dist)


SHARE_DISTANCES = [
    pytest.param(("euclidean", {}, "bf16"), id="euclidean-bf16"),
    pytest.param(("euclidean", {}, "float32"), id="euclidean-float32"),
    pytest.param(("manhattan", {}, "auto"), id="manhattan"),
    pytest.param(("minkowski", {"p": 3}, "auto"), id="minkowski3"),
    pytest.param(("minkowski", {"p": 30}, "auto"), id="minkowski30-float64"),
]


@pytest.mark.parametrize("case", SHARE_DISTANCES)
@pytest.mark.parametrize("tile", [32, 2048])
def test_the_engine_s_shares_and_blocks_combine_to_the_whole_result(case, tile):
    """Without a cluster: blocks of rows against the whole set (self excluded), and the one-set tiles in shares of
    block-group pairs merged with the lowest-index rule and summed, equal the local k* and enemies."""
    from kstar_utils.engine.passes import one_set_shares
    from kstar_utils.engine.run import PreparedSet
    from kstar_utils.method.metrics import Metric, scale_exponent

    metric, opts, screen = case
    X, y = lattice(11, n=500, d=5, c=4)
    X = X.astype(np.float32)
    local = compute_kstar(X, y, metric=metric, return_enemy=True, screen=screen, **opts)
    P = PreparedSet(X, y, 4, scale=scale_exponent(X), distance=Metric.parse(metric, **opts).distance, screen=screen,
                    tile=tile)
    n, order = P.n, P.set.order
    k, enemy = np.empty(n, np.int64), np.empty(n, np.int64)
    for s0 in range(0, n, 77):  # blocks
        kb, eb = P.kstar_rows(s0, min(n, s0 + 77))
        k[order[s0 : s0 + 77]], enemy[order[s0 : s0 + 77]] = kb, eb
    same(local, (k, enemy))
    for groups, parts in [(1, 1), (3, 2), (6, 5)]:  # shares
        p1, p2 = one_set_shares(P.set.codes, 4, P.T, groups, parts)
        m, e = np.full(n, np.inf), np.full(n, np.iinfo(np.int64).max)
        for tiles in p1:
            r, mm, ee = P.nearest_share(tiles)
            better = (mm < m[r]) | ((mm == m[r]) & (ee < e[r]))
            m[r[better]], e[r[better]] = mm[better], ee[better]
        counts = np.zeros(n, np.int64)
        for tiles in p2:
            r, c = P.count_share(tiles, m)
            counts[r] += c
        k[order], enemy[order] = 1 + counts, e
        same(local, (k, enemy))


def scatter_spy(client, monkeypatch):
    """Record the size (bytes) of everything run_distributed scatters to the workers."""
    sizes = []
    scatter = client.scatter

    def spy(data, *a, **kw):
        sizes.append(int(getattr(data, "nbytes", 0)))
        return scatter(data, *a, **kw)

    monkeypatch.setattr(client, "scatter", spy)
    return sizes


@pytest.mark.slow
@pytest.mark.parametrize("metric", [dict(metric="euclidean"), dict(metric="manhattan"), dict(metric="cosine")],
                         ids=["euclidean", "manhattan", "cosine"])
def test_memory_mapped_features(client, tmp_path, monkeypatch, metric, mode):
    X, y = lattice(5)
    X32 = X.astype(np.float32)
    np.save(tmp_path / "X.npy", X32)
    M = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert memmap_source(M)["offset"] == 128  # the .npy header
    assert memmap_source(np.asarray(M[10:]))["offset"] == 128 + 10 * 4 * 4  # rows 10: of the file
    assert memmap_source(M[:, :2]) is None  # strided: scattered instead
    assert memmap_source(X32) is None
    local = compute_kstar(X32, y, return_enemy=True, **metric)
    same(local, compute_kstar(M, y, return_enemy=True, **metric))  # the local engine reads it in row blocks
    sizes = scatter_spy(client, monkeypatch)
    same(local, compute_kstar(M, y, return_enemy=True, client=client, block_rows=45, tile_size=64, **metric))
    if metric["metric"] == "cosine":  # normalised once on the client, then scattered once
        assert sum(s >= X.size * 8 for s in sizes) == 1
    else:  # the workers open the file themselves: only the labels travel
        assert max(sizes) < X32.nbytes


@pytest.mark.slow
def test_a_killed_worker_s_blocks_are_recomputed(tmp_path):
    """Two worker processes; the first one to start a block dies on the spot (os._exit). Dask reschedules its
    blocks (the nanny restarts the process), and the result is still the local one, every block exactly once."""
    from distributed.diagnostics.plugin import WorkerPlugin

    marker = tmp_path / "killed"

    class KillOnce(WorkerPlugin):  # defined here: pickled by value into the worker processes
        def __init__(self, path):
            self.path = str(path)

        def transition(self, key, start, finish, **kwargs):
            if finish == "executing" and "kstar-" in str(key) and not os.path.exists(self.path):
                with open(self.path, "w") as f:
                    f.write(str(key))
                os._exit(1)

    X, y = lattice(7, n=600)
    local = compute_kstar(X, y, return_enemy=True)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.CRITICAL) as cluster, distributed.Client(cluster) as c:
        c.register_plugin(KillOnce(marker))
        dist = compute_kstar(X, y, return_enemy=True, client=c, block_rows=40, tile_size=64)
    assert marker.exists(), "no worker was killed: the test did not test recovery"
    same(local, dist)


def test_the_cluster_plan_refuses_naming_the_worker_size_it_needs():
    req = Request(n=1_281_167, m=None, dim=768, bf16=True, col_counts=tuple([1281] * 1000), n_classes=1000)
    workers = {f"tcp://w{i}": {"memory_limit": 8 * 10**9, "nthreads": 1} for i in range(16)}
    with pytest.raises(InsufficientMemoryError) as err:
        plan_blocks(req, workers, memory_limit=None, block_rows=None, input_copy=True)
    msg = str(err.value)
    assert "each worker needs at least" in msg and "whole set" in msg and "any number of such workers" in msg
    big = {a: {"memory_limit": 64 * 10**9, "nthreads": 2} for a in workers}
    b = plan_blocks(req, big, memory_limit=None, block_rows=None, input_copy=True)
    assert 256 <= b <= -(-1_281_167 // 64)  # at least two blocks per worker thread


@pytest.mark.slow
def test_a_request_the_workers_cannot_hold_is_refused_before_anything_is_sent(client, monkeypatch):
    X, y = lattice(8, n=300)
    sizes = scatter_spy(client, monkeypatch)
    with pytest.raises(InsufficientMemoryError, match="each worker needs at least"):
        compute_kstar(X, y, client=client, memory_limit=10**6)
    assert sizes == []


@pytest.mark.slow
def test_the_pipeline_stage_takes_a_client(client, tmp_path):
    from kstar_utils.pipeline.features import save_features
    from kstar_utils.io.index import load_kstar
    from kstar_utils.pipeline.stages import kstar_of_file

    X, y = lattice(9, n=300)
    f = save_features(tmp_path / "f.npz", X, y, ["a", "b", "c"], {"model": "m"})
    local = load_kstar(kstar_of_file(f, tmp_path / "local"))
    dist = load_kstar(kstar_of_file(f, tmp_path / "dist", client=client))
    np.testing.assert_array_equal(local.kstar, dist.kstar)
    np.testing.assert_array_equal(local.enemy, dist.enemy)


@pytest.mark.slow
def test_the_kstar_command(client, tmp_path, capsys):
    from kstar_utils.cli import main
    from kstar_utils.pipeline.features import save_features

    X, y = lattice(10, n=300)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    np.save(tmp_path / "y.npy", y)
    out1, out2 = tmp_path / "local.npz", tmp_path / "cluster.npz"
    assert main(["kstar", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--metric", "manhattan",
                 "--out", str(out1)]) == 0
    assert main(["kstar", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"), "--metric", "manhattan",
                 "--scheduler", client.scheduler.address, "--out", str(out2)]) == 0
    a, b = np.load(out1), np.load(out2)
    np.testing.assert_array_equal(a["kstar"], compute_kstar(X, y, metric="manhattan"))
    np.testing.assert_array_equal(a["kstar"], b["kstar"])
    np.testing.assert_array_equal(a["enemy"], b["enemy"])
    assert Path(str(out1) + ".json").exists()  # provenance sidecar
    assert "written:" in capsys.readouterr().out
    f = save_features(tmp_path / "f.npz", X, y, ["a", "b", "c"], {"model": "m"})
    assert main(["kstar", str(f), "--out", str(tmp_path / "npz.npz")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "npz.npz")["kstar"], compute_kstar(X, y))


@pytest.mark.parametrize("argv,message", [
    (["--metric", "cosin"], "did you mean 'cosine'"),
    (["--scheduler", "tcp://x:1", "--workers", "2"], "not both"),
    (["--no-labels"], "--labels"),
])
def test_the_kstar_command_refuses_bad_requests(tmp_path, capsys, argv, message):
    from kstar_utils.cli import main

    np.save(tmp_path / "X.npy", np.zeros((4, 2), dtype=np.float32))
    np.save(tmp_path / "y.npy", np.array([0, 0, 1, 1]))
    labels = [] if argv == ["--no-labels"] else ["--labels", str(tmp_path / "y.npy")]
    args = [a for a in argv if a != "--no-labels"]
    assert main(["kstar", str(tmp_path / "X.npy"), *labels, *args]) == 2
    assert message in capsys.readouterr().err
