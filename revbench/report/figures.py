"""Figures of the report: activation memory against sequence length (b) and the time-memory frontier (c)."""
from __future__ import annotations

import math
import re

from revbench.report.format import MIB, method_order
from revbench.report.frontier import headline_points
from revbench.report.plotting import (MAX_PANELS, limit_settings, method_legend, method_markers, method_palette,
                                      new_figure, plot_frame, style_axes, third_party_warnings_visible)
from revbench.report.results import forget_order


def fig_memory_vs_seq_len(df):
    """(b) peak_bytes against seq_len per method (log-log); rows = setting, columns = forgetting limit.

    Returns (Figure, note) or (None, reason) when there is nothing to draw.
    """
    import seaborn as sns
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    d = plot_frame(df[df["peak_bytes"].notna()])
    if not len(d):
        return None, "No benchmark has a peak_bytes figure."
    d["peak (MiB)"] = d["peak_bytes"] / MIB
    # one panel per (setting, forgetting limit) measured at two or more sequence lengths: a single point says
    # nothing about growth (those configurations are in the summary table)
    pairs, single = [], 0
    for s in sorted(d["setting"].unique()):
        for lim in forget_order(d.loc[d["setting"] == s, "forget_label"]):
            sub = d[(d["setting"] == s) & (d["forget_label"] == lim)]
            if sub["seq_len"].nunique() >= 2:
                pairs.append((s, lim))
            else:
                single += 1
    if not pairs:
        return None, "No configuration was measured at two or more sequence lengths."
    extra = ""
    if len(pairs) > MAX_PANELS:
        extra = f" Only the first {MAX_PANELS} of {len(pairs)} settings are drawn; the summary table lists all."
        pairs = pairs[:MAX_PANELS]
    if single:
        extra += f" {single} configuration(s) measured at a single sequence length are not drawn here."
    ncols = min(3, len(pairs))
    nrows = -(-len(pairs) // ncols)
    labels = method_order(d["method_label"])
    pal, mk = method_palette(labels), method_markers(labels)
    fig, axes = new_figure(nrows, ncols, 3.6, 2.9, sharex=True, sharey=True)
    seq = sorted(d["seq_len"].dropna().unique())
    with third_party_warnings_visible():
        for idx in range(nrows * ncols):
            ax = axes[idx // ncols][idx % ncols]
            if idx >= len(pairs):
                ax.set_visible(False)
                continue
            s, lim = pairs[idx]
            sub = d[(d["setting"] == s) & (d["forget_label"] == lim)]
            present = [m for m in labels if m in set(sub["method_label"])]
            sns.lineplot(data=sub, x="seq_len", y="peak (MiB)", hue="method_label", style="method_label",
                         hue_order=present, style_order=present, palette=pal, markers=mk, dashes=False,
                         errorbar=None, estimator="median", legend=False, ax=ax, markersize=6)
            ax.set_xlim(min(seq) / 1.25, max(seq) * 1.25)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(FixedLocator(seq))
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            _log_axis_labels(ax.yaxis)
            style_axes(ax)
            ax.set_title(s if lim == "n/a" else f"{s}\nforgetting limit {lim}", fontsize=9)
            ax.set_xlabel("seq_len (steps)")
            ax.set_ylabel("peak activation memory (MiB)" if idx % ncols == 0 else "")
            ax.tick_params(labelbottom=True, labelleft=True)
    method_legend(fig, labels, pal, mk)
    return fig, extra


def _log_axis_labels(axis):
    """Plain-number tick labels (0.2, 0.5, 1, 2, 5, 10 ...) on a log axis instead of 2x10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _annotate_without_overlap(ax, xs, ys, texts, min_dy_px: float = 12.0, min_dx_px: float = 40.0):
    """Label points, nudging labels upward so that labels of nearby points do not print over each other.

    Call once the figure's layout is final (fig.draw_without_rendering()): positions are computed in pixels.
    """
    placed = []  # (x_px, y_px) of labels already placed
    disp = ax.transData.transform(list(zip(xs, ys))) if len(xs) else []
    for (px, py), x, y, text in sorted(zip(disp, xs, ys, texts), key=lambda t: (t[0][1], t[0][0])):
        ly = py + 4
        moved = True
        while moved:
            moved = False
            for qx, qy in placed:
                if abs(qx - px) < min_dx_px and abs(qy - ly) < min_dy_px:
                    ly = qy + min_dy_px
                    moved = True
        placed.append((px, ly))
        points_per_px = 72.0 / ax.figure.dpi
        ax.annotate(text, (x, y), xytext=(6, (ly - py) * points_per_px), textcoords="offset points", fontsize=7.5,
                    color="#333", annotation_clip=False)


def fig_time_memory_frontier(df):
    """(c) time against memory for every method, per setting at its largest seq_len; Pareto-optimal points ringed."""
    from matplotlib.lines import Line2D

    pts = headline_points(df)
    use_ratio = pts.attrs.get("use_ratio", False)
    if not len(pts):
        return None, "No benchmark has both peak_bytes and a median time."
    settings, extra = limit_settings(sorted(pts["setting"].unique()))
    labels = method_order(pts["method_label"])
    pal, mk = method_palette(labels), method_markers(labels)
    ncols = min(len(settings), 3)
    nrows = math.ceil(len(settings) / ncols)
    fig, axes = new_figure(nrows, ncols, 4.4, 3.7)
    to_label = []  # labels go on last, once the legend has taken its room and the layout is settled
    for idx, s in enumerate(settings):
        ax = axes[idx // ncols][idx % ncols]
        g = pts[pts["setting"] == s]
        front = g[g["pareto"]].sort_values("x")
        ax.step(front["x"], front["y"], where="post", color="#333", linewidth=1, linestyle="--", zorder=1)
        for _, p in g.iterrows():
            ax.scatter(p["x"], p["y"], s=90 if p["pareto"] else 45, marker=mk[p["method_label"]],
                       color=pal[p["method_label"]], edgecolor="black" if p["pareto"] else "none",
                       linewidth=1.4, alpha=1.0 if p["pareto"] else 0.75, zorder=3)
        ax.set_xscale("log")
        _log_axis_labels(ax.xaxis)
        style_axes(ax)
        ax.margins(x=0.12, y=0.08)
        texts = [_limit_tag(p, m) if p != m else _short_label(p) for p, m in zip(g["point"], g["method_label"])]
        to_label.append((ax, list(g["x"]), list(g["y"]), texts))
        ax.set_title(f"{s}, seq_len {int(g['seq_len'].iloc[0])}", fontsize=10)
        if use_ratio:
            ax.set_xlabel("peak activation memory / bptt's (log scale)")
            ax.set_ylabel("median step time / bptt's")
            ax.axhline(1.0, color="#bbb", linewidth=0.8, zorder=0)
        else:
            ax.set_xlabel("peak activation memory (MiB, log scale)")
            ax.set_ylabel("median step time (ms)")
    for idx in range(len(settings), nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    ring = Line2D([], [], marker="o", linestyle="--", color="#333", markerfacecolor="white", markeredgecolor="black",
                  markeredgewidth=1.4, label="Pareto-optimal\n(frontier)")
    method_legend(fig, labels, pal, mk, extra=[ring])
    fig.draw_without_rendering()
    for ax, xs, ys, texts in to_label:
        _annotate_without_overlap(ax, xs, ys, texts)
    note = extra
    if not use_ratio:
        note += " Absolute values are shown because bptt was not measured on every configuration."
    return fig, note


def _limit_tag(point: str, method: str) -> str:
    """'reversible (3 bits)' -> '3', 'reversible (no limit)' -> '∞' (labels next to buffered methods' points)."""
    tag = point.replace(method, "").strip(" ()")
    return "∞" if tag == "no limit" else tag.replace(" bits", "")


def _short_label(label: str) -> str:
    return re.sub(r",?\s*policy=\w+", "", str(label)).replace("budget=", "b=")
