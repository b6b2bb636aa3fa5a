"""Regression check between two benchmark runs (DataFrames from `revbench.report.results.load_benchmarks`).

Benchmarks are matched on (`name`, `config_id`, `method`, `method_options`). For every
matched pair each figure is compared:

- memory figures: every column ending in `_bytes` plus `buffer_bits_actual` and
  `buffer_bits_ideal` (and their `enc_`/`dec_` forms of encoder-decoder records); a figure regresses when new > base * (1 + threshold), default
  threshold 1% (`memory_threshold`); `per_figure` overrides it per figure (None = report
  but do not gate). Bytes are deterministic for a configuration, so the gate can be tight;
  the sampled/process-level meters get looser defaults (DEFAULT_FIGURE_THRESHOLDS).
- time: `time_median_s` regresses when it grows by more than `time_threshold` (default
  25%), and only fails the check when `gate_time` is true (otherwise it is a warning).

A benchmark present in base but missing in new fails the check; a new benchmark is listed
as added. A figure that is unavailable (None) on either side is skipped with a note, never
compared to 0.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from revbench.report.format import MIB

KEY = ("name", "config_id", "method", "method_options")
TIME_FIGURE = "time_median_s"
BUFFER_BITS = ("buffer_bits_actual", "buffer_bits_ideal",        # the language model's; the encoder-decoder's per side:
               "enc_buffer_bits_actual", "enc_buffer_bits_ideal", "dec_buffer_bits_actual", "dec_buffer_bits_ideal")
# Meters that sample the process or the whole device are noisier than the allocator and the live-tensor meter.
DEFAULT_FIGURE_THRESHOLDS = {
    "rss_peak_delta_bytes": 0.25,
    "nvml_peak_used_bytes": 0.10,
    "nvml_process_peak_used_bytes": 0.10,
}
ENV_COLUMNS = ("device", "device_name", "dtype", "torch_version")

# statuses; FAILING ones make `.ok` false
REGRESSED, MISSING = "regressed", "missing"
WARN, IMPROVED, WITHIN, UNCHANGED, SKIPPED, ADDED = "warn", "improved", "within", "unchanged", "skipped", "added"
FAILING = (REGRESSED, MISSING)
_STATUS_ORDER = (MISSING, REGRESSED, WARN, IMPROVED, WITHIN, ADDED, UNCHANGED, SKIPPED)


def is_comparable_figure(name: str) -> bool:
    """True for the figures compare() checks: *_bytes, the buffer bits and time_median_s."""
    return name == TIME_FIGURE or name in BUFFER_BITS or name.endswith("_bytes")


@dataclass
class CompareRow:
    """One figure of one benchmark (or a whole benchmark for missing/added), base against new."""
    name: str
    method_label: str
    config_id: str
    figure: str
    base: float | None
    new: float | None
    change: float | None  # (new - base) / base; None when not computed
    threshold: float | None  # growth allowed before a regression; None = not gated
    status: str
    note: str = ""

    @property
    def change_pct(self) -> float | None:
        return None if self.change is None else 100.0 * self.change


@dataclass
class CompareResult:
    """Rows of a comparison; `.ok` is False when any figure regressed or a benchmark is missing."""
    rows: list[CompareRow]
    notes: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)
    time_gated: bool = True

    @property
    def ok(self) -> bool:
        return not any(r.status in FAILING for r in self.rows)

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

    def counts(self) -> dict:
        out = {s: 0 for s in _STATUS_ORDER}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame([{**asdict(r), "change_pct": r.change_pct} for r in self.rows],
                            columns=[*CompareRow.__dataclass_fields__, "change_pct"])

    def to_json(self) -> str:
        return json.dumps({"ok": self.ok, "counts": self.counts(), "notes": self.notes,
                           "thresholds": self.thresholds, "time_gated": self.time_gated,
                           "rows": [{**asdict(r), "change_pct": r.change_pct} for r in self.rows]}, indent=1)

    def format_table(self, show_all: bool = False) -> str:
        """Readable text: the changes (regressions first, improvements too), a summary of skips, a verdict."""
        shown = [r for r in self.rows if show_all or _worth_showing(r)]
        shown.sort(key=lambda r: (_STATUS_ORDER.index(r.status) if r.status in _STATUS_ORDER else 99, r.name,
                                  r.figure))
        lines = []
        if shown:
            header = ("status", "benchmark", "figure", "base", "new", "change", "limit")
            body = [(r.status.upper() if r.status in FAILING else r.status, r.name, r.figure,
                     format_value(r.figure, r.base), format_value(r.figure, r.new), _fmt_change(r),
                     "not gated" if r.threshold is None and r.figure != "-" else
                     ("" if r.threshold is None else f"+{100 * r.threshold:g}%")) for r in shown]
            widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
            widths[1] = min(widths[1], 70)
            fmt = "  ".join(f"{{:{'>' if i in (3, 4, 5) else '<'}{w}}}" for i, w in enumerate(widths))
            lines.append(fmt.format(*header).rstrip())
            lines.append("  ".join("-" * w for w in widths))
            for row in body:
                row = list(row)
                if len(row[1]) > widths[1]:
                    row[1] = "..." + row[1][-(widths[1] - 3):]
                lines.append(fmt.format(*row).rstrip())
            # notes of shown rows
            for r in shown:
                if r.note and r.status not in (UNCHANGED, WITHIN, IMPROVED):
                    where = r.name if r.figure == "-" else f"{r.name} {r.figure}"
                    lines.append(f"  note: {where}: {r.note}")
        else:
            lines.append("No figure changed beyond rounding." if self.rows else "Nothing to compare.")
        skipped: dict = {}
        for r in self.with_status(SKIPPED):
            per_note = skipped.setdefault(r.figure, {})
            per_note[r.note] = per_note.get(r.note, 0) + 1
        if skipped and not show_all:
            lines.append("")
            lines.append("Skipped (figure unavailable, not compared):")
            for fig, per_note in sorted(skipped.items()):
                total = sum(per_note.values())
                why = "; ".join(f"{note} [{n}]" if len(per_note) > 1 else note for note, n in per_note.items())
                lines.append(f"  {fig}: {total} benchmark(s): {why}")
        for note in self.notes:
            lines.append(f"Note: {note}")
        c = self.counts()
        matched = len({r.name for r in self.rows if r.status not in (MISSING, ADDED)})
        lines.append("")
        lines.append(f"{matched} benchmarks matched: {c[REGRESSED]} regressed, {c[WARN]} warnings (not gated), "
                     f"{c[IMPROVED]} improved, {c[WITHIN]} within threshold, {c[UNCHANGED]} unchanged, "
                     f"{c[SKIPPED]} skipped; {c[MISSING]} missing, {c[ADDED]} added.")
        if self.ok:
            lines.append("OK: no regression.")
        else:
            lines.append(f"FAIL: {c[REGRESSED]} regressed figure(s), {c[MISSING]} missing benchmark(s).")
        return "\n".join(lines)


def _worth_showing(r: CompareRow) -> bool:
    if r.status in (UNCHANGED, SKIPPED):
        return False
    if r.status == WITHIN and r.figure == TIME_FIGURE:
        return False  # timing noise
    return True


def format_value(figure: str, value) -> str:
    """A figure's value for humans: MiB for bytes, ms for time, integers for bits."""
    if value is None:
        return "n/a" if figure != "-" else ""
    if figure.endswith("_bytes"):
        return f"{value / MIB:,.3f} MiB"
    if figure == TIME_FIGURE:
        return f"{value * 1e3:,.3f} ms"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _fmt_change(r: CompareRow) -> str:
    if r.change is None:
        return ""
    if math.isinf(r.change):
        return "+inf%"
    return f"{100 * r.change:+.2f}%"


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
    v = df[col].iloc[i]
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("", "nan") else str(v)


