"""One look for every figure: widths, fonts, colours, how models are drawn (colour by training kind, marker by
architecture family, the same in every figure and the study report), names of the quantities, saving, labels that
keep clear of each other, and a check that no two pieces of text overlap."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import warnings

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.lines import Line2D

from kstar_utils.models import short_name  # noqa: F401  (the figures' model names)
from kstar_utils.analysis.findings import format_eps
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
                     "approx_skewness_weighted": "Γ' weighted by class size", "skew_spread": r"spread of $\gamma_c$"}
ACCURACY_NAMES = {"clean_acc": "clean accuracy", "robust_acc": "robust accuracy",
                  "robust_acc_linf_2_255": "robust accuracy (L∞ 2/255)",
                  "robust_acc_linf_8_255": "robust accuracy (L∞ 8/255)", "corruption_acc": "corruption accuracy",
                  "jpeg_acc": "JPEG accuracy", "zeroshot_acc": "zero-shot accuracy",
                  "zeroshot_avg": "zero-shot accuracy (38-dataset mean)",
                  "zeroshot_acc_computed": "zero-shot accuracy (computed)"}
#: Γ' and class skews γ_c share one colour scale in every heatmap, symmetric about 0 (values beyond are drawn at
#: the limit and written out), so two jobs' figures can be compared by colour
SKEW_LIMIT = 3.0

#: one colour per training kind (models.TRAINING_KINDS), Okabe-Ito colours that stay apart for colour-blind readers
TRAINING_COLORS = {"standard": "#0072B2", "adversarial": "#D55E00", "certified": "#009E73",
                   "own-fine-tune": "#CC79A7", "own-training": "#E69F00", "language-image": "#56B4E9",
                   "random": "#999999"}
TRAINING_LABELS = {"own-fine-tune": "own fine-tune", "own-training": "own training"}
OTHER = "other"  # a model no source describes (imported features, a test's made-up name)
OTHER_COLOR = "#444444"
#: one marker per architecture family; families not listed take the spare markers in order of appearance
FAMILY_MARKERS = {"resnet": "o", "cnn-a-wide": "s", "resnet-nobn": "D", "marabou": "^", "convsmall": "v",
                  "cnn-base": "P", "cnn-deep": "X", "shufflenet": "*", "small-cnn": "h", "WideResNet": "p"}
_SPARE_MARKERS = ("<", ">", "d", "H", "8", "p", "h", "o", "s", "^")
#: up to this many models every one is named in a figure (with training and family alone, two models of the same
#: kind and family would look alike); above it only the models a caller asks for
AUTO_LABEL = 10


@dataclass(frozen=True)
class ModelLook:
    """How one model is drawn: its display name, training kind and family (from its source) and their colour and
    marker."""

    name: str
    short: str
    training: str
    family: str
    color: str
    marker: str


@functools.lru_cache(maxsize=4096)
def _info(name: str) -> tuple[str, str, str]:
    from kstar_utils import models

    try:
        info = models.describe(name)
    except (ValueError, ImportError, KeyError):
        return str(name).split(":", 1)[-1], OTHER, OTHER
    return info.short, info.training, info.family or OTHER


def model_looks(models: Sequence[str]) -> dict[str, ModelLook]:
    """{model: ModelLook} for a list of registry names: colour by training kind (TRAINING_COLORS), marker by
    family (FAMILY_MARKERS, spare markers for other families in order of appearance)."""
    infos = {m: _info(str(m)) for m in dict.fromkeys(models)}
    spare = iter(_SPARE_MARKERS * 4)
    markers = dict(FAMILY_MARKERS)
    for _, _, fam in infos.values():
        if fam not in markers:
            markers[fam] = "o" if fam == OTHER else next(spare)
    return {m: ModelLook(m, short, kind, fam, TRAINING_COLORS.get(kind, OTHER_COLOR), markers[fam])
            for m, (short, kind, fam) in infos.items()}


def model_styles(models: Sequence[str]) -> dict[str, tuple]:
    """{model: (colour, marker)}: colour by training kind, marker by architecture family (model_looks), the same
    for a model in every figure."""
    return {m: (look.color, look.marker) for m, look in model_looks(models).items()}


def training_label(kind: str) -> str:
    return TRAINING_LABELS.get(kind, kind)


def labelled(models: Sequence[str], label) -> list[str]:
    """The models to name in a figure: label None names all of 2 to AUTO_LABEL models, else none; True all;
    False none; a list names those (registry or display names), in the figure's order. An unknown name raises."""
    models = list(dict.fromkeys(models))
    if label is None:  # one model needs no name in its own figure
        return models if 2 <= len(models) <= AUTO_LABEL else []
    if label is True:
        return models
    if label is False:
        return []
    wanted = [label] if isinstance(label, str) else list(label)
    by_short = {short_name(m): m for m in models}
    out = []
    for w in wanted:
        m = w if w in models else by_short.get(w)
        if m is None:
            raise ValueError(f"label: {w!r} is not a model of this figure; its models are "
                             f"{[short_name(m) for m in models]}")
        out.append(m)
    return [m for m in models if m in set(out)]


