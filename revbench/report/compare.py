"""Regression check between two benchmark runs (DataFrames from `revbench.report.results.load_benchmarks`).

Benchmarks are matched on (`name`, `config_id`, `method`, `method_options`). For every matched pair each
compared figure (see `revbench.report.compare_thresholds`: `*_bytes`, the buffer bits, `time_median_s`) gets a
status:

- ``regressed``: a gated figure grew by more than its threshold (exact memory figures: 1 %, time: 25 %);
- ``warn``: an ungated figure (sampled meters by default, time under ``gate_time=False``, anything set to
  off) grew beyond its tolerance; reported, never failing;
- ``improved`` / ``within`` / ``unchanged``; ``skipped``: unavailable (None) on one side or both, never
  compared to 0 (a figure neither record has, with no reason on either side, gets no row: an encoder-decoder
  figure on a language-model record);
- ``new figure``: the base file records the figure for no benchmark at all (an older baseline, written before
  the figure existed): reported, not compared, not failing; ``dropped figure``: the other way round.

A benchmark of the base run missing from the new run fails the check (``missing``) unless ``allow_missing``;
a new benchmark is ``added``. ``only`` (substrings) restricts both runs to benchmarks whose name or config id
contains one of them. The text form is in `revbench.report.compare_output`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from revbench.report.compare_thresholds import (ADDED, BUFFER_BITS, DEFAULT_MEMORY_THRESHOLD,  # noqa: F401
                                                DEFAULT_TIME_THRESHOLD, DROPPED_FIGURE, IMPROVED, MISSING,
                                                NEW_FIGURE, REGRESSED, SKIPPED, STATUS_ORDER, TIME_FIGURE,
                                                UNCHANGED, WARN, WITHIN, ThresholdError, is_comparable_figure,
                                                resolve)

__all__ = ["compare", "CompareRow", "CompareResult", "is_comparable_figure", "ThresholdError", "TIME_FIGURE",
           "BUFFER_BITS"]

KEY = ("name", "config_id", "method", "method_options")
# environment columns whose difference makes figures incomparable (noted when both runs record them)
ENV_COLUMNS = ("device", "device_name", "dtype", "torch_version", "torch_num_threads", "cpu_model")



@dataclass
class CompareRow:
    """One figure of one benchmark (or a whole benchmark, figure "-", for missing/added), base against new."""
    name: str
    method_label: str
    config_id: str
    figure: str
    base: float | None
    new: float | None
    change: float | None  # (new - base) / base; None when not computed
    threshold: float | None  # tolerance: growth allowed before "regressed" (gated) or "warn"; None for "-" rows
    status: str
    note: str = ""
    gated: bool = False

    @property
    def change_pct(self) -> float | None:
        return None if self.change is None else 100.0 * self.change


@dataclass
class CompareResult:
    """Rows of a comparison; `.ok` is False when a gated figure regressed or a benchmark is missing."""
    rows: list[CompareRow]
    notes: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)  # figure -> {"threshold": fraction, "gated": bool}
    time_gated: bool = True
    allow_missing: bool = False
    only: tuple = ()
    counts_by_side: dict = field(default_factory=dict)  # "base"/"new" -> (kept, in the file)

    @property
    def failing_statuses(self) -> tuple:
        return (REGRESSED,) if self.allow_missing else (REGRESSED, MISSING)

    @property
    def ok(self) -> bool:
        """No gated regression, no missing benchmark (unless allowed), and at least one benchmark compared: a
        gate that compared nothing has checked nothing."""
        return self.matched > 0 and not any(r.status in self.failing_statuses for r in self.rows)

    def with_status(self, *statuses: str) -> list[CompareRow]:
        return [r for r in self.rows if r.status in statuses]

    @property
    def regressions(self) -> list[CompareRow]:
        return self.with_status(REGRESSED)

    @property
    def missing(self) -> list[CompareRow]:
        return self.with_status(MISSING)

    @property
    def added(self) -> list[CompareRow]:
        return self.with_status(ADDED)

    @property
    def improvements(self) -> list[CompareRow]:
        return self.with_status(IMPROVED)

    @property
    def matched(self) -> int:
        """Benchmarks found in both runs."""
        return len({r.name for r in self.rows if r.status not in (MISSING, ADDED)})

    def counts(self) -> dict:
        out = {s: 0 for s in STATUS_ORDER}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{**asdict(r), "change_pct": r.change_pct} for r in self.rows],
                            columns=[*CompareRow.__dataclass_fields__, "change_pct"])

    def format_table(self, show_all: bool = False, verbose: bool = False) -> str:
        """The text form (`revbench.report.compare_output.format_text`)."""
        from revbench.report.compare_output import format_text

        return format_text(self, verbose=verbose, show_all=show_all)

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "counts": self.counts(), "matched": self.matched, "notes": self.notes,
                           "thresholds": self.thresholds, "time_gated": self.time_gated,
                           "allow_missing": self.allow_missing, "filter": list(self.only),
                           "rows": [{**asdict(r), "change_pct": r.change_pct} for r in self.rows]}, indent=1)


def _value(v):
    """Python number or None (NaN / pandas NA -> None)."""
    import pandas as pd

    if v is None or pd.isna(v):
        return None
    f = float(v)
    return int(v) if f.is_integer() and not isinstance(v, float) else f


def _index(df, side: str) -> dict:
    where = f"{side} ({df.attrs['source']})" if df.attrs.get("source") else side   # name the file when known
    missing = [k for k in KEY if k not in df.columns]
    if missing:
        raise ValueError(f"{where} benchmarks lack column(s) {', '.join(missing)}")
    index: dict = {}
    for i, key in enumerate(zip(*(df[k].astype(str) for k in KEY))):
        if key in index:
            raise ValueError(f"{where}: two benchmarks share the key {dict(zip(KEY, key))}; "
                             "cannot match them unambiguously")
        index[key] = i
    return index


def _reason(df, i: int, figure: str) -> str | None:
    col = f"{figure}_reason"
    if col not in df.columns:
        return None
    return _reason_text(df[col].iloc[i])


def recorded(df, figure: str) -> bool:
    """True when the run records ``figure`` for at least one benchmark (a value, or None with a reason)."""
    if figure == TIME_FIGURE:
        return figure in df.columns
    if figure not in df.columns:
        return False
    if df[figure].notna().any():
        return True
    col = f"{figure}_reason"
    return col in df.columns and df[col].map(lambda v: _reason_text(v) is not None).any()


def _reason_text(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("", "nan") else str(v)


def select(df, only) -> "pandas.DataFrame":  # noqa: F821
    """Rows of ``df`` whose name or config id contains one of the substrings ``only`` (all rows if empty)."""
    if not only:
        return df
    names = df["name"].astype(str) if "name" in df.columns else None
    cfgs = df["config_id"].astype(str) if "config_id" in df.columns else None
    keep = [any((names is not None and s in names.iloc[i]) or (cfgs is not None and s in cfgs.iloc[i])
                for s in only) for i in range(len(df))]
    out = df[keep].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out


def compare(base_df, new_df, memory_threshold: float | None = DEFAULT_MEMORY_THRESHOLD,
            time_threshold: float | None = DEFAULT_TIME_THRESHOLD, per_figure: dict | None = None,
            gate_time: bool = True, only=(), allow_missing: bool = False) -> CompareResult:
    """Compare a new run against a base run; see the module docstring for the rules.

    Raises ThresholdError (a ValueError) for unusable thresholds or a filter that matches no benchmark, and
    ValueError for ambiguous benchmark keys."""
    only = tuple(s for s in ([only] if isinstance(only, str) else (only or ())) if s)
    figures = sorted({c for df in (base_df, new_df) for c in df.columns
                      if c != TIME_FIGURE and is_comparable_figure(c)})
    figures.append(TIME_FIGURE)
    thresholds = resolve(figures, memory_threshold, time_threshold, per_figure, gate_time)

    counts_by_side = {}
    if only:
        kept_base, kept_new = select(base_df, only), select(new_df, only)
        counts_by_side = {"base": (len(kept_base), len(base_df)), "new": (len(kept_new), len(new_df))}
        if not len(kept_base) and not len(kept_new):
            raise ThresholdError(f"--filter {' / '.join(map(repr, only))} matches no benchmark name or config id "
                                 "in either run")
        base_df, new_df = kept_base, kept_new

    # a figure no benchmark of a run records is not comparable at all in that run
    in_base = {fig: recorded(base_df, fig) for fig in figures}
    in_new = {fig: recorded(new_df, fig) for fig in figures}

    bidx, nidx = _index(base_df, "base"), _index(new_df, "new")
    rows: list[CompareRow] = []
    for key, bi in bidx.items():
        name, cfg = key[0], key[1]
        label = str(base_df["method_label"].iloc[bi]) if "method_label" in base_df else key[2]
        ni = nidx.get(key)
        if ni is None:
            rows.append(CompareRow(name, label, cfg, "-", None, None, None, None, MISSING,
                                   "in base, not in new"))
            continue
        for fig in figures:
            tol, gated = thresholds[fig]
            if not in_base[fig] and not in_new[fig]:
                continue
            if not in_base[fig] or not in_new[fig]:
                side = "new" if in_new[fig] else "base"
                df, i = (new_df, ni) if side == "new" else (base_df, bi)
                v = _value(df[fig].iloc[i]) if fig in df.columns else None
                status = NEW_FIGURE if side == "new" else DROPPED_FIGURE
                note = (f"recorded in {side} only" + ("" if v is not None else
                                                       f" (unavailable: {_reason(df, i, fig) or 'no reason'})"))
                rows.append(CompareRow(name, label, cfg, fig, v if side == "base" else None,
                                       v if side == "new" else None, None, tol, status, note, gated))
                continue
            row = _compare_figure(base_df, new_df, bi, ni, name, label, cfg, fig, tol, gated)
            if row is not None:
                rows.append(row)
    for key, ni in nidx.items():
        if key not in bidx:
            label = str(new_df["method_label"].iloc[ni]) if "method_label" in new_df else key[2]
            rows.append(CompareRow(key[0], label, key[1], "-", None, None, None, None, ADDED, "new benchmark"))
    return CompareResult(rows=rows, notes=_environment_notes(base_df, new_df),
                         thresholds={f: {"threshold": t, "gated": g} for f, (t, g) in thresholds.items()},
                         time_gated=thresholds[TIME_FIGURE][1], allow_missing=allow_missing, only=only,
                         counts_by_side=counts_by_side)


def _compare_figure(base_df, new_df, bi, ni, name, label, cfg, fig, threshold, gated) -> CompareRow | None:
    b = _value(base_df[fig].iloc[bi]) if fig in base_df.columns else None
    n = _value(new_df[fig].iloc[ni]) if fig in new_df.columns else None
    if b is None or n is None:
        sides = [s for s, v in (("base", b), ("new", n)) if v is None]
        given = {side: _reason(df, i, fig) for side, df, i in (("base", base_df, bi), ("new", new_df, ni))
                 if side in sides}
        if len(sides) == 2 and not any(given.values()):
            return None     # neither record has the figure (an encoder-decoder figure on a language model)
        reasons = {side: why or "no reason given" for side, why in given.items()}
        if len(sides) == 2 and reasons["base"] == reasons["new"]:
            why = f"unavailable in both: {reasons['base']}"
        elif len(sides) == 2:
            why = f"unavailable in both: base: {reasons['base']}; new: {reasons['new']}"
        else:
            why = f"unavailable in {sides[0]} only: {reasons[sides[0]]}"
        return CompareRow(name, label, cfg, fig, b, n, None, threshold, SKIPPED, why, gated)
    if b == 0:
        change = 0.0 if n == 0 else math.inf
    else:
        change = (n - b) / b
    if n == b:
        status = UNCHANGED
    elif n - b > threshold * b:  # exact for integers: "grew by more than the threshold"
        status = REGRESSED if gated else WARN
    elif b - n > threshold * b:
        status = IMPROVED
    else:
        status = WITHIN
    note = "grew from 0" if b == 0 and n > 0 else ""
    return CompareRow(name, label, cfg, fig, b, n, change, threshold, status, note, gated)


def _environment_notes(base_df, new_df) -> list[str]:
    notes = []
    for col in ENV_COLUMNS:
        if col in base_df.columns and col in new_df.columns:
            b = sorted({str(v) for v in base_df[col].dropna()})
            n = sorted({str(v) for v in new_df[col].dropna()})
            if b and n and b != n:   # a column one run does not record (an older baseline) is not a difference
                notes.append(f"{col} differs: base {', '.join(b)} vs new {', '.join(n)}; "
                             "figures from different environments may not be comparable")
    return notes
