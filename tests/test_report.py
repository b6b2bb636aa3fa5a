"""revbench.report.page and `revbench report`: one self-contained HTML file with the expected sections and values."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from revbench import cli
from revbench.report.format import fmt_ratio
from revbench.report.frontier import pareto_optimal
from revbench.report.html import check_self_contained, dataframe_to_html_table
from revbench.report.page import render_report
from revbench.report.tables import headline_table, summary_table
from revbench.report.results import load_benchmarks
from tests.fixtures import benchjson

CHROMIUM = Path("/usr/bin/chromium")


SECTION_TITLES = ("Summary", "Activation memory against sequence length", "Time-memory frontier",
                  "Memory-saving ratios per forgetting limit", "Buffer efficiency", "Independent memory meters",
                  "Environment")


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The default fixture grid written to JSON, and its rendered report (rendered once per module)."""
    d = tmp_path_factory.mktemp("report")
    doc = benchjson.build_benchmark_json()
    path = d / "bench.json"
    path.write_text(json.dumps(doc))
    out = render_report(path, d / "report.html", title="Fixture report <test>")
    return doc, path, out, out.read_text(encoding="utf-8")


def _images(page: str) -> list[str]:
    """The inline SVG figures of a page."""
    return re.findall(r"<svg\b.*?</svg>", page, re.S)


def test_report_has_every_section_and_is_self_contained(sample):
    doc, _, out, page = sample
    assert out.exists()
    for title in SECTION_TITLES:
        assert f">{title}</h2>" in page, title
    assert "Fixture report &lt;test&gt;" in page  # title escaped
    scripts = re.findall(r"<script\b([^>]*)>", page, re.I)
    assert scripts == [""]                                   # one inline script (table sorting), no src
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page and "//www." not in page
    assert not re.search(r"\b(fetch|XMLHttpRequest|import\s*\(|WebSocket)\b", page)
    assert "<style>" in page and "<link" not in page.lower() and "data:image/png" not in page
    images = _images(page)
    assert len(images) == 4  # memory, frontier, savings, efficiency
    assert all(len(img) > 5000 and 'role="img"' in img and "<text" in img for img in images)
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))                         # figures on one page never share an id
    assert page.count("How measured:") >= 5  # every figure caption plus the summary


def test_summary_values_match_the_records(sample):
    doc, path, _, page = sample
    rev = next(b for b in doc["benchmarks"] if b["extra_info"]["method"] == "reversible"
               and b["extra_info"]["max_forget_bits"] == 3 and b["extra_info"]["seq_len"] == 70)
    bptt = next(b for b in doc["benchmarks"] if b["extra_info"]["method"] == "bptt"
                and b["extra_info"]["config_id"] == rev["extra_info"]["config_id"])
    rec = rev["extra_info"]
    assert f"{rec['peak_bytes'] / 2**20:,.2f}" in page
    assert fmt_ratio(rec["allocator_saving"]) in page
    assert fmt_ratio(rec["saving_actual"]) in page
    assert fmt_ratio(rec["saving_ideal"]) in page
    assert f"{rev['stats']['median'] * 1e3:,.2f}" in page
    assert fmt_ratio(rev["stats"]["median"] / bptt["stats"]["median"]) in page
    assert rec["config_id"] in page

    table = summary_table(load_benchmarks(path))
    assert len(table) == len(doc["benchmarks"])
    row = table[(table["config"] == rec["config_id"]) & (table["method"] == "reversible")].iloc[0]
    assert row["time vs bptt (×)"] == pytest.approx(rev["stats"]["median"] / bptt["stats"]["median"])
    assert row["forgetting limit"] == "3 bits"


def test_unavailable_figures_are_na_with_reason(sample):
    _, _, _, page = sample
    assert 'title="no CUDA device (device=cpu)">n/a</td>' in page
    assert 'title="NVML unavailable: no NVIDIA driver">n/a</td>' in page
    assert "n/a in 120 of 120 benchmarks: no CUDA device (device=cpu)" in page


def test_environment_section(sample):
    doc, _, _, page = sample
    env = page.split('id="environment"')[1]
    assert doc["commit_info"]["id"] in env
    assert "2.13.0+cpu" in env
    assert "Synthetic CPU (test fixture)" in env
    assert doc["datetime"] in env


def test_forgetting_limit_none_is_shown_as_no_limit(sample):
    _, path, _, page = sample
    assert "reversible (no limit)" in page
    head = headline_table(load_benchmarks(path))
    assert set(head["method"]) >= {"bptt", "reversible (2 bits)", "reversible (no limit)"}
    # bptt is the fastest method here, so it is Pareto-optimal in each setting
    assert (head.loc[head["method"] == "bptt", "Pareto-optimal"] == "yes").all()