def compare(base_df, new_df, memory_threshold: float = 0.01, time_threshold: float = 0.25,
            per_figure: dict | None = None, gate_time: bool = True) -> CompareResult:
    """Compare a new run against a base run; see the module docstring for the rules."""
    for label, value in (("memory_threshold", memory_threshold), ("time_threshold", time_threshold)):
        if value is None or not (value >= 0) or math.isinf(value):
            raise ValueError(f"{label} must be a finite fraction >= 0 (e.g. 0.01 for 1%), got {value!r}")
    per_figure = dict(per_figure or {})
    for fig, thr in per_figure.items():
        if not is_comparable_figure(fig):
            raise ValueError(f"cannot set a threshold for {fig!r}: compared figures are time_median_s, "
                             f"{', '.join(BUFFER_BITS)} and columns ending in _bytes")
        if thr is not None and (not (thr >= 0) or math.isinf(thr)):
            raise ValueError(f"threshold for {fig!r} must be a fraction >= 0 or None, got {thr!r}")

    figures = sorted({c for df in (base_df, new_df) for c in df.columns
                      if c.endswith("_bytes") or c in BUFFER_BITS})
    figures.append(TIME_FIGURE)
    thresholds = {}
    for fig in figures:
        if fig in per_figure:
            thresholds[fig] = per_figure[fig]
        elif fig == TIME_FIGURE:
            thresholds[fig] = time_threshold
        else:
            thresholds[fig] = DEFAULT_FIGURE_THRESHOLDS.get(fig, memory_threshold)
    gated = {fig: thresholds[fig] is not None and (fig != TIME_FIGURE or gate_time) for fig in figures}

    bidx, nidx = _index(base_df, "base"), _index(new_df, "new")
    rows: list[CompareRow] = []
    for key, bi in bidx.items():
        name = key[0]
        label = str(base_df["method_label"].iloc[bi]) if "method_label" in base_df else key[2]
        cfg = key[1]
        ni = nidx.get(key)
        if ni is None:
            rows.append(CompareRow(name, label, cfg, "-", None, None, None, None, MISSING,
                                   "in base, not in new (a benchmark that stopped running fails the check)"))
            continue
        for fig in figures:
            rows.append(_compare_figure(base_df, new_df, bi, ni, name, label, cfg, fig, thresholds[fig], gated[fig]))
    for key, ni in nidx.items():
        if key not in bidx:
            label = str(new_df["method_label"].iloc[ni]) if "method_label" in new_df else key[2]
            rows.append(CompareRow(key[0], label, key[1], "-", None, None, None, None, ADDED, "new benchmark"))
    return CompareResult(rows=rows, notes=_environment_notes(base_df, new_df), thresholds=thresholds,
                         time_gated=gate_time)


