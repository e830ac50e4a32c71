"""How much every number the notebooks compare moves when the features move at float32-rounding level, and the
tolerances of the regression baseline that follow from it.

    .venv/bin/python benchmarks/regression_sensitivity.py            # measure, print the table
    .venv/bin/python benchmarks/regression_sensitivity.py --write    # ... and write tests/baseline/tolerances.csv and
                                                                     #     tests/baseline/SENSITIVITY.md

Each variant runs every workbook notebook on its defaults (the same calls the notebooks make: it runs the notebooks
themselves, through papermill) into its own folder under --work, features extracted afresh:

- `base`: as shipped;
- `avx2`: oneDNN and PyTorch's own kernels limited to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`, `ATEN_CPU_CAPABILITY=avx2`):
  on an AVX-512 machine, the features of an AVX2-only CPU (it reproduces, bit for bit, the Γ' = 0.104590 of
  resnet32 at the penultimate layer reported from an AVX2-only AMD EPYC, where this machine gives 0.104489);
- `mkldnn-off`: `torch.backends.mkldnn.enabled = False` (convolutions by PyTorch's own im2col + GEMM, not oneDNN);
- `channels-last`: models and images in channels-last memory layout (other oneDNN convolution kernels);
- `float64`: the forward pass in float64, rounded to float32 at the end (the features every float32 run approximates);
- `ulp-S` (one per --seeds): every feature multiplied by (1 + u 2^-22), u in [-1, 1] a hash of the feature's value and
  S (pipeline.baseline.rounding_perturbation): a few units in the last place, what separates CPUs with different
  vector instructions; equal features stay equal, as on any CPU (a network maps many inputs to the same output). It reaches every notebook that computes
  features: extraction (01) and the input-noise study (07);
- `wide-S` (one per --wide-seeds): the same with 16 times the amplitude (2^-18). Not a difference seen between two
  machines but a stress: each variant above moves k* by one for a handful of samples (near-ties with the nearest
  enemy), all far from k* = 1 and none changing a nearest enemy's class, so columns that only such a flip would move
  (shares of k* = 1, medians, enemy classes, patterns near a threshold) would otherwise be held exactly; here a few
  dozen samples flip, so every column gets a tolerance for a few flips, as another CPU or library may produce.

A variant is installed in the notebook kernels by environment variables or by an IPython startup file (IPYTHONDIR)
that wraps `kstar_utils.pipeline.features.forward_layers`, the one function through which features leave a model.
Every table the default run writes (pipeline.baseline.table_names) is then compared with the base run's, column by column
(pipeline.baseline.column_changes): the largest absolute change of a number, the number of rows that differ in a
label. The tolerance of a column is --margin times the largest change of any variant (0, i.e. exact, for a column
no variant moved); label tolerances are rounded up to whole rows. A number column's few rows that moved more than --gap
times every other row (one model's tie-prone features) get a tolerance of their own, and the column's comes from the
rest (rows_of_their_own). --earlier folds in an earlier measurement: each column keeps the larger tolerance.

The machine's load changes times, not these numbers. Runs already finished under --work are reused (--fresh reruns
them).
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kstar_utils.pipeline import baseline  # noqa: E402

SCALE = 2.0**-22

_WRAP = '''
import torch
from kstar_utils.pipeline import features as _features

_forward = _features.forward_layers


def _variant(loaded, x, layers, pool="avg"):
{body}


_features.forward_layers = _variant
'''

VARIANT_BODIES = {
    "mkldnn-off": "    return _forward(loaded, x, layers, pool)\n\n\ntorch.backends.mkldnn.enabled = False",
    "channels-last": ("    loaded.module.to(memory_format=torch.channels_last)\n"
                      "    return _forward(loaded, x.contiguous(memory_format=torch.channels_last), layers, pool)"),
    "float64": ("    loaded.module.double()\n"
                "    return {k: v.float() for k, v in _forward(loaded, x.double(), layers, pool).items()}"),
}

ULP_BODY = """    out = {{}}
    for k, v in _forward(loaded, x, layers, pool).items():
        moved = _baseline.rounding_perturbation(v.detach().cpu().numpy(), seed={seed}, scale={scale!r})
        out[k] = torch.from_numpy(moved).to(v.dtype)
    return out