def _header(text: str) -> Line2D:
    return Line2D([], [], linestyle="", marker="", label=text)


def _kind_handles(looks: Iterable[ModelLook], ms: float) -> list[Line2D]:
    kinds = list(dict.fromkeys(lk.training for lk in looks))
    order = list(TRAINING_COLORS) + [OTHER]
    kinds.sort(key=lambda k: order.index(k) if k in order else len(order))
    return [Line2D([], [], color=TRAINING_COLORS.get(k, OTHER_COLOR), marker="o", linestyle="", markersize=ms,
                   label=training_label(k)) for k in kinds]


def _family_handles(looks: Iterable[ModelLook], ms: float, connected: Sequence[str] = ()) -> list[Line2D]:
    fams = {}
    for lk in looks:
        fams.setdefault(lk.family, lk.marker)
    return [Line2D([], [], color="0.35", marker=mk, linestyle="-" if f in connected else "", lw=1.0,
                   markersize=ms, label=f) for f, mk in fams.items()]


def style_legend(fig, looks: Iterable[ModelLook], *, where: str = "right", connected: Sequence[str] = (),
                 extra: Sequence[Line2D] = (), extra_title: str = ""):
    """One compact legend for a figure's models: their training kinds (colours) and their families (markers), each
    under a bold heading, instead of one entry per model; `connected` families are shown with their line. where:
    "right" (one column beside the panels) or "below" (two rows under them). extra: more handles under
    `extra_title` (e.g. the trend line)."""
    looks = list(looks)
    ms = 6.5
    sections = [("training", _kind_handles(looks, ms)), ("architecture", _family_handles(looks, ms, connected))]
    if extra:
        sections.append((extra_title, list(extra)))
    if where == "right":
        handles = []
        for title, hs in sections:
            handles += [_header(title)] + hs
        leg = fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, handletextpad=0.4,
                         labelspacing=0.35)
    else:
        # rows laid out column by column: one row per section, blank cells pad the shorter ones
        rows = [[_header(title + ":")] + hs for title, hs in sections]
        ncols = max(len(r) for r in rows)
        blank = Line2D([], [], linestyle="", marker="", label=" ")
        grid = [r + [blank] * (ncols - len(r)) for r in rows]
        handles = [grid[i][j] for j in range(ncols) for i in range(len(grid))]
        leg = fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False, ncols=ncols,
                         handletextpad=0.3, columnspacing=1.0)
    titles = {t for t, _ in sections} | {t + ":" for t, _ in sections}
    for text in leg.get_texts():
        if text.get_text() in titles:
            text.set_fontweight("bold")
    return leg


