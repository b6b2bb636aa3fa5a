"""The report's only script: click (or Enter on) a column header of a `table.sortable` to sort its rows.

Tables are marked `js-sort` once the script has run, and only those look clickable (pages without the script,
such as the task pages sharing `dataframe_to_html_table`, keep plain headers).

Numbers sort by the value in the cell's `data-sort` attribute (the unformatted figure, written by
`dataframe_to_html_table`), text by its words; missing values (`td.na`) go last in both directions. A second click
reverses the order; the header's `aria-sort` says which. Inline and self-contained: it fetches nothing.
"""
from __future__ import annotations

SORT_SCRIPT = r"""
(function () {
  function key(td) {
    if (!td || td.classList.contains("na")) return null;
    var v = td.getAttribute("data-sort");
    if (v !== null && v !== "" && !isNaN(parseFloat(v))) return parseFloat(v);
    return td.textContent.trim().toLowerCase();
  }
  function compare(a, b) {
    if (a === null || b === null) return a === null ? (b === null ? 0 : 1) : -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }
  function sortBy(table, th) {
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var asc = th.getAttribute("aria-sort") !== "ascending";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).map(function (tr, i) {
      return {tr: tr, k: key(tr.cells[col]), i: i};
    });
    rows.sort(function (x, y) {
      if (x.k === null || y.k === null) return compare(x.k, y.k) || x.i - y.i;
      return (asc ? compare(x.k, y.k) : compare(y.k, x.k)) || x.i - y.i;
    });
    rows.forEach(function (r) { r.tr.classList.remove("group-start"); body.appendChild(r.tr); });
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies.length) return;
    table.classList.add("js-sort");
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.tabIndex = 0;
      th.title = (th.title ? th.title + "\n" : "") + "Click to sort by this column (again to reverse).";
      th.addEventListener("click", function () { sortBy(table, th); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th); }
      });
    });
  });
})();
"""

SORT_CSS = """
table.js-sort th { cursor: pointer; user-select: none; }
table.js-sort th:hover { background: #dde5f2; }
table.js-sort th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 10px; color: var(--accent); }
table.js-sort th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 10px; color: var(--accent); }
"""


def script_html() -> str:
    return f"<script>{SORT_SCRIPT}</script>"
