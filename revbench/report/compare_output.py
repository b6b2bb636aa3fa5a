"""The text form of a comparison (`revbench compare`'s output).

Default (``verbose=False``): what fails (regressed figures, missing benchmarks), any environment difference,
then one summary line; a clean pass is that one line. ``verbose=True`` adds the thresholds, warnings (ungated
figures beyond their tolerance), improvements, changes within the threshold (memory), added benchmarks, new
and dropped figures and the skipped (unavailable) figures. ``show_all=True`` lists every compared figure.

Rows are grouped per benchmark under its full name (pytest's id: method, options and config id): a name is
never shortened, so two rows can always be told apart.
"""
from __future__ import annotations

import math

from revbench.report.compare_thresholds import (ADDED, DROPPED_FIGURE, IMPROVED, MISSING, NEW_FIGURE, REGRESSED,
                                                SKIPPED, TIME_FIGURE, UNCHANGED, WARN, WITHIN, format_threshold)
from revbench.report.format import MIB

SECTIONS = (  # (status, heading shown with -v; None = no heading in the default output)
    (REGRESSED, "Regressed (gated; these fail the check):"),
    (MISSING, "Missing from the new run:"),
    (WARN, "Beyond the tolerance but not gated (sampled meters, time with --no-time, figures set to off):"),
    (IMPROVED, "Improved:"),
    (WITHIN, "Changed within the threshold:"),
    (ADDED, "Added (in new, not in base):"),
    (UNCHANGED, "Unchanged:"),
    (SKIPPED, "Skipped (unavailable on a side):"),
)


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


def _fmt_change(r) -> str:
    if r.change is None:
        return ""
    if math.isinf(r.change):
        return "+inf%"
    return f"{100 * r.change:+.2f}%"


def _limit(r) -> str:
    if r.threshold is None:
        return ""
    return f"limit {format_threshold(r.threshold)}" if r.gated else f"not gated ({format_threshold(r.threshold)})"


def _figure_lines(rows: list) -> list[str]:
    body = [(r.figure, format_value(r.figure, r.base), format_value(r.figure, r.new), _fmt_change(r), _limit(r),
             r.note if r.status not in (UNCHANGED, WITHIN, IMPROVED) or r.note == "grew from 0" else "")
            for r in rows]
    w = [max(len(row[i]) for row in body) for i in range(4)]
    out = []
    for fig, b, n, ch, lim, note in body:
        line = f"    {fig:<{w[0]}}  {b:>{w[1]}} -> {n:>{w[2]}}  {ch:>{w[3]}}  {lim}"
        out.append((line.rstrip() + (f"  ({note})" if note else "")).rstrip())
    return out


def _section(rows: list, status: str) -> list[str]:
    """Rows of one status grouped by benchmark: the full name on its own line, then one line per figure."""
    tag = status.upper() if status in (REGRESSED, MISSING) else status
    by_name: dict = {}
    for r in rows:
        by_name.setdefault(r.name, []).append(r)
    lines = []
    for name in sorted(by_name):
        group = sorted(by_name[name], key=lambda r: r.figure)
        if group[0].figure == "-":   # a whole benchmark (missing/added)
            lines.append(f"{tag:<9} {name}" + (f"  ({group[0].note})" if group[0].note else ""))
            continue
        lines.append(f"{tag:<9} {name}")
        lines.extend(_figure_lines(group))
    return lines


def _aggregate(rows: list, status: str) -> list[str]:
    per_fig: dict[str, dict[str, int]] = {}
    for r in rows:
        if r.status == status:
            notes = per_fig.setdefault(r.figure, {})
            notes[r.note] = notes.get(r.note, 0) + 1
    lines = []
    for fig, notes in sorted(per_fig.items()):
        total = sum(notes.values())
        why = "; ".join(f"{note} [{n}]" if len(notes) > 1 else note for note, n in notes.items())
        lines.append(f"  {fig}: {total} benchmark(s): {why}")
    return lines


