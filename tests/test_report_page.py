"""The report page of issue 14: SVG figures, sortable tables (checked in headless Chromium), buffer panels only for
methods with a buffer, every frontier setting drawn with distinct labels, noisy times marked, threads and CPU model
shown, the new memory meters' columns."""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from revbench.report.figures import fig_time_memory_frontier
from revbench.report.figures_buffer import fig_saving_ratios
from revbench.report.format import short_label, short_labels
from revbench.report.html import NOISY_MARK
from revbench.report.page import build_report_html, render_report
from revbench.report.results import load_benchmarks
from revbench.report.svg import figure_to_svg
from tests.fixtures import benchjson

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="headless browser check needs /usr/bin/chromium")


def _write(tmp_path, doc, name="bench.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _svg_texts(svg: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", t) for t in re.findall(r"<text\b[^>]*>(.*?)</text>", svg, re.S)]


def _section(page: str, key: str) -> str:
    return page.split(f'<section id="{key}">')[1].split("</section>")[0]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two cells, one length, two limits; reversible has a buffer, the others do not."""
    d = tmp_path_factory.mktemp("page")
    doc = benchjson.build_benchmark_json(seq_lens=(35, 70), forget_limits=(2, None))
    return doc, _write(d, doc)


# --- figures ------------------------------------------------------------------------------------------

def test_figures_are_inline_svg_with_text_and_unique_ids(small):
    _, path = small
    fig, _ = fig_time_memory_frontier(load_benchmarks(path))
    a, b = figure_to_svg(fig, alt="one"), figure_to_svg(fig, alt="two")
    assert a.startswith('<svg class="fig" role="img" aria-label="one"') and a.endswith("</svg>")
    assert "<?xml" not in a and "DOCTYPE" not in a and "http" not in a and "<metadata" not in a
    assert "bptt" in _svg_texts(a)                                   # text stays text (selectable, crisp)
    ids_a, ids_b = set(re.findall(r'\sid="([^"]+)"', a)), set(re.findall(r'\sid="([^"]+)"', b))
    assert ids_a and not ids_a & ids_b                              # two figures never share an id
    for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', a):
        assert ref in ids_a                                          # every reference resolves inside the figure


def test_saving_panels_only_for_methods_with_a_buffer(small):
    doc, path = small
    df = load_benchmarks(path)
    # bptt and checkpoint carry ideal bits (the gates of a reversible cell) but no buffer
    assert df.loc[df["method"] == "bptt", "buffer_bits_actual"].isna().all()
    fig, note = fig_saving_ratios(df)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert titles and all(t.startswith("reversible · ") for t in titles)
    assert len(titles) == len({r["extra_info"]["cell"] for r in doc["benchmarks"]})
    assert "bptt" in note and "no information buffer" in note
    page = build_report_html(df)
    texts = _svg_texts(_section(page, "savings"))
    assert not any(t.startswith(("bptt ·", "checkpoint ·", "gruslys")) for t in texts)


def _many_settings(tmp_path, n_sizes=5):
    """revgru and revlstm at several hidden sizes: 2 x n_sizes settings, with gruslys hsm and mixed."""
    methods = (("bptt", {}), ("gruslys", {"budget": 0.1, "policy": "hsm"}),
               ("gruslys", {"budget": 0.1, "policy": "mixed"}), ("reversible", {}))
    base = benchjson.build_benchmark_json(seq_lens=(70,), forget_limits=(3,), methods=methods)
    doc = copy.deepcopy(base)
    doc["benchmarks"] = []
    for h in (64, 128, 256, 512, 1024)[:n_sizes]:
        for b in copy.deepcopy(base["benchmarks"]):
            r = b["extra_info"]
            r["hidden_size"] = h
            r["config_id"] = r["config_id"].replace("-H256-", f"-H{h}-")
            b["name"] += f"-H{h}"
            b["fullname"] += f"-H{h}"
            doc["benchmarks"].append(b)
    return doc, _write(tmp_path, doc)


def test_every_frontier_setting_is_drawn_with_distinct_labels(tmp_path):
    doc, path = _many_settings(tmp_path)
    df = load_benchmarks(path)
    fig, note = fig_time_memory_frontier(df)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    settings = {f"{r['extra_info']['cell']} H{r['extra_info']['hidden_size']}" for r in doc["benchmarks"]}
    assert len(settings) == 10 and len(titles) == 10
    assert {t.split(",")[0] for t in titles} == settings
    assert "All 10 settings are drawn." in note
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "gruslys(b=0.1, hsm)" in legend and "gruslys(b=0.1, mixed)" in legend
    assert len(legend) == len(set(legend))
    point_labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert point_labels.count("gruslys(b=0.1, hsm)") == 10 and point_labels.count("gruslys(b=0.1, mixed)") == 10


def test_short_labels_stay_distinct():
    assert short_label("gruslys(budget=0.1, policy=hsm)") == "gruslys(b=0.1, hsm)"
    assert short_label("revolve(budget=0.1, schedule=revolve)") == "revolve(b=0.1)"
    assert short_label("torch-checkpoint(segments=10)") == "torch-checkpoint(segments=10)"
    labels = ["revolve(budget=0.1, schedule=revolve)", "revolve(b=0.1)"]     # would collide: keep the full one
    assert len(set(short_labels(labels).values())) == 2


# --- tables: spread, noise, environment, meters ---------------------------------------------------------

def test_iqr_beside_each_median_and_noisy_times_marked(tmp_path, small):
    doc = copy.deepcopy(small[0])
    noisy = doc["benchmarks"][3]
    noisy["stats"]["iqr"] = 0.5 * noisy["stats"]["median"]                 # 50 % of the median: noisy
    for b in doc["benchmarks"][4:]:
        b["stats"]["iqr"] = 0.05 * b["stats"]["median"]                     # 5 %: steady
    page = render_report(_write(tmp_path, doc), tmp_path / "r.html").read_text()
    summary = _section(page, "summary")
    assert ">IQR (ms)</th>" in summary
    marks = re.findall(r'<td class="num"[^>]*>([0-9.,]+)<span class="flag" title="([^"]+)">', summary)
    median_ms = f"{noisy['stats']['median'] * 1e3:,.2f}"
    assert (median_ms, "noisy: IQR 50 % of the median (above 20 %)") in marks
    assert f"{noisy['stats']['iqr'] * 1e3:,.2f}</td>" in summary           # the IQR itself, beside the median
    all_rows = summary.split("<h3>All benchmarks")[1]
    assert all_rows.count(NOISY_MARK) == 1 + 1                              # the noisy row + the legend line
    assert "marks a noisy time: the interquartile range of its timed rounds exceeds 20 % of the median" in summary


@pytest.fixture(scope="module")
def pages(tmp_path_factory, small):
    """(page of records carrying this round's keys, page of the same records without them), rendered once."""
    d = tmp_path_factory.mktemp("pages")
    doc = copy.deepcopy(small[0])
    for b in doc["benchmarks"]:
        r = b["extra_info"]
        r.update(torch_num_threads=1, cpu_model="Test CPU 9000")
        r["profiler_peak_bytes"] = r["peak_bytes"]
        for cat, share in (("activation", 0.7), ("gradient", 0.0), ("parameter", 0.0), ("temporary", 0.3),
                           ("other", 0.0)):
            r[f"profiler_{cat}_bytes"] = int(share * r["peak_bytes"])
        r["heap_peak_bytes"] = 2 * r["peak_bytes"]
        r["buffer_bits_reference"] = None if r["buffer_bits_actual"] is None else 2 * r["buffer_bits_actual"]
        r["cuda_peak_allocated_bytes"] = None
        r["cuda_peak_allocated_bytes_reason"] = "no CUDA device (device=cpu)"
    new = render_report(_write(d, doc), d / "new.html").read_text()
    old = render_report(small[1], d / "old.html").read_text()
    return doc, new, old


def test_threads_and_cpu_model_in_environment_and_how_measured(pages):
    _, page, old = pages
    env = _section(page, "environment")
    assert "<td>torch threads</td><td>1</td>" in env and "<td>CPU model</td><td>Test CPU 9000</td>" in env
    hows = re.findall(r'<span class="how">How measured: (.*?)</span>', page)
    assert len(hows) == 4 and all("CPU Test CPU 9000; 1 torch thread." in h for h in hows)
    # an old file: no thread count recorded
    assert "not recorded (file written before torch_num_threads existed)" in _section(old, "environment")
    assert "torch threads not recorded" in old


def test_new_meters_columns_and_reasons(pages):
    doc, page, old = pages
    meters = _section(page, "meters")
    for col in ("profiler_peak_bytes", "profiler_activation_bytes", "profiler_gradient_bytes",
                "profiler_parameter_bytes", "profiler_temporary_bytes", "profiler_other_bytes", "heap_peak_bytes",
                "buffer_bits_actual", "buffer_bits_reference", "buffer_bits_ideal"):
        assert col.replace("_", "_<wbr>") in meters, col
    first = doc["benchmarks"][0]["extra_info"]
    assert f"{2 * first['peak_bytes'] / 2**20:,.2f}" in meters
    assert 'title="no CUDA device (device=cpu)">n/a</td>' in meters
    # a file without the new meters has no such columns
    old_meters = _section(old, "meters")
    assert "profiler_<wbr>peak" not in old_meters and "heap_<wbr>peak" not in old_meters


# --- in a browser: the figures draw and the tables sort -------------------------------------------------

_PROBE = """<script>
(function () {
  var out = {};
  var svgs = document.querySelectorAll("figure svg.fig");
  out.svgs = Array.prototype.map.call(svgs, function (s) {
    var r = s.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height), s.querySelectorAll("text").length];
  });
  var table = document.querySelectorAll("table.sortable")[%(table)d];
  var th = table.tHead.rows[0].cells[%(col)d];
  function column() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (tr) {
      var td = tr.cells[%(col)d]; return td.classList.contains("na") ? null : parseFloat(td.getAttribute("data-sort"));
    });
  }
  th.click(); out.asc = column(); out.ariaAsc = th.getAttribute("aria-sort");
  th.click(); out.desc = column(); out.ariaDesc = th.getAttribute("aria-sort");
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def _dump_dom(tmp_path, html: Path) -> str:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,3000", "--dump-dom", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    return proc.stdout


@needs_chromium
def test_in_chromium_svg_figures_draw_and_a_click_sorts_numbers_with_na_last(tmp_path, small):
    page = build_report_html(load_benchmarks(small[1]))
    # the "all benchmarks" table (the second sortable one): its 'paper saving, actual bits' column mixes numbers
    # (reversible) and n/a (methods without a buffer)
    headers = re.findall(r"<th[^>]*>(.*?)</th>", page.split("<h3>All benchmarks")[1].split("</thead>")[0])
    col = [re.sub(r"<[^>]+>", "", h) for h in headers].index("paper saving, actual bits (×)")
    probe = page.replace("</body>", _PROBE % {"table": 1, "col": col} + "</body>")
    html = tmp_path / "probe.html"
    html.write_text(probe, encoding="utf-8")
    dom = _dump_dom(tmp_path, html)
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, f"no probe output from chromium: {dom[-500:]}"
    out = json.loads(m.group(1).replace("&quot;", '"'))
    assert len(out["svgs"]) == 4
    for w, h, n_text in out["svgs"]:
        assert 500 <= w <= 1300 and h > 200 and n_text > 10                 # drawn at its size, text as text
    nums = [v for v in out["asc"] if v is not None]
    assert nums and nums == sorted(nums) and out["ariaAsc"] == "ascending"
    assert out["asc"][len(nums):] == [None] * (len(out["asc"]) - len(nums))  # n/a last
    assert [v for v in out["desc"] if v is not None] == sorted(nums, reverse=True) and out["ariaDesc"] == "descending"
    assert out["desc"][len(nums):] == [None] * (len(out["desc"]) - len(nums))  # n/a last both ways


def test_the_same_records_render_to_the_same_bytes(small):
    df = load_benchmarks(small[1])
    assert build_report_html(df) == build_report_html(df)     # committed pages do not churn when regenerated
