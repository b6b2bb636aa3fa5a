"""HTML building blocks of the report: the page's CSS, DataFrame tables (sortable), embedded SVG figures, notes,
and the check that a fragment is self-contained (nothing external; no script but the page's own)."""
from __future__ import annotations

import re
from typing import Callable, Iterable, Mapping

from revbench.report.format import esc, isna
from revbench.report.script import SORT_CSS
from revbench.report.svg import SVG_CSS, figure_to_svg

NOISY_MARK = "\u26a0\ufe0e"   # ⚠ in text presentation

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --accent:#2d5fa8; --bg:#ffffff; --alt:#f5f7fb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 24px 32px 64px; }
header.top { border-bottom: 3px solid var(--accent); margin-bottom: 16px; }
h1 { font-size: 28px; margin: 8px 0 4px; }
h2 { font-size: 21px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
p.sub { color: var(--muted); margin: 0 0 12px; }
div.headline { margin: 0 0 12px; }
div.headline p { margin: 0 0 4px; }
div.headline ul { margin: 0; padding-left: 20px; }
nav.toc { background: var(--alt); border: 1px solid var(--line); border-radius: 6px; padding: 8px 16px; }
nav.toc ol { margin: 4px 0; padding-left: 22px; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
p.note { color: var(--muted); font-style: italic; margin: 6px 0; }
div.tablewrap { overflow-x: auto; margin: 8px 0 4px; }
div.tablewrap.scroll { max-height: 560px; overflow-y: auto; border: 1px solid var(--line); border-radius: 4px; }
table.data tr.group-start td { border-top: 2px solid #b9c3d3; }
table.data td.yes { color: #1b7f3b; font-weight: 600; text-align: center; }
table.data { border-collapse: collapse; font-size: 13px; width: auto; min-width: 50%; }
table.data caption { caption-side: top; text-align: left; color: var(--muted); padding: 4px 0; }
table.data th { background: #e9eef6; text-align: left; font-weight: 600; padding: 6px 9px;
  border-bottom: 2px solid #b9c3d3; position: sticky; top: 0; vertical-align: bottom; }
table.data td { padding: 4px 9px; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.data tbody tr:nth-child(even) td { background: var(--alt); }
table.data tbody tr:hover td { background: #fff6d6; }
table.data td.num, table.data th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.data td.na { color: #9aa3b2; text-align: center; cursor: help; }
table.data td.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px;
  color: var(--muted); }
table.kv th { width: 220px; }
figure { margin: 12px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 13.5px; color: var(--fg); margin-top: 6px; max-width: 1100px; }
figcaption .how, p.how { display: block; color: var(--muted); margin-top: 3px; }
p.how, ul.how { font-size: 13.5px; color: var(--muted); }
ul.how code { font-size: 12.5px; }
dl.legend { display: grid; grid-template-columns: 230px 1fr; gap: 4px 14px; font-size: 13.5px; }
dl.legend dt { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
dl.legend dd { margin: 0; color: var(--muted); }
td .flag { color: #c05a00; font-weight: 700; margin-left: 3px; cursor: help; }
p.legendline { font-size: 13px; color: var(--muted); margin: 2px 0 8px; }
p.legendline .flag { color: #c05a00; font-weight: 700; }
footer { margin-top: 48px; color: var(--muted); font-size: 12px; border-top: 1px solid var(--line); padding-top: 8px; }
""" + SVG_CSS + SORT_CSS


def dataframe_to_html_table(df, *, formats: Mapping[str, Callable | str] | None = None, titles=None,
                            header_titles: Mapping[str, str] | None = None, caption: str | None = None,
                            na_rep: str = "n/a", index: bool = False, mono: Iterable[str] = (),
                            css_class: str = "data", group_by: str | None = None, scroll: bool = False,
                            wrap_headers: bool = False, sortable: bool = True, flags=None) -> str:
    """Render a DataFrame as a styled, escaped HTML table (no jinja2).

    formats: column -> callable(value) -> str, or a format string such as "{:,.2f}".
    titles: a DataFrame (same index, any subset of columns) of hover texts per cell; missing
        values get `na_rep` and their title (or "not available") as a tooltip.
    header_titles: column -> hover text of the header. mono: columns shown in monospace.
    group_by: a column whose change of value starts a visually separated group of rows.
    scroll: put the table in a box of limited height that scrolls (header stays visible).
    wrap_headers: allow long snake_case headers to break after underscores.
    sortable: the page's script sorts the table by a clicked column (numbers by their `data-sort` value).
    flags: a DataFrame (same index, any subset of columns) of hover texts; a cell with one gets the
        visible marker NOISY_MARK after its value (used for noisy times).
    """
    import pandas as pd

    formats = dict(formats or {})
    header_titles = dict(header_titles or {})
    mono = set(mono)
    if index:
        df = df.reset_index()
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}
    numeric |= {c for c in formats if c in df.columns}  # formatted columns are numbers by construction
    wrap = "tablewrap scroll" if scroll else "tablewrap"
    classes = f"{css_class} sortable" if sortable else css_class
    parts = [f'<div class="{wrap}"><table class="{esc(classes)}">']
    if caption:
        parts.append(f"<caption>{esc(caption)}</caption>")
    parts.append("<thead><tr>")
    for col in df.columns:
        cls = ' class="num"' if col in numeric else ""
        tip = f' title="{esc(header_titles[col])}"' if col in header_titles else ""
        text = esc(col).replace("_", "_<wbr>") if wrap_headers else esc(col)
        parts.append(f"<th{cls}{tip}>{text}</th>")
    parts.append("</tr></thead><tbody>")
    previous = object()
    for pos in range(len(df)):
        if group_by is not None:
            current = df[group_by].iloc[pos]
            parts.append('<tr class="group-start">' if pos and current != previous else "<tr>")
            previous = current
        else:
            parts.append("<tr>")
        for col in df.columns:
            value = df[col].iloc[pos]
            tip = None
            if titles is not None and col in getattr(titles, "columns", ()):
                t = titles[col].iloc[pos]
                tip = None if isna(t) else str(t)
            if isna(value):
                tip = tip or "not available"
                parts.append(f'<td class="na" title="{esc(tip)}">{esc(na_rep)}</td>')
                continue
            fmt = formats.get(col)
            if callable(fmt):
                text = fmt(value)
            elif isinstance(fmt, str):
                text = fmt.format(value)
            else:
                text = str(value)
            classes = [c for c, on in (("num", col in numeric), ("mono", col in mono)) if on]
            cls = f' class="{" ".join(classes)}"' if classes else ""
            tip_attr = f' title="{esc(tip)}"' if tip else ""
            sort_attr = f' data-sort="{_sort_value(value)}"' if col in numeric and _sort_value(value) else ""
            flag = ""
            if flags is not None and col in getattr(flags, "columns", ()) and not isna(flags[col].iloc[pos]):
                flag = f'<span class="flag" title="{esc(flags[col].iloc[pos])}">{NOISY_MARK}</span>'
            parts.append(f"<td{cls}{tip_attr}{sort_attr}>{esc(text)}{flag}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def _sort_value(value) -> str:
    """The unformatted number a sortable table sorts by ('' for what is not a finite number)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return ""
    return repr(v) if v == v and v not in (float("inf"), float("-inf")) else ""


def figure_html(fig, caption: str, how: str, alt: str) -> str:
    """<figure> with the figure as inline SVG, a caption and a 'how measured' line."""
    return (f"<figure>{figure_to_svg(fig, alt=alt)}"
            f"<figcaption>{esc(caption)}<span class=\"how\">How measured: {esc(how)}</span></figcaption></figure>")


def note_html(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


_SCRIPT = re.compile(r"<\s*script", re.I)
_EXTERNAL = re.compile(r"""(?:src|href|srcset|action|poster|data)\s*=\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|"""
                       r"""url\(\s*["']?\s*(?:[a-z][a-z0-9+.-]*:)?//|@import""", re.I)


_SCRIPT_SRC = re.compile(r"<\s*script[^>]*\ssrc\s*=", re.I)


def check_self_contained(fragment: str, what: str = "HTML", allow_inline_script: bool = False) -> None:
    """Raise ValueError if an HTML fragment refers to anything outside the file, or has a <script> element
    (the page's own inline script is allowed with ``allow_inline_script``; a script with `src` never is)."""
    if _SCRIPT_SRC.search(fragment):
        raise ValueError(f"{what} loads a script from a file (<script src=...>); the report must be one file")
    if not allow_inline_script and _SCRIPT.search(fragment):
        raise ValueError(f"{what} contains a <script> element; only the report's own sorting script is allowed")
    m = _EXTERNAL.search(fragment)
    if m:
        raise ValueError(f"{what} refers to an external resource ({m.group(0)!r}); embed it instead")
