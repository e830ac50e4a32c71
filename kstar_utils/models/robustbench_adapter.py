"""Adapter for RobustBench model-zoo classifiers: ``robustbench:<dataset>/<threat_model>/<model_name>``.

Weights are read from ``<model_dir>/<dataset>/<threat_model>/<model_name>.pt`` (RobustBench's own layout; ensembles:
``<model_name>.pt_m<i>.pt``), with model_dir = option ``model_dir``, else ``$KSTAR_ROBUSTBENCH_DIR``, else
``~/.cache/kstar/robustbench``. The 12 entries RobustBench loads through timm, and ImageNet ``Standard_R50`` (through
torchvision), read their file from the torch hub cache (``torch.hub.get_dir()/checkpoints``). Nothing is downloaded
unless ``allow_download=True``. Every file is read as weights only, RobustBench's own loader included, unless
``trust_checkpoint=True`` (models._common.reading_checkpoint). ``pretrained=False`` builds the architecture with
random weights (tests, dry runs).

Inputs are images in [0, 1]; normalisation is inside the models. ``penultimate`` is the input of the classifier
Linear named in data/robustbench/feature_layers.csv.
"""
from __future__ import annotations

import csv
import os
from functools import lru_cache
from pathlib import Path

from kstar_utils.models import CorruptWeightsError, LoadedModel, ModelInfo, WeightsNotFoundError, WeightsRequirement
from kstar_utils.models._common import check_checkpoint_file, environ_set, load_checkpoint, reading_checkpoint

N_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
# torchvision's resnet50 IMAGENET1K_V1 file, which robustbench's ImageNet Standard_R50 uses
_TORCHVISION_R50_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"


@lru_cache(maxsize=1)
def _table() -> dict[str, dict]:
    """'<dataset>/<threat>/<name>' -> its row of feature_layers.csv (the 206 loadable model-zoo entries)."""
    from kstar_utils.io.paths import shipped

    with open(shipped("robustbench", "feature_layers.csv"), newline="") as f:
        return {f"{r['dataset']}/{r['threat_model']}/{r['model_name']}": r for r in csv.DictReader(f)}


def known_names() -> list[str]:
    return list(_table())


def is_valid(name: str) -> bool:
    return name in _table()


def _parts(name: str) -> tuple[str, str, str]:
    dataset, threat, model_name = name.split("/", 2)
    return dataset, threat, model_name


def model_dir(option=None) -> Path:
    from kstar_utils.io.paths import robustbench_dir

    return robustbench_dir(option)


def pretrained_tag(name: str, pretrained: bool = True, weights_path=None, **options) -> str:
    if not pretrained:
        return "random"
    return f"robustbench:{name}" if weights_path is None else f"file:{Path(weights_path).name}"


def _rb():
    from kstar_utils.compat import import_robustbench

    import_robustbench()
    import robustbench.utils  # noqa: F401 -- registers robustbench's timm models

    return robustbench


def _timm_name(name: str) -> str:
    dataset, threat, model_name = _parts(name)
    return f"{model_name.lower().replace('-', '_')}_{dataset}_{threat.lower()}"


def _loads_via_timm(name: str) -> bool:
    return _table()[name].get("via") == "timm"


def _is_torchvision_standard(name: str) -> bool:
    dataset, _, model_name = _parts(name)
    return dataset == "imagenet" and model_name == "Standard_R50"


def _hub_checkpoint(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _weight_files(name: str, model_dir_opt=None) -> list[Path]:
    """The files RobustBench would read for `name` (without downloading anything)."""
    if _is_torchvision_standard(name):
        return [_hub_checkpoint(_TORCHVISION_R50_URL)]
    if _loads_via_timm(name):
        import timm

        _rb()
        cfg = timm.models.get_pretrained_cfg(_timm_name(name))
        return [_hub_checkpoint(cfg.url)] if cfg is not None and cfg.url else []
    dataset, threat, model_name = _parts(name)
    base = model_dir(model_dir_opt) / dataset / threat / f"{model_name}.pt"
    _rb()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    gdrive = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)][model_name]["gdrive_id"]
    if isinstance(gdrive, list):
        return [Path(f"{base}_m{i}.pt") for i in range(len(gdrive))]
    return [base]


