"""Feature extraction throughput: the workbook's extract_features against a plain torch.inference_mode() loop, and
the cold start of the first compute_kstar call.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_extraction.py                    # both models, 846 and 10,000
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_extraction.py --repeats 1 --sizes 846 --models abcrown:cnn-a-adv

Every measurement runs in its own fresh interpreter (so its peak resident memory, VmHWM, is its own), with torch's
default thread count in all of them, batch size --batch-size in all of them:
- `workbook`: extract_features(model, dataset, layers=("penultimate",), root=<a fresh temporary cache>) as a user
  calls it: model loading (weights read, sha256 of the weights and of the data file for the cache key), the
  DataLoader over the dataset with the model's own preprocessing per item, forward hooks, resumable chunk files,
  the final .npz and its sidecar written atomically. Then `cached`: the same call again in the same process, which
  finds the file, checks its sha256 and the inputs' records, and returns.
- `plain`: the same registry model (load_model, same weights) and the same decoded images, a plain loop over
  contiguous batches under torch.inference_mode(): the model's own preprocessing (a (B, 3, 32, 32) float tensor in
  [0, 1]; normalisation is inside these models) and a forward pre-hook on the final Linear that keeps its input (the
  penultimate features), collected into one (N, D) float32 array. Timed from decoding to the array.
Both start in a fresh process with nothing decoded and end with the (N, D) features in memory (the workbook: on
disk), so both pay the decoding of the shipped images (a few seconds for 10,000; `decode s` in the table, measured
alone). The two cases alternate repeat by repeat, so load on a shared machine falls on both alike; the features of
both are compared (`same`: equal to the last bit; the plain loop feeds the same contiguous NCHW batches: a
channels-last view would run other convolution kernels and change the last bits).
Sizes: 846 = `cifar10-sample` (the exact test images), 10000 = `cifar10-jpeg` (all test images, JPEG copy).

`--kstar-sizes` (846 and 10,000 by default): per size, a fresh interpreter times `import kstar_utils`, the first
compute_kstar call on (N, 64) float32 features of 10 classes, and a second call on the same input (warm); then again
with `import torch` timed on its own before the first call (kstar_utils imports torch on first use).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

# benchmarks/_common.py: the script's own folder is on sys.path
from _common import add_run_options, answer_child, cpu_summary, run_child, status_kb

DATASETS = {846: "cifar10-sample", 10000: "cifar10-jpeg"}


def _rss_mb() -> tuple[float, float]:
    """(current resident MB, peak resident MB) of this process, from /proc (VmRSS, VmHWM)."""
    return status_kb("VmRSS") / 1024, status_kb("VmHWM") / 1024


def _decoded(dataset: str):
    from kstar_utils import datasets

    if dataset == "cifar10-jpeg":
        return datasets.embedded.cifar10_jpeg_arrays("test")
    return datasets.embedded.cifar10_sample_arrays("test")


def case_workbook(spec: dict) -> dict:
    import numpy as np
    import torch

    from kstar_utils.pipeline.features import extract_features, load_features

    base_rss, _ = _rss_mb()
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        paths = extract_features(spec["model"], spec["dataset"], layers=("penultimate",), root=root,
                                 batch_size=spec["batch_size"], progress=False)
        cold = time.perf_counter() - t
        _, peak = _rss_mb()
        t = time.perf_counter()
        again = extract_features(spec["model"], spec["dataset"], layers=("penultimate",), root=root,
                                 batch_size=spec["batch_size"], progress=False)
        cached = time.perf_counter() - t
        assert again == paths
        X = load_features(paths["penultimate"]).features
        np.save(spec["out"], X)
    return {"seconds": cold, "cached_seconds": cached, "n": int(X.shape[0]), "d": int(X.shape[1]),
            "base_mb": base_rss, "peak_mb": peak, "threads": torch.get_num_threads()}


def case_plain(spec: dict) -> dict:
    import numpy as np
    import torch

    from kstar_utils import models as registry

    base_rss, _ = _rss_mb()
    bs = spec["batch_size"]
    t = time.perf_counter()
    images, _, _ = _decoded(spec["dataset"])
    loaded = registry.load_model(spec["model"], device="cpu")
    head = dict(loaded.module.named_modules())[loaded.head_module]
    kept = []
    handle = head.register_forward_pre_hook(lambda mod, args: kept.append(args[0].float().numpy().copy()))
    try:
        with torch.inference_mode():
            for lo in range(0, images.shape[0], bs):
                # the model's own preprocessing: uint8 HWC -> float CHW in [0, 1] (to_tensor), normalised inside
                x = torch.tensor(images[lo:lo + bs]).permute(0, 3, 1, 2).contiguous().float().div_(255.0)
                loaded.run(x)
    finally:
        handle.remove()
    X = np.concatenate(kept)
    seconds = time.perf_counter() - t
    _, peak = _rss_mb()
    np.save(spec["out"], X)
    return {"seconds": seconds, "n": int(X.shape[0]), "d": int(X.shape[1]), "base_mb": base_rss, "peak_mb": peak,
            "threads": torch.get_num_threads()}


def case_kstar_cold(spec: dict) -> dict:
    t0 = time.perf_counter()
    import numpy as np

    import kstar_utils
    t_import = time.perf_counter() - t0
    t_torch = float("nan")
    if spec.get("torch_first"):  # kstar_utils imports torch on first use; time that import on its own
        t0 = time.perf_counter()
        import torch  # noqa: F401
        t_torch = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    n = spec["n"]
    y = np.arange(n) % 10
    X = (rng.standard_normal((n, 64)) + 2.0 * rng.standard_normal((10, 64))[y]).astype(np.float32)
    t = time.perf_counter()
    k1 = kstar_utils.compute_kstar(X, y)
    first = time.perf_counter() - t
    t = time.perf_counter()
    k2 = kstar_utils.compute_kstar(X, y)
    second = time.perf_counter() - t
    assert (k1 == k2).all()
    return {"import_s": t_import, "torch_import_s": t_torch, "first_s": first, "second_s": second, "n": n}


def case_decode(spec: dict) -> dict:
    t = time.perf_counter()
    images, _, _ = _decoded(spec["dataset"])
    return {"seconds": time.perf_counter() - t, "n": int(images.shape[0])}


CASES = {"workbook": case_workbook, "plain": case_plain, "kstar_cold": case_kstar_cold, "decode": case_decode}


def machine() -> str:
    return f"{cpu_summary()}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["cifar-resnet:resnet56", "abcrown:cnn-a-adv"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[846, 10000], choices=sorted(DATASETS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--kstar-sizes", nargs="*", type=int, default=[846, 10000])
    add_run_options(ap, timeout=1800, json_help="also write every measurement to this file")
    args = ap.parse_args(argv)
    if args.child:
        answer_child(args.child, lambda spec: CASES[spec["case"]](spec))
        return

    import numpy as np

    print(machine(), flush=True)
    print(f"started {time.strftime('%a %b %d %H:%M:%S %Z %Y')}", flush=True)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for n in args.sizes:
                for r in range(args.repeats):
                    for case in ("workbook", "plain"):
                        out = os.path.join(tmp, f"{case}.npy")
                        spec = {"case": case, "model": model, "dataset": DATASETS[n], "batch_size": args.batch_size,
                                "out": out}
                        res = {**run_child(__file__, spec, args.timeout), "case": case, "model": model, "size": n,
                               "repeat": r}
                        records.append(res)
                        print(json.dumps(res), flush=True)
                    a, b = (np.load(os.path.join(tmp, f"{c}.npy")) for c in ("workbook", "plain"))
                    records[-1]["same"] = bool(a.shape == b.shape and np.array_equal(a, b))
        for n in args.sizes:
            res = {**run_child(__file__, {"case": "decode", "dataset": DATASETS[n]}, args.timeout), "case": "decode",
                   "size": n}
            records.append(res)
            print(json.dumps(res), flush=True)
        for n in args.kstar_sizes:
            for torch_first in (False, True):
                res = {**run_child(__file__, {"case": "kstar_cold", "n": n, "torch_first": torch_first},
                                   args.timeout),
                       "case": "kstar_cold", "size": n}
                records.append(res)
                print(json.dumps(res), flush=True)
    print(f"finished {time.strftime('%a %b %d %H:%M:%S %Z %Y')}; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    print(table(records))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)


def table(records: list[dict]) -> str:
    """The Markdown table of RESULTS.md: per (model, size), min and median seconds and images/s of each case, the
    throughput ratio workbook / plain (from the minima and from the medians), the cached call, the peak memory and
    whether the features are equal; then the decoding alone and the cold start of compute_kstar."""
    med = statistics.median
    lines = ["| model | images | workbook s min / med | plain s min / med | workbook img/s (med) | plain img/s (med) "
             "| workbook / plain (min; med) | cached call s (med) | peak MB workbook / plain | same features |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    keys = list(dict.fromkeys((r["model"], r["size"]) for r in records if r["case"] in ("workbook", "plain")))
    for model, n in keys:
        rows = {c: [r for r in records if r.get("model") == model and r["size"] == n and r["case"] == c
                    and "seconds" in r] for c in ("workbook", "plain")}
        if not rows["workbook"] or not rows["plain"]:
            lines.append(f"| {model} | {n:,} | failed | | | | | | | |")
            continue
        w = [r["seconds"] for r in rows["workbook"]]
        p = [r["seconds"] for r in rows["plain"]]
        same = all(r.get("same", True) for r in rows["plain"])
        lines.append(
            f"| {model} | {n:,} | {min(w):.2f} / {med(w):.2f} | {min(p):.2f} / {med(p):.2f} | {n / med(w):,.0f} "
            f"| {n / med(p):,.0f} | {min(p) / min(w):.2f}; {med(p) / med(w):.2f} "
            f"| {med(r['cached_seconds'] for r in rows['workbook']):.3f} "
            f"| {max(r['peak_mb'] for r in rows['workbook']):.0f} / {max(r['peak_mb'] for r in rows['plain']):.0f} "
            f"| {'yes' if same else 'no'} |")
    base = [r["base_mb"] for r in records if r["case"] in ("workbook", "plain") and "base_mb" in r]
    if base:
        lines.append(f"\nResident memory of a process after its imports, before any work: {med(base):.0f} MB.")
    decode = [r for r in records if r["case"] == "decode" and "seconds" in r]
    if decode:
        lines.append("Decoding alone (in both columns above): " + "; ".join(
            f"{r['n']:,} images {r['seconds']:.2f} s" for r in decode) + ".")
    cold = [r for r in records if r["case"] == "kstar_cold" and "first_s" in r]
    if cold:
        lines += ["", "| compute_kstar, N (D = 64, 10 classes) | import kstar_utils s | then import torch s "
                  "| first call s | second call s |", "|---:|---:|---:|---:|---:|"]
        for r in cold:
            t = r["torch_import_s"]
            torch_s = "(in the first call)" if t != t else f"{t:.2f}"  # NaN: torch was imported by the call
            lines.append(f"| {r['n']:,} | {r['import_s']:.2f} | {torch_s} | {r['first_s']:.3f} | {r['second_s']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
