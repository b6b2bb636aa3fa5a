"""Benchmark results in the formats CI dashboards read (`revbench export`).

- ``github-action-benchmark``: the ``customSmallerIsBetter`` input of benchmark-action/github-action-benchmark,
  a JSON list of ``{"name", "unit", "value", "range"?, "extra"?}`` (name and unit strings, value a number, range
  and extra strings). One entry per benchmark and figure, for every memory figure (every ``*_bytes`` figure and
  the buffer bits: smaller is better) and ``time_median_s``; the name is ``"<benchmark name> / <figure>"``
  (stable across runs: pytest's id holds the method, its options and the config id; unique: checked). Time is
  in seconds with the interquartile range as its range. Unavailable figures (null) get no entry.
- ``bencher``: Bencher Metric Format (BMF) JSON, ``{benchmark name: {measure slug: {"value": number,
  "lower_value"?: number, "upper_value"?: number}}}``, every figure as a measure: memory figures and buffer
  bits, the median time (``lower_value`` the fastest round), the savings and ratios, and the work counts.
  Measure slugs are the figure names in kebab case (``peak-bytes``), at most 64 characters as Bencher requires;
  benchmark names at most 1024.

Both read the DataFrame of `revbench.report.results.load_benchmarks` (so a file that breaks the record
contract never gets here) and return plain JSON-ready objects.
"""
from __future__ import annotations

import math

from revbench.report.compare_thresholds import TIME_FIGURE, is_comparable_figure, is_sampled
from revbench.report.validate import BITS, FUSED_RATIOS, RATIOS, SEQ2SEQ_FLOAT, TIME_KEYS, WORK_INT

FORMATS = ("github-action-benchmark", "bencher")
# which figures to export: all of them; every memory figure; the exact memory figures (what `revbench compare`
# gates by default: the sampled meters RSS, NVML and heap left out); the median time only
SELECTIONS = ("all", "memory", "exact", "time")
BENCHER_SLUG_MAX, BENCHER_NAME_MAX = 64, 1024
# figures that are not "smaller is better" but are still measurements: Bencher gets them too
_OTHER_FIGURES = frozenset(BITS + RATIOS + FUSED_RATIOS + SEQ2SEQ_FLOAT + TIME_KEYS + WORK_INT)


class ExportError(ValueError):
    """The results cannot be exported (names that would not be unique, or too long for the format)."""


def _number(v):
    """A JSON number (int for integral integer columns) or None for a missing value."""
    if v is None:
        return None
    try:
        import pandas as pd

        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        return None
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(f):
        return None
    if not isinstance(v, float) and f.is_integer():
        return int(v)
    return f


def memory_figures(df) -> list[str]:
    """The smaller-is-better figures of a run: *_bytes and the buffer bits (time is added separately)."""
    return sorted((c for c in df.columns if c != TIME_FIGURE and is_comparable_figure(c)),
                  key=lambda c: (c != "peak_bytes", c))     # the headline figure first


def bencher_figures(df) -> list[str]:
    """Every figure Bencher gets: the memory figures, the median time, ratios, savings and work counts."""
    others = sorted(c for c in df.columns if c in _OTHER_FIGURES and c not in memory_figures(df))
    return memory_figures(df) + [TIME_FIGURE] + others


def benchmark_names(df) -> list[str]:
    """One unique name per row: pytest's ``name`` (its id: method, options, config id), or ``fullname`` where
    two rows share a name (the same test id in two files)."""
    names = [str(n) for n in df["name"]]
    full = [str(n) for n in df["fullname"]] if "fullname" in df.columns else names
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    out = [f if seen[n] > 1 else n for n, f in zip(names, full)]
    if len(set(out)) != len(out):
        dupes = sorted({n for n in out if out.count(n) > 1})
        raise ExportError(f"benchmark listed more than once: {', '.join(dupes[:3])}")
    return out


def _unit(figure: str) -> str:
    if figure.endswith("_bytes"):
        return "bytes"
    if figure == TIME_FIGURE or figure.endswith("_s"):
        return "s"
    if "bits" in figure:
        return "bits"
    return ""


