"""Registry source ``abcrown:<name>``: fifteen CIFAR-10 networks distributed with the alpha-beta-CROWN verifier.

Files: data/cifar_models_public/alpha_beta_crown/ (BSD 3-Clause, its LICENSE beside them), from
Verified-Intelligence/alpha-beta-CROWN at commit 8250d5fbd530c76e5e3243db28b3cad5fbaef740,
``complete_verifier/models/``. Provenance, papers and sha256 in data/cifar_models_public/README.md; the table below
is the one place the code keeps that knowledge.

Names: ``cnn-a-adv``, ``cnn-a-adv-alt``, ``cnn-a-adv4``, ``cnn-a-mix``, ``cnn-a-mix4`` (the SDP-FO paper's CNN-A
models), ``resnet2b``, ``resnet4b`` (VNN-COMP 2021), ``oval-base``, ``oval-wide``, ``oval-deep`` (OVAL21),
``convsmall-pgd``, ``convsmall-sigmoid`` (ERAN's ConvSmall), ``marabou-small``, ``marabou-medium``,
``marabou-large`` (VNN-COMP 2021 Marabou benchmark). Layers: ``penultimate``, ``logits``, the entry's inner layers
and any module name (models.architectures).
"""
from __future__ import annotations

from kstar_utils.models import architectures as A
from kstar_utils.models.published import Normalization, PublishedModel, Training, export_source

UPSTREAM = "Verified-Intelligence/alpha-beta-CROWN@8250d5fbd530c76e5e3243db28b3cad5fbaef740:complete_verifier/models/"

