"""One look for every sockbench figure: model colours, flag markers, axes, units.

A model keeps one colour in every figure, report and comparison: its colour
is a fact of the model in :data:`servers.registry.MODELS`, not picked from the
models a particular results folder happens to contain. Each model also has its
own marker (by its place in the registry's order), so a grey-scale print still
tells them apart, and a ceiling reference (the C server: the machine's
ceiling) is drawn dashed.

Flagged points are drawn over the data with shapes no model uses at that
size, and each flag gets its own legend entry:

* generator-bound: a large hollow square;
* generator and server both saturated: a large hollow grey diamond;
* unstable (CV above :data:`bench.vocabulary.CV_THRESHOLD`): a large hollow circle;
* failed: a black X (at the bottom of the axes when no repetition succeeded).

Figures are built with :class:`matplotlib.figure.Figure` directly, never with
``pyplot``: no global figure registry (nothing to leak or close), no GUI
backend, and rendering goes through Agg for PNG and the SVG backend for SVG.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal

import matplotlib

matplotlib.use("Agg")  # never a GUI backend, even if pyplot gets imported elsewhere

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MultipleLocator, NullFormatter

from bench.format import fmt_bytes, fmt_count, fmt_time_us
from bench.vocabulary import BOTH_SATURATED, FAILED, FLAG_LABELS, GENERATOR_BOUND, UNSTABLE
from servers import registry

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: The matplotlib settings of every figure sockbench draws (its own figures
#: and bench compare's). SVG ids are salted with a constant so the same data
#: gives the same file (diffable, cacheable); text as paths so an SVG looks
#: the same without the fonts; 9 pt fits the axis labels in a 6.4 in figure.
#: Each figure chooses its own layout (constrained, or style.fixed_layout), whatever a matplotlibrc says.
RC: dict[RcKeyType, Any] = {
    "svg.hashsalt": "sockbench",
    "svg.fonttype": "path",
    "font.size": 9,
    "figure.autolayout": False,
    "figure.constrained_layout.use": False,
}


@contextlib.contextmanager
def settings() -> Iterator[None]:
    """Draw (and save) inside this: :data:`RC` applied, the caller's settings back afterwards."""
    with matplotlib.rc_context(RC):
        yield


#: Colours of models the registry does not know (a results folder from an
#: older sockbench), picked by name so each keeps its colour: Okabe-Ito's
#: reddish purple, Paul Tol's wine, teal, olive and indigo, then a grey.
#: Registered models have their own (:attr:`servers.registry.Model.colour`).
_UNREGISTERED = ["#CC79A7", "#882255", "#44AA99", "#999933", "#332288", "#999999"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "*", "<", ">", "p"]

#: Flag name -> (legend label, marker style).
FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    GENERATOR_BOUND: (
        FLAG_LABELS[GENERATOR_BOUND],
        dict(
            marker="s",
            markersize=14,
            markerfacecolor="none",
            markeredgecolor="black",
            markeredgewidth=1.6,
            linestyle="none",
        ),
    ),
    BOTH_SATURATED: (
        FLAG_LABELS[BOTH_SATURATED],
        dict(
            marker="D",
            markersize=13,
            markerfacecolor="none",
            markeredgecolor="#555555",
            markeredgewidth=1.6,
            linestyle="none",
        ),
    ),
    UNSTABLE: (
        FLAG_LABELS[UNSTABLE],
        dict(
            marker="o",
            markersize=17,
            markerfacecolor="none",
            markeredgecolor="#CC79A7",
            markeredgewidth=2.0,
            linestyle="none",
        ),
    ),
    "lower-bound": (
        "≥ only a lower bound: too many requests never completed",
        dict(
            marker=r"$\geq$",
            markersize=13,
            markerfacecolor="black",
            markeredgecolor="black",
            markeredgewidth=0.4,
            linestyle="none",
        ),
    ),
    FAILED: (
        FLAG_LABELS[FAILED],
        dict(
            marker="X",
            markersize=11,
            markerfacecolor="black",
            markeredgecolor="white",
            markeredgewidth=0.8,
            linestyle="none",
        ),
    ),
}

#: Figure width for one panel, inches; the legend goes to the right of it.
PANEL_W, PANEL_H = 6.4, 4.0
DPI = 110  # PNG resolution: sharp on screen, files stay under ~150 KB


