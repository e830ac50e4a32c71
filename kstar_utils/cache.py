"""Every cached artefact's path, its provenance sidecar and atomic writes.

An artefact is keyed by a *spec*: a JSON-able mapping of everything that changes the result. Its file name is a
readable slug plus a short hash of the canonical spec, so two runs that differ in any input never share a file, and a
run asked again with the same spec finds its file and skips the work.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

SIDECAR_SUFFIX = ".json"


def canonical_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


def spec_hash(spec: Mapping[str, Any], length: int = 10) -> str:
    """Short, stable hash of a spec (order of keys does not matter)."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:length]


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:80] or "x"


def artifact_path(root: str | os.PathLike, kind: str, spec: Mapping[str, Any], suffix: str, *, slug_keys=None) -> Path:
    """The one place that names cached files: root/kind/<slug>__<hash><suffix>.

    kind: a folder such as "features", "kstar", "tables"; slug_keys: spec keys whose values make the readable part
    (default: model, layer, dataset, split where present).
    """
    keys = slug_keys or [k for k in ("model", "layer", "dataset", "split", "metric") if k in spec]
    slug = "_".join(slugify(spec[k]) for k in keys) or kind
    return Path(root) / kind / f"{slug}__{spec_hash(spec)}{suffix}"


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on error it is removed.

    Readers therefore see either the old complete file or the new complete file, never a partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return Path(path)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape numeric results."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("kstar-utils", "numpy", "scipy", "torch", "torchvision", "open_clip_torch", "timm", "robustbench", "faiss-cpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(spec: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """Sidecar content: the spec, its hash, library versions, date and anything the producer adds (shapes, hashes)."""
    return {
        "spec": dict(spec),
        "spec_hash": spec_hash(spec),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        **extra,
    }


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads(sidecar_path(path).read_text())


def is_complete(path: str | os.PathLike) -> bool:
    """A cached artefact counts only when both the file and its sidecar exist (the sidecar is written last)."""
    path = Path(path)
    return path.exists() and sidecar_path(path).exists()
