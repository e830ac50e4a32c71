"""Benchmark of the exact k* engine against the reference algorithm and one full float32 matrix product.

    .venv/bin/python benchmarks/bench_kstar.py                # N = 5k, 10k, 20k (+ reference, GEMM) and 100k engine-only
    .venv/bin/python benchmarks/bench_kstar.py --quick        # N = 2k, 5k; engine-only 20k
    .venv/bin/python benchmarks/bench_kstar.py --device cuda  # up to N = 1,281,167 x D = 768, C = 1000
    .venv/bin/python benchmarks/bench_kstar.py --metric manhattan --large  # the L1 engine vs cdist(p=1) + sort
    .venv/bin/python benchmarks/bench_kstar.py --sizes 20000 --screens float32 bf16 --profile --repeats 3
                                       # each pass-1 screen against one GEMM and the reference, time per phase

Data: C Gaussian classes in D dimensions, centres ~ N(0, spread^2 I), unit-variance noise, float32, balanced classes,
seeded (the same data in every case of a size). Every case runs in its own subprocess, so "peak MB" is that process's
own maximum resident set (ru_maxrss; on CUDA also the peak allocated device memory), not shared with other cases.

Cases per size: `reference` (the original algorithm: full N x N float32 cdist of the metric's order, full argsort per
row, position of the first label change), `auto`, `torch` and `faiss` (the engine's backends; for Manhattan, `auto`
and `faiss` screen with faiss's L1 loops, `torch` with torch.cdist), `gemm` (one N x N x D float32 matrix product of
the same data, the speed-of-light yardstick of the Euclidean engine) and `base` (data generation only: the memory
floor). `torch:float32` / `torch:bf16`: the torch backend with that pass-1 screen (`--screens`; `torch` alone is
`screen="auto"`). `--profile` adds, per engine case, the time of each phase (class sort, kernel operands, pass-1
tiles, pass-1 candidates, pass 2), from timers wrapped around the engine's methods in the child. The machine's CPU
model and vector flags (`lscpu`) head the output. Exactness: the fraction of engine k* equal to the float64 definition, on every sample for N <= --full-check,
otherwise on a random subset of --check-queries queries (each evaluated against all N samples with the reference
scores of engine.reference).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np

# benchmarks/_common.py: the script's own folder is on sys.path
from _common import add_run_options, answer_child, cpu_summary, run_child


# -- data and the definitions --------------------------------------------------------------------------------------
def make_data(n: int, d: int, c: int, spread: float, seed: int = 0):
    """(X (n, d) float32, y (n,) int64): balanced Gaussian classes."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    centres = spread * rng.normal(size=(c, d))
    X = (rng.normal(size=(n, d)) + centres[y]).astype(np.float32)
    return X, y


CDIST_P = {"euclidean": 2.0, "manhattan": 1.0, "chebyshev": float("inf")}


