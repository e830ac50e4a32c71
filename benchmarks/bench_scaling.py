"""How the exact k* engine grows with N: time and peak memory from N = 25k to 200k, the fitted growth exponent, and
the projected time of N = 1,281,167 (ImageNet's training set) on this machine and on a cluster.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_scaling.py                        # 25k, 50k, 100k, 200k x 768
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_scaling.py --sizes 4000 8000 16000 --dim 128   # a proof run
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_scaling.py --distributed dist.json  # + bench_distributed's JSON

Each size runs in its own process (C Gaussian classes, float32, D = --dim): compute_kstar's wall time after a small
warm-up, its peak resident memory (ru_maxrss) and, from `base` (the data, the libraries and a warm-up call), what the
call added, beside the memory plan's estimate (engine.memory) for the same request. (ru_maxrss also counts heap that
glibc keeps after frees; benchmarks/memory_check.py measures the call's own peak.)

Growth exponent: the least-squares slope of log(time) against log(N) over the sizes run (pairwise slopes shown too).
Projection to N_target on this machine: time(N_max) x (N_target / N_max)^slope, and the memory plan's estimate at
N_target (with C classes of equal size). Projection to a cluster of W workers of this machine's speed (one thread
each, as in bench_distributed): with the cluster / local ratio r measured by bench_distributed at its largest N (the
JSON of --distributed; else r = 2, the arithmetic of blocks that do not share the symmetric half of each tile), the
cluster takes r x (local threads / W) x the local projection, plus each worker preparing the whole set once. Each
worker must hold the whole set: the memory plan's per-worker estimate is printed with it.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from _common import add_run_options, answer_child, header, run_child  # noqa: E402
from bench_kstar import make_data  # noqa: E402

TARGET = 1_281_167


def run_case(spec: dict) -> dict:
    import torch

    X, y = make_data(spec["n"], spec["d"], spec["c"], spec["spread"])
    out = {"threads": torch.get_num_threads()}
    from kstar_utils import compute_kstar
    from kstar_utils.engine.run import plan_run
    from kstar_utils.engine.reference import SQEUCLIDEAN

    xs, ys = make_data(600, spec["d"], spec["c"], spec["spread"], seed=5)
    compute_kstar(xs, ys, screen=spec["screen"])  # libraries and thread pools: part of the base, not of the call
    if spec["case"] == "base":
        out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out
    plan = plan_run(X, y, None, None, distance=SQEUCLIDEAN, transformed=False, backend="auto", device="cpu",
                    screen=spec["screen"], tile_size=None, memory_limit=1 << 62)
    t0 = time.perf_counter()
    compute_kstar(X, y, screen=spec["screen"], progress=False)
    out["time_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["estimate_mb"] = plan.host_bytes / 2**20
    return out


def projection(ns, ts, *, d, c, screen, threads, target, workers, dist_ratio, dist_note) -> list[str]:
    """The fitted exponent and the projections, as markdown lines."""
    from kstar_utils.engine.memory import Request, estimate, prepared_bytes, block_bytes
    from kstar_utils.engine.passes import fast_bf16

    import torch

    lx, ly = np.log(ns), np.log(ts)
    slope = float(np.polyfit(lx, ly, 1)[0]) if len(ns) > 1 else float("nan")
    pairs = [f"{ns[i]:,}->{ns[i + 1]:,}: {np.log(ts[i + 1] / ts[i]) / np.log(ns[i + 1] / ns[i]):.2f}"
             for i in range(len(ns) - 1)]
    local = ts[-1] * (target / ns[-1]) ** slope
    bf16 = screen == "bf16" or (screen == "auto" and fast_bf16(torch.device("cpu")))
    counts = tuple(np.bincount(np.arange(target) % c).tolist())
    req = Request(n=target, m=None, dim=d, bf16=bf16, workers=threads, col_counts=counts, n_classes=c)
    mem = estimate(req, 2048)
    wreq = Request(n=target, m=None, dim=d, bf16=bf16, workers=1, col_counts=counts, n_classes=c)
    rows = 8192
    per_worker = prepared_bytes(wreq) + block_bytes(wreq, rows)
    # each worker prepares the whole set (class sort, operands): about the cost of the class sort of a local run
    cluster = dist_ratio * local * threads / workers
    return [
        f"- growth exponent (least squares over N = {', '.join(f'{n:,}' for n in ns)}): **{slope:.2f}** "
        f"(pairwise: {'; '.join(pairs)})",
        f"- projected local time at N = {target:,} (D = {d}, {threads} threads): time(N = {ns[-1]:,}) x "
        f"({target:,} / {ns[-1]:,})^{slope:.2f} = **{local:,.0f} s ({local / 3600:.1f} h)**; memory plan: "
        f"{mem.describe()}",
        f"- projected on {workers} workers of this machine's speed (one thread each): {dist_ratio:.2f} ({dist_note}) "
        f"x {threads} / {workers} x the local projection = **{cluster:,.0f} s ({cluster / 60:.0f} min)**, each worker "
        f"needing about {per_worker / 1e9:.1f} GB (the whole set prepared, {prepared_bytes(wreq) / 1e9:.1f} GB, plus "
        f"one block of {rows:,} queries)",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25000, 50000, 100000, 200000])
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--spread", type=float, default=0.5)
    ap.add_argument("--screen", default="auto", choices=["auto", "bf16", "float32"])
    ap.add_argument("--target", type=int, default=TARGET)
    ap.add_argument("--cluster-workers", type=int, default=16)
    ap.add_argument("--distributed", help="bench_distributed.py --json output: its cluster / local ratio")
    add_run_options(ap, timeout=7200)
    args = ap.parse_args(argv)
    if args.child:
        return answer_child(args.child, run_case)
    print(header())
    lines = ["| N | time s | peak MB | added MB | plan's estimate MB |", "|---:|---:|---:|---:|---:|"]
    ns, ts, threads, out = [], [], 1, []
    for n in args.sizes:
        spec = dict(n=n, d=args.dim, c=args.classes, spread=args.spread, screen=args.screen)
        base = run_child(__file__, dict(spec, case="base"), args.timeout)
        r = run_child(__file__, dict(spec, case="engine"), args.timeout)
        print(f"N={n}: base {json.dumps(base)} engine {json.dumps(r)}", flush=True)
        if "error" in r or "error" in base:
            lines.append(f"| {n:,} | error: {r.get('error') or base.get('error')} | | | |")
            continue
        threads = r["threads"]
        ns.append(n)
        ts.append(r["time_s"])
        out.append(dict(n=n, base=base, engine=r))
        lines.append(f"| {n:,} | {r['time_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_rss_mb'] - base['peak_rss_mb']:.0f} | {r['estimate_mb']:.0f} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end; D = {args.dim}, C = {args.classes}, "
          f"{threads} threads, screen {args.screen}\n")
    print("\n".join(lines) + "\n")
    ratio, note = 2.0, "assumed: twice the arithmetic of the symmetric local engine"
    if args.distributed:
        with open(args.distributed) as f:
            dist = json.load(f)
        last = max(dist, key=lambda r: r["n"])
        ratio = last["ratio"]
        note = (f"the cluster / local ratio measured at N = {last['n']:,} with {last['workers']} workers, the same "
                f"cores as {threads} local threads")
    if len(ns) >= 2:
        print("\n".join(projection(ns, ts, d=args.dim, c=args.classes, screen=args.screen, threads=threads,
                                   target=args.target, workers=args.cluster_workers, dist_ratio=ratio,
                                   dist_note=note)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
