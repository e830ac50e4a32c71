"""Device / backend / tile selection and the two passes, on class-sorted data; results in the caller's order."""
from __future__ import annotations

import numpy as np

from .exact import screen_eps, screen_floor
from .layout import SortedSet, auto_tile_size


def resolve_device(device):
    """None -> cuda if available else cpu; strings and torch.device accepted; ValueError for anything else."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda'; got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return dev


def _tile_for(dev, tile_size):
    if tile_size is not None:
        return int(tile_size)
    if dev.type == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(dev)
        return auto_tile_size("cuda", free)
    return auto_tile_size("cpu")


def run_engine(Xq, yq, Xp, yp, *, n_classes: int, device, backend: str, tile_size, progress,
               scale: int = 0, screen: str = "auto") -> np.ndarray:
    """Raw k* (int64, (n,)) of queries Xq (n, D) (float32 or float64 rows of the metric space) with codes yq against
    pool Xp/yp (None: one set). Both are multiplied by 2**scale (exactly) while they are sorted; the screens' error
    bounds assume the result lies in the canonical range of `kstar.scale_exponent` (largest magnitude below 2).
    screen: the torch engine's pass-1 screen ("auto", "bf16", "float32")."""
    from tqdm.auto import tqdm

    from .torch_engine import TorchEngine, exact_float32_matmul

    dev = resolve_device(device)
    T = _tile_for(dev, tile_size)
    eps = screen_eps(Xq.shape[1])
    floor = screen_floor(Xq.shape[1])
    rows = SortedSet.build(Xq, yq, n_classes, scale=scale, floor=floor)
    cols = rows if Xp is None else SortedSet.build(Xp, yp, n_classes, scale=scale, floor=floor)
    if progress is None:
        progress = rows.n * cols.n >= 50_000 * 50_000

    with exact_float32_matmul():
        if backend in ("auto", "torch"):
            eng = TorchEngine(rows, cols, device=dev, tile=T, eps=eps, screen=screen)
            total = len(eng.pass1_tiles()) + len(eng.pass2_tiles())
            with tqdm(total=total, desc="k* tiles", unit="tile", disable=not progress) as bar:
                eng.bar = bar
                m = eng.nearest_foreign()
                counts = eng.count_closer(m)
        elif backend == "faiss":
            from .faiss_engine import FaissEngine, faiss_available

            if not faiss_available():
                raise ValueError("backend='faiss' needs the faiss package (faiss-cpu, or faiss-gpu for CUDA)")
            import faiss

            use_gpu = dev.type == "cuda"
            if use_gpu and faiss.get_num_gpus() == 0:
                raise ValueError("backend='faiss' on CUDA needs faiss-gpu; this faiss build has no GPU support")
            holder = {}

            def fallback():
                if "e" not in holder:
                    holder["e"] = TorchEngine(rows, cols, device=dev, tile=T, eps=eps)
                return holder["e"]

            eng = FaissEngine(rows, cols, eps=eps, use_gpu=use_gpu, fallback=fallback)
            with tqdm(total=2 * n_classes, desc="k* classes", unit="class", disable=not progress) as bar:
                eng.bar = bar
                m = eng.nearest_foreign()
                counts = eng.count_closer(m)
        else:  # pragma: no cover - validated by the caller
            raise ValueError(f"unknown backend {backend!r}")

    if not np.all(np.isfinite(m)):  # every query has a foreign sample when the pool has >= 2 classes
        raise RuntimeError("internal error: a sample has no nearest foreign distance")
    out = np.empty(rows.n, dtype=np.int64)
    out[rows.order] = 1 + counts
    return out
