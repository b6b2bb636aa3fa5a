"""Figures of the information buffer: memory-saving ratios (d) and buffer efficiency (e) per forgetting limit.

Only methods that keep an information buffer are drawn (records with a `buffer_bits_actual`); the others carry
`buffer_bits_actual` None with `buffer_bits_actual_reason` and have no paper-style figure to show.
"""
from __future__ import annotations

from revbench.report.format import method_order
from revbench.report.plotting import (grouped_bars, legend_columns, new_figure, plot_frame, style_axes,
                                      third_party_warnings_visible)
from revbench.report.results import forget_order

SAVING_MEASURES = {"allocator_saving": "allocator: bptt's peak / this peak",
                   "saving_actual": "paper-style: actual buffer bits",
                   "saving_reference": "paper-style: reference buffer scheme",
                   "saving_ideal": "paper-style: ideal bits (Σ −log2 z_q)"}
SAVING_COLOURS = dict(zip(SAVING_MEASURES.values(), ("#3b6ea8", "#c8651b", "#5a9e4b", "#7e5aa6")))


def buffer_rows(df):
    """Rows of methods that keep an information buffer (their `buffer_bits_actual` is a number)."""
    return df[df["buffer_bits_actual"].notna()] if "buffer_bits_actual" in df else df.iloc[0:0]


def _no_buffer_note(df) -> str:
    """Which methods (or cells) are left out because they keep no buffer, with the records' reason."""
    if not len(df) or "buffer_bits_actual" not in df:
        return ""
    has = set(df.loc[df["buffer_bits_actual"].notna(), "method_label"])
    none = df[df["buffer_bits_actual"].isna() & (df["kind"] != "seq2seq")] if "kind" in df else df
    never = method_order(set(none["method_label"]) - has)
    named = ", ".join(never) if len(never) <= 4 else f"{', '.join(never[:3])} and {len(never) - 3} other methods"
    parts = [f"{named} (no information buffer)"] if never else []
    cells = sorted({str(c) for c in none.loc[none["method_label"].isin(has), "cell"]})
    if cells:
        parts.append(f"{', '.join(method_order(has))} on {', '.join(cells)} (this cell has no buffer)")
    return (f" Not drawn: {'; '.join(parts)}; their allocator savings are in the summary table." if parts else "")


def _seq_note(d) -> str:
    seqs = sorted(int(x) for x in d["seq_len"].dropna().unique())
    return f" Bars: median over seq_len {', '.join(map(str, seqs))}; whiskers: min-max." if len(seqs) > 1 else ""


def fig_saving_ratios(df):
    """(d) memory-saving ratios per forgetting limit: allocator vs paper-style (actual, reference, ideal) side by side,
    one panel per buffered method and setting."""
    b = buffer_rows(df)
    if not len(b):
        return None, ("No method with an information buffer in this file (no paper-style savings); "
                      "section omitted.")
    d = plot_frame(b)
    if "buffer_bits_reference" in d and "state_bits_baseline" in d:
        d["saving_reference"] = d["state_bits_baseline"].astype(float) / d["buffer_bits_reference"].astype(float)
    measures = [m for m in SAVING_MEASURES if m in d and d[m].notna().any()]
    panels = [(m, s) for m in method_order(d["method_label"]) for s in sorted(d["setting"].unique())
              if ((d["method_label"] == m) & (d["setting"] == s)).any()]
    ncols = min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(nrows, ncols, 5.6, 2.9, legend_w=0.3, top=0.9)
    names = [SAVING_MEASURES[m] for m in measures]
    with third_party_warnings_visible():
        for idx in range(nrows * ncols):
            ax = axes[idx // ncols][idx % ncols]
            if idx >= len(panels):
                ax.set_visible(False)
                continue
            method, setting = panels[idx]
            sub = d[(d["method_label"] == method) & (d["setting"] == setting)]
            limits = forget_order(sub["forget_label"])
            values = {(lim, SAVING_MEASURES[m]): list(sub.loc[sub["forget_label"] == lim, m].dropna())
                      for lim in limits for m in measures}
            style_axes(ax)
            grouped_bars(ax, limits, names, values, SAVING_COLOURS, fmt="{:.1f}")
            ax.set_title(f"{method} · {setting}", fontsize=10)
            ax.set_xlabel("forgetting limit (max_forget_bits)", fontsize=9)
            ax.set_ylabel("saving (×, higher is better)" if idx % ncols == 0 else "", fontsize=9)
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=SAVING_COLOURS[h], label=h) for h in names], loc="outside upper center",
               ncols=legend_columns(fig, names, len(names)), frameon=False, fontsize=9.5)
    return fig, _seq_note(d) + _no_buffer_note(df)


def fig_buffer_efficiency(df):
    """(e) buffer efficiency = buffer_bits_actual / buffer_bits_ideal per forgetting limit and setting (1 = ideal)."""
    import seaborn as sns

    b = buffer_rows(df)
    b = b[b["buffer_bits_ideal"].notna() & (b["buffer_bits_ideal"] > 0)] if len(b) else b
    if not len(b):
        return None, "No benchmark reports both buffer_bits_actual and buffer_bits_ideal; section omitted."
    d = plot_frame(b)
    d["efficiency"] = d["buffer_bits_actual"] / d["buffer_bits_ideal"]
    methods = method_order(d["method_label"])
    settings = sorted(d["setting"].unique())
    pal = dict(zip(settings, sns.color_palette("deep", len(settings))))
    fig, axes = new_figure(1, len(methods), 9.0, 3.6, legend_w=0.3, top=0.9, sharey=True)
    with third_party_warnings_visible():
        for j, m in enumerate(methods):
            ax = axes[0][j]
            sub = d[d["method_label"] == m]
            limits = forget_order(sub["forget_label"])
            values = {(lim, s): list(sub.loc[(sub["forget_label"] == lim) & (sub["setting"] == s), "efficiency"])
                      for lim in limits for s in settings}
            style_axes(ax)
            grouped_bars(ax, limits, settings, values, pal, fmt="{:.2f}")
            ax.axhline(1.0, color="#333", linestyle="--", linewidth=1, zorder=5)
            ax.set_title(m, fontsize=10)
            ax.set_xlabel("forgetting limit (max_forget_bits)", fontsize=9)
            ax.set_ylabel("allocated / ideal bits (1 = ideal)" if j == 0 else "", fontsize=9)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=pal[s], label=s) for s in settings]
    handles.append(Line2D([], [], color="#333", linestyle="--", label="ideal (1.0)"))
    fig.legend(handles=handles, loc="outside upper center", frameon=False, fontsize=9.5,
               ncols=legend_columns(fig, [h.get_label() for h in handles], 3))
    return fig, _seq_note(d) + _no_buffer_note(df)
