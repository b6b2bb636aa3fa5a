"""Figures of the report: activation memory against sequence length (b) and the time-memory frontier (c)."""
from __future__ import annotations

import math

from revbench.report.format import MIB, method_order, short_labels
from revbench.report.frontier import headline_points
from revbench.report.plotting import (MAX_PANELS, method_legend, method_markers, method_palette, new_figure,
                                      plain_log_ticks, plot_frame, style_axes, third_party_warnings_visible)
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
            plain_log_ticks(ax.yaxis)
            style_axes(ax)
            ax.set_title(s if lim == "n/a" else f"{s}\nforgetting limit {lim}", fontsize=10)
            ax.set_xlabel("seq_len (steps)")
            ax.set_ylabel("peak activation memory (MiB)" if idx % ncols == 0 else "")
            ax.tick_params(labelbottom=True, labelleft=True)
    method_legend(fig, labels, pal, mk)
    return fig, extra


def _annotate_without_overlap(ax, xs, ys, texts, fontsize: float = 8.5):
    """Label points so that no label prints over another label or over another point's marker.

    Each label tries offsets around its point (right, left, above, below, then further out) and takes the first
    whose box is free and inside the axes; call once the figure's layout is final (fig.draw_without_rendering()).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    renderer = FigureCanvasAgg(ax.figure).get_renderer()
    frame = ax.get_window_extent(renderer)
    disp = ax.transData.transform(list(zip(xs, ys))) if len(xs) else []
    s = ax.figure.dpi / 72.0 * 5.5                   # half a marker, px
    taken = [Bbox.from_extents(px - s, py - s, px + s, py + s) for px, py in disp]
    candidates = [(7, -4, "left"), (-7, -4, "right"), (0, 8, "center"), (0, -16, "center"), (7, 8, "left"),
                  (-7, 8, "right"), (7, -16, "left"), (-7, -16, "right")]
    candidates += [(dx * k, dy * k, ha) for k in (2, 3) for dx, dy, ha in candidates[:8]]
    order = sorted(range(len(texts)), key=lambda i: (disp[i][0], disp[i][1]))
    for i in order:
        best = None
        for dx, dy, ha in candidates:
            far = abs(dx) > 10 or abs(dy) > 18      # a label away from its point gets a thin leader line
            ann = ax.annotate(texts[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha,
                              fontsize=fontsize, color="#222", annotation_clip=False, zorder=6,
                              bbox=dict(boxstyle="round,pad=0.12", fc="white", ec="none", alpha=0.85),
                              arrowprops=dict(arrowstyle="-", color="#888", lw=0.6, shrinkA=0, shrinkB=4)
                              if far else None)
            box = ann.get_window_extent(renderer).expanded(1.04, 1.1)
            clash = sum(1 for t in taken if box.overlaps(t)) + (0 if frame.contains(box.x0, box.y0)
                                                                and frame.contains(box.x1, box.y1) else 0.5)
            if best is None or clash < best[0]:
                if best is not None:
                    best[1].remove()
                best = (clash, ann, box)
            else:
                ann.remove()
            if clash == 0:
                break
        taken.append(best[2])


LABEL_ALL_UP_TO = 12   # points per panel that are all labelled; beyond, only the Pareto-optimal ones


def fig_time_memory_frontier(df):
    """(c) time against memory for every method, per setting at its largest seq_len; Pareto-optimal points ringed.
    Every setting is drawn (three panels a row)."""
    from matplotlib.lines import Line2D

    pts = headline_points(df)
    use_ratio = pts.attrs.get("use_ratio", False)
    if not len(pts):
        return None, "No benchmark has both peak_bytes and a median time."
    settings = sorted(pts["setting"].unique())
    labels = method_order(pts["method_label"])
    short = short_labels(labels)
    pal, mk = method_palette(labels), method_markers(labels)
    crowded = int(pts.groupby("setting").size().max())
    ncols = min(len(settings), 3 if crowded <= 8 else 2)        # crowded panels get more room
    nrows = math.ceil(len(settings) / ncols)
    panel = (4.2, 3.5) if crowded <= 8 else (6.4, 4.8)
    fig, axes = new_figure(nrows, ncols, *panel, legend_w=0.3, top=1.3 if len(labels) < 10 else 1.9)
    only_pareto = crowded > LABEL_ALL_UP_TO
    to_label = []  # labels go on last, once the legend has taken its room and the layout is settled
    for idx, s in enumerate(settings):
        ax = axes[idx // ncols][idx % ncols]
        g = pts[pts["setting"] == s]
        front = g[g["pareto"]].sort_values("x")
        ax.step(front["x"], front["y"], where="post", color="#333", linewidth=1, linestyle="--", zorder=1)
        for _, p in g.iterrows():
            ax.scatter(p["x"], p["y"], s=80 if p["pareto"] else 45, marker=mk[p["method_label"]],
                       color=pal[p["method_label"]], edgecolor="black" if p["pareto"] else "none",
                       linewidth=1.3, alpha=1.0 if p["pareto"] else 0.8, zorder=3)
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        style_axes(ax)
        ax.margins(x=0.25, y=0.12)
        lab = g[g["pareto"]] if only_pareto else g
        texts = [_limit_tag(p, m) if p != m else short[m] for p, m in zip(lab["point"], lab["method_label"])]
        to_label.append((ax, list(lab["x"]), list(lab["y"]), texts))
        ax.set_title(f"{s}, seq_len {int(g['seq_len'].iloc[0])}", fontsize=10)
        ax.tick_params(labelsize=9)
        if use_ratio:
            ax.set_xlabel("peak memory / bptt's (log scale)", fontsize=9)
            ax.set_ylabel("step time / bptt's" if idx % ncols == 0 else "", fontsize=9)
            ax.axhline(1.0, color="#bbb", linewidth=0.8, zorder=0)
        else:
            ax.set_xlabel("peak activation memory (MiB, log scale)", fontsize=9)
            ax.set_ylabel("median step time (ms)" if idx % ncols == 0 else "", fontsize=9)
    for idx in range(len(settings), nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    ring = Line2D([], [], marker="o", linestyle="--", color="#333", markerfacecolor="white", markeredgecolor="black",
                  markeredgewidth=1.4, label="Pareto-optimal (frontier)")
    method_legend(fig, labels, pal, mk, extra=[ring], loc="outside upper center", ncols=min(5, len(labels) + 1),
                  title=None)
    fig.draw_without_rendering()
    for ax, xs, ys, texts in to_label:
        _annotate_without_overlap(ax, xs, ys, texts)
    note = f" All {len(settings)} settings are drawn."
    if only_pareto:
        note += (f" With more than {LABEL_ALL_UP_TO} points in a panel only the Pareto-optimal ones are labelled; the "
                 "legend's colours and markers name the others.")
    if not use_ratio:
        note += " Absolute values are shown because bptt was not measured on every configuration."
    return fig, note


def _limit_tag(point: str, method: str) -> str:
    """'reversible (3 bits)' -> '3', 'reversible (no limit)' -> '∞' (labels next to buffered methods' points)."""
    tag = point.replace(method, "").strip(" ()")
    return "∞" if tag == "no limit" else tag.replace(" bits", "")