def _how_to_provide(name: str, path: Path) -> str:
    if _is_torchvision_standard(name) or _loads_via_timm(name):
        return (f"copy the checkpoint to {path} (torch hub cache; set TORCH_HOME to move it), or pass "
                f"allow_download=True on a machine with internet")
    dataset, threat, model_name = _parts(name)
    return (f"put RobustBench's checkpoint at {path} (e.g. run robustbench.utils.load_model('{model_name}', "
            f"model_dir=..., dataset='{dataset}', threat_model='{threat}') on a machine with internet and copy "
            f"<model_dir>/{dataset}/{threat}/), set KSTAR_ROBUSTBENCH_DIR or model_dir=, or pass allow_download=True")


def requirements(name: str, pretrained: bool = True, model_dir=None, weights_path=None, **options):
    if not pretrained:
        return [WeightsRequirement(f"robustbench:{name}", None, True, "random weights: nothing needed")]
    files = [Path(weights_path).expanduser()] if weights_path else _weight_files(name, model_dir)
    return [WeightsRequirement(f"robustbench:{name}", f, f.is_file(), _how_to_provide(name, f)) for f in files]


def build_architecture(name: str):
    """The architecture of `name` with random weights (no file read, nothing downloaded)."""
    _rb()
    import timm
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.architectures.utils_architectures import normalize_model
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    dataset, threat, model_name = _parts(name)
    if _is_torchvision_standard(name):
        from torchvision.models import resnet50

        return normalize_model(resnet50(weights=None), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    if _loads_via_timm(name):
        return timm.create_model(_timm_name(name), pretrained=False, num_classes=N_CLASSES[dataset])
    return model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)][model_name]["model"]()


def _load_pretrained(name: str, files: list[Path], model_dir_opt, weights_path, trust: bool):
    dataset, threat, model_name = _parts(name)
    if weights_path is not None:  # an explicit checkpoint: build the architecture and load its state dict
        model = build_architecture(name)
        _load_state_dict_loosely(model, load_checkpoint(files[0], trust=trust), files[0])
        return model
    if _is_torchvision_standard(name):
        model = build_architecture(name)
        model.model.load_state_dict(load_checkpoint(files[0], trust=trust))
        return model
    if _loads_via_timm(name):
        from kstar_utils.models.timm_adapter import create_pretrained

        return create_pretrained(_timm_name(name), files[0] if files and files[0].is_file() else None, trust,
                                 num_classes=N_CLASSES[dataset])
    from robustbench.utils import load_model as rb_load_model

    # RobustBench's loader reads the files itself (with model-specific fixes of the state dicts), calling torch.load
    # without saying weights_only: reading_checkpoint holds it to weights only unless trusted
    with reading_checkpoint(", ".join(str(f) for f in files), trust=trust):
        return rb_load_model(model_name=model_name, model_dir=str(model_dir(model_dir_opt)), dataset=dataset,
                             threat_model=threat)