def _marker_boxes(ax, renderer) -> list[np.ndarray]:
    """Display-pixel boxes (x0, y0, x1, y1) of every marker drawn on `ax` (scatter points and line markers)."""
    from matplotlib.collections import PathCollection

    px = ax.figure.dpi / 72
    boxes = []
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and len(coll.get_offsets()):
            xy = coll.get_offset_transform().transform(coll.get_offsets())
            sizes = coll.get_sizes()
            half = (np.sqrt(sizes if sizes.size else np.array([36.0])) * px / 2)
            half = np.broadcast_to(half, (len(xy),))
            boxes += [np.array([x - h, y - h, x + h, y + h]) for (x, y), h in zip(xy, half)]
    for line in ax.get_lines():
        if line.get_marker() not in (None, "", "None", " ") and line.get_visible():
            xy = line.get_transform().transform(np.column_stack(line.get_data()).astype(float))
            h = line.get_markersize() * px / 2
            boxes += [np.array([x - h, y - h, x + h, y + h]) for x, y in xy if np.isfinite(x) and np.isfinite(y)]
    return boxes


def _crosses(p: np.ndarray, q: np.ndarray, box: np.ndarray) -> bool:
    """Whether the segment p-q passes through the box (x0, y0, x1, y1) (Liang-Barsky clipping)."""
    d = q - p
    t0, t1 = 0.0, 1.0
    for delta, lo, hi, start in ((d[0], box[0], box[2], p[0]), (d[1], box[1], box[3], p[1])):
        if abs(delta) < 1e-12:
            if start < lo or start > hi:
                return False
            continue
        a, b = (lo - start) / delta, (hi - start) / delta
        a, b = min(a, b), max(a, b)
        t0, t1 = max(t0, a), min(t1, b)
        if t0 > t1:
            return False
    return True


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(ax, points: Sequence[tuple[float, float, str]], *, fontsize: float = 7.5, color="0.15",
                 prefer: str = "any") -> list:
    """Name points of `ax` with texts that overlap neither each other, nor any marker, nor the axes' edges,
    joined to their point by a thin leader line when set off from it. points: (x, y, text) in data coordinates.
    prefer: "right" tries positions to the right of each point first (line ends). Returns the annotations.

    A greedy search: each label takes the first free spot on rings of growing radius around its point (if none is
    free, the spot with the least overlap). It is written here rather than taken from adjustText, which is not a
    dependency of the workbook; with the few labels a figure names it is deterministic and quick, and the figures'
    tests check the result with text_overlaps."""
    fig = ax.figure
    fig.canvas.draw()  # fixes the layout: positions measured now stay valid (the labels take no part in it)
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72
    frame = ax.get_window_extent(renderer)
    inner = np.array([frame.x0 + 2, frame.y0 + 2, frame.x1 - 2, frame.y1 - 2])
    obstacles = _marker_boxes(ax, renderer)
    for t in ax.texts:
        if t.get_visible() and t.get_text().strip():
            bb = t.get_window_extent(renderer)
            obstacles.append(np.array([bb.x0, bb.y0, bb.x1, bb.y1]))
    angles = np.deg2rad(np.arange(0, 360, 22.5))
    if prefer == "right":
        angles = angles[np.argsort(np.abs((angles + np.pi) % (2 * np.pi) - np.pi))]
    else:  # upper right, upper left, lower right, ... before straight up or down
        order = np.deg2rad([30, 150, -30, -150, 0, 180, 60, 120, -60, -120, 90, -90, 15, 165, -15, -165])
        angles = order
    placed, leaders, out = [], [], []
    for x, y, text in points:
        X, Y = ax.transData.transform((x, y))
        if not (np.isfinite(X) and np.isfinite(Y)):
            continue
        probe = ax.text(0, 0, text, fontsize=fontsize)
        bb = probe.get_window_extent(renderer)
        probe.remove()
        w, h = bb.width + 4 * px, bb.height + 2 * px  # a little air around each label
        best = None
        for radius in (5, 9, 14, 20, 28, 38, 50, 64, 80):
            r = radius * px
            for a in angles:
                c, s = math.cos(a), math.sin(a)
                cx, cy = X + c * (r + w / 2), Y + s * (r + h / 2)
                box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                outside = max(0.0, inner[0] - box[0]) + max(0.0, box[2] - inner[2]) + \
                    max(0.0, inner[1] - box[1]) + max(0.0, box[3] - inner[3])
                near = np.array([min(max(X, box[0]), box[2]), min(max(Y, box[1]), box[3])])
                leader = (np.array([X, Y]), near)
                cost = outside * 1e3 + sum(_overlap(box, o) for o in placed) * 10 + \
                    sum(_overlap(box, o) for o in obstacles) + \
                    50 * sum(_crosses(*leader, o) for o in placed) + \
                    50 * sum(_crosses(*seg, box) for seg in leaders)
                if best is None or cost < best[0]:
                    # beside its point, level with it, a label needs no line; anywhere else it does
                    level = radius == 5 and abs(s) < 0.4
                    best = (cost, cx, cy, level, box, leader)
                if cost == 0:
                    break
            if best[0] == 0:
                break
        _, cx, cy, level, box, leader = best
        placed.append(box)
        if not level:
            leaders.append(leader)
        offset = ((cx - X) / px, (cy - Y) / px)
        arrow = None if level else dict(arrowstyle="-", color="0.45", lw=0.6, shrinkA=0, shrinkB=2)
        ann = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha="center", va="center",
                          fontsize=fontsize, color=color, arrowprops=arrow, annotation_clip=False, zorder=5)
        ann.set_in_layout(False)
        out.append(ann)
    return out