def test_sections_without_data_become_a_note(tmp_path):
    doc = benchjson.build_benchmark_json(methods=(("bptt", {}), ("checkpoint", {})), seq_lens=(35, 70))
    out = render_report(_write(tmp_path, doc), tmp_path / "r.html")
    page = out.read_text()
    assert "No method with an information buffer" in page
    assert "No benchmark reports both buffer_bits_actual and buffer_bits_ideal" in page
    assert len(_images(page)) == 2


def test_without_bptt_the_frontier_uses_absolute_values(tmp_path):
    doc = benchjson.build_benchmark_json(methods=(("reversible", {}), ("checkpoint", {})), seq_lens=(35,))
    page = render_report(_write(tmp_path, doc), tmp_path / "r.html").read_text()
    assert "bptt was not measured on every configuration" in page
    # one sequence length only: memory-vs-T has nothing to show and says so instead of drawing single points
    assert "No configuration was measured at two or more sequence lengths." in page
    assert len(_images(page)) == 3


def test_gpu_records_fill_the_cuda_columns(tmp_path):
    doc = benchjson.build_benchmark_json(device="cuda:0", cells=("revlstm",), seq_lens=(35, 70))
    df = load_benchmarks(_write(tmp_path, doc))
    page = render_report(df, tmp_path / "r.html").read_text()
    assert "no CUDA device" not in page
    assert "CUDA caching allocator (torch.cuda.max_memory_allocated, exact)" in page  # peak meter named
    first = doc["benchmarks"][0]["extra_info"]
    assert f"{first['cuda_peak_reserved_bytes'] / 2**20:,.2f}" in page


def test_extra_sections_are_added_and_checked(tmp_path, sample):
    _, path, _, _ = sample
    frag = "<table><tr><td>PTB perplexity 81.1</td></tr></table>"
    page = render_report(path, tmp_path / "r.html", extra_sections=[("Table 1 (LM)", frag)]).read_text()
    assert ">Table 1 (LM)</h2>" in page and frag in page and 'href="#table-1-lm"' in page
    with pytest.raises(ValueError, match="script"):
        render_report(path, tmp_path / "x.html", extra_sections=[("bad", "<script>alert(1)</script>")])
    with pytest.raises(ValueError, match="external"):
        render_report(path, tmp_path / "x.html", extra_sections=[("bad", '<img src="https://example.org/a.png">')])
    with pytest.raises(ValueError, match="external"):
        check_self_contained("<div style=\"background:url('//cdn.example.org/x.png')\"></div>")
    assert not (tmp_path / "x.html").exists()


def test_failed_render_keeps_the_earlier_report(tmp_path, sample):
    _, path, _, _ = sample
    out = tmp_path / "r.html"
    out.write_text("EARLIER REPORT")
    with pytest.raises(ValueError):
        render_report(path, out, extra_sections=[("bad", "<script></script>")])
    assert out.read_text() == "EARLIER REPORT"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]  # no temp file left behind


def test_third_party_deprecations_never_fail_a_render(tmp_path, sample):
    _, path, _, _ = sample
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("error", FutureWarning)
        out = render_report(path, tmp_path / "strict.html")
    assert out.exists()


def test_dataframe_to_html_table_escapes_and_marks_missing():
    df = pd.DataFrame({"name": ["<b>x</b>", "y"], "peak (MiB)": [1.5, None]})
    titles = pd.DataFrame({"peak (MiB)": [None, "meter off"]})
    html = dataframe_to_html_table(df, formats={"peak (MiB)": "{:.2f}"}, titles=titles)
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x" not in html
    assert '<td class="num" data-sort="1.5">1.50</td>' in html          # sorts by the number, not the text
    assert 'class="data sortable"' in html
    assert '<td class="na" title="meter off">n/a</td>' in html


def test_pareto_optimal():
    x = [1.0, 0.5, 0.2, 0.6, 0.1, float("nan")]
    y = [1.0, 1.2, 2.0, 1.5, 2.0, 0.1]
    assert list(pareto_optimal(x, y)) == [True, True, False, False, True, False]


# --- the command ---------------------------------------------------------------------------------

