"""Class-sorted views of a labelled set, and tile sizing.

Sorting samples by class makes every class a contiguous range, so "same class" and "other class" parts of a tile are
rectangles (no per-element masks) and pass 2 touches only the diagonal class blocks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kstar_utils.engine.reference import SQEUCLIDEAN, Distance
from kstar_utils.engine.threads import cpu_threads, run_tiles


@dataclass
class SortedSet:
    """One side of the computation (queries or pool), sorted by class.

    X: (n, D) float64, C-contiguous, rows sorted by class; codes: (n,) int64 sorted class codes; order: (n,) original
    index of each sorted row; starts: (C + 1,) class c occupies rows starts[c]:starts[c + 1]; sqnorm: (n,) float64
    bound norm n + floor, the "norm" every float32 error bound is built from (n = ||x||_2^2 for squared Euclidean
    scores, ||x||_1, ||x||_inf or ||x||_p^p for the others; the floor carries the bound's absolute, underflow part:
    eps * (sqnorm_p + sqnorm_q) = eps * (n_p + n_q) + eta, see bounds.screen_floor).
    """

    X: np.ndarray
    codes: np.ndarray
    order: np.ndarray
    starts: np.ndarray
    sqnorm: np.ndarray

    @classmethod
    def build(cls, X: np.ndarray, codes: np.ndarray, n_classes: int, *, scale: int = 0,
              distance: Distance = SQEUCLIDEAN, floor: float = 0.0, norms: bool = True) -> "SortedSet":
        """X: (n, D) float rows (float16/32/64: the conversion to float64 is exact), codes: (n,) int; the rows are
        multiplied by 2**scale (np.ldexp, exact) as they are copied; sqnorm is `distance.norms` plus floor, or 0 with
        norms=False (a distance evaluated without a screen needs no bound)."""
        order = np.argsort(codes, kind="stable")
        n, d = X.shape
        Xs = np.empty((n, d), dtype=np.float64)
        sq = np.empty(n, dtype=np.float64)

        def block(s):  # gather, convert and square in cache-sized row blocks, on all cores
            Xs[s : s + 2048] = X[order[s : s + 2048]]
            if scale:
                np.ldexp(Xs[s : s + 2048], scale, out=Xs[s : s + 2048])
            sq[s : s + 2048] = distance.norms(Xs[s : s + 2048]) + floor if norms else 0.0

        run_tiles(list(range(0, n, 2048)), block, min(cpu_threads(), 8))
        cs = codes[order]
        starts = np.searchsorted(cs, np.arange(n_classes + 1)).astype(np.int64)
        return cls(Xs, cs, order, starts, sq)

    def slice(self, s0: int, s1: int) -> "SortedSet":
        """The sorted rows s0:s1 as a SortedSet of their own (views, no copy; `order` keeps the set's original
        indices), e.g. a block of queries of the one set."""
        starts = np.clip(self.starts - s0, 0, s1 - s0)
        return SortedSet(self.X[s0:s1], self.codes[s0:s1], self.order[s0:s1], starts, self.sqnorm[s0:s1])

    @property
    def n(self) -> int:
        return self.X.shape[0]

    def class_range(self, c: int) -> tuple[int, int]:
        return int(self.starts[c]), int(self.starts[c + 1])

    def same_class_rects(self, i0: int, i1: int, other: "SortedSet", j0: int, j1: int):
        """Rectangles (r0, r1, c0, c1), relative to the tile [i0, i1) x [j0, j1), where row and column classes agree."""
        rects = []
        for c in range(int(self.codes[i0]), int(self.codes[i1 - 1]) + 1):
            r0, r1 = max(i0, self.starts[c]), min(i1, self.starts[c + 1])
            c0, c1 = max(j0, other.starts[c]), min(j1, other.starts[c + 1])
            if r0 < r1 and c0 < c1:
                rects.append((int(r0 - i0), int(r1 - i0), int(c0 - j0), int(c1 - j0)))
        return rects


def available_ram_bytes() -> int:
    """Free-for-use host memory (MemAvailable), or 4 GiB when it cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def auto_tile_size(device_type: str, free_bytes: int | None = None) -> int:
    """Tile edge T: a T x T float32 tile plus ~2 same-sized temporaries use at most a small share of free memory.

    CPU: at most 2048 (BLAS is already near peak, larger tiles only add memory); CUDA: up to 16384.
    """
    if free_bytes is None:
        free_bytes = available_ram_bytes()
    budget = free_bytes // 8
    t = int((budget / 12) ** 0.5)
    cap = 16384 if device_type == "cuda" else 2048
    return int(max(256, min(cap, t)) // 64 * 64)


def class_blocks(starts: np.ndarray, T: int) -> list[tuple[int, int]]:
    """Split the class-sorted range into blocks of at most T rows whose boundaries are class boundaries.

    A class of >= T/2 rows is cut into near-equal pieces of that class alone; smaller classes are packed, whole and
    consecutive, into shared blocks. Tiles between two blocks of the same big class are then pure same-class (skipped
    by pass 1), and pass 1 computes almost only foreign pairs. starts: (C + 1,) class offsets. Returns [(b0, b1)].
    """
    blocks: list[tuple[int, int]] = []
    open_start = None
    for c in range(starts.shape[0] - 1):
        s, e = int(starts[c]), int(starts[c + 1])
        n = e - s
        if n == 0:
            continue
        if 2 * n >= T:
            if open_start is not None:
                blocks.append((open_start, s))
                open_start = None
            k = -(-n // T)
            cuts = np.linspace(s, e, k + 1).round().astype(int)
            blocks.extend((int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]))
        else:
            if open_start is not None and e - open_start > T:
                blocks.append((open_start, s))
                open_start = None
            if open_start is None:
                open_start = s
    if open_start is not None:
        blocks.append((open_start, int(starts[-1])))
    return blocks


def table_rows(nch: int) -> int:
    """Rows per block when a (rows, nch) pass-1 table is scanned: each temporary stays near 2^22 entries."""
    return max(256, (1 << 22) // max(1, nch))
