"""Feature extraction: labelled images through a registry model, one cached .npz per layer out.

    paths = extract_features("zoo:standard", "digits", layers=("penultimate", "logits"))
    fs = load_features(paths["penultimate"])          # fs.features (N, D) float32, fs.labels (N,) int64

Bring-your-own features (dataset ``features:<file>``) are imported as the one layer ``features`` (FEATURES_LAYER), in
their own precision (float64 stays float64), with the labels and class names checked by compute_kstar's rules
(datasets.load_feature_file).

Each layer's file is keyed (kstar_utils.io.cache.artifact_path) by everything that changes its values: model, weights
tag, dataset, split, layer, sampling, pooling, embedding normalisation and numeric precision. Asking again for the same
spec reuses the file, but only when its bytes still have the sha256 its sidecar records and the weights file it was
extracted from (sidecar ``inputs``) still has the recorded content; a damaged file is set aside and rebuilt
(kstar_utils.io.cache.verified_sidecar). ``force=True`` rebuilds it. Large runs write chunk files plus a manifest as they
go, so an interrupted run resumes at the first missing chunk; the finished file and its JSON sidecar are written
atomically, byte-reproducibly (equal arrays give an equal file and an equal hash).
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from kstar_utils.engine.run import resolve_device
from kstar_utils.io import cache

from kstar_utils import datasets
from kstar_utils import models as registry

#: options passed to the model adapter (they may change the weights or the model's outputs; trust_checkpoint only
#: allows reading a checkpoint that needs a full unpickle, and changes no feature, so it is not in the cache key)
MODEL_OPTIONS = ("allow_download", "weights_path", "weights_dir", "model_dir", "cache_dir", "pretrained", "normalize",
                 "trust_checkpoint")
#: options of the dataset (they change which images are read)
DATA_OPTIONS = ("n_per_class", "seed", "subset")
#: options of the extraction itself; `pool` changes values, the rest only speed or bookkeeping
RUN_OPTIONS = ("pool", "amp", "num_workers", "chunk_batches", "progress")
POOLS = ("avg", "flatten", "cls")
MANIFEST = "manifest.json"
#: the one layer of a features:<file> dataset
FEATURES_LAYER = "features"
#: feature dtypes a features file holds as they are (model outputs are float32; imported files keep their own)
KEPT_DTYPES = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class FeatureSet:
    """Features of one layer: features (N, D) float16 / float32 / float64 (float32 from a model; an imported file's
    own precision), labels (N,) int64 class codes 0..C-1, class_names (C,) distinct, meta = the sidecar."""

    features: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])


# ---------------------------------------------------------------------------------------------- file format
def save_features(path: str | Path, features: np.ndarray, labels: np.ndarray, class_names, sidecar: Mapping) -> Path:
    """Write a feature file and then its sidecar, each atomically (a reader never sees a partial file).

    features (N, D): float16 / float32 / float64 are written as they are; other dtypes are converted to float64 only
    where every value converts exactly (method.validation.check_features), else ValueError naming the rows or the
    dtype. labels (N,): integer class codes of any int dtype, each in 0..C-1, written as int64. class_names (C,):
    distinct (duplicates raise ValueError). The sidecar gets the file's `sha256`.
    """
    from kstar_utils.method.validation import check_class_names

    path = Path(path)
    X = _kept_features(features, "features")
    names = check_class_names(list(class_names))
    y = _class_codes(labels, len(names), "labels")
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"features must be (N, D) with N labels; got {X.shape} and {y.shape}")
    arrays = {"features": X, "labels": y, "class_names": np.asarray(names, dtype=str)}
    cache.write_artifact(path, lambda tmp: cache.write_npz(tmp, arrays), sidecar)
    return path


def _kept_features(features, name: str) -> np.ndarray:
    """features in their own float dtype, or converted exactly to float64 (else ValueError naming the problem).
    Floats are not checked for NaN here: a model that outputs NaN is reported by the k* stage, naming the rows."""
    from kstar_utils.method.validation import check_features

    X = np.asarray(features)
    return X if X.dtype in KEPT_DTYPES else check_features(X, name=name)


def _class_codes(labels, n_names: int, name: str) -> np.ndarray:
    """(N,) class codes of any int dtype -> int64, each in 0..n_names-1 (>= 0 without names), else ValueError: a
    float code would be truncated and an out-of-range one would name another class or none."""
    y = np.asarray(labels)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"{name} of a features file must be a 1-D array of integer class codes (indices into "
                         f"class_names); got dtype {y.dtype}, shape {y.shape}")
    top = n_names - 1 if n_names else np.iinfo(np.int64).max
    outside = (y < 0) | (y > top) if y.size else np.zeros(0, dtype=bool)
    if outside.any():
        raise ValueError(f"{name} hold class codes outside 0..{top} (the indices of the {n_names} class_names): "
                         f"{np.unique(y[outside])[:5].tolist()}")
    return y.astype(np.int64)


def load_features(path: str | Path) -> FeatureSet:
    """Read a feature file written by :func:`extract_features` or :func:`save_features` (its sidecar, when present,
    becomes `meta`). The features come back in the precision they were written in (float16 / float32 / float64;
    any other dtype converted to float64 exactly, else ValueError), the labels as int64 codes.

    A file that is not a complete features .npz, or whose labels are not class codes of its class names, raises
    ValueError (cache.CorruptFileError) naming it; duplicate class names (a file written before they were refused)
    raise ValueError naming them.
    """
    from kstar_utils.method.validation import check_class_names

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"feature file not found: {path}")
    z = cache.load_npz(path, ["features", "labels"])
    X = _kept_features(z["features"], f"features of {path}")
    if X.ndim != 2 or z["labels"].shape != (X.shape[0],):
        raise cache.CorruptFileError(f"{path}: features must be (N, D) with N labels; got {X.shape} and "
                                     f"{z['labels'].shape}")
    names = ()
    if "class_names" in z:
        try:
            names = check_class_names(z["class_names"], name=f"class_names of {path}")
        except ValueError as e:
            raise ValueError(f"{e}; rebuild the file (extract_features(..., force=True))") from None
    try:
        y = _class_codes(z["labels"], len(names), f"labels of {path}")
    except ValueError as e:
        raise cache.CorruptFileError(str(e)) from None
    meta = cache.read_sidecar(path) if cache.sidecar_path(path).exists() else {}
    return FeatureSet(X, y, names, meta, path)


def _check_feature_file(path: Path) -> None:
    """Raise CorruptFileError unless `path` reads in full as a features .npz (zip CRCs included)."""
    load_features(path)


def _reusable(path: Path, digests: dict[str, str], data: Mapping[str, Mapping] | None = None) -> bool:
    """Whether a cached features file may be reused: intact (its sha256 as its sidecar records), extracted from the
    data now found (`data`: {"data": record} from _data_input) and from weights that still have the recorded
    content. A weights file no longer on disk does not count as changed: the spec's weights tag still names the
    weights, and nothing could be re-extracted without them anyway."""
    meta = cache.verified_sidecar(path, {role: rec["sha256"] for role, rec in (data or {}).items()},
                                  adopt=_check_feature_file)
    if meta is None:
        return False
    if "inputs" not in meta and meta.get("weights_file") and meta.get("weights_sha256"):
        # sidecars from before `inputs` existed record the weights at the top level
        meta = {"inputs": {"weights": cache.input_record(meta["weights_file"], meta["weights_sha256"])}}
    return not cache.changed_inputs(meta, digests, missing_ok=True)


def _data_input(dataset: str, split: str, data_root, digests: dict[str, str]) -> dict[str, dict[str, str]]:
    """{"data": input record} of the file or folder the images are read from, {} when there is none to check
    (scikit-learn's digits) or it is missing (loading then says how to provide it)."""
    path = datasets.requirements(dataset, split, data_root)[0].path
    if path is None or not Path(path).exists():
        return {}
    if str(path) not in digests:
        digests[str(path)] = cache.content_digest(path)
    return {"data": cache.input_record(path, digests[str(path)])}


# ---------------------------------------------------------------------------------------------- layers
def pool_output(t, pool: str = "avg"):
    """Turn one layer's output into (B, D) features.

    (B, D) stays. (B, C, H, W) conv maps: "avg" -> global average over H, W; "flatten" -> (B, C*H*W).
    (B, L, D) token sequences: "avg" -> mean over tokens; "cls" -> token 0; "flatten" -> (B, L*D).
    Tuple/list outputs use their first element.
    """
    if isinstance(t, (tuple, list)):
        t = t[0]
    if t.ndim == 2:
        return t
    if pool == "flatten":
        return t.reshape(t.shape[0], -1)
    if t.ndim == 4:
        if pool == "cls":
            raise ValueError("pool='cls' needs a (B, L, D) token output; this layer gives (B, C, H, W)")
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t[:, 0] if pool == "cls" else t.mean(dim=1)
    return t.reshape(t.shape[0], -1)


def forward_layers(loaded: registry.LoadedModel, x, layers: tuple[str, ...], pool: str = "avg") -> dict[str, Any]:
    """One forward pass of batch x (B, C, H, W); returns {layer: (B, D) tensor} for every requested layer.

    Intermediate layers are read with forward hooks (several in the same pass); "penultimate" is the input of the
    model's final linear layer (a forward pre-hook on `loaded.head_module`).
    """
    captured: dict[str, Any] = {}
    modules = dict(loaded.module.named_modules())
    handles = []

    def grab_output(layer):
        return lambda mod, args, out: captured.__setitem__(layer, out)

    def grab_input(layer):
        return lambda mod, args: captured.__setitem__(layer, args[0])

    for layer in layers:
        if layer == loaded.output_layer:
            continue
        if layer == "penultimate":
            handles.append(modules[loaded.head_module].register_forward_pre_hook(grab_input(layer)))
        else:
            handles.append(modules[layer].register_forward_hook(grab_output(layer)))
    try:
        out = loaded.run(x)
    finally:
        for h in handles:
            h.remove()
    captured[loaded.output_layer] = out
    result = {}
    for layer in layers:
        if layer not in captured:
            raise ValueError(f"layer {layer!r} of {loaded.name!r} did not run in the forward pass "
                             f"(a module outside the image path?)")
        result[layer] = pool_output(captured[layer], pool)
    return result


# ---------------------------------------------------------------------------------------------- specs
def feature_spec(model: str, dataset: str, split: str, layer: str, *, pretrained: str, model_opts: Mapping,
                 data_opts: Mapping, pool: str, precision: str) -> dict[str, Any]:
    """Everything that changes a layer's features (the cache key). Paths and batch size are provenance, not key."""
    spec = {"kind": "features", "model": model, "pretrained": pretrained, "dataset": dataset, "split": split,
            "layer": layer, "pool": pool, "precision": precision}
    spec.update(registry.feature_key(model, **model_opts))  # e.g. OpenCLIP's embedding normalisation
    if model_opts.get("weights_path"):
        spec["weights_path"] = str(Path(model_opts["weights_path"]).expanduser().resolve())
    for k in ("n_per_class", "seed", "subset"):
        if data_opts.get(k) is not None:
            spec[k] = data_opts[k]
    if "n_per_class" not in spec:
        spec.pop("seed", None)  # the seed only matters when sampling
    return spec


def _boolean(v) -> bool:
    return isinstance(v, (bool, np.bool_))


def _integer(v, low: int) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= low


def _path_text(v) -> bool:
    return isinstance(v, (str, os.PathLike)) and str(v).strip() != ""


#: what each extract_features option accepts: (description, check). `batch_size` is a keyword of its own.
OPTION_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "allow_download": ("true or false", _boolean),
    "weights_path": ("a file path", _path_text),
    "weights_dir": ("a folder path", _path_text),
    "model_dir": ("a folder path", _path_text),
    "cache_dir": ("a folder path", _path_text),
    "pretrained": ("true or false", _boolean),
    "normalize": ("true or false", _boolean),
    "trust_checkpoint": ("true or false (true only for checkpoints you trust: they may run code)", _boolean),
    "n_per_class": ("a whole number >= 1, or null for every image", lambda v: v is None or _integer(v, 1)),
    "seed": ("a whole number >= 0", lambda v: _integer(v, 0)),
    "subset": ("null or 'robustbench'", lambda v: v is None or v == "robustbench"),
    "pool": (f"one of {list(POOLS)}", lambda v: v in POOLS),
    "amp": ("true or false", _boolean),
    "num_workers": ("a whole number >= 0", lambda v: _integer(v, 0)),
    "chunk_batches": ("a whole number >= 1", lambda v: _integer(v, 1)),
    "progress": ("true or false", _boolean),
    "batch_size": ("a whole number >= 1", lambda v: _integer(v, 1)),
}
#: the options that name files or folders (a study resolves them against its own folder)
PATH_OPTIONS = ("weights_path", "weights_dir", "model_dir", "cache_dir")


