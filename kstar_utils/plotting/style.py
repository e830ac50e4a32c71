"""One look for every figure: widths, fonts, colours, model markers, names of the quantities, saving, and a check that
no two pieces of text overlap."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

from kstar_utils.models import short_name  # noqa: F401  (the figures' model names)
from kstar_utils.io.cache import atomic_path
from kstar_utils.method.skewness import CLUSTERED, FRACTURED, OVERLAPPED, UNDEFINED

# seaborn 0.13 calls matplotlib APIs that matplotlib 3.11 deprecates; nothing for a reader of a figure to act on
warnings.filterwarnings("ignore", message="vert: bool was deprecated", module="seaborn")
warnings.filterwarnings("ignore", message="The set_bad function will be deprecated", module="seaborn")

#: every figure is this wide (inches) and saved at this resolution, so the report and the notebooks show them alike
WIDTH = 9.0
DPI = 150
PATTERN_COLORS = {FRACTURED: "#d95f02", OVERLAPPED: "#7570b3", CLUSTERED: "#1b9e77", UNDEFINED: "#999999"}
COEFFICIENT_NAMES = {"approx_skewness": "Γ' (approximate skewness)", "true_skewness": "Γ (true skewness)",
                     "approx_skewness_weighted": "Γ' weighted by class size", "skew_spread": "spread of γ_c"}
ACCURACY_NAMES = {"clean_acc": "clean accuracy", "robust_acc": "robust accuracy", "zeroshot_acc": "zero-shot accuracy",
                  "zeroshot_avg": "zero-shot accuracy (38-dataset mean)",
                  "zeroshot_acc_computed": "zero-shot accuracy (computed)"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")


def set_style() -> None:
    """Seaborn's paper style, one font size for every figure, constrained layout (so a saved figure keeps WIDTH)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.15)
    matplotlib.rcParams.update({"figure.dpi": 100, "savefig.dpi": DPI, "figure.constrained_layout.use": True,
                                "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
                                "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.titlesize": 12})


def figure(height: float, ncols: int = 1, nrows: int = 1, **kw):
    """A WIDTH-wide figure of `height` inches with a grid of axes (always 2-D)."""
    set_style()
    return plt.subplots(nrows, ncols, figsize=(WIDTH, height), squeeze=False, **kw)


def heatmap(grid, *, title: str = "", xlabel: str = "", ylabel: str = "", rotation: int = 35, **kw):
    """A WIDTH-wide annotated seaborn heatmap of a table, one row height per row; kw goes to seaborn.heatmap."""
    fig, axes = figure(0.42 * grid.shape[0] + 1.7)
    kw = {"annot_kws": {"fontsize": 7}, "linewidths": 0.3, **kw}
    sns.heatmap(grid, ax=axes[0, 0], **kw)
    axes[0, 0].set_xlabel(xlabel)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].tick_params(axis="x", rotation=rotation)
    if title:
        axes[0, 0].set_title(title)
    return fig


def model_styles(models: Sequence[str]) -> dict[str, tuple]:
    """A colour and a marker per model, stable for a given model list, used by every figure of that list."""
    palette = sns.color_palette("tab10", 10) + sns.color_palette("Dark2", 8)
    return {m: (palette[i % len(palette)], _MARKERS[i % len(_MARKERS)]) for i, m in enumerate(models)}


def fmt_skew(s: float) -> str:
    return f"{s:+.2f}" if np.isfinite(s) else ("+inf" if s > 0 else "-inf" if s < 0 else "n/a")


def save_figure(fig, path: str | Path, *, close: bool = True) -> Path:
    """Write a figure atomically (format from the suffix: .png, .pdf, .svg) at DPI and, by default, close it so that
    notebooks show the saved file once rather than the live figure a second time."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=DPI)
    if close:
        plt.close(fig)
    return path


def text_overlaps(fig, *, pad: float = 0.0) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts of `fig` whose footprints overlap (titles, labels, tick labels, legends,
    annotations), drawn as saved; a rotated text's footprint is its rotated box, not the upright box around it (which
    makes neighbouring slanted tick labels look as if they collide). A figure a reader can read returns []."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    shapes = []
    for t in _texts(fig):
        if not t.get_visible() or not t.get_text().strip():
            continue
        corners = _footprint(t, renderer, 1 + pad)
        if corners is not None:
            shapes.append((t.get_text(), corners))
    out = []
    for i in range(len(shapes)):
        for j in range(i + 1, len(shapes)):
            if _convex_overlap(shapes[i][1], shapes[j][1]):
                out.append((shapes[i][0], shapes[j][0]))
    return out


def _footprint(t, renderer, scale: float) -> np.ndarray | None:
    """The 4 corners (display pixels) of a text's box, rotated with the text, scaled by `scale` about its centre.
    A rotated box's centre is the centre of the upright box around it; its size is the text's unrotated extent."""
    bb = t.get_window_extent(renderer)
    if bb.width <= 0 or bb.height <= 0:
        return None
    angle = t.get_rotation()
    w, h = bb.width, bb.height
    if angle % 180:
        t.set_rotation(0)
        flat = t.get_window_extent(renderer)
        t.set_rotation(angle)
        w, h = flat.width, flat.height
    half = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) * (scale / 2)
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    return half @ np.array([[c, s], [-s, c]]) + [(bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2]


def _convex_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex polygons (k, 2) share interior: no edge normal of either separates them."""
    for poly in (a, b):
        for k in range(len(poly)):
            edge = poly[(k + 1) % len(poly)] - poly[k]
            normal = np.array([-edge[1], edge[0]])
            pa, pb = a @ normal, b @ normal
            if pa.max() <= pb.min() + 1e-9 or pb.max() <= pa.min() + 1e-9:
                return False
    return True


def _texts(fig) -> Iterable:
    from matplotlib.text import Text

    # tick labels whose tick lies outside the axis' view are kept by matplotlib but never drawn
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(1.0, abs(hi - lo))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not lo - tol <= tick.get_loc() <= hi + tol:
                    hidden.update({id(tick.label1), id(tick.label2)})
    seen = set(hidden)
    for t in fig.findobj(Text):
        if id(t) not in seen:
            seen.add(id(t))
            yield t


SHOW_DPI = 100  # what a notebook embeds: WIDTH x 100 px, smaller than the saved file (at DPI)


def show(fig, folder: str | Path, name: str, *, fmt: str = "png") -> None:
    """Save `fig` as <folder>/<name>.<fmt> (full resolution) and display it in the notebook at SHOW_DPI, which keeps
    stored notebooks small."""
    import io

    from IPython.display import Image, display

    from kstar_utils.io.cache import slugify

    save_figure(fig, Path(folder) / f"{slugify(name)}.{fmt}", close=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=SHOW_DPI)
    plt.close(fig)
    display(Image(data=buf.getvalue()))