def _write(tmp_path, data, name="bench.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_cli_report_writes_and_prints_the_path(tmp_path, capsys, sample):
    _, path, _, _ = sample
    out = tmp_path / "sub" / "report.html"
    assert cli.main(["report", str(path), "-o", str(out), "--title", "CI run"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert "<title>CI run</title>" in out.read_text()


@pytest.mark.parametrize("content", ["{not json", '{"benchmarks": [{"name": "x", "stats": {}}]}', None])
def test_cli_report_bad_input_exits_3_and_keeps_the_old_report(tmp_path, capsys, content):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    out = tmp_path / "report.html"
    out.write_text("EARLIER REPORT")
    assert cli.main(["report", str(bad), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.startswith("revbench report: error: ") and str(bad) in err
    assert out.read_text() == "EARLIER REPORT"


def test_cli_report_malformed_input_prints_no_traceback(tmp_path):
    bad = _write(tmp_path, "[1, 2")
    proc = subprocess.run([sys.executable, "-m", "revbench.cli", "report", str(bad), "-o", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr and "not valid JSON" in proc.stderr
    assert not (tmp_path / "r.html").exists()


# --- headless browser ------------------------------------------------------------------------------

@pytest.mark.skipif(not CHROMIUM.exists(), reason="headless browser check needs /usr/bin/chromium")
def test_report_renders_in_a_headless_browser(tmp_path, sample):
    Image = pytest.importorskip("PIL.Image")
    _, _, out, _ = sample
    shot = tmp_path / "shot.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,3000",
           out.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert shot.exists(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    assert shot.stat().st_size > 50_000
    with Image.open(shot) as im:
        assert im.size == (1400, 3000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 200  # text, tables and plots; a blank page has a handful
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


# --- hostile input (issue 17, item 5) ----------------------------------------------------------------

@pytest.mark.parametrize("key, value, words", [
    ("machine_info", "x86_64", "machine_info must be an object or null, got str 'x86_64'"),
    ("machine_info", {"cpu": ["Xeon"]}, "machine_info.cpu must be an object or null"),
    ("commit_info", {"id": 7, "dirty": True}, "commit_info.id must be a string or null"),
])
def test_cli_report_metadata_of_the_wrong_type_exits_3_and_keeps_the_old_report(tmp_path, capsys, key, value, words):
    doc = benchjson.build_benchmark_json(cells=("revgru",), seq_lens=(35,), forget_limits=(3,))
    doc[key] = value
    bad = _write(tmp_path, doc, "bad.json")
    out = tmp_path / "report.html"
    out.write_text("EARLIER REPORT")
    assert cli.main(["report", str(bad), "-o", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"revbench report: error: {bad}: {words}")
    assert err.count("\n") == 1 and out.read_text() == "EARLIER REPORT"


def test_cli_report_text_matplotlib_cannot_draw_exits_3(tmp_path, capsys):
    doc = benchjson.build_benchmark_json(cells=("revgru",), seq_lens=(35,), forget_limits=(3,))
    doc["benchmarks"][0]["extra_info"]["method_label"] = "bptt\ud800"
    bad = _write(tmp_path, doc, "bad.json")
    assert cli.main(["report", str(bad), "-o", str(tmp_path / "r.html")]) == 3
    assert "unpaired surrogate" in capsys.readouterr().err and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("how", ["peak_bytes=10**30", "machine_info string", "nested 100000 deep"])
def test_cli_report_hostile_json_exits_3_without_a_traceback(tmp_path, how):
    doc = benchjson.build_benchmark_json(cells=("revgru",), seq_lens=(35,), forget_limits=(3,))
    if how == "peak_bytes=10**30":
        doc["benchmarks"][0]["extra_info"]["peak_bytes"] = 10 ** 30
    elif how == "machine_info string":
        doc["machine_info"] = "x86_64"
    text = "[" * 100_000 + "]" * 100_000 if how == "nested 100000 deep" else json.dumps(doc)
    bad = _write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "revbench.cli", "report", str(bad), "-o", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"revbench report: error: {bad}: ")
    assert not (tmp_path / "r.html").exists()


def test_encoder_decoder_records_without_optional_side_figures_render(tmp_path):
    data = json.loads((Path(__file__).resolve().parents[1] / "reports" / "nmt-step" / "benchmarks.json").read_text())
    for b in data["benchmarks"]:
        for key in ("enc_allocator_saving", "dec_allocator_saving", "enc_saving_actual", "dec_saving_actual"):
            b["extra_info"].pop(key, None)
    out = tmp_path / "r.html"
    assert cli.main(["report", str(_write(tmp_path, data)), "-o", str(out)]) == 0
    assert "Encoder-decoder" in out.read_text(encoding="utf-8")


def _span(values, fmt):
    lo, hi = sorted((fmt(min(values)), fmt(max(values))), key=float)
    return lo if lo == hi else f"{lo}–{hi}"


def test_headline_sentences_per_family_against_bptt_and_the_fused_kernel(sample):
    from revbench.report.headline import headline_sentences

    doc, path, _, page = sample
    df = load_benchmarks(path)
    sentences = headline_sentences(df)
    assert len(sentences) == 2                                         # one per family: GRU, LSTM
    top = page.split('<nav class="toc">')[0]                           # at the top of the page
    for s in sentences:
        assert s.split(":", 1)[1].replace("'", "&#x27;") in top
    head = headline_table(df)
    for s, cell, kernel in zip(sentences, ("revgru", "revlstm"), ("nn.GRU", "nn.LSTM")):
        assert s.startswith(f"{'GRU' if cell == 'revgru' else 'LSTM'} family ({cell}; H256; 1 setting), T = 140: ")
        rev = head[(head["setting"] == cell) & head["method"].str.startswith("reversible")]
        peaks, times = rev["peak / bptt's"], rev["time vs bptt (×)"]
        # ranges over the forgetting limits, computed from the records (the headline table's medians)
        assert (f"reversible saves {_span(peaks, lambda v: f'{100 * (1 - v):.1f}')} % of bptt’s activation memory "
                f"at {_span(times, lambda v: f'{v:.2f}')}× its step time") in s
        ck = head[(head["setting"] == cell) & (head["method"] == "checkpoint")].iloc[0]
        ck_peak = ck["peak / bptt's"]
        assert f"checkpoint {100 * (1 - ck_peak):.1f} % at {ck['time vs bptt (×)']:.2f}×" in s
        assert (f"Against the fused {kernel} step (smallest peak): reversible saves "
                f"{_span(rev['peak / fused (×)'], lambda v: f'{100 * (1 - v):.1f}')} % of the fused {kernel} step’s "
                f"activation memory at {_span(rev['time vs fused (×)'], lambda v: f'{v:.2f}')}× its step time.") in s
        assert "bptt saves" not in s                                   # the reference is not a method to rank
    # the headline table's fused columns are the medians of the records' own ratios
    recs = [b["extra_info"] for b in doc["benchmarks"] if b["extra_info"]["method"] == "checkpoint"
            and b["extra_info"]["cell"] == "revlstm" and b["extra_info"]["seq_len"] == 140]
    row = head[(head["setting"] == "revlstm") & (head["method"] == "checkpoint")].iloc[0]
    assert row["peak / fused (×)"] == pytest.approx(pd.Series([r["fused_peak_ratio"] for r in recs]).median())
    table = summary_table(df)
    assert table["time vs fused (×)"].notna().all() and table["peak / fused (×)"].notna().all()


def test_headline_follows_the_records_and_puts_the_paper_sized_model_first(tmp_path):
    from revbench.report.headline import headline_sentences

    doc = benchjson.build_benchmark_json(cells=("revlstm", "revgru"), seq_lens=(70,), forget_limits=(3,))
    paper = json.loads(json.dumps([b for b in doc["benchmarks"] if b["extra_info"]["cell"] == "revlstm"]))
    for b in paper:                                 # a paper-sized copy of the revlstm setting
        r = b["extra_info"]
        r.update(hidden_size=650, emb_size=650, batch_size=20, vocab_size=10000)
        r["config_id"] = r["config_id"].replace("H256-E256", "H650-E650").replace("V1000", "V10000")
        b["name"] += "-paper"
        b["fullname"] += "-paper"
        if r["method"] == "reversible":
            r["peak_bytes"] = 1_000_000
        if r["method"] == "bptt":
            r["peak_bytes"] = 8_000_000
    doc["benchmarks"] += paper
    sentences = headline_sentences(load_benchmarks(_write(tmp_path, doc)))
    assert sentences[0].startswith("Paper-sized revlstm H650 E650 V10000, T = 70: ")   # batch 20 everywhere
    assert "reversible saves 87.5 % of bptt’s activation memory" in sentences[0]      # 1 - 1e6 / 8e6, from the records
    assert sorted(s.split(" family")[0] for s in sentences[1:]) == ["GRU", "LSTM"]     # then one per family


def test_headline_without_fused_figures_says_why(tmp_path):
    doc = benchjson.build_benchmark_json(cells=("revlstm",), seq_lens=(35,), forget_limits=(3,))
    for b in doc["benchmarks"]:
        for key in ("fused_time_ratio", "fused_peak_ratio", "fused_reference", "fused_time_s", "fused_peak_bytes"):
            b["extra_info"][key] = None
            b["extra_info"][f"{key}_reason"] = "the fused reference could not run: test"
    page = render_report(_write(tmp_path, doc), tmp_path / "r.html").read_text()
    assert ("cannot be set against the fused nn.LSTM step (the fused reference could not run: test).") in page
    assert "n/a" in page
