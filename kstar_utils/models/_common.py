"""Helpers shared by the model adapters: checkpoint sanity checks, file hashes, and the one way checkpoints are read
(weights only, unless the user trusts the file)."""
from __future__ import annotations

import os
import pickle
import re
import threading
import zipfile
from contextlib import contextmanager
from pathlib import Path

from kstar_utils.io.cache import sha256_file  # noqa: F401 -- the adapters' import path; the one implementation is in cache
from kstar_utils.models import CorruptWeightsError

# torch.save writes a zip archive (PK..) since torch 1.6; older checkpoints are plain pickles (protocol 2+ starts 0x80)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def check_checkpoint_file(path: str | os.PathLike) -> Path:
    """Fail fast, naming the file, when `path` cannot be a torch checkpoint.

    Catches the usual broken downloads in milliseconds, before torch.load: empty files, HTML pages saved instead of
    the weights (Google Drive quota pages start with '<'), and zip archives cut short (their central directory, at the
    end of the file, is missing). Returns the path.
    """
    path = Path(path)
    size = path.stat().st_size
    hint = "delete it and provide the file again (see docs/models_and_data.md)"
    if size == 0:
        raise CorruptWeightsError(f"weights file {path} is empty; {hint}")
    with open(path, "rb") as f:
        head = f.read(512)
    stripped = head.lstrip()
    if stripped[:1] == b"<" or b"<html" in head.lower() or b"<!doctype" in head.lower():
        raise CorruptWeightsError(f"weights file {path} is an HTML page, not a checkpoint (a failed download?); {hint}")
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip() if size < (64 << 20) else None  # CRC check only where it is cheap
        except (zipfile.BadZipFile, OSError) as e:
            raise CorruptWeightsError(f"weights file {path} ({size} bytes) is truncated or corrupt ({e}); {hint}") from None
        if bad is not None:
            raise CorruptWeightsError(f"weights file {path} has a corrupt member {bad!r}; {hint}")
    elif not head.startswith(_PICKLE_MAGIC) and not path.suffix == ".safetensors":
        raise CorruptWeightsError(f"weights file {path} does not look like a torch checkpoint "
                                  f"(starts with {head[:8]!r}); {hint}")
    return path


#: how to say "I trust this file", in each place a user can say it
_OPT_IN = ("`trust_checkpoint: true` in the study's extract_options, extract_options={'trust_checkpoint': True} in a "
           "notebook, or trust_checkpoint=True in Python (load_model, extract_features)")
# torch reads these at every torch.load; one lock, because they are process-wide and threads share a process
_ENV_LOCK = threading.RLock()
_FORCE_SAFE, _FORCE_FULL = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def untrusted_message(where: str, detail: str = "") -> str:
    """One line: `where` was refused because reading it needs a full unpickle, and how to opt in."""
    what = f" (it pickles {detail})" if detail else ""
    return (f"refused to load {where}: reading it needs a full unpickle{what}, which runs any code stored in the "
            f"file. If you trust where the file came from, opt in explicitly: {_OPT_IN}")


def _refusal_detail(error: BaseException) -> str:
    """What torch's weights-only unpickler refused, e.g. 'os.makedirs', from its message."""
    match = re.search(r"GLOBAL (\S+)", str(error))
    if match:
        return match.group(1)
    tail = str(error).rsplit("WeightsUnpickler error:", 1)[-1]
    return " ".join(tail.split())[:120] if tail != str(error) else ""


def _is_refusal(error: BaseException) -> bool:
    """Whether `error` is torch's weights-only unpickler refusing something a full unpickle would do."""
    return isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in str(error)


@contextmanager
def reading_checkpoint(where, *, trust: bool = False):
    """Around any read of checkpoint `where` (a path, or several named in one string), by torch.load or by a
    library's own loader (RobustBench, timm, open_clip, torchvision's hub).

    Untrusted (the default), every torch.load inside is held to weights_only=True, also where a library asks for a
    full unpickle or does not say (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``, which torch applies over an explicit
    weights_only=False), and a refusal becomes UntrustedCheckpointError naming `where` and the opt-in. Trusted, a
    torch.load that does not say is allowed a full unpickle (RobustBench's loader does not say). Other failures
    become CorruptWeightsError naming `where`. The environment is restored afterwards.
    """
    from kstar_utils.models import CorruptWeightsError, UntrustedCheckpointError, WeightsNotFoundError

    set_, unset = (_FORCE_FULL, _FORCE_SAFE) if trust else (_FORCE_SAFE, _FORCE_FULL)
    with _ENV_LOCK, environ_set(**{set_: "1", unset: None}):  # torch refuses to load at all when both are set
        try:
            yield
        except (CorruptWeightsError, UntrustedCheckpointError, WeightsNotFoundError, MemoryError):
            raise
        except Exception as e:  # noqa: BLE001 -- whatever the reader raised, one line naming the file
            if not trust and _is_refusal(e):
                raise UntrustedCheckpointError(untrusted_message(str(where), _refusal_detail(e))) from None
            raise CorruptWeightsError(f"cannot load weights {where}: {type(e).__name__}: "
                                      f"{' '.join(str(e).split())[:300]}") from None


def load_checkpoint(path: str | os.PathLike, *, trust: bool = False, map_location="cpu"):
    """The object saved in checkpoint `path` (a state dict, or a mapping holding one), read without running code.

    torch.load with weights_only=True rebuilds only tensors, plain containers and numbers. A file that needs more
    (research checkpoints that pickle numpy scalars or argparse Namespaces; a crafted file whose pickle calls a
    function) is refused with UntrustedCheckpointError, naming the file and the opt-in, unless `trust` (the user's
    explicit trust_checkpoint=True) allows a full unpickle. ``.safetensors`` files hold no code (torch.load reads
    them with the safetensors library). Broken files (empty, an HTML page, a truncated zip) raise CorruptWeightsError
    naming the file, in milliseconds, before any unpickling.
    """
    import torch

    path = check_checkpoint_file(path)
    with reading_checkpoint(path, trust=trust):
        return torch.load(path, map_location=map_location, weights_only=not trust)


def to_tensor_if_needed(x):
    """Dataset items may be PIL images or already tensors (digits); return a float CHW tensor."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.float()
    from torchvision.transforms.functional import to_tensor

    return to_tensor(x)


def pil_transform(transform):
    """Wrap a PIL-image transform so it also accepts (C, H, W) tensors in [0, 1] (converted to PIL first)."""

    def apply(x):
        import torch

        if isinstance(x, torch.Tensor):
            from torchvision.transforms.functional import to_pil_image

            x = to_pil_image(x)
        return transform(x)

    apply.transform = transform  # keep the wrapped transform inspectable
    return apply


@contextmanager
def environ_set(**values):
    """Environment variables set for the block (a value of None removes the variable), restored afterwards."""
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
