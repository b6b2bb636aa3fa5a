"""Matplotlib figures as inline SVG for the one-file report: sharp at any zoom, text kept as text.

`figure_to_svg(fig)` returns an `<svg>` element ready to be placed in HTML: no XML prolog or DOCTYPE, no metadata,
no namespace URLs (the HTML parser puts inline `<svg>` in the SVG namespace by itself), and only the element ids that
something refers to, each prefixed (by a hash of the figure) so that figures on one page never share an id. Ids are
deterministic (`svg.hashsalt` is fixed), so a report rendered twice from the same JSON is byte-identical.
"""
from __future__ import annotations

import hashlib
import io
import re

from revbench.report.plotting import third_party_warnings_visible

# What matplotlib repeats on every <text>; the page's CSS gives it once (`svg.fig text`).
FONT_FAMILY = ("'DejaVu Sans', 'Bitstream Vera Sans', Verdana, 'Noto Sans', Arial, Helvetica, sans-serif")
SVG_CSS = (f"svg.fig {{ max-width: 100%; height: auto; display: block; }}\n"
           f"svg.fig * {{ stroke-linejoin: round; stroke-linecap: butt; }}\n"
           f"svg.fig text {{ font-family: {FONT_FAMILY}; }}\n")

_ID = re.compile(r'\sid="([^"]+)"')
_REF = re.compile(r'(?:xlink:href|href)="#([^"]+)"|url\(#([^)]+)\)')
_FONT = re.compile(r"font-family:\s*(?:'[^']*'|[\w -]+)(?:\s*,\s*(?:'[^']*'|[\w -]+))*;?\s*")


def figure_to_svg(fig, alt: str = "", prefix: str | None = None) -> str:
    """The figure as an inline `<svg class="fig" role="img">` element with `alt` as its accessible name."""
    import matplotlib

    buf = io.StringIO()
    with third_party_warnings_visible(), matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "revbench",
                                                                 "svg.image_inline": True}):
        fig.savefig(buf, format="svg", facecolor="white",
                    metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    text = buf.getvalue()
    if prefix is None:   # from the figure's content (and alt): the same report renders to the same bytes
        prefix = "f" + hashlib.sha1((alt + text).encode("utf-8")).hexdigest()[:8] + "-"
    return clean_svg(text, alt=alt, prefix=prefix)


def clean_svg(text: str, alt: str = "", prefix: str = "f-") -> str:
    """Strip what inline SVG in HTML does not need and make its ids unique (see the module docstring)."""
    from revbench.report.format import esc

    start = text.find("<svg")
    if start < 0:
        raise ValueError("matplotlib wrote no <svg> element")
    s = text[start:]
    s = re.sub(r"<metadata>.*?</metadata>\s*", "", s, flags=re.S)
    s = re.sub(r"<style[^>]*>.*?</style>\s*", "", s, flags=re.S)            # replaced by SVG_CSS on the page
    s = re.sub(r'\s+xmlns(?::\w+)?="[^"]*"', "", s, count=4)
    s = re.sub(r'\s+version="1\.1"', "", s, count=1)
    s = _FONT.sub("", s)
    s = s.replace(' style=""', "")
    referenced = {a or b for a, b in _REF.findall(s)}
    s = _ID.sub(lambda m: f' id="{prefix}{m.group(1)}"' if m.group(1) in referenced else "", s)
    s = _REF.sub(lambda m: (f'xlink:href="#{prefix}{m.group(1)}"' if m.group(1) else f"url(#{prefix}{m.group(2)})"), s)
    s = re.sub(r"\n\s*", "\n", s)                                               # indentation only
    label = f' role="img" aria-label="{esc(alt)}"' if alt else ' role="img"'
    s = s.replace("<svg", f'<svg class="fig"{label}', 1)
    return s.strip()