from kstar_utils.pipeline import baseline as _baseline"""


VARIANT_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def startup_code(variant: str, scale: float) -> str | None:
    if variant == "base" or variant in VARIANT_ENV:
        return None
    if variant.startswith(("ulp-", "wide-")):
        kind, seed = variant.split("-")
        return _WRAP.format(body=ULP_BODY.format(seed=int(seed), scale=scale * (16 if kind == "wide" else 1)))
    return _WRAP.format(body=VARIANT_BODIES[variant])


def run_variant(variant: str, work: Path, *, scale: float, fresh: bool) -> Path:
    """Run every notebook under work/variant with the variant installed; returns its tables folder."""
    out = work / variant
    done = out / "finished"
    if done.exists() and not fresh:
        print(f"{variant}: reusing {out}", flush=True)
        return out / "tables"
    seconds = 0.0
    if out.exists():
        shutil.rmtree(out)
    env = dict(VARIANT_ENV.get(variant, {}))
    code = startup_code(variant, scale)
    if code is not None:
        ipy = out / "ipython"
        (ipy / "profile_default" / "startup").mkdir(parents=True)
        (ipy / "profile_default" / "startup" / "00-variant.py").write_text(code)
        env["IPYTHONDIR"] = str(ipy)
    from kstar_utils.models._common import environ_set

    with environ_set(**env):  # the notebook kernels inherit this process's environment
        t0 = time.perf_counter()
        print(f"{variant}: running the notebooks into {out}", flush=True)
        tables = baseline.run_workbook(out, notebooks_dir=ROOT / "notebooks")
        seconds = time.perf_counter() - t0
        print(f"{variant}: {seconds:.0f} s", flush=True)
    done.write_text(f"{dt.datetime.now(dt.timezone.utc).isoformat()} {seconds:.0f}\n")
    return tables


def run_seconds(tables: Path) -> float:
    """How long a variant's notebooks ran (recorded when it finished; 0 when not recorded)."""
    parts = (tables.parent / "finished").read_text().split()
    return float(parts[1]) if len(parts) > 1 else 0.0


def feature_change(base: Path, other: Path) -> tuple[float, float]:
    """Largest |change| of any feature, absolute and relative to its layer's largest |value|, between two runs."""
    from kstar_utils.pipeline.features import load_features

    a, b = pd.read_csv(base / "features_index.csv"), pd.read_csv(other / "features_index.csv")
    worst_abs = worst_rel = 0.0
    for (_, ra), (_, rb) in zip(a.iterrows(), b.iterrows()):
        xa, xb = load_features(ra["features_path"]).features, load_features(rb["features_path"]).features
        d = float(np.abs(xa.astype(np.float64) - xb).max())
        worst_abs = max(worst_abs, d)
        worst_rel = max(worst_rel, d / max(float(np.abs(xa).max()), 1e-300))
    return worst_abs, worst_rel


