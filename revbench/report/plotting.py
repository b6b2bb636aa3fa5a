"""Shared pieces of the report's figures: warning filters, per-method colours and markers, figure and axes setup,
the method legend, the plotting frame and the cap on panels per figure.

Figures are drawn on `matplotlib.figure.Figure` objects (no pyplot state) and saved through the Agg renderer,
so this works headless and in notebooks alike.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterable

from revbench.report.format import method_order, setting_labels

MAX_PANELS = 6  # settings drawn per figure; the rest are listed in a note


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


_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "<", ">")


def method_markers(labels: Iterable[str]) -> dict:
    return {label: _MARKERS[i % len(_MARKERS)] for i, label in enumerate(method_order(labels))}


def new_figure(nrows: int, ncols: int, panel_w: float, panel_h: float, **kw):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(panel_w * ncols + 2.6, 7.0), panel_h * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def style_axes(ax):
    ax.grid(True, which="major", color="#e3e7ee", linewidth=0.8)
    ax.grid(True, which="minor", color="#f0f2f6", linewidth=0.5)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def method_legend(fig, labels, palette, markers, title="method", extra=()):
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=palette[m], marker=markers[m], linestyle="-", label=m) for m in labels]
    handles += list(extra)
    fig.legend(handles=handles, loc="outside right upper", title=title, frameon=False, fontsize=9)


def plot_frame(df):
    """Plain numpy dtypes for plotting (nullable Int64 -> float with NaN)."""
    d = df.copy()
    for col in d.columns:
        if str(d[col].dtype) in ("Int64", "Float64"):
            d[col] = d[col].astype("float64")
    d["setting"] = setting_labels(df).values if len(df) else []
    return d


def limit_settings(settings: list[str]) -> tuple[list[str], str]:
    if len(settings) <= MAX_PANELS:
        return settings, ""
    return settings[:MAX_PANELS], (f" Only the first {MAX_PANELS} of {len(settings)} settings are drawn; "
                                   "the summary table lists all.")
