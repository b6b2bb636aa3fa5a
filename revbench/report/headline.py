"""The report's headline sentences: per setting (at its largest seq_len), the memory saved and the time paid by the
method with the smallest peak, against `bptt` and against the fused `nn.LSTM` / `nn.GRU` step of the same sizes.

The numbers are those of the headline table (`revbench.report.frontier.headline_points`: medians over the
configurations pooled): `peak_fraction_of_bptt` and `time_ratio_vs_bptt` (bptt measured in the same run),
`fused_peak_ratio` and `fused_time_ratio` (the records' own ratios against the fused reference).
"""
from __future__ import annotations

import math

from revbench.report.format import esc, isna
from revbench.report.frontier import headline_points

REFERENCE_METHODS = ("bptt", "bptt-fused")


def _family(label) -> str:
    return str(label).split("(")[0].strip()


def fused_kernel_name(cell) -> str:
    return "nn.LSTM" if "lstm" in str(cell) else "nn.GRU"


def _memory(ratio, whom: str) -> str:
    if ratio < 1:
        return f"saves {100 * (1 - ratio):.1f} % of {whom} activation memory (peak {ratio:.2f}×)"
    return f"holds {ratio:.2f}× {whom} activation memory"


def _ok(value) -> bool:
    return not isna(value) and math.isfinite(float(value))


def _reason(rows, key: str, fallback: str) -> str:
    col = f"{key}_reason"
    if col in rows:
        found = [r for r in rows[col] if not isna(r)]
        if found:
            return str(found[0])
    return fallback


def headline_sentences(df) -> list[str]:
    """One plain-text sentence per setting of a language-model DataFrame (an empty list when there is none)."""
    from revbench.report.plotting import plot_frame

    pts = headline_points(df)
    if not len(pts):
        return []
    rows_all = plot_frame(df)
    out = []
    for setting, g in pts.groupby("setting", sort=True):
        cand = g[~g["method_label"].map(_family).isin(REFERENCE_METHODS)]
        if not len(cand):
            continue
        best = cand.loc[cand["peak_bytes"].astype(float).idxmin()]
        T = int(best["seq_len"])
        rows = rows_all[(rows_all["setting"] == setting) & (rows_all["seq_len"] == T)
                        & (rows_all["method_label"] == best["method_label"])]
        kernel = fused_kernel_name(rows["cell"].iloc[0] if len(rows) else setting.split()[0])
        if _ok(best["peak_fraction_of_bptt"]) and _ok(best["time_ratio_vs_bptt"]):
            vs_bptt = (f"{_memory(float(best['peak_fraction_of_bptt']), 'bptt’s')} for "
                       f"{float(best['time_ratio_vs_bptt']):.2f}× its step time")
        else:
            vs_bptt = "has no bptt measurement on this configuration to compare with"
        fp, ft = best.get("fused_peak_ratio"), best.get("fused_time_ratio")
        if _ok(fp) and _ok(ft):
            vs_fused = (f"{_memory(float(fp), f'the fused {kernel} step’s')} for {float(ft):.2f}× the fused "
                        "step’s time")
        else:
            why = _reason(rows, "fused_peak_ratio" if not _ok(fp) else "fused_time_ratio",
                          "the fused reference was not measured")
            vs_fused = f"cannot be set against the fused {kernel} step ({why})"
        out.append(f"{setting} at T = {T}: {best['point']}, the smallest peak, {vs_bptt}, and "
                   f"{vs_fused}.")
    return out


def headline_sentences_html(df) -> str:
    """The sentences as a block for the top of the report ('' when there are none)."""
    sentences = headline_sentences(df)
    if not sentences:
        return ""
    items = "".join(f"<li>{esc(s)}</li>" for s in sentences)
    return ('<div class="headline"><p><strong>Headline</strong> (per setting at its largest seq_len, the '
            "method with the smallest peak; against bptt and against the fused kernel of the same sizes, "
            f"measured in the same run):</p><ul>{items}</ul></div>")