def check_options(options: Mapping[str, Any], *, where: str = "extract_features options") -> dict[str, Any]:
    """Validate extract_features options (names and values) before any work; returns them as a dict.

    Unknown names raise ValueError with the closest valid ones; a value of the wrong kind (pool: bogus,
    n_per_class: abc, batch_size: 0) raises ValueError naming the option, the value and what it accepts.
    """
    import difflib

    valid = list(OPTION_TYPES)
    for name, value in options.items():
        if name not in OPTION_TYPES:
            close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
            raise ValueError(f"{where}: unknown option {name!r}" + (f"; did you mean {close}?" if close else "")
                             + f"; valid: {valid}")
        what, ok = OPTION_TYPES[name]
        if not ok(value):
            raise ValueError(f"{where}: {name} must be {what}; got {value!r}")
    return dict(options)


def _split_options(options: Mapping[str, Any]):
    check_options(options)
    pick = lambda keys: {k: options[k] for k in keys if k in options}  # noqa: E731
    return pick(MODEL_OPTIONS), pick(DATA_OPTIONS), pick(RUN_OPTIONS)


# ---------------------------------------------------------------------------------------------- extraction
def extract_features(model: str, dataset: str, *, split: str = "test", layers=("penultimate", "logits"),
                     root: str | Path | None = None, data_root=None, batch_size: int = 256, device=None,
                     force: bool = False, **options) -> dict[str, Path]:
    """Extract features of `dataset` from `model` at each of `layers`; returns {layer: path of its .npz}.

    model:   registry name, e.g. "cifar-resnet:resnet20", "zoo:standard", "openclip:ViT-B-32/laion2b_s34b_b79k",
             "robustbench:cifar10/Linf/Carmon2019Unlabeled", "torchvision:resnet50@IMAGENET1K_V2".
    dataset: "cifar10-sample", "digits", "cifar10", "cifar100", "imagenet", "imagenet16", "folder:<path>" or
             "features:<path>"
             (bring-your-own features: then `model` and `layers` are ignored and the file is imported, in its own
             precision, as its one layer "features"; datasets.load_feature_file gives the rules).
    layers:  "logits" / "embedding" (the model output), "penultimate" (input of the final Linear), "inner" (the
             model's own inner layers, models.describe(model).inner_layers) or any module name.
    Each file holds `features` (N, D) float32 (an imported file: its own precision), `labels` (N,) int64 and
    `class_names` (C,); its JSON sidecar holds the spec and provenance (weights sha256, preprocessing, N, D, library
    versions, date).

    options -- model: allow_download, weights_path, weights_dir, model_dir, cache_dir, pretrained, normalize,
    trust_checkpoint (False; True allows a full unpickle, which runs code stored in the file, of a checkpoint that
    weights-only reading refuses: only for files whose origin you trust);
    data: n_per_class, seed (per-class subsampling), subset ("robustbench" ImageNet list);
    run: pool ("avg" | "flatten" | "cls" for conv / token outputs), amp (default True on CUDA), num_workers,
    chunk_batches (batches per resumable chunk, default 8), progress (tqdm bar, default True).
    """
    model_opts, data_opts, run_opts = _split_options(options)
    check_options({"batch_size": batch_size})
    datasets.check_dataset_name(dataset)
    if dataset.startswith("features:"):
        return {FEATURES_LAYER: _import_feature_file(dataset, root=root, force=force, **data_opts)}
    registry.check_model_name(model)
    layers = registry.expand_layers(model, layers)  # "inner": the model's own inner layers
    pool = run_opts.get("pool", "avg")
    if pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}; got {pool!r}")
    dev = resolve_device(device)
    amp = bool(run_opts.get("amp", dev.type == "cuda")) and dev.type == "cuda"
    precision = "amp-fp16" if amp else "fp32"
    pretrained = registry.model_pretrained_tag(model, **model_opts)
    specs = {layer: feature_spec(model, dataset, split, layer, pretrained=pretrained, model_opts=model_opts,
                                 data_opts=data_opts, pool=pool, precision=precision) for layer in layers}
    paths = {layer: cache.artifact_path(root, "features", spec, ".npz") for layer, spec in specs.items()}
    digests: dict[str, str] = {}  # weights and data are hashed once per call, however many layers share them
    data_input = _data_input(dataset, split, data_root, digests)
    todo = tuple(layer for layer in layers if force or not _reusable(paths[layer], digests, data_input))
    if not todo:
        return paths

    loaded = registry.load_model(model, device=dev, **model_opts)
    loaded.check_layers(todo)
    data = datasets.load_dataset(dataset, split, data_root=data_root, transform=loaded.preprocess, **data_opts)
    run_spec = {"kind": "features-run", "layers": list(todo), **{k: v for k, v in specs[todo[0]].items() if k != "layer"}}
    parts_dir = cache.artifact_path(root, "features_parts", run_spec, "")
    if force and parts_dir.exists():
        shutil.rmtree(parts_dir)
    arrays = _extract_chunks(loaded, data, todo, parts_dir, run_spec, batch_size=batch_size, device=dev, amp=amp,
                             pool=pool, num_workers=int(run_opts.get("num_workers", 0)),
                             chunk_batches=int(run_opts.get("chunk_batches", 8)),
                             progress=bool(run_opts.get("progress", True)))
    weights_sha = _weights_sha256(loaded, digests)
    inputs = {"weights": cache.input_record(loaded.weights_file, weights_sha)} if weights_sha else {}
    inputs.update(data_input)
    for layer in todo:
        X = arrays[layer]
        if layer == "penultimate":
            _check_penultimate_width(loaded, X.shape[1])
        sidecar = cache.provenance(
            specs[layer], model=model, pretrained=loaded.pretrained, weights_file=str(loaded.weights_file or ""),
            weights_sha256=weights_sha, dataset=dataset, split=split, layer=layer,
            preprocessing=dict(loaded.preprocessing), data_source=dict(data.source), n=int(X.shape[0]),
            d=int(X.shape[1]), n_classes=len(data.class_names), device=str(dev), batch_size=batch_size,
            model_extra=dict(loaded.extra), inputs=inputs)
        save_features(paths[layer], X, arrays["__labels__"], data.class_names, sidecar)
    shutil.rmtree(parts_dir, ignore_errors=True)
    return paths


