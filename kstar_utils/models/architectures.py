"""The published CIFAR-10 architectures the workbook loads, as plain torch modules with readable module names.

Written from the upstream definitions (alpha-beta-CROWN's ``model_defs.py``, convex_adversarial's ``problems.py``,
chenyaofo/pytorch-cifar-models' ``resnet.py`` and ``shufflenetv2.py``), not copied: the upstream modules are
``nn.Sequential`` stacks whose layers are numbered ("0", "2", "5", ...), which is unreadable as a layer name. Here
every layer has a name, and each builder comes with the map from the upstream state-dict keys to ours
(``*_KEYS``: upstream prefix -> our prefix), so an upstream checkpoint loads strictly into these modules.

Every model takes (B, 3, 32, 32) images in [0, 1] and normalises them itself (``normalize``: mean and std as
non-persistent buffers, absent from the state dict), so attacks work in pixel space, as in models.cifar_resnet. No
activation is in-place: a forward hook that captures a layer's output must see that output, not a later edit of it.

Layer names:
- conv nets (``ConvNet``): ``conv1``, ``act1``, ``conv2``, ``act2``, ..., ``flatten``, ``fc1``, ``act<k>``, ...,
  ``linear`` (the last Linear; its input is the "penultimate" layer). ``act<i>`` is the output of the i-th hidden
  layer after its activation (ReLU or sigmoid), numbered through the conv and fc layers alike.
- residual nets without batch norm (``CResNet``, alpha-beta-CROWN's ``resnet2b`` / ``resnet4b``): ``conv1``,
  ``act1``, ``layer1`` (, ``layer2``) (residual stages, each output after its ReLU), ``flatten``, ``fc1``, ``act2``,
  ``linear``.
- CIFAR ResNets with batch norm (``CifarResNet``, chenyaofo): ``conv1``, ``bn1``, ``act1``, ``layer1``, ``layer2``,
  ``layer3`` (stage outputs), ``pool``, ``linear``.
- ShuffleNetV2 (``ShuffleNetV2``, chenyaofo): ``conv1`` (stem), ``stage2``, ``stage3``, ``stage4``, ``conv5``,
  ``pool``, ``linear``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

Mean = Sequence[float]


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean and std are non-persistent buffers (never in a checkpoint)."""

    def __init__(self, mean: Mean, std: Mean):
        super().__init__()
        self.register_buffer("mean", torch.tensor(tuple(mean), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(tuple(std), dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


# ---------------------------------------------------------------------------------------------- plain conv nets
class ConvNet(nn.Sequential):
    """normalize -> [conv, act] * n -> flatten -> [fc, act] * m -> linear: (B, 3, 32, 32) in [0, 1] -> (B, 10).

    convs: (in_channels, out_channels, kernel, stride, padding) per conv layer; fcs: (in_features, out_features)
    per hidden fully connected layer; activation: "relu" or "sigmoid".
    """

    def __init__(self, convs, fcs, n_classes: int, activation: str, mean: Mean, std: Mean):
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[activation]
        layers: list[tuple[str, nn.Module]] = [("normalize", Normalize(mean, std))]
        k = 0
        for i, (cin, cout, kernel, stride, pad) in enumerate(convs, 1):
            k += 1
            layers += [(f"conv{i}", nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad)), (f"act{k}", act())]
        layers.append(("flatten", nn.Flatten()))
        for i, (fin, fout) in enumerate(fcs, 1):
            k += 1
            layers += [(f"fc{i}", nn.Linear(fin, fout)), (f"act{k}", act())]
        layers.append(("linear", nn.Linear(fcs[-1][1], n_classes)))
        super().__init__(OrderedDict(layers))


def _sequential_keys(n_convs: int, n_fcs: int, activations_between: int = 1) -> tuple[tuple[str, str], ...]:
    """Upstream nn.Sequential indices -> our names, for stacks laid out as conv, act, ..., Flatten, fc, act, ...,
    Linear (one module between two weighted layers, plus the Flatten)."""
    names = [f"conv{i}" for i in range(1, n_convs + 1)] + [f"fc{i}" for i in range(1, n_fcs + 1)] + ["linear"]
    keys, index = [], 0
    for j, name in enumerate(names):
        keys.append((str(index), name))
        index += 1 + activations_between + (1 if j == n_convs - 1 else 0)  # the Flatten follows the last conv
    return tuple(keys)


def cifar_model_wide(mean: Mean, std: Mean) -> ConvNet:
    """"CNN-A" (alpha-beta-CROWN ``cifar_model_wide``, convex_adversarial ``cifar_model``): conv 3->16 (4x4, stride
    2, pad 1) -> conv 16->32 (same) -> fc 2048->100 -> linear 100->10, ReLU."""
    return ConvNet([(3, 16, 4, 2, 1), (16, 32, 4, 2, 1)], [(32 * 8 * 8, 100)], 10, "relu", mean, std)


def cifar_model_base(mean: Mean, std: Mean) -> ConvNet:
    """alpha-beta-CROWN ``cifar_model_base``: conv 3->8 -> conv 8->16 (4x4, stride 2, pad 1) -> fc 1024->100 ->
    linear 100->10, ReLU."""
    return ConvNet([(3, 8, 4, 2, 1), (8, 16, 4, 2, 1)], [(16 * 8 * 8, 100)], 10, "relu", mean, std)


def cifar_model_deep(mean: Mean, std: Mean) -> ConvNet:
    """alpha-beta-CROWN ``cifar_model_deep``: conv 3->8 (4x4/2) -> conv 8->8 (3x3/1) x 2 -> conv 8->8 (4x4/2) ->
    fc 512->100 -> linear 100->10, ReLU."""
    return ConvNet([(3, 8, 4, 2, 1), (8, 8, 3, 1, 1), (8, 8, 3, 1, 1), (8, 8, 4, 2, 1)], [(8 * 8 * 8, 100)], 10,
                   "relu", mean, std)


def cifar_conv_small(mean: Mean, std: Mean, activation: str = "relu") -> ConvNet:
    """ERAN's "ConvSmall" (alpha-beta-CROWN ``cifar_conv_small`` / ``_sigmoid``): conv 3->16 (4x4, stride 2, no
    padding) -> conv 16->32 (same) -> fc 1152->100 -> linear 100->10."""
    return ConvNet([(3, 16, 4, 2, 0), (16, 32, 4, 2, 0)], [(32 * 6 * 6, 100)], 10, activation, mean, std)


def cifar_conv_small_sigmoid(mean: Mean, std: Mean) -> ConvNet:
    return cifar_conv_small(mean, std, activation="sigmoid")


def _marabou(width: int, mean: Mean, std: Mean) -> ConvNet:
    return ConvNet([(3, width, 4, 2, 0), (width, 2 * width, 4, 2, 0)], [(2 * width * 6 * 6, 128), (128, 64)], 10,
                   "relu", mean, std)


def cifar_marabou_small(mean: Mean, std: Mean) -> ConvNet:
    """VNN-COMP 2021 Marabou net: conv 3->8 -> conv 8->16 (4x4, stride 2, no padding) -> fc 576->128 -> fc 128->64
    -> linear 64->10, ReLU."""
    return _marabou(8, mean, std)


def cifar_marabou_medium(mean: Mean, std: Mean) -> ConvNet:
    """As ``cifar_marabou_small`` with 16 and 32 channels (fc 1152->128)."""
    return _marabou(16, mean, std)


def cifar_marabou_large(mean: Mean, std: Mean) -> ConvNet:
    """As ``cifar_marabou_small`` with 32 and 64 channels (fc 2304->128)."""
    return _marabou(32, mean, std)


#: upstream nn.Sequential keys -> ours: (upstream prefix, our prefix) pairs
CONV2_FC1_KEYS = _sequential_keys(2, 1)       # cifar_model_wide, cifar_model_base, cifar_conv_small(_sigmoid)
CONV4_FC1_KEYS = _sequential_keys(4, 1)       # cifar_model_deep
CONV2_FC2_KEYS = _sequential_keys(2, 2)       # the Marabou nets


# ---------------------------------------------------------------------------------------------- residual, no BN
class ResidualBlock(nn.Module):
    """Basic residual block without batch norm (alpha-beta-CROWN ``BasicBlock(bn=False)``): relu(conv2(relu(conv1
    x)) + shortcut x), 3x3 convs with bias; the shortcut is a 1x1 conv with bias where the shape changes, else the
    identity."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1)
        # a one-element Sequential, as upstream: its key is "shortcut.0.weight"
        self.shortcut = (nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride))
                         if stride != 1 or in_planes != planes else nn.Identity())

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + self.shortcut(x))


class CResNet(nn.Module):
    """The VNN-COMP 2021 CIFAR ResNets (alpha-beta-CROWN ``CResNet5`` / ``CResNet7`` with ``bn=False``,
    ``last_layer="dense"``): conv 3->w (3x3, stride 2) -> ReLU -> stages of two residual blocks (the first with
    stride 2) -> flatten -> fc -> ReLU -> linear 100->10.

    stages: output channels of each stage (resnet2b: (16,); resnet4b: (32, 32)).
    """

    def __init__(self, width: int, stages: Sequence[int], mean: Mean, std: Mean, n_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.act1 = nn.ReLU()
        in_planes, size = width, 16
        for i, planes in enumerate(stages, 1):
            self.add_module(f"layer{i}", nn.Sequential(ResidualBlock(in_planes, planes, 2),
                                                       ResidualBlock(planes, planes, 1)))
            in_planes, size = planes, size // 2
        self.n_stages = len(stages)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_planes * size * size, 100)
        self.act2 = nn.ReLU()
        self.linear = nn.Linear(100, n_classes)

    def forward(self, x):
        x = self.act1(self.conv1(self.normalize(x)))
        for i in range(1, self.n_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.linear(self.act2(self.fc1(self.flatten(x))))


def resnet2b(mean: Mean, std: Mean) -> CResNet:
    """alpha-beta-CROWN ``resnet2b``: width 8, one stage of 16 channels, fc 1024->100."""
    return CResNet(8, (16,), mean, std)


def resnet4b(mean: Mean, std: Mean) -> CResNet:
    """alpha-beta-CROWN ``resnet4b``: width 16, two stages of 32 channels, fc 512->100."""
    return CResNet(16, (32, 32), mean, std)


RESNET2B_KEYS = (("conv1", "conv1"), ("layer1", "layer1"), ("linear1", "fc1"), ("linear2", "linear"))
RESNET4B_KEYS = RESNET2B_KEYS + (("layer2", "layer2"),)


# ---------------------------------------------------------------------------------------------- CIFAR ResNet + BN
class BasicBlock(nn.Module):
    """torchvision's basic block: relu(bn2(conv2(relu(bn1(conv1 x)))) + downsample x); ``downsample`` (1x1 conv +
    batch norm, "option B") where the shape changes, else the identity."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                         nn.BatchNorm2d(planes))
                           if stride != 1 or in_planes != planes else nn.Identity())

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.downsample(x))


