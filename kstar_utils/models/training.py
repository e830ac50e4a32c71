"""Training and attacking the project's own models (the digits zoo and the fine-tuned CIFAR ResNets): one recipe
type, one training step, one resumable builder of a zoo and its measured table.

Pure torch on the CPU, deterministic from a seed. Images are in [0, 1]; every model normalises internally, so the
L-inf budgets are in pixel units.
"""
from __future__ import annotations

import difflib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

#: what a recipe does: "none" (keep the random initialisation), "pretrained" (measure a published model as it is),
#: "clean", "noise" (Gaussian noise of std eps on the inputs) or "pgd" (Madry L-inf adversarial training at eps)
RECIPE_KINDS = ("none", "pretrained", "clean", "noise", "pgd")


@dataclass(frozen=True)
class Recipe:
    """How one of the workbook's own models is made, and the identity its measured row records (repr(recipe)).

    name: the model's name in its source; kind: one of RECIPE_KINDS; eps: noise std or PGD budget (pixel units);
    base: the published model a fine-tuning starts from (None: trained from scratch); epochs, lr, batch_size,
    weight_decay, pgd_steps, seed: the schedule (the optimiser is the zoo's own: Adam for the digits CNNs, SGD with
    momentum for the CIFAR fine-tunings).
    """

    name: str
    kind: str
    eps: float = 0.0
    base: str | None = None
    epochs: int = 40
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 0.0
    pgd_steps: int = 7
    seed: int = 0

    def __post_init__(self):
        if self.kind not in RECIPE_KINDS:
            raise ValueError(f"recipe kind must be one of {RECIPE_KINDS}; got {self.kind!r}")


def find_recipe(recipes: Sequence[Recipe], name: str, what: str) -> Recipe:
    """The recipe called `name`; ValueError naming the closest names otherwise. what: e.g. "zoo model"."""
    for r in recipes:
        if r.name == name:
            return r
    names = [r.name for r in recipes]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.3)
    raise ValueError(f"unknown {what} {name!r}; closest: {close or names}")


def build_zoo(recipes: Sequence[Recipe], table_path: str | Path, *, make: Callable[[Recipe], nn.Module],
              save: Callable[[Recipe, nn.Module], None] | None, built: Callable[[Recipe], bool],
              measure: Callable[[nn.Module], Mapping[str, Any]], evaluation: Mapping[str, Any],
              names: Sequence[str] | None = None, force: bool = False) -> pd.DataFrame:
    """Make, save and measure every recipe of a zoo (or those called `names`), resuming: a model whose row records
    the same recipe and the same `evaluation` settings, and whose weights exist (`built`), is kept unless force.

    make(recipe) -> the model (trained, fine-tuned, or loaded for kind "pretrained"); save(recipe, model) writes its
    weights (not called for "pretrained"); measure(model) -> {column: value}; evaluation: settings every row records
    (attack budget, images, ...). The table (one row per model, in the recipes' order: model, kind, base, train_eps,
    epochs, the measurements, the evaluation, train_seconds, eval_seconds, recipe) is written atomically after each
    model, so a stopped build keeps what it finished. Returns the table.
    """
    from kstar_utils.io import cache

    table_path = Path(table_path)
    recipes = list(recipes)
    wanted = [find_recipe(recipes, n, "model") for n in names] if names else recipes
    old = pd.read_csv(table_path).to_dict("records") if table_path.is_file() else []
    rows = {r["model"]: r for r in old}
    for r in wanted:
        key = "pretrained" if r.kind == "pretrained" else repr(r)  # a published model: measured, never made
        prev = rows.get(r.name, {})
        if not force and prev.get("recipe") == key and built(r) and \
                all(prev.get(k) == v for k, v in evaluation.items()):
            continue
        t0 = time.perf_counter()
        model = make(r)
        if save is not None and r.kind != "pretrained":
            save(r, model)
        train_seconds = time.perf_counter() - t0
        measured = dict(measure(model))
        rows[r.name] = {"model": r.name, "kind": r.kind, "base": r.base or "", "train_eps": r.eps,
                        "epochs": r.epochs if r.kind not in ("none", "pretrained") else 0, **measured, **evaluation,
                        "train_seconds": round(train_seconds, 1),
                        "eval_seconds": round(time.perf_counter() - t0 - train_seconds, 1), "recipe": key}
        print(rows[r.name], flush=True)
        table = pd.DataFrame([rows[x.name] for x in recipes if x.name in rows])
        table_path.parent.mkdir(parents=True, exist_ok=True)
        with cache.atomic_path(table_path) as tmp:
            table.to_csv(tmp, index=False)
    return pd.read_csv(table_path)


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
             gen: torch.Generator) -> torch.Tensor:
    """Madry et al. PGD with a random start, step 2.5*eps/steps, images kept in [0, 1]: (B, ...) -> (B, ...)."""
    alpha = 2.5 * eps / steps
    delta = (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    x_adv = (x + delta).clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = nn.functional.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = x_adv.detach() + alpha * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1).detach()
    return x_adv


def train_step(model: nn.Module, opt, xb: torch.Tensor, yb: torch.Tensor, *, kind: str, eps: float = 0.0,
               pgd_steps: int = 7, gen: torch.Generator | None = None) -> float:
    """One optimisation step of a training recipe on a batch: kind "clean", "noise" (Gaussian noise of std eps,
    clipped to [0, 1]) or "pgd" (PGD at L-inf eps, the attack run in eval mode so that it does not move the
    batch-norm statistics). Returns the batch loss."""
    if kind == "noise":
        xb = (xb + eps * torch.randn(xb.shape, generator=gen)).clamp(0, 1)
    elif kind == "pgd":
        model.eval()
        xb = pgd_linf(model, xb, yb, eps, pgd_steps, gen)
    elif kind != "clean":
        raise ValueError(f"unknown training kind {kind!r}; choose clean, noise or pgd")
    model.train()
    loss = nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def predict(model: nn.Module, X, batch_size: int = 500) -> np.ndarray:
    """Predicted classes (N,) int64 of images X (N, C, H, W), in batches, without gradients."""
    X = torch.as_tensor(X)
    with torch.no_grad():
        return torch.cat([model(X[i : i + batch_size]).argmax(1) for i in range(0, len(X), batch_size)]).numpy()


def accuracy(model: nn.Module, X, y, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction) of `model` on images (N, C, H, W) with labels (N,)."""
    return float(np.mean(predict(model, X, batch_size) == np.asarray(torch.as_tensor(y))))


def robust_accuracy(model: nn.Module, X, y, *, eps: float, attacks=("apgd-ce", "apgd-t"), n_restarts: int = 5,
                    n_target_classes: int = 9, seed: int = 0, batch_size: int = 500) -> float:
    """Accuracy (fraction) under AutoAttack (pyautoattack, L-inf budget eps) with the given attacks run in sequence,
    each on the points that survived the previous ones. n_restarts: APGD-CE restarts; n_target_classes: target
    classes of APGD-T (AutoAttack's standard version: 1 restart, 9 targets)."""
    from pyautoattack import AutoAttack

    attack = AutoAttack(model, norm="Linf", eps=eps, version="custom", attacks=list(attacks), seed=seed, device="cpu")
    attack.verbose = False
    attack.apgd.n_restarts = n_restarts
    attack.apgd_targeted.n_target_classes = n_target_classes
    x_adv, _ = attack.run_standard_evaluation(torch.as_tensor(X), torch.as_tensor(y), batch_size=batch_size)
    return accuracy(model, x_adv, y, batch_size)