def _weights_sha256(loaded: registry.LoadedModel, digests: dict[str, str]) -> str | None:
    """sha256 of the loaded weights file (None without one); `digests` is the call's path -> hash memo."""
    f = loaded.weights_file
    if f is None or not Path(f).is_file():
        return None
    if str(f) not in digests:
        digests[str(f)] = cache.sha256_file(f)
    return digests[str(f)]


def _check_penultimate_width(loaded: registry.LoadedModel, width: int) -> None:
    expected = loaded.extra.get("penultimate_dim") if loaded.extra else None
    if expected and int(expected) != width:
        raise RuntimeError(f"{loaded.name}: penultimate width {width} differs from the expected {int(expected)} "
                           f"(data/robustbench/feature_layers.csv); the head module may be wrong")


def _manifest_state(parts_dir: Path, expected: Mapping) -> str:
    """"same" (the chunks belong to this run), "other" (another run's, or no manifest) or "unreadable"."""
    try:
        found = cache.read_json(parts_dir / MANIFEST)
    except FileNotFoundError:
        return "other"
    except cache.CorruptFileError:
        return "unreadable"
    return "same" if found == json.loads(json.dumps(expected, default=str)) else "other"


def _chunk_saved(index: int, n_chunks: int) -> None:
    """Called after each chunk is on disk: nothing to do; the point where the tests interrupt a run."""


