"""The GPU run: exactness of the CUDA engine against the CPU engine, and the time of ImageNet-train-sized k*.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/gpu_check.py                 # on a CUDA machine (one H200: < 10 min)
    PYTHONPATH=$PWD .venv/bin/python benchmarks/gpu_check.py --dry-run       # the same steps on the CPU, small sizes

Steps (data: C Gaussian classes of equal size, centres ~ N(0, 0.25 I), unit noise, float32, seeded):
1. exactness at N = 200,000 x 768 (C = 1,000): the CPU engine's k* and nearest enemies are the reference; the CUDA
   engine with the bfloat16 screen, with the float32 screen, and faiss-gpu (backend="faiss") must equal them
   element for element;
2. the time of N = 1,281,167 x 768 with 1,000 classes on the GPU: the torch engine (bfloat16 and float32 screens)
   and faiss-gpu, each result compared with the others and, on --check-queries random queries, with the float64
   definition;
3. the figures go to --out (JSON) and the same path with .md (a table for benchmarks/RESULTS.md).
Every step has its own timer and peak GPU memory (torch.cuda.max_memory_allocated; faiss allocates outside it). A
step that would start after --budget seconds, or (the big steps) would end after it by its check-size time scaled
with N^2, is skipped and recorded as such, so the run ends in time (faiss-gpu, whose pass 1 searches once per
class, is the one most likely to be skipped at 1,000 classes); without a
CUDA device the script stops at once (exit 2) unless --dry-run, which runs every step on the CPU at small sizes
(N = 3,000 and 12,000, D = 64, 20 classes; faiss on the CPU) to prove the script, not to time anything.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def make_data(n: int, d: int, c: int, spread: float = 0.5, seed: int = 0):
    """(X (n, d) float32, y (n,) int64): C Gaussian classes of equal size (up to one), generated in row blocks."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % c)
    centres = (spread * rng.normal(size=(c, d))).astype(np.float32)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 16):
        e = min(n, s + (1 << 16))
        X[s:e] = rng.standard_normal(size=(e - s, d), dtype=np.float32) + centres[y[s:e]]
    return X, y


