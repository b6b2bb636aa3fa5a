"""Figures of the information buffer: memory-saving ratios (d) and buffer efficiency (e) per forgetting limit."""
from __future__ import annotations

from revbench.report.format import method_order
from revbench.report.plotting import limit_settings, new_figure, plot_frame, style_axes, third_party_warnings_visible
from revbench.report.results import forget_order


def _buffer_rows(df):
    return df[df["saving_actual"].notna() | df["saving_ideal"].notna() | df["buffer_bits_actual"].notna()]


def fig_saving_ratios(df):
    """(d) memory-saving ratios per forgetting limit: allocator vs paper-style (actual, ideal), side by side."""
    import seaborn as sns

    b = _buffer_rows(df)
    if not len(b):
        return None, ("No method with an information buffer in this file (no paper-style savings); "
                      "section omitted.")
    d = plot_frame(b)
    measures = {"allocator_saving": "allocator: bptt peak / peak",
                "saving_actual": "paper-style, actual buffer bits",
                "saving_ideal": "paper-style, ideal bits (Σ −log2 z_q)"}
    long = d.melt(id_vars=["setting", "method_label", "forget_label", "seq_len"], value_vars=list(measures),
                  var_name="measure", value_name="saving").dropna(subset=["saving"])
    long["measure"] = long["measure"].map(measures)
    settings, extra = limit_settings(sorted(long["setting"].unique()))
    methods = method_order(long["method_label"])
    limits = forget_order(long["forget_label"])
    hue_order = [m for m in measures.values() if m in set(long["measure"])]
    pal = dict(zip(measures.values(), ("#3b6ea8", "#c8651b", "#7e5aa6")))
    fig, axes = new_figure(len(methods), len(settings), 4.2, 3.0, sharey=True)
    with third_party_warnings_visible():
        for i, m in enumerate(methods):
            for j, s in enumerate(settings):
                ax = axes[i][j]
                sub = long[(long["method_label"] == m) & (long["setting"] == s)]
                if not len(sub):
                    ax.set_visible(False)
                    continue
                sns.barplot(data=sub, x="forget_label", y="saving", hue="measure", order=limits, hue_order=hue_order,
                            palette=pal, estimator="median", errorbar=("pi", 100), err_kws={"linewidth": 1},
                            capsize=0.15, legend=False, ax=ax)
                for container in ax.containers:
                    if hasattr(container, "patches"):
                        ax.bar_label(container, fmt="%.1f", fontsize=7.5, label_type="center", color="white",
                                     fontweight="bold")
                style_axes(ax)
                ax.set_title(f"{m} · {s}", fontsize=10)
                ax.set_xlabel("forgetting limit (max_forget_bits)")
                ax.set_ylabel("memory saving (×, higher is better)" if j == 0 else "")
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=pal[h], label=h) for h in hue_order], loc="outside right upper",
               title="saving ratio", frameon=False, fontsize=9)
    seqs = sorted(int(x) for x in long["seq_len"].dropna().unique())
    note = extra + (f" Bars: median over seq_len {', '.join(map(str, seqs))}; whiskers: min-max." if len(seqs) > 1
                    else "")
    return fig, note


def fig_buffer_efficiency(df):
    """(e) buffer efficiency = buffer_bits_actual / buffer_bits_ideal per forgetting limit and setting (1 = ideal)."""
    import seaborn as sns

    b = _buffer_rows(df)
    b = b[b["buffer_bits_actual"].notna() & b["buffer_bits_ideal"].notna() & (b["buffer_bits_ideal"] > 0)]
    if not len(b):
        return None, "No benchmark reports both buffer_bits_actual and buffer_bits_ideal; section omitted."
    d = plot_frame(b)
    d["efficiency"] = d["buffer_bits_actual"] / d["buffer_bits_ideal"]
    methods = method_order(d["method_label"])
    limits = forget_order(d["forget_label"])
    settings, extra = limit_settings(sorted(d["setting"].unique()))
    d = d[d["setting"].isin(settings)]
    pal = dict(zip(settings, sns.color_palette("deep", len(settings))))
    fig, axes = new_figure(1, len(methods), 5.2, 3.2, sharey=True)
    with third_party_warnings_visible():
        for j, m in enumerate(methods):
            ax = axes[0][j]
            sub = d[d["method_label"] == m]
            sns.barplot(data=sub, x="forget_label", y="efficiency", hue="setting", order=limits,
                        hue_order=[s for s in settings if s in set(sub["setting"])], palette=pal, estimator="median",
                        errorbar=("pi", 100), err_kws={"linewidth": 1}, capsize=0.15, legend=False, ax=ax)
            for container in ax.containers:
                if hasattr(container, "patches"):
                    ax.bar_label(container, fmt="%.2f", fontsize=7.5, label_type="center", color="white",
                                 fontweight="bold")
            ax.axhline(1.0, color="#333", linestyle="--", linewidth=1)
            style_axes(ax)
            ax.set_title(m, fontsize=10)
            ax.set_xlabel("forgetting limit (max_forget_bits)")
            ax.set_ylabel("allocated bits / ideal bits (1 = ideal, lower is better)" if j == 0 else "")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=pal[s], label=s) for s in settings]
    handles.append(Line2D([], [], color="#333", linestyle="--", label="ideal (1.0)"))
    fig.legend(handles=handles, loc="outside right upper", title="setting", frameon=False, fontsize=9)
    seqs = sorted(int(x) for x in d["seq_len"].dropna().unique())
    note = extra + (f" Bars: median over seq_len {', '.join(map(str, seqs))}; whiskers: min-max." if len(seqs) > 1
                    else "")
    return fig, note