def _extract_chunks(loaded, data: datasets.LabelledImages, layers, parts_dir: Path, run_spec, *, batch_size, device,
                    amp, pool, num_workers, chunk_batches, progress):
    """Run the model over `data` chunk by chunk; each chunk (chunk_batches batches) is saved under parts_dir.

    Chunks already on disk with a matching manifest are skipped, so a killed run resumes where it stopped. Chunk
    boundaries are multiples of batch_size, so a resumed run sees exactly the same batches as an uninterrupted one.
    Returns {layer: (N, D) float32, "__labels__": (N,) int64}.
    """
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm.auto import tqdm

    n = len(data)
    chunk = max(1, int(batch_size)) * max(1, int(chunk_batches))
    n_chunks = (n + chunk - 1) // chunk
    manifest = {"run_spec": run_spec, "n": n, "chunk_size": chunk, "batch_size": int(batch_size),
                "n_chunks": n_chunks, "layers": list(layers)}
    state = _manifest_state(parts_dir, manifest) if parts_dir.exists() else "same"
    if state == "unreadable":  # the chunks cannot be matched to a run: keep them aside rather than delete them
        cache.set_aside(parts_dir, f"its {MANIFEST} is unreadable, so its chunks cannot be matched to this run")
    elif state == "other":
        shutil.rmtree(parts_dir)  # parts from a different batch size or data: they cannot be combined
    parts_dir.mkdir(parents=True, exist_ok=True)
    cache.write_json_atomic(parts_dir / MANIFEST, manifest)

    def part(i: int) -> Path:
        return parts_dir / f"chunk_{i:06d}.npz"

    bar = tqdm(total=n, desc=f"{loaded.name} -> {','.join(layers)}", unit="img", disable=not progress)
    parts: list[dict[str, np.ndarray]] = []
    try:
        for i in range(n_chunks):
            lo, hi = i * chunk, min(n, (i + 1) * chunk)
            if part(i).is_file():
                try:  # a chunk left by an earlier run: read it in full before trusting it
                    parts.append(cache.load_npz(part(i), ["labels", *(f"layer{j}" for j in range(len(layers)))]))
                    bar.update(hi - lo)
                    continue
                except cache.CorruptFileError as e:
                    cache.set_aside(part(i), str(e))
            loader = DataLoader(Subset(data.dataset, range(lo, hi)), batch_size=batch_size, shuffle=False,
                                num_workers=num_workers, pin_memory=device.type == "cuda")
            outs: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
            labels: list[np.ndarray] = []
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                for x, y in loader:
                    feats = forward_layers(loaded, x.to(device, non_blocking=True), layers, pool)
                    for layer, f in feats.items():
                        outs[layer].append(f.float().cpu().numpy())
                    labels.append(np.asarray(y, dtype=np.int64))
                    bar.update(len(y))
            arrays = {f"layer{j}": np.concatenate(outs[layer]) for j, layer in enumerate(layers)}
            arrays["labels"] = np.concatenate(labels)
            with cache.atomic_path(part(i)) as tmp:
                cache.write_npz(tmp, arrays)
            parts.append(arrays)
            _chunk_saved(i, n_chunks)
    finally:
        bar.close()

    out = {layer: np.ascontiguousarray(np.concatenate([z[f"layer{j}"] for z in parts]).astype(np.float32, copy=False))
           for j, layer in enumerate(layers)}
    out["__labels__"] = np.concatenate([z["labels"] for z in parts]).astype(np.int64)
    if not np.array_equal(out["__labels__"], data.labels):
        raise RuntimeError("labels read back from the chunks differ from the dataset's labels; delete "
                           f"{parts_dir} and run again")
    return out


