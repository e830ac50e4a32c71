"""Training and attacking the project's own models (the digits zoo and the fine-tuned CIFAR ResNets).

Pure torch on the CPU, deterministic from a seed. Images are in [0, 1]; every model normalises internally, so the
L-inf budgets are in pixel units.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


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
