"""The time-memory frontier's points: one per method and setting at the largest seq_len, with the Pareto flag."""
from __future__ import annotations

from typing import Sequence

from revbench.report.format import MIB, method_order
from revbench.report.plotting import plot_frame
from revbench.report.results import add_relative_columns, forget_order


def pareto_optimal(x: Sequence[float], y: Sequence[float]):
    """Boolean mask of points not dominated when both x and y are to be minimised (NaN points: False)."""
    import numpy as np

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    mask = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & ((x <= x[i]) & (y <= y[i])) & ((x < x[i]) | (y < y[i]))
        mask[i] = not others.any()
    return mask


def headline_points(df):
    """One row per method and setting at the setting's largest seq_len (the frontier's points).

    Methods with an information buffer get one row per forgetting limit (`point` = "label (3 bits)");
    the others do not depend on the forgetting limit and get the median over those configurations.
    Columns: setting, seq_len, method_label, point, n_configs, the figures (medians; the fused ratios too), `x`, `y`
    (fraction/ratio of bptt when bptt was measured on every configuration, else MiB/ms) and `pareto`.
    The returned frame's attrs["use_ratio"] says which.
    """
    import pandas as pd

    d = plot_frame(add_relative_columns(df))
    d = d[d["peak_bytes"].notna() & d["time_median_s"].notna()]
    figures = ["peak_bytes", "peak_fraction_of_bptt", "allocator_saving", "saving_actual", "saving_ideal",
               "time_median_s", "time_iqr_s", "time_ratio_vs_bptt", "fused_peak_ratio", "fused_time_ratio"]
    for f in figures:       # files written before a figure existed: missing, never 0
        if f not in d:
            d[f] = float("nan")
    if not len(d):
        out = pd.DataFrame(columns=["setting", "seq_len", "method_label", "point", "n_configs", *figures,
                                    "iqr_fraction", "x", "y", "pareto"])
        out.attrs["use_ratio"] = False
        return out
    use_ratio = bool(d["peak_fraction_of_bptt"].notna().all() and d["time_ratio_vs_bptt"].notna().all())
    buffer_methods = set(d.loc[d["buffer_bits_actual"].notna(), "method_label"])
    pieces = []
    for setting, sub in d.groupby("setting", sort=True):
        sub = sub[sub["seq_len"] == sub["seq_len"].max()]
        for label in method_order(sub["method_label"]):
            g = sub[sub["method_label"] == label]
            if label in buffer_methods and g["forget_label"].nunique() > 1:
                groups = [(f"{label} ({lim})", g[g["forget_label"] == lim]) for lim in forget_order(g["forget_label"])]
            else:
                groups = [(label, g)]
            for point, h in groups:
                row = dict(setting=setting, seq_len=int(h["seq_len"].iloc[0]), method_label=label, point=point,
                           n_configs=len(h))
                row.update({f: h[f].median() for f in figures})
                # the noisiest configuration pooled here: its IQR / median (a pooled time is noisy when one is)
                row["iqr_fraction"] = (h["time_iqr_s"] / h["time_median_s"]).max()
                pieces.append(row)
    pts = pd.DataFrame(pieces)
    if use_ratio:
        pts["x"], pts["y"] = pts["peak_fraction_of_bptt"], pts["time_ratio_vs_bptt"]
    else:
        pts["x"], pts["y"] = pts["peak_bytes"] / MIB, pts["time_median_s"] * 1e3
    pts["pareto"] = False
    for _, g in pts.groupby("setting"):
        pts.loc[g.index, "pareto"] = pareto_optimal(g["x"], g["y"])
    pts.attrs["use_ratio"] = use_ratio
    return pts
