"""Distributed exact k* on a LocalCluster against the local engine: overhead, peak memory per worker, exactness.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_distributed.py                       # N = 50k and 200k, D = 768
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_distributed.py --sizes 5000 --dim 64 # a quick proof run
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_distributed.py --memmap              # workers read a .npy file

Per size, two cases, each in its own process, on the same seeded data (C Gaussian classes, float32):
- `local`: compute_kstar with torch's default thread count (--local-threads, 2 by default), time and peak RSS;
- `cluster`: a LocalCluster of --workers worker processes with one thread each (started, and warmed up by one tiny
  k*, before the clock starts), compute_kstar(..., client=client): wall time (planning, sending the features once,
  every block, gathering) and each worker's peak resident memory during the call (the kernel's high-water mark,
  reset before it). With --memmap the features are a memory-mapped .npy that every worker opens itself.
The cluster's k* and nearest enemies are compared with the local ones element for element (`equal`), and both
with the float64 definition on --check-queries random queries (`exact`). ratio = cluster time / local time: the
overhead of the cluster on the same cores. With --mode shares (the default for one set) the workers compute the
local engine's own tiles, so the arithmetic is the local one plus each worker preparing the set; with --mode blocks
each block of queries meets every column, about twice the arithmetic. The CPU (lscpu flags) and the load average
head the output.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from _common import add_run_options, answer_child, header, reset_peak, run_child, status_kb  # noqa: E402
from bench_kstar import float64_kstar_of, make_data  # noqa: E402


def _peak():
    return {"hwm_mb": status_kb("VmHWM") / 1024, "rss_mb": status_kb("VmRSS") / 1024}


def run_case(spec: dict) -> dict:
    import resource

    import torch

    X, y = make_data(spec["n"], spec["d"], spec["c"], spec["spread"])
    if spec.get("memmap"):
        np.save(spec["memmap"], X)
        X = np.load(spec["memmap"], mmap_mode="r")
    from kstar_utils import compute_kstar

    out: dict = {}
    if spec["case"] == "local":
        torch.set_num_threads(spec["local_threads"])
        xs, ys = make_data(600, spec["d"], spec["c"], spec["spread"], seed=5)
        compute_kstar(xs, ys, screen=spec["screen"])
        t0 = time.perf_counter()
        k, enemy = compute_kstar(X, y, return_enemy=True, screen=spec["screen"], progress=False)
        out["time_s"] = time.perf_counter() - t0
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    else:
        import logging

        from distributed import Client, LocalCluster

        import kstar_utils.engine.distributed as dist

        dist.MODE = spec.get("mode", "auto")
        cluster = LocalCluster(n_workers=spec["workers"], threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.ERROR,
                               memory_limit=spec.get("worker_memory") or "auto")
        client = Client(cluster)
        try:
            xs, ys = make_data(600, spec["d"], spec["c"], spec["spread"], seed=5)
            compute_kstar(xs, ys, client=client, screen=spec["screen"])  # imports and thread pools in the workers
            client.run(reset_peak)
            before = client.run(_peak)
            t0 = time.perf_counter()
            k, enemy = compute_kstar(X, y, return_enemy=True, client=client, screen=spec["screen"], progress=False,
                                     block_rows=spec.get("block_rows"))
            out["time_s"] = time.perf_counter() - t0
            after = client.run(_peak)
            out["worker_peak_mb"] = [after[a]["hwm_mb"] for a in sorted(after)]
            out["worker_base_mb"] = [before[a]["rss_mb"] for a in sorted(before)]
            out["workers_memory_limit_gb"] = [w["memory_limit"] / 1e9 for w in
                                              client.scheduler_info()["workers"].values()]
        finally:
            client.close()
            cluster.close()
    np.save(spec["result"], np.stack([k, enemy]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[50000, 200000])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--spread", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-memory", default=None, help="each worker's memory limit, e.g. 8GB (default: auto)")
    ap.add_argument("--local-threads", type=int, default=2)
    ap.add_argument("--block-rows", type=int, default=None, help="rows per block (default: planned)")
    ap.add_argument("--screen", default="auto", choices=["auto", "bf16", "float32"])
    ap.add_argument("--memmap", action="store_true", help="features as a memory-mapped .npy the workers open")
    ap.add_argument("--mode", default="auto", choices=["auto", "shares", "blocks"],
                    help="how one set is shared out (engine.distributed.run_distributed); auto = shares")
    ap.add_argument("--check-queries", type=int, default=400)
    add_run_options(ap, timeout=7200)
    args = ap.parse_args(argv)
    if args.child:
        return answer_child(args.child, run_case)

    print(header())
    print(f"D = {args.dim}, C = {args.classes}, spread {args.spread}; cluster: {args.workers} worker processes x 1 "
          f"thread; local: {args.local_threads} threads; screen {args.screen}; memmap {args.memmap}; mode "
          f"{args.mode}\n")
    rows, out = [], []
    tmp = tempfile.mkdtemp(prefix="bench_dist_")
    ok = True
    for n in args.sizes:
        base = dict(n=n, d=args.dim, c=args.classes, spread=args.spread, screen=args.screen,
                    local_threads=args.local_threads, workers=args.workers, worker_memory=args.worker_memory,
                    block_rows=args.block_rows, mode=args.mode,
                    memmap=os.path.join(tmp, f"X{n}.npy") if args.memmap else None)
        res = {}
        for case in ("local", "cluster"):
            spec = dict(base, case=case, result=os.path.join(tmp, f"{case}{n}.npy"))
            res[case] = run_child(__file__, spec, args.timeout)
            print(f"N={n} {case}: {json.dumps(res[case])}", flush=True)
        if any("error" in r for r in res.values()):
            rows.append(f"| {n} | error: {res['local'].get('error') or res['cluster'].get('error')} | | | | | | |")
            ok = False
            continue
        a, b = np.load(os.path.join(tmp, f"local{n}.npy")), np.load(os.path.join(tmp, f"cluster{n}.npy"))
        equal = bool(np.array_equal(a, b))
        X, y = make_data(n, args.dim, args.classes, args.spread)
        q = np.sort(np.random.default_rng(1).choice(n, size=min(n, args.check_queries), replace=False))
        exact = float(np.mean(float64_kstar_of(X, y, q) == a[0, q]))
        ok = ok and equal and exact == 1.0
        loc, clu = res["local"], res["cluster"]
        ratio = clu["time_s"] / loc["time_s"]
        peak = max(clu["worker_peak_mb"])
        rows.append(f"| {n:,} | {loc['time_s']:.1f} | {loc['peak_rss_mb']:.0f} | {clu['time_s']:.1f} | {ratio:.2f} | "
                    f"{peak:.0f} (base {max(clu['worker_base_mb']):.0f}) | {'yes' if equal else 'NO'} | "
                    f"{exact:.4f} ({q.size}) |")
        out.append(dict(n=n, d=args.dim, c=args.classes, local=loc, cluster=clu, ratio=ratio, equal=equal,
                        exact=exact, workers=args.workers))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end\n")
    print("| N | local s | local peak MB | cluster s | cluster / local | peak MB per worker | equal | exact |")
    print("|---:|---:|---:|---:|---:|---:|---|---|")
    print("\n".join(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