#: (125.3, 123.0, 113.9)/255 and (63.0, 62.1, 66.7)/255: the SDP-FO paper's CIFAR statistics
SDP = Normalization("SDP", (125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255))
C10 = Normalization("CIFAR-10", (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
ERAN = Normalization("ERAN", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
OVAL = Normalization("OVAL", (0.485, 0.456, 0.406), (0.225, 0.225, 0.225))
NONE = Normalization("none", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

SDP_PAPER = ("Dathathri, Dvijotham, Kurakin, Raghunathan, Uesato, Bunel, Shankar, Steinhardt, Goodfellow, Liang, "
             "Kohli: Enabling certification of verification-agnostic networks via memory-efficient semidefinite "
             "programming, NeurIPS 2020")
VNNCOMP_PAPER = ("Bak, Liu, Johnson: The Second International Verification of Neural Networks Competition "
                 "(VNN-COMP 2021): Summary and Results, arXiv:2109.00498")
OVAL_PAPER = ("De Palma, Bunel, Desmaison, Dvijotham, Kohli, Torr, Kumar: Improved branch and bound for neural "
              "network verification via Lagrangian decomposition, arXiv:2104.06718 (the OVAL21 benchmark of "
              "VNN-COMP 2021)")
ERAN_PAPER = ("Singh, Gehr, Püschel, Vechev: An abstract domain for certifying neural networks (DeepPoly), POPL "
              "2019; networks of the ERAN repository (eth-sri/eran)")

CNN_A_LAYERS = ("act1", "act2")


def _cnn_a(name: str, file: str, sha256: str, training: Training) -> PublishedModel:
    return PublishedModel(name, f"alpha_beta_crown/sdp/{file}", sha256, A.cifar_model_wide, A.CONV2_FC1_KEYS, (),
                          SDP, training, "cnn-a-wide", SDP_PAPER, UPSTREAM + f"sdp/{file}", CNN_A_LAYERS)


def _pgd(eps: float | None, method: str) -> Training:
    return Training("adversarial", "Linf", eps, method)


MODELS: dict[str, PublishedModel] = {e.name: e for e in (
    _cnn_a("cnn-a-adv", "cifar_cnn_a_adv.model",
           "e45d79e68342395f4ada6f89852ae41feba14b430a3b2462a04d7f5e02c65657",
           _pgd(2 / 255, "PGD adversarial training (CNN-A-Adv)")),
    _cnn_a("cnn-a-adv-alt", "cifar_cnn_a_adv_alt.model",
           "6540c5a9d9d0856a2870e5be19d7f2322a966cb30b5141f4116beb70dda59e46",
           _pgd(2 / 255, "PGD adversarial training, a second run of the CNN-A-Adv recipe")),
    _cnn_a("cnn-a-adv4", "cifar_cnn_a_adv4.model",
           "f872a69536be3f0ab98397094bb7c3952d747b08321b81eafd00d9fab5eca0e7",
           _pgd(4 / 255, "PGD adversarial training (CNN-A-Adv-4)")),
    _cnn_a("cnn-a-mix", "cifar_cnn_a_mix.model",
           "5a1370f41961766db169ad9f945e9cc3157c9afd7986eac73bf2786c35dc3773",
           _pgd(2 / 255, "mixed clean and PGD adversarial training (CNN-A-Mix)")),
    _cnn_a("cnn-a-mix4", "cifar_cnn_a_mix4.model",
           "91d5ade259939afecdccbeb9f818f55f9c560466d9b5b0b01ecc86dc8eaa8d13",
           _pgd(4 / 255, "mixed clean and PGD adversarial training (CNN-A-Mix-4)")),
    PublishedModel("resnet2b", "alpha_beta_crown/cifar10_resnet/resnet2b.pth",
                   "ef824b47175668e924d7fd409b5ef7e239012b8f0c31fefa66c643efda1eb05b", A.resnet2b, A.RESNET2B_KEYS,
                   ("state_dict",), C10, _pgd(2 / 255, "PGD adversarial training (upstream clean accuracy 69.25 %)"),
                   "resnet-nobn", VNNCOMP_PAPER, UPSTREAM + "cifar10_resnet/resnet2b.pth", ("act1", "layer1")),
    PublishedModel("resnet4b", "alpha_beta_crown/cifar10_resnet/resnet4b.pth",
                   "6158f9668935890e832d4e0fdc3b6cece2386ec826319eac36f329490b7729e7", A.resnet4b, A.RESNET4B_KEYS,
                   ("state_dict",), C10, _pgd(2 / 255, "PGD adversarial training (upstream clean accuracy 77.20 %)"),
                   "resnet-nobn", VNNCOMP_PAPER, UPSTREAM + "cifar10_resnet/resnet4b.pth",
                   ("act1", "layer1", "layer2")),
    PublishedModel("oval-base", "alpha_beta_crown/oval/cifar_base.pth",
                   "a1b07b56b4bbb758e4fb3471b2c140e8e8a43679bb8c032c2691095b2327275a", A.cifar_model_base,
                   A.CONV2_FC1_KEYS, ("state_dict", 0), OVAL,
                   Training("certified", "Linf", 2 / 255, "provable training through a convex relaxation"),
                   "cnn-base", OVAL_PAPER, UPSTREAM + "oval/cifar_base.pth", ("act1", "act2")),
    PublishedModel("oval-wide", "alpha_beta_crown/oval/cifar_wide.pth",
                   "1980beb15e180902fd48b50cd0ac24ac80d48f3ec166753d5773a7dc24d60a07", A.cifar_model_wide,
                   A.CONV2_FC1_KEYS, ("state_dict", 0), OVAL,
                   Training("certified", "Linf", 2 / 255, "provable training through a convex relaxation"),
                   "cnn-a-wide", OVAL_PAPER, UPSTREAM + "oval/cifar_wide.pth", CNN_A_LAYERS),
    PublishedModel("oval-deep", "alpha_beta_crown/oval/cifar_deep.pth",
                   "1ddec19e8e7c8adf636a9349ccd06841d1dca68b9bea5ad278b6d908252dfb58", A.cifar_model_deep,
                   A.CONV4_FC1_KEYS, ("state_dict", 0), OVAL,
                   Training("certified", "Linf", 2 / 255, "provable training through a convex relaxation"),
                   "cnn-deep", OVAL_PAPER, UPSTREAM + "oval/cifar_deep.pth", ("act1", "act2", "act3", "act4")),
    PublishedModel("convsmall-pgd", "alpha_beta_crown/eran/cifar_conv_small_pgd.pth",
                   "01adb410a8f561aa19e53a2168ca5c71a795a72a2be18c80eb400cf2e54cdd50", A.cifar_conv_small,
                   A.CONV2_FC1_KEYS, ("state_dict", 0), ERAN,
                   _pgd(None, "PGD adversarial training (ERAN's ConvSmall PGD; upstream does not state the budget)"),
                   "convsmall", ERAN_PAPER, UPSTREAM + "eran/cifar_conv_small_pgd.pth", ("act1", "act2")),
    PublishedModel("convsmall-sigmoid", "alpha_beta_crown/non_relu/cifar_conv_small_sigmoid.pth",
                   "dfe14ef941707436edccdc81b49bcd00051bb28c54a2f4dc4a5057fe4013c41a", A.cifar_conv_small_sigmoid,
                   A.CONV2_FC1_KEYS, ("state_dict",), ERAN,
                   _pgd(None, "PGD adversarial training, sigmoid activations (the checkpoint records 64.08 % clean "
                              "and 53.98 % robust accuracy at its own budget, which it does not state)"),
                   "convsmall", ERAN_PAPER, UPSTREAM + "non_relu/cifar_conv_small_sigmoid.pth", ("act1", "act2")),
    PublishedModel("marabou-small", "alpha_beta_crown/marabou_cifar10/cifar_marabou_small.pth",
                   "29771132fd93c72d39d6a07f7d9a24933334fc9448dc23dc0dce38682050902f", A.cifar_marabou_small,
                   A.CONV2_FC2_KEYS, (), NONE, Training("standard", None, 0.0, "normal training with dropout"),
                   "marabou", VNNCOMP_PAPER, UPSTREAM + "marabou_cifar10/cifar_marabou_small.pth",
                   ("act1", "act2", "act3")),
    PublishedModel("marabou-medium", "alpha_beta_crown/marabou_cifar10/cifar_marabou_medium.pth",
                   "a86f85b6d0204fc4b0fba49fbccbcddeb2cda79d8feec6e714d08c6a882b938d", A.cifar_marabou_medium,
                   A.CONV2_FC2_KEYS, (), NONE, Training("standard", None, 0.0, "normal training with dropout"),
                   "marabou", VNNCOMP_PAPER, UPSTREAM + "marabou_cifar10/cifar_marabou_medium.pth",
                   ("act1", "act2", "act3")),
    PublishedModel("marabou-large", "alpha_beta_crown/marabou_cifar10/cifar_marabou_large.pth",
                   "ebc062429d071e7199c4cff81df158cd99c910ec3475347cf5007ceb0a9d593f", A.cifar_marabou_large,
                   A.CONV2_FC2_KEYS, (), NONE, Training("standard", None, 0.0, "normal training with dropout"),
                   "marabou", VNNCOMP_PAPER, UPSTREAM + "marabou_cifar10/cifar_marabou_large.pth",
                   ("act1", "act2", "act3")),
)}

_SOURCE = export_source("abcrown", MODELS, globals())
