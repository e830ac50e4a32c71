"""The memory plan against the measured peak: compute_kstar's estimated peak (engine.memory) and the peak resident
memory it really adds, each case in its own process.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/memory_check.py                     # the default grid (a few minutes)
    PYTHONPATH=$PWD .venv/bin/python benchmarks/memory_check.py --quick             # three small cases
    PYTHONPATH=$PWD .venv/bin/python benchmarks/memory_check.py --n 50000 --dim 768 --metric euclidean

Measured peak: in a child process (glibc's mmap threshold fixed at 128 kB, so freed arrays leave the resident set) the
data are made and one small warm-up call is run (thread pools, oneDNN's JIT kernels), freed heap memory is trimmed,
then the kernel's high-water mark is reset (`echo 5 > /proc/self/clear_refs`) and compute_kstar runs; the
peak is VmHWM afterwards minus VmRSS before the call (/proc/self/status): the memory the call itself added above the
caller's arrays. ratio = estimate / measured: >= 1 is an upper bound.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

# benchmarks/_common.py: the script's own folder is on sys.path
from _common import add_run_options, answer_child, reset_peak, run_child, status_kb


def make_data(n, d, c, seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    X = rng.normal(size=(n, d)) + 0.5 * rng.normal(size=(c, d))[y]
    if dtype == "int16":
        return np.round(X * 4).astype(np.int16), y
    return X.astype(dtype), y


def run_case(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from kstar_utils import compute_kstar
    from kstar_utils.engine.run import plan_run
    from kstar_utils.method.metrics import Metric

    opts = dict(metric=spec["metric"], backend=spec["backend"], screen=spec["screen"])
    if spec["metric"] == "minkowski":
        opts["p"] = spec.get("p", 3)
    X, y = make_data(spec["n"], spec["d"], spec["c"], dtype=spec["dtype"])
    pool = {}
    if spec.get("pool"):
        Xp, yp = make_data(spec["pool"], spec["d"], spec["c"], seed=1, dtype=spec["dtype"])
        pool = dict(pool_features=Xp, pool_labels=yp)
    xs, ys = make_data(600, spec["d"], spec["c"], seed=2, dtype=spec["dtype"])
    compute_kstar(xs, ys, **opts)  # warm-up: library buffers and thread pools are not the call's own memory
    plan = plan_run(X, y, pool.get("pool_features"), pool.get("pool_labels"),
                    distance=Metric.parse(spec["metric"], p=opts.get("p")).distance,
                    transformed=Metric.parse(spec["metric"], p=opts.get("p")).transforms_rows,
                    backend=spec["backend"], device="cpu", screen=spec["screen"], tile_size=spec.get("tile"),
                    memory_limit=1 << 62, metric=spec["metric"])
    import ctypes
    import gc

    del xs, ys
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap pages go back: the baseline is what is really held
    reset_peak()
    before = status_kb("VmRSS")
    t0 = time.perf_counter()
    compute_kstar(X, y, tile_size=spec.get("tile"), **opts, **pool)
    dt = time.perf_counter() - t0
    peak = status_kb("VmHWM") - before
    return {"measured_mb": peak / 1024, "estimate_mb": plan.host_bytes / 2**20, "tile": plan.tile, "time_s": dt,
            "parts": {k: round(v / 2**20, 1) for k, v in plan.parts.items()}}


def child(spec: dict, timeout: float) -> dict:
    # a fixed mmap threshold: every large array is its own mapping, returned to the system when freed, so that no
    # freed-but-resident heap memory of the data's making is silently reused by the call and hidden from VmHWM
    return run_child(__file__, spec, timeout, env={"MALLOC_MMAP_THRESHOLD_": "131072"})


DEFAULT = [
    dict(n=20000, d=512, metric="euclidean", screen="bf16"),
    dict(n=20000, d=512, metric="euclidean", screen="float32"),
    dict(n=50000, d=256, metric="euclidean", screen="auto"),
    dict(n=50000, d=256, metric="euclidean", screen="float32"),
    dict(n=20000, d=512, metric="cosine", screen="auto"),
    dict(n=20000, d=256, metric="mahalanobis", screen="auto"),
    dict(n=20000, d=256, metric="manhattan", screen="auto"),
    dict(n=5000, d=64, metric="minkowski", screen="auto", p=3),
    dict(n=20000, d=256, metric="euclidean", screen="auto", dtype="int16"),
    dict(n=20000, d=256, metric="euclidean", screen="auto", pool=30000),
    dict(n=20000, d=256, metric="euclidean", screen="auto", backend="faiss"),
    dict(n=20000, d=256, metric="euclidean", screen="float32", tile=512),
]
QUICK = [dict(n=4000, d=128, metric="euclidean", screen="bf16"),
         dict(n=4000, d=128, metric="euclidean", screen="float32"),
         dict(n=4000, d=128, metric="cosine", screen="auto")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--metric", default="euclidean")
    ap.add_argument("--screen", default="auto")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--classes", type=int, default=10)
    add_run_options(ap, timeout=1800)
    args = ap.parse_args(argv)
    if args.child:
        return answer_child(args.child, run_case)
    if args.n:
        cases = [dict(n=args.n, d=args.dim, metric=args.metric, screen=args.screen, backend=args.backend)]
    else:
        cases = QUICK if args.quick else DEFAULT
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average {os.getloadavg()[0]:.2f}")
    print("| N | D | metric | screen | backend | input | pool | tile | estimate MB | measured MB | ratio | time s |")
    print("|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    out, worst = [], (np.inf, 0.0)
    for case in cases:
        spec = dict(dict(c=args.classes, backend="auto", dtype="float32"), **case)
        r = child(spec, args.timeout)
        out.append({**spec, **r})
        if "error" in r:
            print(f"| {spec['n']} | {spec['d']} | {spec['metric']} | error: {r['error']} |", flush=True)
            continue
        ratio = r["estimate_mb"] / max(r["measured_mb"], 1e-9)
        worst = (min(worst[0], ratio), max(worst[1], ratio))
        print(f"| {spec['n']} | {spec['d']} | {spec['metric']} | {spec['screen']} | {spec['backend']} | "
              f"{spec['dtype']} | {spec.get('pool') or ''} | {r['tile']} | {r['estimate_mb']:.0f} | "
              f"{r['measured_mb']:.0f} | {ratio:.2f} | {r['time_s']:.1f} |", flush=True)
    print(f"\nestimate / measured: {worst[0]:.2f} .. {worst[1]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0 if worst[0] >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
