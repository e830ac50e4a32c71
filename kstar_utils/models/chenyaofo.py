"""Registry source ``chenyaofo:<name>``: standard CIFAR-10 models of chenyaofo/pytorch-cifar-models.

Files: data/cifar_models_public/chenyaofo/ (BSD 3-Clause, its LICENSE beside them): the upstream release files
(code at chenyaofo/pytorch-cifar-models@786c16252c0fc58ee9adac063f8337cc4a7a497a), these copies from
Trilokesh-Praxis-2023/Cifer_10-Models@e40cee93826a7318615345fac9262c477800e4c3; each file's sha256 starts with the
hash in its name, as torch.hub names release files.

Names: ``resnet20``, ``resnet56`` (CIFAR ResNets with a 1x1-conv "option B" shortcut, unlike the "option A"
ResNets of ``cifar-resnet:``), ``shufflenetv2-x0.5``. Layers: ``penultimate``, ``logits``, ``layer1``, ``layer2``
(ResNets; ``layer3`` averaged over space is ``penultimate``), ``stage2`` ... ``stage4`` (ShuffleNetV2) and any
module name.
"""
from __future__ import annotations

from kstar_utils.models import architectures as A
from kstar_utils.models.published import Normalization, PublishedModel, Training, export_source

UPSTREAM = ("chenyaofo/pytorch-cifar-models release files (code @786c16252c0fc58ee9adac063f8337cc4a7a497a), copied "
            "from Trilokesh-Praxis-2023/Cifer_10-Models@e40cee93826a7318615345fac9262c477800e4c3:")
#: upstream's training transform: Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
NORM = Normalization("ERAN", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
PAPER = ("chenyaofo/pytorch-cifar-models (github.com/chenyaofo/pytorch-cifar-models); architectures of He, Zhang, "
         "Ren, Sun: Deep residual learning for image recognition, CVPR 2016, and Ma, Zhang, Zheng, Sun: ShuffleNet "
         "V2, ECCV 2018")
STANDARD = Training("standard", None, 0.0, "standard training")

MODELS: dict[str, PublishedModel] = {e.name: e for e in (
    PublishedModel("resnet20", "chenyaofo/cifar10_resnet20-4118986f.pt",
                   "4118986f0df73003d572b0e397f0ac7b3f60af1f31aff3d2da164536e36f6ec8", A.cifar_resnet20,
                   A.CIFAR_RESNET_KEYS, (), NORM, STANDARD, "resnet", PAPER, UPSTREAM + "cifar10_resnet20-4118986f.pt",
                   ("layer1", "layer2")),
    PublishedModel("resnet56", "chenyaofo/cifar10_resnet56-187c023a.pt",
                   "187c023aee0c9cf3093a682d9447a538cbaf5489f7ae78a7df4edf2246ce380b", A.cifar_resnet56,
                   A.CIFAR_RESNET_KEYS, (), NORM, STANDARD, "resnet", PAPER, UPSTREAM + "cifar10_resnet56-187c023a.pt",
                   ("layer1", "layer2")),
    PublishedModel("shufflenetv2-x0.5", "chenyaofo/cifar10_shufflenetv2_x0_5-1308b4e9.pt",
                   "1308b4e9c4f88656a3b09775c273fc5ffe8fca9c84044123cf3d138c8dec10bd", A.cifar_shufflenetv2_x0_5,
                   A.SHUFFLENET_KEYS, (), NORM, STANDARD, "shufflenet", PAPER,
                   UPSTREAM + "cifar10_shufflenetv2_x0_5-1308b4e9.pt", ("stage2", "stage3", "stage4")),
)}

_SOURCE = export_source("chenyaofo", MODELS, globals())