def summary_line(result) -> str:
    c = result.counts()
    figures = sum(c[s] for s in (REGRESSED, WARN, IMPROVED, WITHIN, UNCHANGED, SKIPPED))
    new_figs = len({r.figure for r in result.rows if r.status == NEW_FIGURE})
    dropped = len({r.figure for r in result.rows if r.status == DROPPED_FIGURE})
    regressed_in = len({r.name for r in result.regressions})
    parts = [f"{n:,} {what}" for n, what in ((c[UNCHANGED], "unchanged"), (c[WITHIN], "within threshold"),
                                             (c[IMPROVED], "improved"), (c[WARN], "beyond tolerance, not gated"),
                                             (c[SKIPPED], "unavailable")) if n]
    parts = [f"{figures:,} figures" + (f": {parts[0]}" if parts else ""), *parts[1:]]
    if new_figs:
        parts.append(f"{new_figs} new figure{'s' if new_figs != 1 else ''}")
    if dropped:
        parts.append(f"{dropped} figure{'s' if dropped != 1 else ''} no longer recorded")
    bench = f"{result.matched} benchmark{'s' if result.matched != 1 else ''} compared"
    if result.only:
        kept, total = result.counts_by_side.get("base", (result.matched, result.matched))
        bench += f" (--filter {', '.join(map(repr, result.only))}: {kept} of {total} in base)"
    extra = []
    if c[MISSING]:
        extra.append(f"{c[MISSING]} missing" + (" (allowed)" if result.allow_missing else ""))
    if c[ADDED]:
        extra.append(f"{c[ADDED]} added")
    tail = f"; {', '.join(extra)}" if extra else ""
    if result.ok:
        return f"OK: no regression; {bench} ({', '.join(parts)}){tail}. Details: -v."
    fails = [] if result.matched else ["no benchmark found in both runs"]
    if c[REGRESSED]:
        fails.append(f"{c[REGRESSED]} figure{'s' if c[REGRESSED] != 1 else ''} regressed in {regressed_in} "
                     f"benchmark{'s' if regressed_in != 1 else ''}")
    if c[MISSING] and not result.allow_missing:
        fails.append(f"{c[MISSING]} benchmark{'s' if c[MISSING] != 1 else ''} missing from the new run "
                     "(--allow-missing to report only, --filter to compare a subset)")
        extra = [e for e in extra if "missing" not in e]
        tail = f"; {', '.join(extra)}" if extra else ""
    return f"FAIL: {', '.join(fails)}; {bench} ({', '.join(parts)}){tail}."


def format_text(result, verbose: bool = False, show_all: bool = False) -> str:
    """The comparison as text; see the module docstring for what each level shows."""
    verbose = verbose or show_all
    lines: list[str] = []
    if verbose and result.thresholds:
        gated = sorted(f for f, t in result.thresholds.items() if t["gated"])
        ungated = sorted(f for f, t in result.thresholds.items() if not t["gated"])
        shown = lambda figs: ", ".join(f"{f} {format_threshold(result.thresholds[f]['threshold'])}" for f in figs)
        lines.append(f"gated: {shown(gated) or 'nothing'}")
        lines.append(f"reported, not gated: {shown(ungated) or 'nothing'}")
        lines.append("")
    for status, heading in SECTIONS:
        rows = result.with_status(status)
        if status in (UNCHANGED, SKIPPED) and not show_all:
            continue
        if status == WITHIN and not show_all:
            rows = [r for r in rows if r.figure != TIME_FIGURE]   # timing noise
        failing = status in result.failing_statuses
        if not rows or not (verbose or failing):
            continue
        if verbose:
            lines.append(heading if status != MISSING or failing else "Missing from the new run (allowed):")
        lines.extend(_section(rows, status))
        if verbose:
            lines.append("")
    if verbose:
        for status, heading in ((NEW_FIGURE, "New figures (recorded in new only; not compared, not failing):"),
                                (DROPPED_FIGURE, "Figures no longer recorded (in base only; not compared):")):
            agg = _aggregate(result.rows, status)
            if agg:
                lines += [heading, *agg, ""]
        if not show_all:
            agg = _aggregate(result.rows, SKIPPED)
            if agg:
                lines += ["Skipped (figure unavailable, not compared):", *agg, ""]
    for note in result.notes:
        lines.append(f"Note: {note}")
    if not result.rows:
        lines.append("Nothing to compare.")
    lines.append(summary_line(result))
    return "\n".join(lines)