def model_colour(model: str) -> str:
    """The fixed colour of ``model`` (the registry's; unregistered models get stable extra colours)."""
    known = registry.MODELS.get(model)
    return known.colour if known is not None else _UNREGISTERED[sum(map(ord, model)) % len(_UNREGISTERED)]


def model_marker(model: str) -> str:
    """The fixed marker of ``model``, by its place in the registry's order."""
    known = registry.MODELS.get(model)
    i = known.order if known is not None else sum(map(ord, model))
    return _MARKERS[i % len(_MARKERS)]


def model_style(model: str) -> dict[str, Any]:
    """Line2D keyword arguments for ``model``'s line (the machine's ceiling dashed)."""
    return dict(
        color=model_colour(model),
        marker=model_marker(model),
        markersize=5,
        linestyle="--" if registry.is_ceiling_reference(model) else "-",
        linewidth=1.8,
    )


def new_figure(
    nrows: int = 1,
    ncols: int = 1,
    *,
    width: float | None = None,
    height: float | None = None,
    sharex: bool | Literal["none", "all", "row", "col"] = False,
    sharey: bool | Literal["none", "all", "row", "col"] = False,
    height_ratios: Sequence[float] | None = None,
    layout: Literal["constrained"] | None = "constrained",
) -> tuple[Figure, np.ndarray]:
    """A Figure and a 2-D array of Axes (always 2-D, so callers index ``axes[r, c]``).

    ``layout`` None leaves the axes where the caller puts them (:func:`fixed_layout`):
    no layout pass when the figure is saved.
    """
    fig = Figure(figsize=(width or PANEL_W * ncols, height or PANEL_H * nrows), dpi=DPI, layout=layout)
    gs_kw = {"height_ratios": height_ratios} if height_ratios else None
    axes = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False, gridspec_kw=gs_kw)
    for ax in axes.flat:
        ax.grid(True, which="major", color="#dddddd", linewidth=0.7)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    return fig, axes


def titles(fig: Figure, question: str, subtitle: str = "") -> None:
    """The question as the figure title, the how-to-read note under it."""
    # Constrained layout reserves room for the suptitle only, so the subtitle's
    # lines are reserved as blank suptitle lines and the subtitle drawn over them.
    chars_per_line = int(fig.get_figwidth() * 13)  # ~13 characters of 9 pt text per inch
    lines = textwrap.wrap(subtitle, chars_per_line) if subtitle else []
    top = 0.98  # matplotlib's default suptitle position (passing y would stop the layout reserving room)
    # linespacing 1.6 over-reserves the blank lines a little: a gap under the subtitle
    fig.suptitle(question + "\n" * len(lines), fontsize=13, fontweight="bold", linespacing=1.6)
    if lines:
        first_line = 13 * 1.6 / 72 / fig.get_figheight()  # one 13 pt title line, in figure fraction
        fig.text(
            0.5, top - first_line, "\n".join(lines), ha="center", va="top", fontsize=9, color="#444444", linespacing=1.3
        )


#: zlib level of the PNGs: with the alpha channel of an opaque figure dropped (:class:`Canvas`), level 3
#: gives files a little smaller than matplotlib's RGBA at Pillow's default level 6, in half the time.
PNG_COMPRESS_LEVEL = 3


class Canvas(FigureCanvasAgg):
    """The Agg canvas of sockbench's figures: a PNG of an opaque figure is written as RGB.

    Every pixel of a figure on its (opaque) face colour has alpha 255, so the
    alpha channel is a quarter of the image data for nothing: dropped, the
    PNG is the same image, smaller and quicker to compress. A figure with any
    transparent pixel is written as matplotlib writes it (RGBA).
    """

    def print_png(self, filename_or_obj: Any, *, metadata: Any = None, pil_kwargs: Any = None, **_: Any) -> None:
        # ``**_``: savefig's own arguments (facecolor, ...), which matplotlib strips only for its own canvases
        from PIL import Image, PngImagePlugin

        FigureCanvasAgg.draw(self)
        rgba = np.asarray(self.buffer_rgba())
        if rgba[..., 3].min() < 255:
            super().print_png(filename_or_obj, metadata=metadata, pil_kwargs=pil_kwargs)
            return
        info = PngImagePlugin.PngInfo()
        for key, value in (metadata or {}).items():
            if value is not None:
                info.add_text(key, value)
        kwargs = {"compress_level": PNG_COMPRESS_LEVEL, **(pil_kwargs or {})}
        image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB")
        image.save(filename_or_obj, format="png", pnginfo=info, dpi=(self.figure.dpi, self.figure.dpi), **kwargs)