def fit_suptitle(fig, title: str, **kw):
    """fig.suptitle(title), broken into lines (at " · " first, then between words) where it would run into a
    legend beside the panels: the suptitle is centred on the figure, a legend outside the panels reaches its top."""
    import textwrap

    sup = fig.suptitle(title, **kw)
    if not fig.legends or not title:
        return sup
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    right = [leg.get_window_extent(renderer) for leg in fig.legends]
    centre = fig.bbox.width / 2

    def clashes() -> bool:
        bb = sup.get_window_extent(renderer)
        return any(bb.overlaps(r) for r in right)

    if not clashes():
        return sup
    room = min(r.x0 for r in right if r.x0 > centre) if any(r.x0 > centre for r in right) else fig.bbox.width
    chars = max(12, int(len(title) * 2 * (room - centre - 6) / max(sup.get_window_extent(renderer).width, 1)))
    lines: list[str] = []
    for piece in (part for p in title.split(" · ") for part in textwrap.wrap(p, chars)):
        if lines and len(lines[-1]) + 3 + len(piece) <= chars:
            lines[-1] += " · " + piece
        else:
            lines.append(piece)
    sup.set_text("\n".join(lines))
    return sup


def accuracy_name(column: str, eval_eps=None) -> str:
    """The axis name of an accuracy column; robust_acc with its budget when one budget holds for every model
    (eval_eps in [0, 1] pixel units, written as a fraction of 255: "robust accuracy (ε = 1/255)")."""
    name = ACCURACY_NAMES.get(column, column)
    if column == "robust_acc" and eval_eps is not None:
        vals = {format_eps(e) for e in np.atleast_1d(eval_eps)} - {""}
        if len(vals) == 1:
            name += f" (ε = {vals.pop()})"
    return name


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


def heatmap(grid, *, title: str = "", xlabel: str = "", ylabel: str = "", rotation: int = 35,
            row_height: float = 0.42, height: float | None = None, **kw):
    """A WIDTH-wide annotated seaborn heatmap of a table, `row_height` inches per row (or `height` in all); kw goes
    to seaborn.heatmap."""
    fig, axes = figure(height if height is not None else row_height * grid.shape[0] + 1.7)
    kw = {"annot_kws": {"fontsize": 7}, "linewidths": 0.3, **kw}
    sns.heatmap(grid, ax=axes[0, 0], **kw)
    axes[0, 0].grid(False)  # the style's grid would run through blank cells (a fracture matrix's diagonal)
    axes[0, 0].set_xlabel(xlabel)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].tick_params(axis="x", rotation=rotation)
    if title:
        axes[0, 0].set_title(title)
    return fig


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
    from matplotlib.text import Text

    # an annotation's own extent takes in its leader line; the text is what must stay clear
    bb = Text.get_window_extent(t, renderer)
    if bb.width <= 0 or bb.height <= 0:
        return None
    angle = t.get_rotation()
    w, h = bb.width, bb.height
    if angle % 180:
        t.set_rotation(0)
        flat = Text.get_window_extent(t, renderer)
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