def float64_kstar_of(X, y, queries) -> np.ndarray:
    """k* of the given queries by the float64 definition (engine.reference arithmetic, self excluded, strict <),
    all queries at once against blocks of rows (bounded memory)."""
    from kstar_utils.engine.reference import SQEUCLIDEAN
    from kstar_utils.method.metrics import scale_exponent

    k = scale_exponent(X)
    xq = np.ldexp(X[queries].astype(np.float64), k)
    scores = np.empty((len(queries), X.shape[0]))
    step = max(1, (1 << 24) // max(1, len(queries) * X.shape[1]))
    for s in range(0, X.shape[0], step):
        scores[:, s : s + step] = SQEUCLIDEAN.block(xq, np.ldexp(X[s : s + step].astype(np.float64), k))
    same = y[queries][:, None] == y[None, :]
    enemy = np.where(same, np.inf, scores).min(1)
    closer = same & (scores < enemy[:, None])
    closer[np.arange(len(queries)), queries] = False
    return 1 + closer.sum(1)


class Run:
    """Timed steps within a budget; figures collected for the JSON and markdown output."""

    def __init__(self, budget: float, device: str):
        self.t0 = time.perf_counter()
        self.budget = budget
        self.device = device
        self.steps: list[dict] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def step(self, name: str, fn, predicted: float = 0.0, **info):
        """Run fn() timed, unless it would start after the budget or, by `predicted` seconds, end after it."""
        import torch

        rec = {"step": name, **info}
        if self.elapsed() + predicted > self.budget:
            rec["skipped"] = (f"budget of {self.budget:.0f} s: {self.elapsed():.0f} s used"
                              + (f", about {predicted:.0f} s predicted" if predicted else ""))
            self.steps.append(rec)
            print(f"[{self.elapsed():7.1f} s] {name}: skipped ({rec['skipped']})", flush=True)
            return None
        cuda = self.device == "cuda"
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # noqa: BLE001 - recorded, and the run goes on to the next step
            rec["error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
            self.steps.append(rec)
            print(f"[{self.elapsed():7.1f} s] {name}: ERROR {rec['error']}", flush=True)
            return None
        if cuda:
            torch.cuda.synchronize()
            rec["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        rec["time_s"] = round(time.perf_counter() - t, 2)
        self.steps.append(rec)
        print(f"[{self.elapsed():7.1f} s] {name}: {rec['time_s']:.1f} s"
              + (f", peak GPU {rec['peak_gpu_gb']} GB" if cuda else ""), flush=True)
        return out


def environment(device: str) -> dict:
    import torch

    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(), "python": platform.python_version(),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda, "device": device}
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 1e9, 1), capability=f"{p.major}.{p.minor}")
    try:
        import faiss

        env.update(faiss=faiss.__version__, faiss_gpus=faiss.get_num_gpus())
    except ImportError:
        env.update(faiss=None)
    try:
        with open("/proc/cpuinfo") as f:
            env["cpu"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    env["cpu_threads"] = torch.get_num_threads()
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="every step on the CPU at small sizes (proves the script)")
    ap.add_argument("--check-n", type=int, default=200_000)
    ap.add_argument("--big-n", type=int, default=1_281_167)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--check-queries", type=int, default=16, help="float64 checks of the big run's k*")
    ap.add_argument("--budget", type=float, default=540, help="no step starts after this many seconds")
    ap.add_argument("--skip", nargs="*", default=[], choices=["faiss", "float32", "big"], help="steps to leave out")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "gpu_results.json"))
    args = ap.parse_args(argv)

    import torch

    if args.dry_run:
        device, faiss_backend = "cpu", "faiss"
        check_n, big_n, dim, classes = 3000, 12000, 64, 20
    else:
        if not torch.cuda.is_available():
            print(f"gpu_check: no CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}: "
                  f"torch.cuda.is_available() is False). Run it on a machine with an NVIDIA GPU, or with --dry-run "
                  f"to exercise every step on the CPU at small sizes.", file=sys.stderr)
            return 2
        device, faiss_backend = "cuda", "faiss"
        check_n, big_n, dim, classes = args.check_n, args.big_n, args.dim, args.classes
    from kstar_utils import compute_kstar

    env = environment(device)
    print(json.dumps(env), flush=True)
    run = Run(args.budget, device)
    faiss_gpu = env.get("faiss_gpus", 0) > 0 or args.dry_run
    if not faiss_gpu and "faiss" not in args.skip:
        print("gpu_check: this faiss has no GPU support (faiss-gpu is needed for backend='faiss' on CUDA): the faiss "
              "steps are recorded as skipped", flush=True)
    results: dict = {"environment": env, "dry_run": args.dry_run, "check": {}, "big": {}}

    def same(a, b):
        return bool(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))

    # 1. exactness against the CPU engine
    X, y = run.step("data (check)", lambda: make_data(check_n, dim, classes), n=check_n) or (None, None)
    ref = run.step("CPU engine (reference)", lambda: compute_kstar(X, y, device="cpu", return_enemy=True),
                   n=check_n, device="cpu")
    cases = [("torch bf16", dict(backend="torch", screen="bf16")),
             ("torch float32", dict(backend="torch", screen="float32")),
             ("faiss", dict(backend=faiss_backend))]
    for name, opts in cases:
        if (name == "faiss" and ("faiss" in args.skip or not faiss_gpu)) or (name == "torch float32" and
                                                                             "float32" in args.skip):
            results["check"][name] = {"skipped": "not run (--skip or no faiss-gpu)"}
            continue
        got = run.step(f"{name} at N = {check_n:,}", lambda o=opts: compute_kstar(X, y, device=device,
                                                                                  return_enemy=True, **o),
                       n=check_n, **opts)
        rec = dict(run.steps[-1])
        if got is not None and ref is not None:
            rec["equal_to_cpu"] = same(got, ref)
            rec["differing"] = int(np.sum((got[0] != ref[0]) | (got[1] != ref[1])))
        results["check"][name] = rec
    del X, y
    # 2. the ImageNet-train-sized run
    if "big" not in args.skip:
        X, y = run.step("data (big)", lambda: make_data(big_n, dim, classes), n=big_n) or (None, None)
        outs = {}
        for name, opts in cases:
            if (name == "faiss" and ("faiss" in args.skip or not faiss_gpu)) or (name == "torch float32" and
                                                                                 "float32" in args.skip):
                results["big"][name] = {"skipped": "not run (--skip or no faiss-gpu)"}
                continue
            if X is None:
                break
            # N^2 work: the check-size time scaled, so that a step that cannot end within the budget is not begun
            small = results["check"].get(name, {}).get("time_s")
            outs[name] = run.step(f"{name} at N = {big_n:,}", lambda o=opts: compute_kstar(
                X, y, device=device, return_enemy=True, progress=False, **o),
                predicted=0.0 if small is None else small * (big_n / check_n) ** 2, n=big_n, **opts)
            results["big"][name] = dict(run.steps[-1])
        done = {k: v for k, v in outs.items() if v is not None}
        if len(done) > 1:
            first = next(iter(done.values()))
            results["big"]["all screens equal"] = all(same(first, v) for v in done.values())
        if done and X is not None:
            q = np.sort(np.random.default_rng(1).choice(big_n, size=min(big_n, args.check_queries), replace=False))
            exact = run.step(f"float64 definition on {q.size} queries", lambda: float64_kstar_of(X, y, q))
            if exact is not None:
                results["big"]["exact (checked queries)"] = {
                    k: float(np.mean(v[0][q] == exact)) for k, v in done.items()}
    results["steps"] = run.steps
    results["total_s"] = round(run.elapsed(), 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1, default=str)
    md = markdown(results, check_n, big_n, dim, classes)
    with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
        f.write(md)
    print("\n" + md)
    bad = [k for k, v in results["check"].items() if isinstance(v, dict) and v.get("equal_to_cpu") is False]
    if results["big"].get("all screens equal") is False:
        bad.append("big: screens differ")
    bad += [f"big exact {k}" for k, v in results["big"].get("exact (checked queries)", {}).items() if v != 1.0]
    errors = [s["step"] for s in run.steps if "error" in s]
    return 1 if bad or errors else 0


