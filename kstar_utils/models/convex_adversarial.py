"""Registry source ``convex:<name>``: the provably robust CIFAR-10 networks of Wong, Schmidt, Metzen & Kolter (2018).

Files: data/cifar_models_public/convex_adversarial/ (MIT, its LICENSE beside them), from locuslab/convex_adversarial
at commit 2cd8149249b9e90383af10fc7e9b9fe90166813e, ``models_scaled/`` and ``models_scaled_l2/``.

Names: ``small-8px`` (L-inf 8/255), ``small-36px`` (L2 36/255). Each file holds a cascade of networks trained one
after another (3 and 2 stages); the model here is stage [0], the first network of the cascade: the cascade as a whole
is not a single classifier. Architecture: upstream ``cifar_model`` (= alpha-beta-CROWN's ``cifar_model_wide``,
conv16-conv32-fc100-fc10), so these two share a family with the CNN-A models of ``abcrown:``.
"""
from __future__ import annotations

from kstar_utils.models import architectures as A
from kstar_utils.models.published import Normalization, PublishedModel, Training, export_source

UPSTREAM = "locuslab/convex_adversarial@2cd8149249b9e90383af10fc7e9b9fe90166813e:"
#: the ImageNet means with a single std, as upstream's CIFAR loader normalises
OVAL = Normalization("OVAL", (0.485, 0.456, 0.406), (0.225, 0.225, 0.225))
PAPER = ("Wong, Schmidt, Metzen, Kolter: Scaling provable adversarial defenses, NeurIPS 2018")
LAYERS = ("act1", "act2")

MODELS: dict[str, PublishedModel] = {e.name: e for e in (
    PublishedModel("small-8px", "convex_adversarial/cifar_small_8px.pth",
                   "f07c615f58616cbc7667974f146c4baa851bf0e71df8431a150abea8b7901f37", A.cifar_model_wide,
                   A.CONV2_FC1_KEYS, ("state_dict", 0), OVAL,
                   Training("certified", "Linf", 8 / 255, "provable training through the dual convex relaxation "
                                                          "(stage 0 of a 3-stage cascade)"),
                   "cnn-a-wide", PAPER, UPSTREAM + "models_scaled/cifar_small_8px.pth", LAYERS),
    PublishedModel("small-36px", "convex_adversarial/cifar_small_36px.pth",
                   "d99894f1fe2866dd3509d3b2a69e16110e58c8d04bd696a070ad6e23d22f11b7", A.cifar_model_wide,
                   A.CONV2_FC1_KEYS, ("state_dict", 0), OVAL,
                   Training("certified", "L2", 36 / 255, "provable training through the dual convex relaxation "
                                                         "(stage 0 of a 2-stage cascade)"),
                   "cnn-a-wide", PAPER, UPSTREAM + "models_scaled_l2/cifar_small_36px.pth", LAYERS),
)}

_SOURCE = export_source("convex", MODELS, globals())