def _import_feature_file(dataset: str, *, root, force: bool, n_per_class=None, seed: int = 0, subset=None) -> Path:
    """Bring-your-own features: copy a features file into the cache format (with a sidecar), optionally subsampled.

    The features keep their precision and the labels become class codes named by datasets.load_feature_file's
    rules. `version` in the key: a file imported before those rules (cast to float32, labels coded otherwise) is
    another entry, never reused for this one."""
    if subset is not None:
        raise ValueError("subset applies to ImageNet datasets only")
    src = Path(dataset.split(":", 1)[1]).expanduser().resolve()
    datasets._require(dataset, "given", None)  # a missing file: the error that says how to provide it
    inputs = {"source": cache.input_record(src, cache.sha256_file(src))}
    src_sha = inputs["source"]["sha256"]
    labels_file = src.with_name(f"{src.stem}_labels.npy")
    if src.suffix == ".npy" and labels_file.is_file():  # .npy features keep their labels beside them: key both
        inputs["labels"] = cache.input_record(labels_file, cache.sha256_file(labels_file))
        src_sha = cache.spec_hash({"features": src_sha, "labels": inputs["labels"]["sha256"]}, length=64)
    spec = {"kind": "features", "model": "external", "pretrained": src_sha[:16], "dataset": src.stem, "split": "given",
            "layer": FEATURES_LAYER, "version": 2}
    if n_per_class is not None:
        spec.update(n_per_class=n_per_class, seed=seed)
    path = cache.artifact_path(root, "features", spec, ".npz")
    if not force and cache.verified_sidecar(path, {k: v["sha256"] for k, v in inputs.items()}) is not None:
        return path
    try:
        X, y, names = datasets.load_feature_file(src)
    except datasets.DatasetNotFoundError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        if str(src) in str(e):  # already names the file
            raise
        raise ValueError(f"features file {src} (from {dataset!r}) is not readable: {type(e).__name__}: {e}") from None
    keep = datasets.subsample_per_class(y, n_per_class, seed)
    X, y = X[keep], y[keep]
    sidecar = cache.provenance(spec, model="external", source_file=str(src), source_sha256=src_sha, dataset=dataset,
                               layer=FEATURES_LAYER, n=int(X.shape[0]), d=int(X.shape[1]), n_classes=len(names),
                               dtype=str(X.dtype), inputs=inputs)
    return save_features(path, X, y, names, sidecar)


def check_features_layers(dataset: str, layers) -> None:
    """Raise ValueError unless `layers` of a features:<file> `dataset` are its one layer, FEATURES_LAYER (a no-op
    for any other dataset): another layer would pass every check and fail in the job, which finds no such layer."""
    if not str(dataset).startswith("features:"):
        return
    layers = (layers,) if isinstance(layers, str) else tuple(layers)
    other = [layer for layer in layers if layer != FEATURES_LAYER]
    if other:
        raise ValueError(f"layer {other[0]!r} is not a layer of dataset {dataset!r}: a features file has one layer, "
                         f"{FEATURES_LAYER!r} (the default when no layers are given; a grid of its own can give "
                         "other datasets other layers)")


__all__ = ["extract_features", "load_features", "FeatureSet", "forward_layers", "pool_output", "save_features",
           "feature_spec", "check_features_layers", "FEATURES_LAYER"]
