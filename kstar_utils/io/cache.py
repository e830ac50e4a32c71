"""Every cached artefact's path, its provenance sidecar, content hashes and atomic writes.

An artefact is keyed by a *spec*: a JSON-able mapping of everything that changes the result. Its file name is a
readable slug plus a short hash of the canonical spec, so two runs that differ in any input never share a file, and a
run asked again with the same spec finds its file and skips the work. A derived artefact's spec holds the sha256 of
its input files' bytes, so new input content is a new artefact.

The sidecar (``<file>.json``) records the file's own sha256 (``sha256``) and, under ``inputs``,
``{role: {"path", "sha256"}}`` of every file it was computed from. It is written before the file becomes visible
(:func:`write_artifact`), so a file without its sidecar is never one being written. :func:`verified_sidecar` checks
both before a cached file is reused; a file that fails, or whose sidecar is unreadable or malformed, is renamed
``<name>.corrupt-<UTC time>`` beside itself (:func:`set_aside`, with a :class:`CorruptCacheWarning` naming it) and the
caller rebuilds it.

Written files honour the process umask (0644 under umask 022), atomic ones included.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import os
import platform
import re
import tempfile
import threading
import warnings
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from kstar_utils.io.paths import outputs_root

SIDECAR_SUFFIX = ".json"
CORRUPT_INFIX = ".corrupt-"


class CorruptFileError(ValueError):
    """A file that cannot be read as what it claims to be (truncated, garbage, wrong format); the message names it."""


class CorruptCacheWarning(UserWarning):
    """A cached file was damaged or did not match its sidecar; it was set aside and is being rebuilt."""


# ---------------------------------------------------------------------------------------------- content hashes
def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (constant memory for multi-GB feature files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_digest(path: str | os.PathLike) -> str:
    """sha256 standing for what a file or folder holds. A file: its bytes. A folder (an image dataset): the sorted
    list of every file below it with its size and modification time, so replacing, adding or removing an image
    changes the digest without reading millions of images; a copy made with times preserved (cp -p, rsync -a)
    keeps it."""
    path = Path(path)
    if not path.is_dir():
        return sha256_file(path)
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            st = full.stat()
            h.update(f"{full.relative_to(path).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def canonical_json(spec: Mapping[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)


def spec_hash(spec: Mapping[str, Any], length: int = 10) -> str:
    """Short, stable hash of a spec (order of keys does not matter)."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:length]


