"""The report page: its sections, and the whole report as ONE self-contained HTML file.

`render_report(df_or_path, out_html)` writes a single HTML file: inline CSS, figures
as inline SVG, one small inline script (click a column header to sort a table), nothing fetched from the network. Every figure
caption says how its numbers were measured. The same building blocks
(`revbench.report.tables`, the `fig_*` of `revbench.report.figures*`, `section_html`)
are used by `reports/benchmarks.ipynb`. Sections whose data are absent (say, no method
with an information buffer) are replaced by a one-line note.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from revbench.report.figures import fig_memory_vs_seq_len, fig_time_memory_frontier
from revbench.report.figures_buffer import fig_buffer_efficiency, fig_saving_ratios
from revbench.report.format import esc, method_order
from revbench.report.headline import headline_sentences_html
from revbench.report.how_measured import machine_how, peak_how, time_how
from revbench.report.html import CSS, check_self_contained, figure_html, note_html
from revbench.report.results import load_benchmarks, split_kinds
from revbench.report.script import script_html
from revbench.report.seq2seq import seq2seq_html
from revbench.report.tables import environment_html, meters_html, summary_html
from revbench.util.atomic import atomic_write_text


@dataclass(frozen=True)
class Section:
    """One part of the report: `build(df)` returns an HTML fragment. `kind`: which records it is built from
    ("lm": language-model steps, "seq2seq": encoder-decoder steps, "all")."""
    key: str
    title: str
    build: Callable
    kind: str = "lm"


def _figure_section(fn, caption: str, how: Callable, alt: str):
    def build(df):
        fig, note = fn(df)
        if fig is None:
            return note_html(note)
        text = how(df)
        if "Machine:" not in text:
            text += f" {machine_how(df)}"
        return figure_html(fig, caption + (" " + note.strip() if note else ""), text, alt)
    return build


SECTIONS: tuple[Section, ...] = (
    Section("summary", "Summary", summary_html),
    Section("memory", "Activation memory against sequence length", _figure_section(
        fig_memory_vs_seq_len,
        "Peak activation memory of one training step against the segment length, per method; one panel per "
        "setting and forgetting limit; both axes logarithmic (a slope of 1 means memory grows linearly with T).",
        peak_how, "peak memory against seq_len")),
    Section("frontier", "Time-memory frontier", _figure_section(
        fig_time_memory_frontier,
        "Every method at the largest seq_len of each setting: median step time against peak activation memory. "
        "Points ringed in black and joined by the dashed line are Pareto-optimal (no other method is both faster "
        "and smaller). Methods without an information buffer do not depend on the forgetting limit and are shown "
        "as the median over the forgetting-limit configurations; buffered methods get one point per limit, "
        "labelled with the limit in bits (∞ = no limit).",
        lambda df: f"{peak_how(df)} {time_how(df)}", "time against memory, Pareto frontier")),
    Section("savings", "Memory-saving ratios per forgetting limit", _figure_section(
        fig_saving_ratios,
        "Memory saving of methods with an information buffer, per forgetting limit (\"no limit\" = max_forget_bits "
        "None): the allocator's view (bptt's peak_bytes / this peak_bytes) next to the paper-style, model-level "
        "ratios (baseline state bits / buffer bits, actual and ideal).",
        lambda df: (f"allocator ratio from peak_bytes of both methods in the same run ({peak_how(df)}); "
                    "paper-style ratios from the method's own bit accounting: baseline = 32·T·B·H per layer (×2 for "
                    "LSTM), actual = bits allocated for buffer chunks, ideal = Σ −log2 z_q of the applied (quantised, clamped) forget gates."),
        "memory-saving ratios per forgetting limit")),
    Section("efficiency", "Buffer efficiency", _figure_section(
        fig_buffer_efficiency,
        "How much more the information buffer allocates than the information it must keep: "
        "buffer_bits_actual / buffer_bits_ideal, per forgetting limit and setting. 1.0 is a perfect buffer.",
        lambda df: ("bit accounting of the method itself: actual = 64 bits per int64 entry of every buffer chunk "
                    "(plus overflow flags), ideal = Σ −log2 z_q (applied gates) over time steps, batch and units."),
        "buffer efficiency per forgetting limit")),
    Section("seq2seq", "Encoder-decoder (attention NMT step)", seq2seq_html, kind="seq2seq"),
    Section("meters", "Independent memory meters", meters_html, kind="all"),
    Section("environment", "Environment", environment_html, kind="all"),
)


def _section_body(section: Section, df) -> str:
    """Build ``section`` from the rows of its kind; a note where the file has none."""
    if section.kind == "all":
        return section.build(df)
    lm, s2s = split_kinds(df)
    rows = lm if section.kind == "lm" else s2s
    if section.kind == "lm" and not len(rows):
        return note_html("no language-model benchmarks in this file")
    return section.build(rows)


def section_html(df, key: str) -> str:
    """The HTML fragment of one report section (also used by the notebook)."""
    for s in SECTIONS:
        if s.key == key:
            return _section_body(s, df)
    raise KeyError(f"no report section {key!r}; known: {', '.join(s.key for s in SECTIONS)}")


def _slug(text: str, used: set) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def build_report_html(df, title: str = "revbench benchmark report",
                      extra_sections: Sequence[tuple[str, str]] = ()) -> str:
    """The whole report as one HTML string."""
    for t, frag in extra_sections:
        check_self_contained(frag, f"extra section {t!r}")
    used: set = set()
    body, toc = [], []
    for s in SECTIONS:
        slug = _slug(s.key, used)
        toc.append((slug, s.title))
        body.append(f'<section id="{slug}"><h2>{esc(s.title)}</h2>{_section_body(s, df)}</section>')
    for t, frag in extra_sections:
        slug = _slug(t, used)
        toc.append((slug, t))
        body.append(f'<section id="{slug}" class="extra"><h2>{esc(t)}</h2>{frag}</section>')
    methods = ", ".join(method_order(df["method_label"]))
    cells = ", ".join(sorted({str(c) for c in df["cell"]}))
    sub = (f"{len(df)} benchmarks · methods: {methods} · cells: {cells} · run {df.attrs.get('datetime') or 'n/a'} · "
           f"source: {df.attrs.get('source', 'n/a')}")
    toc_html = "".join(f'<li><a href="#{slug}">{esc(t)}</a></li>' for slug, t in toc)
    lm_rows = split_kinds(df)[0]
    headline = headline_sentences_html(lm_rows) if len(lm_rows) else ""
    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f'<header class="top"><h1>{esc(title)}</h1><p class="sub">{esc(sub)}</p>{headline}</header>'
        f'<nav class="toc"><strong>Contents</strong><ol>{toc_html}</ol></nav>'
        + "".join(body)
        + "<footer>Generated by revbench report. One self-contained file: figures are inline SVG, tables sort "
          "when a column header is clicked (a small inline script), nothing is loaded from the network.</footer>"
          f"</main>{script_html()}</body></html>\n")
    check_self_contained(page, "report", allow_inline_script=True)
    return page


def render_report(df_or_path, out_html, title: str = "revbench benchmark report",
                  extra_sections: Sequence[tuple[str, str]] = ()) -> Path:
    """Write the self-contained HTML report of a benchmark DataFrame or JSON path; returns the path written.

    The file is written to a temporary file beside `out_html` and renamed into place, so a
    failure never leaves a half-written report or replaces an earlier one.
    """
    df = df_or_path if hasattr(df_or_path, "columns") else load_benchmarks(df_or_path)
    page = build_report_html(df, title=title, extra_sections=extra_sections)
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out
