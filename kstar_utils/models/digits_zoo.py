"""The embedded model zoo: small CNNs on scikit-learn's digits that span robustness, trained by this project.

Everything here runs offline: the images ship with scikit-learn and the trained weights ship in data/zoo/ together
with the accuracies measured when they were trained (`kstar zoo train --zoo digits` rebuilds both).

Images are 8x8 grey levels 0..16 scaled to [0, 1]; the held-out "test" split is a seeded, stratified half of the
1,797 images. Robust accuracy is AutoAttack's two APGD attacks (APGD-CE, then APGD-T on the points that survive)
under an L-inf budget: the attacks that decide almost every point of AutoAttack's standard version, at a cost the 2-core
build can afford for eight models.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from kstar_utils.datasets.embedded import load_digits
from kstar_utils.io import cache
from kstar_utils.models.training import Recipe, accuracy, build_zoo, find_recipe, robust_accuracy, train_step

METRICS_FILE = "zoo_metrics.csv"
ATTACKS = ("apgd-ce", "apgd-t")
EVAL_EPS = 0.1  # L-inf budget of the robust-accuracy evaluation, in [0, 1] pixel units (1.6 of 16 grey levels)


#: trained from scratch: Adam lr 2e-3 (cosine), batch 64, 40 epochs (the defaults of models.training.Recipe)
RECIPES: tuple[Recipe, ...] = (
    Recipe("untrained", "none"),
    Recipe("standard", "clean"),
    Recipe("noise-0.1", "noise", eps=0.1),
    Recipe("noise-0.3", "noise", eps=0.3),
    Recipe("pgd-0.05", "pgd", eps=0.05),
    Recipe("pgd-0.1", "pgd", eps=0.1),
    Recipe("pgd-0.2", "pgd", eps=0.2),
    Recipe("pgd-0.3", "pgd", eps=0.3),
)
ZOO_MODELS: tuple[str, ...] = tuple(r.name for r in RECIPES)


class SmallCNN(nn.Module):
    """(B, 1, 8, 8) images in [0, 1] -> (B, 10) logits. The final Linear is `fc`; its input (B, 64) is the
    penultimate feature."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        )
        self.fc = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _data_dir() -> Path:
    from kstar_utils.io.paths import shipped

    return shipped("zoo")


def recipe(name: str) -> Recipe:
    return find_recipe(RECIPES, name, "zoo model")


def weights_path(name: str, weights_dir: str | Path | None = None) -> Path:
    return Path(weights_dir or _data_dir()) / f"{recipe(name).name}.pt"


def load_zoo_model(name: str, weights_dir: str | Path | None = None, *, trust: bool = False) -> nn.Module:
    """The trained zoo model `name` in eval mode (weights from data/zoo/<name>.pt, read as weights only unless
    `trust`: see models._common.load_checkpoint)."""
    from kstar_utils.models._common import load_checkpoint

    path = weights_path(name, weights_dir)
    if not path.exists():
        raise FileNotFoundError(
            f"zoo weights for {name!r} not found at {path}; rebuild them with `kstar zoo train --zoo digits`"
        )
    model = SmallCNN()
    state = load_checkpoint(path, trust=trust)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:  # not a state dict of this architecture
        from kstar_utils.models import CorruptWeightsError

        raise CorruptWeightsError(f"{path} does not hold the weights of zoo model {name!r}: "
                                  f"{str(e).splitlines()[0]}") from None
    return model.eval()


def train(r: Recipe, X: np.ndarray, y: np.ndarray) -> nn.Module:
    """Train one zoo model on (N, 1, 8, 8) images and (N,) labels, deterministically from r.seed."""
    torch.manual_seed(r.seed)
    model = SmallCNN()
    if r.kind == "none":
        return model.eval()
    gen = torch.Generator().manual_seed(r.seed)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=r.lr, weight_decay=r.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=r.epochs)
    for _ in range(r.epochs):
        perm = torch.randperm(len(Xt), generator=gen)
        for i in range(0, len(Xt), r.batch_size):
            idx = perm[i : i + r.batch_size]
            train_step(model, opt, Xt[idx], yt[idx], kind=r.kind, eps=r.eps, pgd_steps=r.pgd_steps, gen=gen)
        sched.step()
    return model.eval()


def build_digits_zoo(out_dir: str | Path | None = None, *, models=None, eval_eps: float = EVAL_EPS,
                     force: bool = False) -> pd.DataFrame:
    """Train every recipe, save weights and the metrics table to out_dir (models.training.build_zoo: resumable, a
    model already built with the same recipe and evaluation is kept unless force); returns the table."""
    out_dir = Path(out_dir) if out_dir is not None else _data_dir()
    Xtr, ytr = load_digits("train")
    Xte, yte = load_digits("test")

    def save(r: Recipe, model) -> None:
        with cache.atomic_path(weights_path(r.name, out_dir)) as tmp:
            torch.save(model.state_dict(), tmp)

    def measured(model):
        return {"clean_acc": round(accuracy(model, Xte, yte), 4),
                "robust_acc": round(robust_accuracy(model, Xte, yte, eps=eval_eps, attacks=ATTACKS), 4)}

    evaluation = {"eval_eps": float(eval_eps), "attacks": "+".join(ATTACKS)}
    return build_zoo(RECIPES, out_dir / METRICS_FILE, make=lambda r: train(r, Xtr, ytr), save=save,
                     built=lambda r: weights_path(r.name, out_dir).is_file(), measure=measured,
                     evaluation=evaluation, names=models, force=force)