def canvas(fig: Figure) -> Canvas:
    """``fig``'s :class:`Canvas`, attached to it on first use."""
    return fig.canvas if isinstance(fig.canvas, Canvas) else Canvas(fig)


#: Space (inches) :func:`fixed_layout` leaves between what it measured and the figure's edge,
#: and between two panels of a column: about one line of 9 pt text.
LAYOUT_PAD_IN = 0.12


def fixed_layout(fig: Figure, column: Sequence[Axes], pad_in: float = LAYOUT_PAD_IN) -> None:
    """Place a column of panels in one pass, instead of a constrained layout at every save.

    For a figure whose panels sit under each other, share the x axis and have
    their legends outside on the right (a run's timeline): the axes get the
    room the figure's titles take at the top (:func:`titles`, measured), the
    widest legend on the right, the widest y tick labels and y label on the
    left and the bottom panel's x axis at the bottom, each measured once with
    the text as it will be drawn, plus ``pad_in``. Call it when everything
    is drawn on the axes; save without ``bbox_inches="tight"``.

    Why: a constrained layout measures every panel's ticks and labels in two
    passes each time a figure is saved, which was half of a timeline's cost;
    here the few things that can change size are measured, once.
    """
    renderer = canvas(fig).get_renderer()
    dpi = fig.dpi
    width, height = fig.get_figwidth(), fig.get_figheight()
    texts = [t for t in fig.texts if t.get_text().strip()]  # the suptitle is one of them
    # the titles hang from the top: the axes begin under the lowest of them
    title_bottom = min((t.get_window_extent(renderer).y0 / dpi for t in texts), default=height)
    legends = [legend for legend in (ax.get_legend() for ax in column) if legend is not None]
    # a legend anchored just right of its panel: its width is the room needed there, wherever the panel ends
    legend_in = max((legend.get_window_extent(renderer).width / dpi for legend in legends), default=0.0)
    bottom_in = _below(column[-1], renderer) / dpi
    top = (title_bottom - pad_in) / height
    bottom = (bottom_in + pad_in) / height
    # between panels: a panel's top tick label stands half a line above its frame, then the pad
    gap_in = 2 * pad_in
    panel_h = ((top - bottom) * height - gap_in * (len(column) - 1)) / len(column)
    fig.subplots_adjust(top=top, bottom=bottom, hspace=gap_in / max(panel_h, 1e-6))
    # the y ticks depend on the panels' height, now final: only then are their labels measured
    left_in = max(_left_of(ax, renderer) for ax in column) / dpi
    fig.subplots_adjust(left=(left_in + pad_in) / width, right=1.0 - (legend_in + 2 * pad_in) / width)


def _left_of(ax: Axes, renderer: Any) -> float:
    """Pixels the y axis (tick labels and label) reaches left of the panel's frame."""
    box = ax.yaxis.get_tightbbox(renderer)
    return max(0.0, ax.bbox.x0 - box.x0) if box is not None else 0.0


def _below(ax: Axes, renderer: Any) -> float:
    """Pixels the x axis (tick labels and label) reaches below the panel's frame."""
    box = ax.xaxis.get_tightbbox(renderer)
    return max(0.0, ax.bbox.y0 - box.y0) if box is not None else 0.0


def flag_handles(flags: Iterable[str]) -> list[Line2D]:
    """Legend handles for the flags present, in a fixed order."""
    present = set(flags)
    return [Line2D([], [], label=FLAGS[f][0], **FLAGS[f][1]) for f in FLAGS if f in present]


def model_handles(models: Iterable[str]) -> list[Line2D]:
    return [Line2D([], [], label=m, **model_style(m)) for m in models]


