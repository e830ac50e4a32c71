"""Helpers shared by the model adapters: checkpoint sanity checks, file hashes, weights-only loading."""
from __future__ import annotations

import os
import zipfile
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


def torch_load_trusted(path: str | os.PathLike, map_location="cpu"):
    """torch.load a checkpoint from the user's own cache.

    torch >= 2.6 defaults to weights_only=True, which rejects some older research checkpoints (numpy scalars,
    argparse Namespaces in the pickle). We try the safe mode first and fall back to a full unpickle only for files
    the caller vouches for: this function is only used on files in the user's local cache (never on downloads we
    did not ask for). Errors name the file.
    """
    import pickle

    import torch

    path = check_checkpoint_file(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass  # weights_only refused a global: fall back below
    except (RuntimeError, EOFError, OSError) as e:
        raise CorruptWeightsError(f"cannot read weights file {path}: {e}") from None
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # noqa: BLE001 -- any failure here means the file is unusable; say which file
        raise CorruptWeightsError(f"cannot read weights file {path}: {type(e).__name__}: {e}") from None


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