def float64_kstar_of(X: np.ndarray, y: np.ndarray, queries: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """k* of the given queries by the float64 definition (reference arithmetic, self excluded, strict <)."""
    from kstar_utils.method.metrics import metric_space

    space = metric_space(X.astype(np.float64), metric)
    X64 = space.queries
    out = np.empty(queries.shape[0], dtype=np.int64)
    step = max(1, int(4e6 // X.shape[0] // X.shape[1]) or 1)
    for s in range(0, queries.shape[0], step):
        q = queries[s : s + step]
        S = space.distance.block(X64[q], X64)
        same = y[q, None] == y[None, :]
        enemy = np.where(same, np.inf, S).min(1)
        closer = same & (S < enemy[:, None])
        closer[np.arange(q.shape[0]), q] = False
        out[s : s + step] = 1 + closer.sum(1)
    return out


def reference_algorithm(X: np.ndarray, y: np.ndarray, device: str, metric: str = "euclidean") -> np.ndarray:
    """The original notebook's algorithm: cdist, argsort each row, first label change (float32, ties arbitrary)."""
    import torch

    a = torch.from_numpy(X).to(device)
    t = torch.from_numpy(y).to(device)
    d = torch.cdist(a, a, p=CDIST_P[metric])
    order = torch.argsort(d, dim=1)
    del d
    lab = t[order]
    del order
    return (lab != t[:, None]).int().argmax(1).cpu().numpy().astype(np.int64)


# -- one case in a child process -----------------------------------------------------------------------------------
def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_case(spec: dict) -> dict:
    import torch

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])

    X, y = make_data(spec["n"], spec["d"], spec["c"], spec["spread"])
    dev = spec["device"]
    cuda = dev == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    kind = spec["case"]
    result: dict = {}
    # imports are one-time process costs, not part of the computation being timed
    import tqdm.auto  # noqa: F401

    from kstar_utils import compute_kstar
    from kstar_utils.engine import passes, run  # noqa: F401

    if kind in ("faiss", "auto"):
        import faiss  # noqa: F401
    phases = profile_phases() if spec.get("profile") and kind.startswith("torch") else None
    if kind.startswith("torch") and spec.get("warmup", True):
        xs, ys = make_data(600, spec["d"], spec["c"], spec["spread"], seed=5)
        compute_kstar(xs, ys, device=dev, backend="torch", metric=spec["metric"], screen=_screen(kind))
        if phases is not None:
            phases.clear()
    t0, c0 = time.perf_counter(), _cpu_s()
    if kind == "base":
        k = None
    elif kind == "gemm":
        a = torch.from_numpy(X).to(dev)
        sync()
        t0, c0 = time.perf_counter(), _cpu_s()
        g = a @ a.T
        sync()
        del g
    elif kind == "reference":
        k = reference_algorithm(X, y, dev, spec["metric"])
    else:
        k = compute_kstar(X, y, device=dev, backend=kind.split(":")[0], metric=spec["metric"],
                          progress=spec.get("progress", False), screen=_screen(kind))
    sync()
    result["time_s"] = time.perf_counter() - t0
    result["cpu_s"] = _cpu_s() - c0
    if phases is not None:
        result["phases_s"] = dict(phases)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if kind in ("reference", "faiss", "auto") or kind.startswith("torch"):
        n = spec["n"]
        if n <= spec["full_check"]:
            q = np.arange(n)
        else:
            q = np.sort(np.random.default_rng(1).choice(n, size=min(n, spec["check_queries"]), replace=False))
        cache = os.path.join(spec["cache_dir"], f"exact_{spec['metric']}_{n}_{spec['d']}_{spec['c']}_{spec['spread']}_"
                                                f"{q.shape[0]}.npy")
        if os.path.exists(cache):  # the float64 check is the same for every case of a size: compute it once
            exact = np.load(cache)
        else:
            exact = float64_kstar_of(X, y, q, spec["metric"])
            np.save(cache, exact)
        result["exact_frac"] = float(np.mean(k[q] == exact))
        result["checked"] = int(q.shape[0])
        result["kstar_hash"] = int(np.bitwise_xor.reduce(k * np.arange(1, n + 1, dtype=np.int64)))
    return result


def _screen(kind: str) -> str:
    return kind.split(":")[1] if ":" in kind else "auto"


def profile_phases() -> dict:
    """Wrap the engine's phases with timers (seconds summed per phase, in this process): class sort, kernel
    operands, bfloat16 operands, pass-1 tiles (nearest_foreign minus its candidate stage), pass-1 candidates, pass 2."""
    from kstar_utils.engine import bf16, layout, passes

    acc: dict = {}

    def wrap(owner, name, label):
        fn = getattr(owner, name)

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                acc[label] = acc.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)

    sorted_build = layout.SortedSet.__dict__["build"].__func__

    def build(cls, *a, **kw):
        t0 = time.perf_counter()
        try:
            return sorted_build(cls, *a, **kw)
        finally:
            acc["class sort"] = acc.get("class sort", 0.0) + time.perf_counter() - t0

    layout.SortedSet.build = classmethod(build)  # the class object run.py holds: patched in place
    wrap(bf16, "_setup", "bfloat16 operands")
    wrap(passes.TwoPassEngine, "nearest_foreign", "pass 1 (all)")
    wrap(passes.TwoPassEngine, "evaluate_chunks", "pass-1 candidates: re-screen + float64")
    wrap(bf16, "_candidates", "pass-1 candidates (bf16 table scan incl.)")
    wrap(passes.TwoPassEngine, "count_closer", "pass 2")
    import kstar_utils.engine.kernels as kernels

    wrap(kernels, "make_kernel", "kernel operands")
    return acc


