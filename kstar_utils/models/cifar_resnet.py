"""The original CIFAR ResNet (He et al. 2016, section 4.2), and its weight files in the upstream layout.

The pretrained CIFAR-10 models of Y. Idelbayev (github.com/akamaster/pytorch_resnet_cifar10, BSD-2) ship in
data/cifar_resnets/ with their licence; the ResNet-20s fine-tuned by this project (models.cifar_zoo) in
data/cifar_resnets/finetuned/. The registry adapter is models.cifar_adapter.

Architecture: 3x3 conv 16 -> BN -> ReLU; three stages (``layer1``, ``layer2``, ``layer3``) of n basic blocks with 16,
32, 64 channels (n = 3, 5, 7, 9 for depth 20, 32, 44, 56), stride 2 at the first block of stages 2 and 3; the
shortcut where the shape changes is "option A" (no parameters: x[:, :, ::2, ::2] zero-padded with planes/4 channels
on each side); global average pool -> ``linear`` 64 -> 10. The model takes images in [0, 1] and normalises them
itself (mean/std of the upstream training, non-persistent buffers), as RobustBench models do, so attacks work in
pixel space. ``penultimate`` is the (B, 64) input of ``linear``.
"""
from __future__ import annotations

from pathlib import Path


#: upstream mean/std (ToTensor then Normalize), used in training and testing
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: depth -> (upstream file, blocks per stage)
PRETRAINED = {
    "resnet20": ("resnet20-12fca82f.th", 3),
    "resnet32": ("resnet32-d509ac18.th", 5),
    "resnet44": ("resnet44-014dd654.th", 7),
    "resnet56": ("resnet56-4bfd9763.th", 9),
}
UPSTREAM_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{file}"
FINETUNED_DIR = "finetuned"


def weights_dir(option=None) -> Path:
    from kstar_utils.io.paths import shipped

    return Path(option).expanduser() if option else shipped("cifar_resnets")


def weights_file(name: str, weights_dir_opt=None) -> Path:
    d = weights_dir(weights_dir_opt)
    if name in PRETRAINED:
        return d / PRETRAINED[name][0]
    return d / FINETUNED_DIR / f"{name}.th"


def build(depth_name: str, n_classes: int = 10):
    """The architecture of a base name ("resnet20" ... "resnet56") with random weights."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, in_planes: int, planes: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

        def forward(self, x):
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.pad else x
            return F.relu(out + shortcut)

    class CifarResNet(nn.Module):
        """(B, 3, 32, 32) images in [0, 1] -> (B, n_classes) logits."""

        def __init__(self, blocks: int):
            super().__init__()
            self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            stages, in_planes = [], 16
            for planes, stride in ((16, 1), (32, 2), (64, 2)):
                layer = []
                for i in range(blocks):
                    layer.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                    in_planes = planes
                stages.append(nn.Sequential(*layer))
            self.layer1, self.layer2, self.layer3 = stages
            self.linear = nn.Linear(64, n_classes)

        def forward(self, x):
            x = F.relu(self.bn1(self.conv1((x - self.mean) / self.std)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))

    if depth_name not in PRETRAINED:
        raise ValueError(f"unknown CIFAR ResNet {depth_name!r}; valid: {list(PRETRAINED)}")
    return CifarResNet(PRETRAINED[depth_name][1])


def load_state(module, path: Path, *, trust: bool = False) -> None:
    """Load an upstream file ({"state_dict": {"module.<key>": ...}, "best_prec1": ...}) or one of this project's
    fine-tuned files (the same layout) into `module`, strictly: every key must match. The file is read as weights
    only unless `trust` (see models._common.load_checkpoint)."""
    from kstar_utils.models import CorruptWeightsError
    from kstar_utils.models._common import load_checkpoint

    checkpoint = load_checkpoint(path, trust=trust)
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CorruptWeightsError(f"{path} holds no 'state_dict'; is it a CIFAR ResNet checkpoint?")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CorruptWeightsError(f"{path} does not match the architecture of {type(module).__name__}: "
                                  f"{str(e).splitlines()[0]}") from None


def save_state(module, path: Path, **info) -> Path:
    """Save `module` in the upstream layout ({"state_dict": {"module.<key>": ...}, **info}), atomically."""
    import torch

    from kstar_utils.io import cache

    state = {f"module.{k}": v.detach().cpu().clone() for k, v in module.state_dict().items()}
    with cache.atomic_path(path) as tmp:
        torch.save({"state_dict": state, **info}, tmp)
    return Path(path)


def load_weights(arch: str, path: Path, *, trust: bool = False):
    """Architecture `arch` ("resnet20" ... "resnet56") with the weights of `path`, in eval mode, on the CPU."""
    module = build(arch)
    load_state(module, path, trust=trust)
    return module.eval()


def load_pretrained(name: str, weights_dir_opt=None, *, trust: bool = False):
    """One of the four pretrained models ("resnet20" ... "resnet56") in eval mode, on the CPU."""
    path = weights_file(name, weights_dir_opt)
    if not path.is_file():
        from kstar_utils.models import WeightsNotFoundError

        raise WeightsNotFoundError(f"weights for cifar-resnet:{name} not found: searched {path}")
    return load_weights(name, path, trust=trust)