def _load_state_dict_loosely(model, checkpoint, path: Path) -> None:
    """Load a checkpoint saved in any of the usual wrappings: {'state_dict': ...}, DataParallel 'module.' prefixes,
    with or without the 'model.' prefix of RobustBench's normalising wrapper."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state, dict):
        raise CorruptWeightsError(f"{path} holds a {type(state).__name__}, not a state dict")

    def strip(d, prefix):
        return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in d.items()}

    candidates = [strip(state, "module."), strip(strip(state, "module."), "model."),
                  {f"model.{k}": v for k, v in strip(state, "module.").items()}]
    wanted = set(model.state_dict())
    best = max(candidates, key=lambda d: len(wanted & set(d)))
    missing = wanted - set(best)
    # the normalising wrapper's mean/std buffers are not in most checkpoints
    if {m for m in missing if not m.endswith(("mean", "std", "mu", "sigma"))}:
        raise CorruptWeightsError(f"{path} does not match the architecture: missing {sorted(missing)[:5]}")
    model.load_state_dict(best, strict=False)


def load(name: str, pretrained: bool = True, model_dir=None, allow_download: bool = False, weights_path=None,
         trust_checkpoint: bool = False, **options) -> LoadedModel:
    """Build `name`; with pretrained=True read its weights from the local cache (see the module docstring)."""
    files: list[Path] = []
    if pretrained:
        reqs = requirements(name, pretrained=True, model_dir=model_dir, weights_path=weights_path)
        files = [r.path for r in reqs]
        missing = [r for r in reqs if not r.present]
        if missing and not allow_download:
            r = missing[0]
            raise WeightsNotFoundError(f"weights for robustbench:{name} not found: searched {r.path}. "
                                       f"To provide them: {r.how_to_provide}")
        for f in files:
            if f.is_file():
                check_checkpoint_file(f)  # an HTML page or truncated file fails here, naming it, in milliseconds
        with environ_set(**({} if allow_download else {"HF_HUB_OFFLINE": "1"})):
            module = _load_pretrained(name, files, model_dir, weights_path, trust_checkpoint)
    else:
        module = build_architecture(name)
    return _loaded(name, module, pretrained_tag(name, pretrained, weights_path),
                   files[0] if len(files) == 1 else None)


def architecture(name: str, **options) -> LoadedModel:
    """The architecture RobustBench builds for `name`, with random weights; no file is read."""
    return _loaded(name, build_architecture(name), "random", None)


def _loaded(name: str, module, pretrained: str, weights_file: Path | None) -> LoadedModel:
    row = _table()[name]
    dataset, threat, _ = _parts(name)
    module.eval()
    head = row.get("head_module") or None
    if head is not None and head not in dict(module.named_modules()):
        head = None  # the csv was measured on the architecture RobustBench builds; a mismatch means no penultimate
    preprocess, description = _preprocessing(name)
    extra = {"dataset": dataset, "threat_model": threat, "head_kind": row.get("head_kind")}
    if row.get("penultimate_dim"):
        extra["penultimate_dim"] = int(float(row["penultimate_dim"]))
    return LoadedModel(
        name=f"robustbench:{name}", module=module, preprocess=preprocess, run=module, output_layer="logits",
        head_module=head, pretrained=pretrained, weights_file=weights_file, preprocessing=description, extra=extra,
    )


def _preprocessing(name: str):
    """RobustBench's own test-time preprocessing (CIFAR: ToTensor; ImageNet: per-model resize/crop), no normalisation."""
    _rb()
    from robustbench.data import PREPROCESSINGS
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    from kstar_utils.models._common import pil_transform

    dataset, threat, model_name = _parts(name)
    if dataset != "imagenet":
        key = None
    elif _loads_via_timm(name):
        from robustbench.data import get_timm_model_preprocessing

        tf = get_timm_model_preprocessing(_timm_name(name))
        return pil_transform(tf), {"robustbench_preprocessing": "timm default_cfg", "transform": repr(tf),
                                   "normalisation": "inside the model"}
    else:
        key = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)][model_name].get("preprocessing")
    tf = PREPROCESSINGS[key]
    return pil_transform(tf), {"robustbench_preprocessing": key, "transform": repr(tf),
                               "normalisation": "inside the model"}


def describe(name: str) -> ModelInfo:
    """The leaderboard's entries: "Standard*" models are standard training, the others are trained against their
    threat model (L-inf, L2 or common corruptions) by their authors."""
    dataset, threat, model_name = _parts(name)
    row = _table()[name]
    standard = model_name.startswith("Standard")
    return ModelInfo(f"robustbench:{name}", f"{model_name} ({dataset}, {threat})", "robustbench",
                     row.get("model_class") or "", "standard" if standard else "adversarial",
                     None if standard or threat == "corruptions" else threat, None,
                     f"RobustBench model zoo, {dataset} / {threat}")


def accuracies(names, dataset: str) -> list[dict]:
    """Clean and robust accuracy from the RobustBench leaderboard (data/robustbench/), on the model's own dataset."""
    import math

    from kstar_utils.io.tables import load_robustbench_leaderboard

    lb = load_robustbench_leaderboard().set_index("model_id")
    rows = []
    for n in names:
        key = f"robustbench:{n}"
        if key in lb.index and _parts(n)[0] == dataset:
            eps = lb.at[key, "eps_float"]
            rows.append({"model": n, "clean_acc": float(lb.at[key, "clean_acc"]),
                         "robust_acc": float(lb.at[key, "robust_acc"]),
                         "eval_eps": float(eps) if eps is not None and not math.isnan(float(eps)) else math.nan,
                         "accuracy_source": "RobustBench leaderboard"})
    return rows