def nbval_differences(base: Path, other: Path, sanitize: Path) -> list[str]:
    """The cells whose outputs nbval would find different between two runs once tests/nbval_sanitize.cfg has masked
    them (nbval's comparison: every output key but metadata, counts and images), as "notebook cell N: first line"."""
    import re

    import nbformat
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns(sanitize.read_text())
    skip = {"metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
            "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg"}

    def clean(text):
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    def outputs(cell):
        out = []
        for o in cell.outputs:
            flat = {k: v for k, v in o.items() if k not in skip and k != "data"}
            flat.update({k: v for k, v in o.get("data", {}).items() if k not in skip})
            out.append({k: clean(v if isinstance(v, str) else "".join(v) if isinstance(v, list) else str(v))
                        for k, v in flat.items()})
        return out

    found = []
    for nb_a in sorted((base / "executed").glob("*.ipynb")):
        a, b = (nbformat.read(str(d / "executed" / nb_a.name), as_version=4) for d in (base, other))
        cells = [[c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
                 for nb in (a, b)]
        for i, (ca, cb) in enumerate(zip(*cells), start=1):
            oa, ob = outputs(ca), outputs(cb)
            if oa != ob:
                lines = [(x, y) for x, y in zip(str(oa).split("\\n"), str(ob).split("\\n")) if x != y]
                found.append(f"{nb_a.stem} cell {i}: {lines[0] if lines else ''}"[:300])
    return found


def rows_of_their_own(changes: pd.Series, gap: float) -> pd.Series:
    """The rows of a number column that get a tolerance of their own: the fewest largest changes that stand more than
    `gap` times above every other row's (which moved at all), at most a twentieth of the rows; empty when no such gap.
    Such rows are a property of one model's features (near-duplicate vectors whose ties the rounding splits), and a
    column tolerance wide enough for them would hide a real change of every other row. A column where one row alone
    moved keeps it: with no other row to say how far rounding moves the rest, they get that tolerance, not 0."""
    moved = changes[changes > 0].sort_values(ascending=False)
    for j in range(1, min(len(moved) - 1, max(1, len(changes) // 20)) + 1):
        if moved.iloc[j - 1] > gap * moved.iloc[j]:
            return moved.iloc[:j]
    return moved.iloc[:0]


def _largest(changes: pd.Series, own: pd.Series) -> float:
    """The largest change of a column's rows, those with a tolerance of their own left out."""
    return float(changes.drop(own.index).to_numpy().max(initial=0.0))


def tolerance(kind: str, measured: float, margin: float) -> float:
    if measured == 0:
        return 0.0
    if not math.isfinite(measured):
        raise ValueError("a rounding-level change made a value NaN or infinite; no tolerance can cover that")
    t = margin * measured
    return float(math.ceil(t)) if kind == "label" else float(f"{t:.2g}") if t >= 1e-12 else t


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs; torch {torch.__version__}, CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}, oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=str(ROOT / "outputs" / "sensitivity"), help="where the runs go")
    p.add_argument("--variants", nargs="*", default=["avx2", "mkldnn-off", "float64"],
                   choices=[*VARIANT_ENV, *VARIANT_BODIES], help="variants besides base, ulp-S and wide-S")
    p.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3], help="seeds of the ulp-S variants")
    p.add_argument("--wide-seeds", nargs="*", type=int, default=[1, 2], help="seeds of the wide-S variants")
    p.add_argument("--scale", type=float, default=SCALE, help="relative size of the ulp-S perturbation (2^-22)")
    p.add_argument("--margin", type=float, default=3.0, help="tolerance = margin x largest change seen")
    p.add_argument("--with-stored", action="store_true",
                   help="count this machine's base run against the stored reference tables as one more variant "
                        "(on a machine other than the one that stored them, and only when they come from the "
                        "current code: otherwise the difference is not rounding)")
    p.add_argument("--gap", type=float, default=10.0,
                   help="a row whose change stands more than GAP times above every other row's gets a tolerance "
                        "of its own (rows_of_their_own)")
    p.add_argument("--earlier", help="a tolerances.csv of an earlier measurement (other models or variants): each "
                                     "column keeps the larger of its tolerance there and here")
    p.add_argument("--fresh", action="store_true", help="rerun variants already finished under --work")
    p.add_argument("--write", action="store_true", help="write tests/baseline/tolerances.csv and SENSITIVITY.md")
    args = p.parse_args(argv)

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    t_all = time.perf_counter()
    variants = ["base", *args.variants, *(f"ulp-{s}" for s in args.seeds), *(f"wide-{s}" for s in args.wide_seeds)]
    tables = {v: run_variant(v, work, scale=args.scale, fresh=args.fresh) for v in variants}
    others = variants[1:]

    names = baseline.table_names(ROOT / "notebooks")
    reference_dir = ROOT / "tests" / "baseline" / "tables"
    earlier = baseline.read_tolerances(args.earlier) if args.earlier else {}
    earlier_rows: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}  # (table, column): {row: (measured, tol)}
    if args.earlier:
        for r in pd.read_csv(args.earlier, keep_default_na=False).to_dict("records"):
            if str(r.get("row") or ""):
                earlier_rows.setdefault((r["table"], r["column"]), {})[r["row"]] = (float(r["measured"]),
                                                                                   float(r["tolerance"]))
    rows = []
    for name in names:
        base = pd.read_csv(tables["base"] / name)
        per_variant = {v: baseline.column_changes(base, pd.read_csv(tables[v] / name), name=f"{v}/{name}")
                       for v in others}
        per_row = [baseline.row_changes(base, pd.read_csv(tables[v] / name), name=f"{v}/{name}") for v in others]
        stored = stored_rows = None
        if (reference_dir / name).is_file():
            try:
                ref = pd.read_csv(reference_dir / name)
                stored = baseline.column_changes(ref, base, name=f"stored/{name}")
                stored_rows = baseline.row_changes(ref, base, name=f"stored/{name}")
            except ValueError as e:
                print(f"stored reference {name} not comparable: {e}")
        with_stored = args.with_stored and stored_rows is not None
        for col in next(iter(per_variant.values())):
            kind = per_variant[others[0]][col][0]
            changes = {v: per_variant[v][col][1] for v in others}
            from_stored = stored[col][1] if stored and col in stored else float("nan")
            own = pd.Series(dtype=float)
            if kind == "number":  # the column's line holds the other rows; each row of its own has a line
                counted = [*per_row, *([stored_rows] if with_stored else [])]
                own = rows_of_their_own(pd.concat([r[col] for r in counted], axis=1).max(axis=1), args.gap)
                changes = {v: _largest(r[col], own) for v, r in zip(others, per_row)}
                if with_stored:
                    from_stored = _largest(stored_rows[col], own)
            rest = max([*changes.values(), *([from_stored] if with_stored else [])])
            tol = tolerance(kind, rest, args.margin)
            before = earlier.get(name, {}).get(col)
            kept = before is not None and before.tolerance > tol
            if kept:
                rest, tol = max(rest, before.measured), before.tolerance
            rows.append({"table": name, "column": col, "kind": kind, **changes, "measured": rest,
                         "tolerance": tol, "stored": from_stored, "earlier": kept, "row": ""})
            # rows of their own, here or in the earlier measurement: each keeps the larger tolerance of the two
            earlier_own = earlier_rows.get((name, col), {})
            for row in dict.fromkeys([*own.index, *earlier_own]):
                change = float(own.get(row, 0.0))
                row_tol = max(tol, tolerance(kind, change, args.margin) if change else 0.0)
                if row in earlier_own:
                    change, row_tol = max(change, earlier_own[row][0]), max(row_tol, earlier_own[row][1])
                rows.append({"table": name, "column": col, "kind": kind,
                             **{v: float(r[col].get(row, float("nan"))) for v, r in zip(others, per_row)},
                             "measured": change, "tolerance": row_tol, "stored": float("nan"),
                             "earlier": row in earlier_own, "row": row})
    result = pd.DataFrame(rows)
    moves = {v: feature_change(tables["base"], tables[v]) for v in others}
    nbval = {v: nbval_differences(work / "base", work / v, ROOT / "tests" / "nbval_sanitize.cfg") for v in others}
    for v, diffs in nbval.items():
        print(f"{v}: {len(diffs)} notebook cell(s) nbval would fail after sanitizing" + "".join(f"\n  {d}" for d in diffs))
    seconds = sum(run_seconds(t) for t in tables.values()) or time.perf_counter() - t_all

    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    print(result.to_string(index=False))
    md = markdown(result, others, moves, nbval, args, started, seconds)
    if args.write:
        out = ROOT / "tests" / "baseline"
        out.mkdir(parents=True, exist_ok=True)
        (out / "tolerances.csv").write_text(baseline.tolerances_csv(result.to_dict("records")))
        (out / "SENSITIVITY.md").write_text(md)
        print(f"wrote {out / 'tolerances.csv'} and {out / 'SENSITIVITY.md'}")
    return 0