def _compare_figure(base_df, new_df, bi, ni, name, label, cfg, fig, threshold, gated) -> CompareRow:
    b = _value(base_df[fig].iloc[bi]) if fig in base_df.columns else None
    n = _value(new_df[fig].iloc[ni]) if fig in new_df.columns else None
    shown_threshold = threshold if gated else None
    if b is None or n is None:
        sides = [s for s, v in (("base", b), ("new", n)) if v is None]
        reasons = {}
        for side, df, i in (("base", base_df, bi), ("new", new_df, ni)):
            if side in sides:
                reasons[side] = "not recorded" if fig not in df.columns else (_reason(df, i, fig) or "no reason given")
        if len(sides) == 2 and reasons["base"] == reasons["new"]:
            why = f"unavailable in both: {reasons['base']}"
        elif len(sides) == 2:
            why = f"unavailable in both: base: {reasons['base']}; new: {reasons['new']}"
        else:
            why = f"unavailable in {sides[0]} only: {reasons[sides[0]]}"
        return CompareRow(name, label, cfg, fig, b, n, None, shown_threshold, SKIPPED, why)
    if b == 0:
        change = 0.0 if n == 0 else math.inf
    else:
        change = (n - b) / b
    allowed = threshold if threshold is not None else 0.0
    if n == b:
        status = UNCHANGED
    elif n - b > allowed * b:  # exact for integers: "grew by more than the threshold"
        status = REGRESSED if gated else WARN
    elif b - n > allowed * b:
        status = IMPROVED
    else:
        status = WITHIN
    note = ""
    if status == WARN:
        note = "grew beyond its threshold, but this figure is not gated"
    if b == 0 and n > 0:
        note = "grew from 0"
    return CompareRow(name, label, cfg, fig, b, n, change, shown_threshold, status, note)


def _environment_notes(base_df, new_df) -> list[str]:
    notes = []
    for col in ENV_COLUMNS:
        if col in base_df.columns and col in new_df.columns:
            b = sorted({str(v) for v in base_df[col].dropna()})
            n = sorted({str(v) for v in new_df[col].dropna()})
            if b != n:
                notes.append(f"{col} differs: base {', '.join(b) or 'n/a'} vs new {', '.join(n) or 'n/a'}; "
                             "figures from different environments may not be comparable")
    return notes