def slugify(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-")[:80] or "x"


def artifact_path(root: str | os.PathLike | None, kind: str, spec: Mapping[str, Any], suffix: str, *,
                  slug_keys=None) -> Path:
    """The one place that names cached files: root/kind/<slug>__<hash><suffix>.

    root: the results folder (None: io.paths.outputs_root(), the same whatever the working directory); kind: a
    folder such as "features", "kstar", "tables"; slug_keys: spec keys whose values make the readable part
    (default: model, layer, dataset, split where present).
    """
    keys = slug_keys or [k for k in ("model", "layer", "dataset", "split", "metric") if k in spec]
    slug = "_".join(slugify(spec[k]) for k in keys) or kind
    return outputs_root(root) / kind / f"{slug}__{spec_hash(spec)}{suffix}"


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, e.g. 0o022.

    Linux reports it in /proc/self/status; elsewhere it can only be read by setting it, which would briefly change
    the mode of files other threads create, so that fallback is serialised and restores the value at once.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode open() gives a new file: 0o666 less the umask (0o644 under umask 022)."""
    return 0o666 & ~current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename, on error it is removed.

    Readers therefore see either the old complete file or the new complete file, never a partial one. The file gets
    the mode a plain open() would give it: mkstemp creates 0600 files, which other users of a shared cache could not
    read.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    try:
        os.chmod(tmp, default_file_mode())
    finally:
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


# ---------------------------------------------------------------------------------------------- npz files
def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """np.savez, but byte-for-byte reproducible: fixed member timestamps, so equal arrays give an equal file (and an
    equal sha256, which keys every artefact derived from it). Writes `path` directly; wrap it in atomic_path."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())


def load_npz(source: str | os.PathLike | bytes, required=(), *,
             name: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Every array of an .npz, read in full; each name in `required` must be among them.

    source: a path or the file's bytes (then `name` is the path used in messages). Reading every member in full
    makes zipfile check its CRC, so a damaged file fails here, as CorruptFileError naming the file, rather than later
    with a bare BadZipFile.
    """
    label = name if name is not None else source
    try:
        z = np.load(io.BytesIO(source) if isinstance(source, bytes) else source, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with z:
            missing = [k for k in required if k not in z.files]
            if missing:
                raise KeyError(f"no array(s) {missing}; it has {z.files}")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise CorruptFileError(f"{label} is not a readable .npz file ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------- artefacts
def write_artifact(path: str | os.PathLike, write: Callable[[Path], None],
                   sidecar: Mapping[str, Any]) -> dict[str, Any]:
    """Write a file through `write(tmp_path)` and its sidecar, each atomically; returns the sidecar.

    The sidecar gets `sha256`, the hash of the bytes just written, so a later reuse can prove the file is intact. It
    is written first, naming the hash of the temporary file, and only then is the file renamed into place: a reader
    never sees a new file without its sidecar (which it would have to set aside as damaged). While an existing file
    is being replaced, a reader may briefly see the old file beside the new sidecar, older than it: verified_sidecar
    takes that for a replacement in progress, not for damage.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        write(tmp)
        meta = {**dict(sidecar), "sha256": sha256_file(tmp)}
        write_json_atomic(sidecar_path(path), meta)
    return meta


def input_record(path: str | os.PathLike, sha256: str) -> dict[str, str]:
    """One entry of a sidecar's `inputs`: {"path", "sha256"}."""
    return {"path": str(path), "sha256": sha256}


def set_aside(path: str | os.PathLike, reason: str, *, with_sidecar: bool = False,
              then: str = "rebuilt") -> Path | None:
    """Rename a damaged cached file to `<name>.corrupt-<UTC time>` beside itself and warn (CorruptCacheWarning),
    naming it, why, and what happens `then`.

    Nothing is deleted, so the file can still be inspected. with_sidecar: move the sidecar along (same suffix), so
    the record of what the file should have been stays with it. Returns the new path (None when the file was
    already gone, e.g. moved by a concurrent reader).
    """
    path = Path(path)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    dest = path.with_name(f"{path.name}{CORRUPT_INFIX}{stamp}")
    try:
        os.replace(path, dest)
    except FileNotFoundError:
        return None
    moved = [dest.name]
    side = sidecar_path(path)
    if with_sidecar and side.exists():
        side_dest = side.with_name(f"{side.name}{CORRUPT_INFIX}{stamp}")
        try:
            os.replace(side, side_dest)
            moved.append(side_dest.name)
        except FileNotFoundError:
            pass
    warnings.warn(f"{path}: {reason}; set aside as {' and '.join(moved)}, {then}", CorruptCacheWarning, stacklevel=3)
    return dest


def verified_sidecar(path: str | os.PathLike, inputs: Mapping[str, str] | None = None, *,
                     adopt: Callable[[Path], None] | None = None) -> dict[str, Any] | None:
    """The sidecar of a cached file that may be reused as it is, else None (the caller rebuilds the file).

    Reuse needs: the file and its sidecar, a sidecar that parses, the file's sha256 equal to the sidecar's `sha256`
    (catches truncation, garbage and replacement) and, for each {role: sha256} of `inputs`, the same hash recorded
    under the sidecar's inputs[role] (the file was computed from that content). A damaged file, or a file whose
    sidecar is missing, unreadable or malformed (check_sidecar), is set aside with a CorruptCacheWarning. A file whose
    inputs differ is merely stale, and a file older than a sidecar it does not match is being replaced
    (write_artifact): None, and the rebuild replaces it.

    Sidecars written before files carried their hash have no `sha256`: with `adopt` (a check that raises
    CorruptFileError for a damaged file) such a file is checked, its hash recorded and reused; without, it is rebuilt.
    The file is hashed once per call.
    """
    path = Path(path)
    side = sidecar_path(path)
    if not path.exists():
        return None  # never built, being written (its sidecar comes first) or removed: the rebuild writes both
    if not side.exists():
        # never the case while a file is written (the sidecar comes first)
        set_aside(path, f"has no provenance sidecar {side.name} (deleted, or a write by an older version was "
                        f"interrupted)")
        return None
    try:
        meta = read_sidecar(path)
    except CorruptFileError as e:
        set_aside(path, f"its sidecar is unreadable ({e})", with_sidecar=True)
        return None
    recorded = meta.get("sha256")
    if recorded is None:
        if adopt is None:
            return None
        try:
            adopt(path)
        except CorruptFileError as e:
            set_aside(path, str(e), with_sidecar=True)
            return None
        meta["sha256"] = sha256_file(path)
        write_json_atomic(side, meta)
    else:
        actual = sha256_file(path)
        if actual != recorded:
            if _being_replaced(path, side):
                return None
            set_aside(path, f"content (sha256 {actual[:12]}, {path.stat().st_size} bytes) differs from the sha256 "
                            f"{str(recorded)[:12]} its sidecar records: truncated, damaged or replaced",
                      with_sidecar=True)
            return None
    recorded_inputs = meta.get("inputs") or {}
    for role, sha in (inputs or {}).items():
        if role not in recorded_inputs or recorded_inputs[role]["sha256"] != sha:
            return None
    return meta


def _being_replaced(path: Path, side: Path) -> bool:
    """Whether a file that does not match its sidecar is older than the sidecar: write_artifact writes the sidecar
    before it renames the new file into place, so this is an old file about to be replaced (or whose replacement was
    interrupted), not one damaged since its sidecar was written (damage by writing makes the file newer). Both times
    come from the file system's own clock. Such a file is not reused but not set aside either: it is rebuilt."""
    try:
        return path.stat().st_mtime_ns < side.stat().st_mtime_ns
    except OSError:
        return True  # one of them went away meanwhile: someone else is rebuilding or setting it aside


def changed_inputs(meta: Mapping[str, Any], digests: dict[str, str] | None = None, *,
                   missing_ok: bool = False) -> list[str]:
    """Paths among a sidecar's recorded `inputs` (files or folders, see content_digest) whose content is no longer
    the recorded one.

    digests: a path -> sha256 memo shared across calls, so a file used by several artefacts is hashed once.
    missing_ok: a recorded input that no longer exists counts as unchanged (weights moved out of a cache: the key
    still identifies them); otherwise it counts as changed. A record that cannot be checked (`inputs` not a mapping,
    an entry not {path: str, sha256: str}; see check_sidecar) counts as changed too, named by what is wrong with it,
    so the caller rebuilds rather than trusting it.
    """
    digests = {} if digests is None else digests
    changed = []
    inputs = meta.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        return [f"inputs (malformed: {_shown(inputs)})"]
    for role, rec in inputs.items():
        if not _is_input_record(rec):
            changed.append(f"inputs[{role!r}] (malformed: {_shown(rec)})")
            continue
        src = rec["path"]
        if src not in digests:
            if not Path(src).exists():
                if not missing_ok:
                    changed.append(src)
                continue
            digests[src] = content_digest(src)
        if digests[src] != rec.get("sha256"):
            changed.append(src)
    return changed


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


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from a file; CorruptFileError naming the file when it is not one (FileNotFoundError stays)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CorruptFileError(f"{path} is not readable JSON ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CorruptFileError(f"{path} holds a JSON {type(obj).__name__}, not an object")
    return obj


def check_sidecar(meta: Mapping[str, Any], where: str | os.PathLike = "sidecar") -> None:
    """Raise CorruptFileError naming `where` unless `meta` has the shape the cache relies on: `sha256` (when present)
    a hex sha256, `spec` (when present) a mapping, `inputs` (when present and not null) a mapping of role to
    {"path": str, "sha256": str}. Other keys are the producers' own and are not checked."""
    def bad(what: str) -> CorruptFileError:
        return CorruptFileError(f"{where} is not a valid sidecar: {what}")

    sha = meta.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise bad(f"sha256 is {_shown(sha)}, not a hex sha256")
    if "spec" in meta and not isinstance(meta["spec"], Mapping):
        raise bad(f"spec is {_shown(meta['spec'])}, not a mapping")
    inputs = meta.get("inputs")
    if inputs is None:
        return
    if not isinstance(inputs, Mapping):
        raise bad(f"inputs is {_shown(inputs)}, not a mapping of role to {{path, sha256}}")
    for role, rec in inputs.items():
        if not _is_input_record(rec):
            raise bad(f"inputs[{role!r}] is {_shown(rec)}, not {{path: str, sha256: str}}")


def _is_input_record(rec: Any) -> bool:
    """Whether `rec` is an entry of a sidecar's `inputs` as input_record writes it: {"path": str, "sha256": str}."""
    return isinstance(rec, Mapping) and isinstance(rec.get("path"), str) and isinstance(rec.get("sha256"), str)


def _shown(value: Any) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text[:60]}{'...' if len(text) > 60 else ''})"


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of `path` (FileNotFoundError when there is none, CorruptFileError naming it when unreadable or
    malformed: check_sidecar)."""
    side = sidecar_path(path)
    meta = read_json(side)
    check_sidecar(meta, side)
    return meta
