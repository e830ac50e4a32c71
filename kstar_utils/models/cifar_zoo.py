"""A real robustness axis on real images: the pretrained CIFAR-10 ResNet-20 fine-tuned by this project.

Starting from Y. Idelbayev's pretrained ResNet-20, each recipe fine-tunes on the 4,660 shipped CIFAR-10 training
images (``cifar10-sample`` split ``train``) with the upstream augmentation (4-pixel padded random crop, horizontal
flip), SGD with momentum and a cosine schedule:

- ``resnet20-ft``     plain fine-tuning: the control, same schedule, no noise, no attack
- ``resnet20-noise``  Gaussian noise augmentation, sigma = 0.1 (pixel units)
- ``resnet20-pgdK``   PGD adversarial training (Madry et al.), L-inf eps = K/255 for K = 1, 2, 4, 8, 7 steps

Every model, the four pretrained ones included, is then measured on the 846 shipped test images: clean accuracy on
all of them and robust accuracy under AutoAttack's APGD-CE + APGD-T (pyautoattack) at L-inf eps = EVAL_EPS on a fixed,
class-stratified subset of EVAL_N images (see ``docs/models_and_data.md`` for why this budget). Weights go to
data/cifar_resnets/finetuned/, the measurements to data/cifar_resnets/cifar_zoo_metrics.csv; ``kstar zoo train
--zoo cifar`` rebuilds both and resumes a run that was stopped (finished models are kept).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kstar_utils.models.training import Recipe, build_zoo, find_recipe

METRICS_FILE = "cifar_zoo_metrics.csv"
EVAL_EPS = 1 / 255       # robust-accuracy budget: at 2/255 and above every standard model is at ~0 (no ranking)
EVAL_N = 500             # class-stratified subset of the 846 test images for the attacks
EVAL_SEED = 0
ATTACKS = ("apgd-ce", "apgd-t")
APGD_RESTARTS = 1        # AutoAttack's standard setting
APGD_TARGETS = 3         # APGD-T target classes (standard: 9); the top-3 wrong classes decide almost every point
PRETRAINED_MODELS = ("resnet20", "resnet32", "resnet44", "resnet56")


def _finetune(name: str, kind: str, eps: float = 0.0) -> Recipe:
    """A fine-tuning of the pretrained ResNet-20: 5 epochs, SGD lr 0.01 (cosine), batch 128, weight decay 5e-4."""
    return Recipe(name, kind, eps, base="resnet20", epochs=5, lr=0.01, batch_size=128, weight_decay=5e-4)


#: the pretrained models, measured as they are, then the fine-tunings
RECIPES: tuple[Recipe, ...] = (
    *(Recipe(name, "pretrained", base=name) for name in PRETRAINED_MODELS),
    _finetune("resnet20-ft", "clean"),
    _finetune("resnet20-noise", "noise", eps=0.1),
    _finetune("resnet20-pgd1", "pgd", eps=1 / 255),
    _finetune("resnet20-pgd2", "pgd", eps=2 / 255),
    _finetune("resnet20-pgd4", "pgd", eps=4 / 255),
    _finetune("resnet20-pgd8", "pgd", eps=8 / 255),
)
FINETUNED: tuple[Recipe, ...] = tuple(r for r in RECIPES if r.kind != "pretrained")


def recipe(name: str) -> Recipe:
    return find_recipe(FINETUNED, name, "fine-tuning recipe")


def load_images(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The shipped CIFAR-10 images of `split` as (N, 3, 32, 32) float32 in [0, 1] and labels (N,) int64."""
    from kstar_utils.datasets import cifar10_sample_tensors

    images, labels, _ = cifar10_sample_tensors(split)
    return images, labels


