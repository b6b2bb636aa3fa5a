"""The encoder-decoder section of the benchmark report: records of kind "seq2seq" (``revbench.measure.seq2seq_bench``).

A table (one row per benchmark: the whole step's peak, what each side's forward pass holds for its backward pass,
allocator and paper-style savings per side, time) and one figure (per configuration, those three memory figures
per method, side by side, logarithmic).
"""
from __future__ import annotations

from revbench.report.format import MIB, esc, fmt_num, fmt_ratio, method_order, short_labels
from revbench.report.how_measured import NOISY_LEGEND, noisy_title, peak_how, time_how
from revbench.report.html import NOISY_MARK, dataframe_to_html_table, figure_html, note_html
from revbench.report.plotting import new_figure, plain_log_ticks, style_axes, third_party_warnings_visible
from revbench.report.results import add_relative_columns

HEADER_TITLES = {
    "peak (MiB)": "peak_bytes / 2^20: the whole training step (both sides, attention, loss)",
    "enc held (MiB)": "enc_held_bytes: live bytes at the end of the encoder's forward pass minus live bytes at the "
                      "start of the step (graph or buffers, stored states, the attention context)",
    "dec held (MiB)": "dec_held_bytes: live bytes at the end of the decoder's forward pass minus those at the end of "
                      "the encoder's",
    "enc allocator saving (×)": "bptt's enc_held_bytes on the same configuration / this enc_held_bytes",
    "dec allocator saving (×)": "bptt's dec_held_bytes on the same configuration / this dec_held_bytes",
    "enc paper saving (×)": "enc_saving_actual: 32-bit states of every valid source token / (buffer bits allocated + "
                            "stored slice)",
    "dec paper saving (×)": "dec_saving_actual: 32-bit states of every valid target token / buffer bits allocated",
    "allocator saving vs bptt (×)": "bptt's peak_bytes on the same configuration / this peak_bytes",
    "median time (ms)": "pytest-benchmark median of the timed rounds, milliseconds",
    "IQR (ms)": "interquartile range (q3 - q1) of the timed rounds, milliseconds",
    "time vs bptt (×)": "median time / bptt's median time on the same configuration, same run",
}
FORMATS = {**{c: fmt_ratio for c in HEADER_TITLES if c.endswith("(×)")},
           **{c: (lambda v: fmt_num(v, 2)) for c in ("peak (MiB)", "enc held (MiB)", "dec held (MiB)",
                                                       "median time (ms)", "IQR (ms)")}}


def _setting(row) -> str:
    return f"{row['cell']} · {row['context']} · S{row['src_len']} T{row['tgt_len']} · B{row['batch_size']} H{row['hidden_size']}"


def seq2seq_table(df):
    """One row per encoder-decoder benchmark, in setting then method order."""
    import pandas as pd

    d = add_relative_columns(df)
    order = {label: i for i, label in enumerate(method_order(d["method_label"]))}
    d = d.assign(_setting=d.apply(_setting, axis=1), _m=d["method_label"].map(order))
    d = d.sort_values(["_setting", "_m"], kind="stable")
    return pd.DataFrame({
        "setting": d["_setting"].astype(str),
        "method": d["method_label"].astype(str),
        "peak (MiB)": d["peak_bytes"].astype("float64") / MIB,
        "allocator saving vs bptt (×)": d["allocator_saving"],
        "enc held (MiB)": d["enc_held_bytes"].astype("float64") / MIB,
        "dec held (MiB)": d["dec_held_bytes"].astype("float64") / MIB,
        "enc allocator saving (×)": d["enc_allocator_saving"],
        "dec allocator saving (×)": d["dec_allocator_saving"],
        "enc paper saving (×)": d["enc_saving_actual"],
        "dec paper saving (×)": d["dec_saving_actual"],
        "median time (ms)": d["time_median_s"] * 1e3,
        "IQR (ms)": d["time_iqr_s"] * 1e3,
        "time vs bptt (×)": d["time_ratio_vs_bptt"],
    }).reset_index(drop=True)


def fig_seq2seq_memory(table):
    """Per setting, grouped bars: the step's peak and each side's held bytes, per method (log scale)."""
    import seaborn as sns

    long = table.melt(id_vars=["setting", "method"], value_vars=["peak (MiB)", "enc held (MiB)", "dec held (MiB)"],
                      var_name="figure", value_name="MiB").dropna(subset=["MiB"])
    long = long[long["MiB"] > 0]
    settings = list(dict.fromkeys(table["setting"]))
    ncols = min(2, len(settings))
    nrows = -(-len(settings) // ncols)
    fig, axes = new_figure(nrows, ncols, 6.2, 3.6, legend_w=0.3)
    for idx in range(nrows * ncols):
        ax = axes[idx // ncols][idx % ncols]
        if idx >= len(settings):
            ax.set_visible(False)
            continue
        s = settings[idx]
        sub = long[long["setting"] == s]
        with third_party_warnings_visible():
            sns.barplot(data=sub, x="method", y="MiB", hue="figure", ax=ax, order=list(dict.fromkeys(sub["method"])),
                        palette="Set2")
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis, subs=(1.0, 2.0, 3.0, 5.0))
        style_axes(ax)
        ax.set_title(s, fontsize=10)
        ax.set_xlabel("")
        ax.set_ylabel("MiB (log scale)" if idx % ncols == 0 else "", fontsize=9)
        ax.tick_params(axis="x", labelrotation=20, labelsize=9)
        short = short_labels(t.get_text() for t in ax.get_xticklabels())
        ax.set_xticks(ax.get_xticks(), [short[t.get_text()] for t in ax.get_xticklabels()])
        ax.legend(fontsize=8.5, title=None)
    return fig


def seq2seq_html(df) -> str:
    """The report section for the encoder-decoder records of ``df`` (all rows must be of kind "seq2seq")."""
    if not len(df):
        return note_html("no encoder-decoder benchmarks in this file (the default grid has some; "
                         "`--revbench-filter s2s-` selects only them)")
    table = seq2seq_table(df)
    how = (f"{peak_how(df)} Held bytes: the live-tensor meter read at the end of each side's forward pass (what "
           "that pass leaves alive for its backward pass; a recomputing method's last piece may already run with "
           "its graph). Paper-style savings: the method's own bit accounting (only the reversible method keeps "
           f"a buffer). {time_how(df)} Synthetic batch: random tokens, source and target lengths spread evenly "
           "between half and all of S and T (both sides padded); an untrained model's gates.")
    fig = fig_seq2seq_memory(table)
    figure = figure_html(fig, "Memory of one encoder-decoder training step per method: the whole step's peak and "
                              "what each side's forward pass holds for its backward pass (log scale).", how,
                         "encoder-decoder memory per method")
    import pandas as pd

    flags = pd.DataFrame({"median time (ms)": [noisy_title(q, m) for q, m in zip(table["IQR (ms)"],
                                                                                 table["median time (ms)"])]})
    legend = (f'<p class="legendline"><span class="flag">{NOISY_MARK}</span> {esc(NOISY_LEGEND)}</p>'
              if flags["median time (ms)"].notna().any() else "")
    return (figure + dataframe_to_html_table(table, formats=FORMATS, header_titles=HEADER_TITLES, group_by="setting",
                                             flags=flags) + legend
            + f'<p class="how">How measured: {esc(how)}</p>')


__all__ = ["seq2seq_table", "fig_seq2seq_memory", "seq2seq_html"]
