"""Shared pieces of the report's figures: warning filters, per-method colours and markers, figure and axes setup,
the method legend, the plotting frame and the cap on panels per figure.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state) and saved through the Agg renderer,
so this works headless and in notebooks alike.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterable

from revbench.report.format import method_order, setting_labels, short_labels

MAX_PANELS = 12  # panels drawn per figure (memory against seq_len); the rest are listed in a note
MAX_WIDTH_IN = 13.3  # widest figure shown at 100 % in the report's 1296-px column (96 px per inch)


@contextlib.contextmanager
def third_party_warnings_visible():
    """Show (once) but never raise deprecation warnings coming from seaborn/matplotlib/pandas/numpy.

    seaborn 0.13 warns under pandas 3; a `-W error` run must not fail on that. Our own
    warnings keep whatever filter the caller set.
    """
    with warnings.catch_warnings():
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.filterwarnings("default", category=category, module=r"(seaborn|matplotlib|pandas|numpy)(\..*)?$")
        yield


def method_palette(labels: Iterable[str]) -> dict:
    """method label -> colour, consistent across every figure of a report."""
    import seaborn as sns

    order = method_order(labels)
    colours = sns.color_palette("colorblind", max(len(order), 1))
    return {label: colours[i % len(colours)] for i, label in enumerate(order)}


# 13 markers against 10 colours: two methods share both only beyond 130 methods
_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">", "h", "p", "d")


def method_markers(labels: Iterable[str]) -> dict:
    return {label: _MARKERS[i % len(_MARKERS)] for i, label in enumerate(method_order(labels))}


def new_figure(nrows: int, ncols: int, panel_w: float, panel_h: float, legend_w: float = 2.6, top: float = 0.8,
               **kw):
    """A constrained-layout Figure of nrows x ncols panels, no wider than MAX_WIDTH_IN (panels shrink to fit) so
    that its text is shown at its size (10 pt = 13 px) at 100 % zoom; `legend_w`: room for a legend on the right."""
    from matplotlib.figure import Figure

    width = min(max(panel_w * ncols + legend_w, 7.0), MAX_WIDTH_IN)
    fig = Figure(figsize=(width, panel_h * nrows + top), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def plain_log_ticks(axis, subs=(1.0, 2.0, 5.0)):
    """Plain-number tick labels (0.2, 0.5, 1, 2, 5, 10 ...) on a log axis instead of 2x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def grouped_bars(ax, groups, series, values, colours, fmt: str = "{:.1f}", fontsize: float = 8.5):
    """Grouped bars: one group per entry of `groups` on the x axis, one bar per entry of `series` in it.

    values[(group, series)] is a list of numbers: the bar is their median, a whisker spans min-max when they differ.
    Each bar is labelled with its median just above its whisker, upright when the bar is narrower than the text,
    so labels of neighbouring bars never print over each other. Groups with no values are left out of the axis.
    Returns the series drawn (for a legend).
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    groups = [g for g in groups if any(values.get((g, s)) for s in series)]
    drawn = [s for s in series if any(values.get((g, s)) for g in groups)]
    if not groups or not drawn:
        return []
    width = 0.8 / len(drawn)
    bars = []
    for gi, g in enumerate(groups):
        for si, s in enumerate(drawn):
            v = [float(x) for x in values.get((g, s)) or [] if x == x]
            if not v:
                continue
            x = gi - 0.4 + width * (si + 0.5)
            med, lo, hi = float(np.median(v)), min(v), max(v)
            ax.bar(x, med, width=width * 0.92, color=colours[s], zorder=2)
            if hi > lo:
                ax.errorbar(x, med, yerr=[[med - lo], [hi - med]], color="#333", linewidth=1, capsize=3, zorder=3)
            bars.append((x, med, hi))
    ax.set_xticks(range(len(groups)), [str(g) for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    top = max(b[2] for b in bars)
    ax.set_ylim(0, top * 1.25)
    fig = ax.figure
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()     # the constrained layout, so that pixel sizes are final
    bar_px = abs(ax.transData.transform((width * 0.92, 0))[0] - ax.transData.transform((0, 0))[0])
    for x, med, hi in bars:
        text = fmt.format(med)
        probe = ax.text(0, 0, text, fontsize=fontsize)
        upright = probe.get_window_extent(renderer).width + 2 > bar_px
        probe.remove()
        ax.annotate(text, (x, hi), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    rotation=90 if upright else 0, fontsize=fontsize, color="#222", zorder=4)
    ax.set_ylim(0, top * (1.45 if bar_px < 22 else 1.2))
    return drawn


def style_axes(ax):
    ax.grid(True, which="major", color="#e3e7ee", linewidth=0.8)
    ax.grid(True, which="minor", color="#f0f2f6", linewidth=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def method_legend(fig, labels, palette, markers, title="method", extra=(), loc="outside right upper", ncols=1):
    """The methods' colours and markers, labelled with their short, distinct names (`format.short_labels`)."""
    from matplotlib.lines import Line2D

    short = short_labels(labels)
    handles = [Line2D([], [], color=palette[m], marker=markers[m], linestyle="-", label=short[m]) for m in labels]
    handles += list(extra)
    if ncols > 1:
        ncols = legend_columns(fig, [h.get_label() for h in handles], ncols)
    fig.legend(handles=handles, loc=loc, title=title, frameon=False, fontsize=9.5, ncols=ncols, title_fontsize=10)


def legend_columns(fig, texts, most: int, fontsize: float = 9.5) -> int:
    """How many legend columns of these texts fit across the figure (at most `most`): 0.55 em per character plus
    the handle, so that a legend over the panels is never cut at the figure's edges."""
    width_in = fig.get_figwidth()
    col_in = max(len(str(t)) for t in texts) * 0.55 * fontsize / 72 + 0.75
    return max(1, min(most, int(width_in // col_in)))


def plot_frame(df):
    """Plain numpy dtypes for plotting (nullable Int64 -> float with NaN)."""
    d = df.copy()
    for col in d.columns:
        if str(d[col].dtype) in ("Int64", "Float64"):
            d[col] = d[col].astype("float64")
    d["setting"] = setting_labels(df).values if len(df) else []
    return d