def eval_subset(labels: np.ndarray, n: int = EVAL_N, seed: int = EVAL_SEED) -> np.ndarray:
    """Sorted indices of a class-stratified subset of n test images (each class in proportion to its size)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(labels.shape[0])
    if n >= idx.size:
        return idx
    keep, _ = train_test_split(idx, train_size=n, random_state=seed, stratify=labels)
    return np.sort(keep)


def _augment(x, gen):
    """Upstream training augmentation: 4-pixel zero-padded random 32x32 crop and a random horizontal flip."""
    import torch

    b = x.shape[0]
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (2, b), generator=gen)
    rows = (dy[:, None] + torch.arange(32))[:, :, None]
    cols = (dx[:, None] + torch.arange(32))[:, None, :]
    out = padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    flip = torch.rand(b, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out.contiguous()


def finetune(r: Recipe, X: np.ndarray, y: np.ndarray, *, progress: bool = True):
    """Fine-tune the pretrained `r.base` on images X (N, 3, 32, 32) in [0, 1] and labels (N,); deterministic from
    r.seed. Returns the model in eval mode."""
    import torch
    from tqdm.auto import tqdm

    from kstar_utils.models.cifar_resnet import load_pretrained
    from kstar_utils.models.training import train_step

    torch.manual_seed(r.seed)
    gen = torch.Generator().manual_seed(r.seed)
    model = load_pretrained(r.base)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=0.9, weight_decay=r.weight_decay)
    steps = r.epochs * -(-len(Xt) // r.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    bar = tqdm(total=steps, desc=r.name, unit="step", disable=not progress)
    for _ in range(r.epochs):
        perm = torch.randperm(len(Xt), generator=gen)
        for i in range(0, len(Xt), r.batch_size):
            idx = perm[i : i + r.batch_size]
            train_step(model, opt, _augment(Xt[idx], gen), yt[idx], kind=r.kind, eps=r.eps, pgd_steps=r.pgd_steps,
                       gen=gen)
            sched.step()
            bar.update(1)
    bar.close()
    return model.eval()


def measure(model, X: np.ndarray, y: np.ndarray, subset: np.ndarray, *, eps: float = EVAL_EPS) -> dict:
    """Clean accuracy on all test images and AutoAttack robust accuracy on `subset` (fractions)."""
    from kstar_utils.models.training import accuracy, robust_accuracy

    return {"clean_acc": round(accuracy(model, X, y), 4),
            "robust_acc": round(robust_accuracy(model, X[subset], y[subset], eps=eps, attacks=ATTACKS,
                                                n_restarts=APGD_RESTARTS, n_target_classes=APGD_TARGETS,
                                                seed=EVAL_SEED), 4)}


def build_cifar_zoo(out_dir: str | Path | None = None, *, models=None, eval_eps: float = EVAL_EPS,
                    force: bool = False) -> pd.DataFrame:
    """Fine-tune every recipe and measure every model (models.training.build_zoo); returns (and writes) the table.

    Resumable: a model whose weights and row already exist (same recipe, same evaluation: budget, images, attacks) is
    kept unless force=True. models: names to (re)build (default: the four pretrained ones and every fine-tuning).
    out_dir receives the fine-tuned weights and the table; the pretrained models are always the shipped ones (the
    bases of the fine-tuning too).
    """
    from kstar_utils.models.cifar_resnet import load_pretrained, save_state, weights_dir, weights_file

    out_dir = Path(out_dir) if out_dir is not None else weights_dir()
    data: dict = {}

    def images(split):
        if split not in data:  # read once, and only when something is built
            data[split] = load_images(split)
        return data[split]

    def make(r: Recipe):
        return load_pretrained(r.name) if r.kind == "pretrained" else finetune(r, *images("train"))

    def measured(model):
        X, y = images("test")
        return measure(model, X, y, eval_subset(y), eps=eval_eps)

    evaluation = {"eval_eps": float(eval_eps), "eval_n": min(EVAL_N, 846), "attacks": "+".join(ATTACKS),
                  "apgd_targets": APGD_TARGETS}
    return build_zoo(RECIPES, out_dir / METRICS_FILE, make=make,
                     save=lambda r, m: save_state(m, weights_file(r.name, out_dir), recipe=repr(r)),
                     built=lambda r: r.kind == "pretrained" or weights_file(r.name, out_dir).is_file(),
                     measure=measured, evaluation=evaluation, names=models, force=force)