def markdown(r: dict, check_n: int, big_n: int, dim: int, classes: int) -> str:
    env = r["environment"]
    lines = [f"GPU check ({'DRY RUN on the CPU, small sizes: not a measurement' if r['dry_run'] else 'CUDA'}), "
             f"{env['date']}: {env.get('gpu', env.get('cpu', '?'))}, torch {env['torch']} (CUDA "
             f"{env['torch_cuda']}), faiss {env.get('faiss')} ({env.get('faiss_gpus', 0)} GPUs); total "
             f"{r['total_s']} s", "",
             f"| step | N | time s | peak GPU GB | equal to the CPU engine |", "|---|---:|---:|---:|---|"]
    for s in r["steps"]:
        eq = ""
        for part in ("check",):
            for v in r[part].values():
                if isinstance(v, dict) and v.get("step") == s["step"] and "equal_to_cpu" in v:
                    eq = "yes" if v["equal_to_cpu"] else f"NO ({v['differing']} differ)"
        t = s.get("time_s", s.get("skipped") or s.get("error"))
        lines.append(f"| {s['step']} | {s.get('n', '')} | {t} | {s.get('peak_gpu_gb', '')} | {eq} |")
    big = r["big"]
    if "all screens equal" in big:
        lines.append(f"\nN = {big_n:,} x {dim} ({classes} classes): screens give equal k* and enemies: "
                     f"{big['all screens equal']}")
    if "exact (checked queries)" in big:
        lines.append(f"float64 definition on sampled queries: {big['exact (checked queries)']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