# -- driver ----------------------------------------------------------------------------------------------------------
def fmt(x, spec="{:.2f}"):
    return "-" if x is None else spec.format(x)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", help="N with reference, GEMM and both backends (none: --sizes)")
    ap.add_argument("--large", type=int, nargs="*", help="N for the engine alone (default backend)")
    ap.add_argument("--dim", type=int, default=None)
    ap.add_argument("--classes", type=int, default=None)
    ap.add_argument("--spread", type=float, default=0.5, help="std of the class centres (noise std is 1)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--metric", default="euclidean", choices=sorted(CDIST_P))
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run every timed case this often, cases interleaved per round (each round sees similar load); "
                         "report the median time and the median of the per-round ratios")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference algorithm (it needs ~25 N^2 bytes)")
    ap.add_argument("--no-faiss", action="store_true")
    ap.add_argument("--screens", nargs="*", default=None, choices=["auto", "float32", "bf16"],
                    help="pass-1 screens of the torch backend to run as separate cases (default: auto)")
    ap.add_argument("--profile", action="store_true", help="time each engine phase (timers around its methods)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads in every case (default: torch's own); with 1 the CPU-time ratios of a "
                         "loaded machine stay close to an idle machine's time ratios")
    ap.add_argument("--full-check", type=int, default=5000, help="check every sample against float64 up to this N")
    ap.add_argument("--check-queries", type=int, default=400, help="random queries checked above --full-check")
    add_run_options(ap, timeout=3600, json_help="also write all results to this file")
    args = ap.parse_args(argv)

    if args.child:
        return answer_child(args.child, run_case)

    cuda = args.device == "cuda"
    d = args.dim or (768 if cuda else 512)
    c = args.classes or (1000 if cuda else 10)
    sizes = args.sizes if args.sizes is not None else (
        [2000, 5000] if args.quick else ([20000, 100000] if cuda else [5000, 10000, 20000]))
    large = args.large if args.large is not None else ([20000] if args.quick else ([1281167] if cuda else [100000]))
    euclid = args.metric == "euclidean"
    cases = []
    torch_cases = ["torch" if sc == "auto" else f"torch:{sc}" for sc in (args.screens or ["auto"])]
    for n in sizes:
        names = ["base"] + (["gemm"] if euclid else []) + ([] if args.no_reference else ["reference"])
        names += torch_cases if euclid else ["auto", "torch"]
        names += [] if args.no_faiss or not euclid else ["faiss"]
        cases += [(n, name) for name in names]
    cases += [(n, name) for n in large for name in ("base", "torch" if euclid else "auto")]

    import tempfile

    from tqdm.auto import tqdm

    cache_dir = tempfile.mkdtemp(prefix="bench_kstar_")
    results: dict = {}
    base_spec = dict(d=d, c=c, spread=args.spread, device=args.device, metric=args.metric, full_check=args.full_check,
                     check_queries=args.check_queries, cache_dir=cache_dir, profile=args.profile,
                     threads=args.threads)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average {os.getloadavg()[0]:.2f}")
    print(cpu_summary(), flush=True)
    runs: dict = {}
    rounds = [(rep, n, name) for rep in range(args.repeats) for n, name in cases if rep == 0 or name != "base"]
    for rep, n, name in tqdm(rounds, desc="bench", unit="case"):
        r = run_child(__file__, dict(base_spec, n=n, case=name, progress=n >= 50000), args.timeout)
        runs.setdefault((n, name), []).append(r)
        tqdm.write(f"round {rep} N={n:>8} {name:>9}: {json.dumps(r)}")

    def median_of(values):
        return float(np.median(values)) if values else None

    results: dict = {}
    ratios: dict = {}
    for key, rs in runs.items():
        ok = [r for r in rs if "time_s" in r]
        if not ok:
            results[key] = rs[0]
            continue
        med = dict(ok[len(ok) // 2])
        med["time_s"] = median_of([r["time_s"] for r in ok])
        med["times_s"] = [round(r["time_s"], 3) for r in ok]
        for mk in ("peak_rss_mb", "peak_gpu_mb"):
            if mk in med:
                med[mk] = max(r[mk] for r in ok)
        med["exact_frac"] = min((r["exact_frac"] for r in ok if "exact_frac" in r), default=None)
        if med["exact_frac"] is None:
            med.pop("exact_frac")
        results[key] = med
    cpu_ratios: dict = {}
    for (n, name), rs in runs.items():  # per-round ratios: the same round's reference / GEMM run
        for base in ("reference", "gemm"):
            bs = runs.get((n, base))
            if bs and name in ("torch", "faiss", "auto", "reference", *torch_cases) and name != base:
                pairs = [r["time_s"] / b["time_s"] for r, b in zip(rs, bs) if "time_s" in r and "time_s" in b]
                ratios[(n, name, base)] = median_of(pairs)
                cpairs = [r["cpu_s"] / b["cpu_s"] for r, b in zip(rs, bs) if r.get("cpu_s") and b.get("cpu_s")]
                cpu_ratios[(n, name, base)] = median_of(cpairs)

    lines = [
        f"machine: {platform.node()} | {platform.processor() or platform.machine()} | {os.cpu_count()} CPUs | "
        f"device {args.device} | metric {args.metric} | D={d} C={c} spread={args.spread}",
        "",
        f"repeats: {args.repeats} (median time; ratios = median over rounds of the same round's ratio); torch "
        f"threads: {args.threads or 'default'}",
        "",
        "| N | case | time s | CPU s | peak MB | x reference | x GEMM | x GEMM (CPU s) | exact (checked) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    mem_key = "peak_gpu_mb" if cuda else "peak_rss_mb"
    printed: set = set()
    engines = ("torch", "faiss", "auto", *torch_cases)
    for n in sorted({n for n, _ in cases}):
        ref_t = results.get((n, "reference"), {}).get("time_s")
        gemm_t = results.get((n, "gemm"), {}).get("time_s")
        for name in ("base", "gemm", "reference", "auto", "torch", *torch_cases, "faiss"):
            if name in torch_cases and name == "torch" and (n, name) in printed:
                continue
            printed.add((n, name))
            r = results.get((n, name))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {n} | {name} | error: {r['error']} | | | | | | |")
                continue
            t = r["time_s"]
            mem = r.get(mem_key)
            if cuda and name != "base":
                mem_s = f"{mem:.0f} GPU / {r['peak_rss_mb']:.0f} RSS"
            else:
                mem_s = fmt(mem, "{:.0f}")
            ex = f"{r['exact_frac']:.4f} ({r['checked']})" if "exact_frac" in r else ""
            rel_ref = fmt(ratios.get((n, name, "reference"))) if ref_t and name in engines else ""
            rel_gemm = (fmt(ratios.get((n, name, "gemm"))) if gemm_t and name in (*engines, "reference")
                        else "")
            rel_cpu = (fmt(cpu_ratios.get((n, name, "gemm"))) if gemm_t and name in (*engines, "reference")
                       else "")
            lines.append(f"| {n} | {name} | {t:.2f} | {fmt(r.get('cpu_s'))} | {mem_s} | {rel_ref} | {rel_gemm} | "
                         f"{rel_cpu} | {ex} |")
        hashes = {r.get("kstar_hash") for k in engines for r in runs.get((n, k), []) if "time_s" in r}
        if len(hashes) > 1:
            lines.append(f"| {n} | engine backends | results DIFFER | | | | | | |")
    if args.profile:
        lines += ["", "Time per phase (median over rounds, seconds):", ""]
        for (n, name), rs in sorted(runs.items()):
            ph = [r["phases_s"] for r in rs if "phases_s" in r]
            if not ph:
                continue
            keys = sorted({k for p in ph for k in p})
            med = {k: median_of([p.get(k, 0.0) for p in ph]) for k in keys}
            if "pass 1 (all)" in med:
                cand = med.get("pass-1 candidates (bf16 table scan incl.)") or med.get(
                    "pass-1 candidates: re-screen + float64", 0.0)
                med["pass-1 tiles (pass 1 minus candidates)"] = med["pass 1 (all)"] - cand
            lines.append(f"- N={n} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
    table = "\n".join(lines)
    print("\n" + table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{n}:{k}": v for (n, k), v in results.items()}, f, indent=1)
    bad = [k for k, v in results.items() if k[1] in engines and v.get("exact_frac", 1.0) != 1.0]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