def _extra(row, figure: str) -> str:
    def get(col):
        v = row.get(col)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    lines = [f"method: {get('method_label') or get('method')}", f"config: {get('config_id')}"]
    if figure == "peak_bytes" and get("peak_bytes_meter"):
        lines.append(f"meter: {get('peak_bytes_meter')}")
    if is_sampled(figure):
        lines.append("sampled meter: noisy, not gated by revbench compare")
    env = [str(get(c)) for c in ("device", "device_name", "torch_version") if get(c) is not None]
    threads = get("torch_num_threads")
    if threads is not None:
        env.append(f"{threads} thread{'s' if threads != 1 else ''}")
    if env:
        lines.append("on: " + ", ".join(env))
    if figure == TIME_FIGURE and get("rounds") is not None:
        lines.append(f"median of {get('rounds')} rounds")
    return "\n".join(lines)


def _select(figures: list[str], which: str) -> list[str]:
    if which not in SELECTIONS:
        raise ValueError(f"unknown figure selection {which!r}: expected one of {', '.join(SELECTIONS)}")
    if which == "all":
        return figures
    if which == "time":
        return [f for f in figures if f == TIME_FIGURE]
    memory = [f for f in figures if f != TIME_FIGURE and is_comparable_figure(f)]
    return memory if which == "memory" else [f for f in memory if not is_sampled(f)]


def github_action_benchmark(df, figures: str = "all") -> list[dict]:
    """customSmallerIsBetter entries for every memory figure and the median time of every benchmark
    (``figures``: one of SELECTIONS)."""
    names = benchmark_names(df)
    figures = _select(memory_figures(df) + [TIME_FIGURE], figures)
    entries = []
    for i, name in enumerate(names):
        row = df.iloc[i].to_dict()
        for fig in figures:
            value = _number(row.get(fig)) if fig in df.columns else None
            if value is None:
                continue
            entry = {"name": f"{name} / {fig}", "unit": _unit(fig), "value": value}
            if fig == TIME_FIGURE and _number(row.get("time_iqr_s")) is not None:
                entry["range"] = f"IQR {_number(row.get('time_iqr_s')):.6g} s"
            entry["extra"] = _extra(row, fig)
            entries.append(entry)
    return entries


def bencher_slug(figure: str) -> str:
    slug = figure.replace("_", "-").lower()
    if len(slug) > BENCHER_SLUG_MAX:
        raise ExportError(f"figure {figure!r} is longer than a Bencher measure slug may be ({BENCHER_SLUG_MAX})")
    return slug


def bencher(df, figures: str = "all") -> dict:
    """Bencher Metric Format: benchmark name -> measure slug -> {"value", "lower_value"?} (``figures``: one of
    SELECTIONS)."""
    names = benchmark_names(df)
    figures = _select(bencher_figures(df), figures)
    out: dict = {}
    for i, name in enumerate(names):
        if len(name) > BENCHER_NAME_MAX:
            raise ExportError(f"benchmark name longer than Bencher allows ({BENCHER_NAME_MAX}): {name[:80]}...")
        row = df.iloc[i].to_dict()
        measures = {}
        for fig in figures:
            value = _number(row.get(fig)) if fig in df.columns else None
            if value is None:
                continue
            metric = {"value": value}
            if fig == TIME_FIGURE:
                low = _number(row.get("time_min_s"))
                if low is not None and low <= value:
                    metric["lower_value"] = low
            measures[bencher_slug(fig)] = metric
        out[name] = measures
    return out


def export(df, fmt: str, figures: str = "all"):
    """The JSON-ready object of ``df`` in format ``fmt`` (one of FORMATS), with the ``figures`` selected."""
    if fmt == "github-action-benchmark":
        return github_action_benchmark(df, figures)
    if fmt == "bencher":
        return bencher(df, figures)
    raise ValueError(f"unknown export format {fmt!r}: expected one of {', '.join(FORMATS)}")
