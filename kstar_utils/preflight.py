"""Pre-flight check: every weight file and dataset a planned run needs, whether each is present, where it was
searched and how to provide it. Nothing is loaded or downloaded.

    python -m kstar_utils.preflight --model openclip:ViT-B-32/laion2b_s34b_b79k --dataset cifar10 --data-root ~/data
    python -m kstar_utils.preflight --params notebooks/params/openclip_vitb32_cifar10.yaml

Exit status 0 when everything is present, 1 otherwise (so scripts can stop before a long run).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import datasets as _datasets
from . import models as _models


@dataclass(frozen=True)
class PreflightItem:
    """One requirement of a run. kind: "weights" or "data"."""

    kind: str
    name: str
    path: str
    present: bool
    how_to_provide: str


def preflight(models: Sequence[str], datasets: Sequence[str], *, split: str = "test", data_root=None,
              **model_options) -> list[PreflightItem]:
    """Requirements of extracting features of each dataset from each model.

    model_options: as for load_model (model_dir, cache_dir, weights_path, pretrained, ...). Invalid names raise
    ValueError with the closest valid names, before anything else is checked.
    """
    models, datasets = list(_as_list(models)), list(_as_list(datasets))
    for m in models:
        _models.check_model_name(m)
    for d in datasets:
        _datasets.check_dataset_name(d)
    items = []
    for m in models:
        for r in _models.weights_requirements(m, **model_options):
            items.append(PreflightItem("weights", r.model, str(r.path or "-"), r.present, r.how_to_provide))
    for d in datasets:
        for r in _datasets.requirements(d, split, data_root):
            items.append(PreflightItem("data", f"{r.dataset} ({split})", str(r.path or "-"), r.present,
                                       r.how_to_provide))
    return items


def _as_list(x) -> list:
    if x is None:
        return []
    return [x] if isinstance(x, str) else list(x)


def format_report(items: Sequence[PreflightItem]) -> str:
    """A plain-text table; missing items are followed by how to provide them."""
    lines = []
    for it in items:
        lines.append(f"[{'ok' if it.present else 'MISSING':7}] {it.kind:7} {it.name}\n          searched: {it.path}")
        if not it.present:
            lines.append(f"          provide:  {it.how_to_provide}")
    missing = sum(not it.present for it in items)
    lines.append(f"{len(items) - missing} of {len(items)} requirements present" + (f"; {missing} missing" if missing else ""))
    return "\n".join(lines)


def plan_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Read a notebook parameter mapping (see notebooks/params/*.yaml): model(s), dataset(s), split, data_root and
    the weight-location options."""
    plan = {"models": _as_list(params.get("models", params.get("model"))),
            "datasets": _as_list(params.get("datasets", params.get("dataset"))),
            "split": params.get("split", "test"), "data_root": params.get("data_root")}
    for key in ("model_dir", "cache_dir", "weights_path"):
        if params.get(key) is not None:
            plan[key] = params[key]
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kstar_utils.preflight", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], help="registry name, repeatable")
    p.add_argument("--dataset", action="append", default=[], help="dataset name, repeatable")
    p.add_argument("--split", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--model-dir", default=None, help="RobustBench checkpoint folder")
    p.add_argument("--cache-dir", default=None, help="Hugging Face hub cache for OpenCLIP/timm")
    p.add_argument("--params", default=None, help="a notebook parameter YAML to read the plan from")
    args = p.parse_args(argv)
    plan: dict[str, Any] = {"models": [], "datasets": [], "split": "test", "data_root": None}
    if args.params:
        import yaml

        plan.update(plan_from_params(yaml.safe_load(Path(args.params).read_text()) or {}))
    plan["models"] += args.model
    plan["datasets"] += args.dataset
    for key, value in (("split", args.split), ("data_root", args.data_root), ("model_dir", args.model_dir),
                       ("cache_dir", args.cache_dir)):
        if value is not None:
            plan[key] = value
    if not plan["models"] and not plan["datasets"]:
        p.error("nothing to check: give --model/--dataset or --params")
    options = {k: plan[k] for k in ("model_dir", "cache_dir", "weights_path") if k in plan}
    try:
        items = preflight(plan["models"], plan["datasets"], split=plan["split"], data_root=plan["data_root"],
                          **options)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(items))
    return 0 if all(it.present for it in items) else 1


if __name__ == "__main__":
    sys.exit(main())