def legend_right(fig: Figure, handles: list[Any], title: str | None = None) -> None:
    """One legend for the whole figure, outside the plots on the right (never covers data)."""
    if handles:
        fig.legend(
            handles=handles, loc="outside right center", frameon=False, fontsize=9, title=title, title_fontsize=9
        )


def draw_flags(ax: Axes, x: float, y: float | None, flags: Iterable[str], slot: int = 0) -> None:
    """Overlay the flag markers at (x, y); with no y (nothing measured) put them at the bottom."""
    for f in flags:
        style = dict(FLAGS[f][1])
        if y is None or not np.isfinite(y):
            # no value: stack at the bottom of the axes, one slot per model so they don't overlap
            ax.plot([x], [0.04 + 0.06 * slot], transform=ax.get_xaxis_transform(), clip_on=False, zorder=6, **style)
        else:
            # not clipped: a flag on a point at the edge of the axes stays whole
            ax.plot([x], [y], zorder=6, clip_on=False, **style)


def draw_served(ax: Axes, x: float, y: float | None, text: str) -> None:
    """Write ``text`` ("served 1/20") beside the point at (x, y), or at the bottom when nothing was measured."""
    if not text:
        return
    if y is None or not np.isfinite(y):
        ax.annotate(
            text,
            (x, 0.02),
            xycoords=ax.get_xaxis_transform(),
            fontsize=7,
            color="#333333",
            ha="center",
            va="bottom",
            zorder=7,
        )
    else:
        # 5 points right and 9 below: clear of the point's own marker and of the flag markers above it
        ax.annotate(
            text,
            (x, y),
            xytext=(5, -9),
            textcoords="offset points",
            fontsize=7,
            color="#333333",
            zorder=7,
            annotation_clip=False,
        )


# --------------------------------------------------------------------------
# Units


def time_axis(ax: Axes, which: str = "y", span: Sequence[float] = (), log: bool = True) -> None:
    """Log (or linear) axis of durations in microseconds, labelled with units (µs, ms, s).

    ``span`` (values the axis will show) decides the tick density: 1-2-5 steps
    for up to 3 decades, one tick per decade beyond, so labels never collide.
    """
    axis = ax.yaxis if which == "y" else ax.xaxis
    if not log:
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_time_us(v)))
        return
    (ax.set_yscale if which == "y" else ax.set_xscale)("log")
    wide = spans_decades(span, 1e3)
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0), numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_time_us(v)))
    axis.set_minor_formatter(NullFormatter())


def count_axis(ax: Axes, values: Sequence[float], which: str = "y") -> None:
    """Linear or log (when values span more than ~1.5 decades) axis with 12k-style labels."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    if spans_decades(values, 30):
        (ax.set_yscale if which == "y" else ax.set_xscale)("log")
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=12))
        axis.set_minor_formatter(NullFormatter())
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: fmt_count(v)))


def bytes_axis(ax: Axes, values: Sequence[float], which: str = "y") -> None:
    """An axis of byte counts labelled in KiB/MiB/GiB at power-of-two steps, log when values span decades.

    With ``values`` given, the limits are set from them (so axes that share a
    scale, PSS beside RSS, show every bar whole).
    """
    axis = ax.yaxis if which == "y" else ax.xaxis
    set_lim = ax.set_ylim if which == "y" else ax.set_xlim
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr) & (arr > 0)]
    if spans_decades(values, 30):
        (ax.set_yscale if which == "y" else ax.set_xscale)("log")
        axis.set_major_locator(LogLocator(base=2, numticks=14))
        axis.set_minor_formatter(NullFormatter())
        set_lim(arr.min() / 1.5, arr.max() * 1.5)
    elif arr.size:
        # about 5 ticks at a power-of-two step: 16 MiB, 32 MiB, ... rather than 47.7 MiB
        step = 2.0 ** math.ceil(math.log2(max(arr.max() / 5, 1)))
        axis.set_major_locator(MultipleLocator(step))
        set_lim(0, arr.max() * 1.08)
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: "0" if v == 0 else fmt_bytes(v)))


def spans_decades(values: Sequence[float], ratio: float) -> bool:
    """True if the positive finite values span more than ``ratio`` (max/min)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr) & (arr > 0)]
    return arr.size > 1 and arr.max() / arr.min() > ratio


def finite_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