def _fmt(v: float, kind: str) -> str:
    if isinstance(v, float) and math.isnan(v):
        return ""
    if kind == "label":
        return str(int(v))
    return "0" if v == 0 else f"{v:.2g}"


def markdown(result: pd.DataFrame, others, moves, nbval, args, started, seconds) -> str:
    own = result[result["row"] != ""].assign(model=lambda t: t["row"].str.extract(r"model=([^;]*)", expand=False))
    lines = [
        "# Sensitivity of the regression baseline to rounding-level changes of the features",
        "",
        "Written by `benchmarks/regression_sensitivity.py --write` (the script's docstring describes the variants); "
        "`tolerances.csv` beside this file holds the same tolerances for the tests (tests/regression).",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; the runs took {seconds / 60:.0f} min in all on a shared, loaded "
        f"machine (load changes times, not these numbers).",
        f"- Machine: {machine()}.",
        f"- Command: `benchmarks/regression_sensitivity.py --variants {' '.join(args.variants)} --seeds "
        f"{' '.join(map(str, args.seeds))} --wide-seeds {' '.join(map(str, args.wide_seeds))} --margin {args.margin:g} --gap {args.gap:g}"
        f"{' --with-stored' if args.with_stored else ''}{f' --earlier {args.earlier}' if args.earlier else ''} --write`.",
        "- nbval (the notebooks' shown outputs, after `tests/nbval_sanitize.cfg`), cells that differ from the base run: "
        + "; ".join(f"{v} {len(d)}" for v, d in nbval.items()) + "."
        + "".join(f"\n  - {v}: {d}" for v, ds in nbval.items() for d in ds),
        "- How far each variant moved the features (largest |change| of any feature, and relative to its layer's "
        "largest |value|): " + "; ".join(f"{v} {a:.2g} ({r:.2g})" for v, (a, r) in moves.items()) + ".",
        f"- Tolerance = {args.margin:g} x the largest change of any variant (label columns: rows that may differ, "
        "rounded up); 0 (exact) where no variant moved a column. Numbers: largest absolute change; labels: rows "
        "that differ. `stored`: this run's base against the stored reference tables (another machine, or older "
        "code: " + ("counted, --with-stored" if args.with_stored else "shown, not used") + ").",
        f"- Rows of their own: in a number column, the fewest rows whose change stands more than {args.gap:g} times "
        "above every other row's (at most a twentieth of the rows) get their own tolerance, "
        f"{args.margin:g} x their change, and the column's tolerance comes from the other rows "
        f"({own.shape[0]} such rows in all, from {own['model'].nunique()} model(s): "
        + (", ".join(sorted(own["model"].unique())) or "none") + "). Such a row's k* "
        "turns on many near-ties at that layer (near-duplicate vectors), which the rounding splits; a column "
        "tolerance wide enough for it would let a real change of every other model through.",
    ]
    if args.earlier:
        kept = result[result["earlier"] & (result["row"] == "")]
        lines.append(f"- Each column keeps the larger of this tolerance and the one in `{args.earlier}` (an earlier "
                     f"measurement, described beside it); the earlier one is in force for {len(kept)} column(s): "
                     + ", ".join(f"{t} {c}" for t, c in zip(kept["table"], kept["column"])) + ".")
    lines += [
        "",
        "| table | column | kind | " + " | ".join(others) + " | largest | tolerance | stored |",
        "|---|---|---|" + "---:|" * (len(others) + 3),
    ]
    for r in result.to_dict("records"):
        k = r["kind"]
        col = f"{r['column']}, only at {r['row']}" if r["row"] else r["column"]
        lines.append(f"| {r['table']} | {col} | {k} | " + " | ".join(_fmt(r[v], k) for v in others)
                     + f" | {_fmt(r['measured'], k)} | {_fmt(r['tolerance'], k)} | {_fmt(r['stored'], k)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
