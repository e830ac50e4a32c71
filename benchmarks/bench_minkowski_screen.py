"""Where the float32 screen stops paying for Minkowski distances, and which kernels `auto` should use for them.

    .venv/bin/python benchmarks/bench_minkowski_screen.py [--n 3000] [--dims 32 256] [--ps 3 4 6 8 12 16]

For each p, the same seeded data (C = 10 Gaussian classes, centres ~ N(0, 0.25 I), unit noise, float32) runs through
the engine three ways: `torch` (float32 screen, torch kernels), `faiss` (float32 screen, faiss's kernels) and
`float64` (no screen: every pair scored in float64, what the engine does above bounds.P_MAX_SCREEN); the screened
cases screen at every p measured, whatever the engine's default cutoff. Each case runs in
its own subprocess after one untimed warm-up call on a small slice, so "peak MB" is that process's own maximum
resident set. All three must give identical k* (checked through a hash of the result); the table gives seconds,
peak memory and each screen's time as a multiple of the unscreened one (below 1: the screen pays).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np


@contextmanager
def screen_up_to(p_max: float):
    """Screen Minkowski scores up to p_max (0: never, the engine's own float64 path above bounds.P_MAX_SCREEN)."""
    from kstar_utils.engine import bounds, kernels

    saved = bounds.P_MAX_SCREEN, kernels.P_MAX_SCREEN
    bounds.P_MAX_SCREEN = kernels.P_MAX_SCREEN = p_max
    try:
        yield
    finally:
        bounds.P_MAX_SCREEN, kernels.P_MAX_SCREEN = saved


def data(n: int, d: int, c: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), n // c)
    X = rng.normal(scale=0.5, size=(c, d))[y] + rng.normal(size=(y.size, d))
    return X.astype(np.float32), y


def child(case: str, n: int, d: int, p: float) -> dict:
    """One timed case in this process: seconds, peak resident MB and a hash of the k*."""
    from kstar_utils import compute_kstar

    X, y = data(n, d)

    def run(Xs, ys):
        with screen_up_to(0 if case == "float64" else p):
            return compute_kstar(Xs, ys, metric="minkowski", p=p, backend="torch" if case == "float64" else case,
                                 progress=False)

    run(X[::20], y[::20])  # imports and first-call costs, untimed
    t = time.perf_counter()
    k = run(X, y)
    seconds = time.perf_counter() - t
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "hash": hashlib.sha256(np.ascontiguousarray(k).tobytes()).hexdigest()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--dims", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--ps", type=float, nargs="+", default=[3, 4, 6, 8, 12, 16])
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        case, n, d, p = args.child
        print(json.dumps(child(case, int(n), int(d), float(p))))
        return 0
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, N = {args.n}")
    print("| D | p | torch s | faiss s | float64 s | torch / float64 | faiss / float64 | peak MB torch / faiss / float64 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for d in args.dims:
        for p in args.ps:
            r = {}
            for case in ("torch", "faiss", "float64"):
                out = subprocess.run([sys.executable, __file__, "--child", case, str(args.n), str(d), str(p)],
                                     capture_output=True, text=True, check=True)
                r[case] = json.loads(out.stdout.strip().splitlines()[-1])
            assert len({v["hash"] for v in r.values()}) == 1, f"k* differ at D = {d}, p = {p}"
            t = {c: v["seconds"] for c, v in r.items()}
            print(f"| {d} | {p:g} | {t['torch']:.2f} | {t['faiss']:.2f} | {t['float64']:.2f} | "
                  f"{t['torch'] / t['float64']:.2f} | {t['faiss'] / t['float64']:.2f} | "
                  + " / ".join(f"{r[c]['peak_mb']:.0f}" for c in ("torch", "faiss", "float64")) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