class CifarResNet(nn.Module):
    """chenyaofo's CIFAR ResNet: conv 3->16 (3x3) -> BN -> ReLU -> three stages of n basic blocks (16, 32, 64
    channels, stride 2 at the first block of stages 2 and 3) -> global average pool -> linear 64->10.
    ``penultimate`` is the (B, 64) input of ``linear``, equal to layer3 averaged over space."""

    def __init__(self, blocks: int, mean: Mean, std: Mean, n_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act1 = nn.ReLU()
        in_planes = 16
        for i, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), 1):
            stage = [BasicBlock(in_planes, planes, stride)] + [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            in_planes = planes
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(64, n_classes)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(self.normalize(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.pool(x))


def cifar_resnet20(mean: Mean, std: Mean) -> CifarResNet:
    return CifarResNet(3, mean, std)


def cifar_resnet56(mean: Mean, std: Mean) -> CifarResNet:
    return CifarResNet(9, mean, std)


CIFAR_RESNET_KEYS = (("conv1", "conv1"), ("bn1", "bn1"), ("layer1", "layer1"), ("layer2", "layer2"),
                     ("layer3", "layer3"), ("fc", "linear"))


# ---------------------------------------------------------------------------------------------- ShuffleNetV2
def _conv_bn(cin: int, cout: int, kernel: int, stride: int, *, groups: int = 1, relu: bool) -> list[nn.Module]:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False, groups=groups), nn.BatchNorm2d(cout)]
    return layers + ([nn.ReLU()] if relu else [])


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al. 2018). stride 1: split the channels in two, transform one half (1x1 conv,
    depthwise 3x3, 1x1 conv), concatenate, shuffle; stride 2: both halves see the whole input (branch1 is a
    depthwise 3x3 + 1x1 conv), halving the resolution. The sub-module numbering follows torchvision's so that the
    upstream keys (``branch1.0``, ``branch2.3``, ...) need no renaming inside a unit."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        half = cout // 2
        if stride == 1 and cin != 2 * half:
            raise ValueError(f"a stride-1 ShuffleNetV2 unit needs in == out channels; got {cin} -> {cout}")
        self.stride = stride
        self.branch1 = (nn.Sequential(*_conv_bn(cin, cin, 3, stride, groups=cin, relu=False),
                                      *_conv_bn(cin, half, 1, 1, relu=True))
                        if stride > 1 else nn.Sequential())
        self.branch2 = nn.Sequential(*_conv_bn(cin if stride > 1 else half, half, 1, 1, relu=True),
                                     *_conv_bn(half, half, 3, stride, groups=half, relu=False),
                                     *_conv_bn(half, half, 1, 1, relu=True))

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        b, c, h, w = out.shape  # channel shuffle with two groups: interleave the halves
        return out.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleNetV2(nn.Module):
    """chenyaofo's CIFAR ShuffleNetV2: stem conv 3x3 stride 1 (no max-pool, for 32x32 inputs) -> stage2..4 ->
    conv5 (1x1) -> global average pool -> linear. ``penultimate`` is the input of ``linear`` (conv5 averaged)."""

    def __init__(self, repeats: Sequence[int], channels: Sequence[int], mean: Mean, std: Mean, n_classes: int = 10):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Sequential(*_conv_bn(3, channels[0], 3, 1, relu=True))
        cin = channels[0]
        for name, n, cout in zip(("stage2", "stage3", "stage4"), repeats, channels[1:4]):
            self.add_module(name, nn.Sequential(ShuffleUnit(cin, cout, 2), *[ShuffleUnit(cout, cout, 1)
                                                                            for _ in range(n - 1)]))
            cin = cout
        self.conv5 = nn.Sequential(*_conv_bn(cin, channels[4], 1, 1, relu=True))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(channels[4], n_classes)

    def forward(self, x):
        x = self.conv1(self.normalize(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.linear(self.pool(x))


def cifar_shufflenetv2_x0_5(mean: Mean, std: Mean) -> ShuffleNetV2:
    """Width x0.5: stages of 4, 8, 4 units with 48, 96, 192 channels (stem 24, conv5 1024)."""
    return ShuffleNetV2((4, 8, 4), (24, 48, 96, 192, 1024), mean, std)


SHUFFLENET_KEYS = (("conv1", "conv1"), ("stage2", "stage2"), ("stage3", "stage3"), ("stage4", "stage4"),
                   ("conv5", "conv5"), ("fc", "linear"))
