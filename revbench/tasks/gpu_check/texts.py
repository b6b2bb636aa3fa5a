"""What the check says: the output folder's README.md and the report's own sections (calibration, start-up
costs, snapshots, skipped cases), both built from the check's summary."""
from __future__ import annotations

from revbench.report.format import esc
from revbench.tasks.gpu_check.environment import environment_lines

MiB = 2 ** 20
VIEWER = "https://pytorch.org/memory_viz"


def _mib(v) -> str:
    return "n/a" if v is None else f"{v / MiB:,.2f} MiB"


def _ratio(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def calibration_lines(summary: dict) -> list[str]:
    ctx = summary.get("context") or {}
    lines = []
    for key, what in (("context_device_bytes", "NVML device used"), ("context_process_bytes", "NVML process")):
        v = ctx.get(key)
        lines.append(f"CUDA context ({what}, growth minus the allocator's {_mib(ctx.get('allocator_reserved_bytes'))}"
                     f" reserved): " + (_mib(v) if v is not None else f"n/a ({ctx.get(key + '_reason')})"))
    for k in ("note", "note_other"):
        if ctx.get(k):
            lines.append(ctx[k])
    return lines


def calibration_table_md(rows: list[dict]) -> str:
    out = ["| tensor | meter | figure | expected | seen | seen - expected | seen / expected |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        seen = _mib(r["seen_bytes"]) if r["seen_bytes"] is not None else f"n/a ({r.get('reason')})"
        delta = "n/a" if r["delta_bytes"] is None else f"{r['delta_bytes']:+,} B"
        out.append(f"| {_mib(r['tensor_bytes'])} | {r['meter']} | `{r['figure']}` | {r['expected']} | {seen} | "
                   f"{delta} | {_ratio(r['ratio'])} |")
    return "\n".join(out)


def startup_lines(summary: dict) -> list[str]:
    s = summary.get("startup") or {}
    lines = [f"CUDA context creation (first tensor on the device): {s.get('context_s', 0):.2f} s"]
    for name, what in (("matmul", "first cuBLAS matmul"), ("cudnn_lstm", "first cuDNN nn.LSTM forward + backward")):
        if f"first_{name}_s" in s:
            lines.append(f"{what}: {s[f'first_{name}_s']:.3f} s (the same call again: {s[f'second_{name}_s']:.4f} s)")
    first = [c for c in summary.get("cases", []) if c.get("status") == "done"][:1]
    if first:
        lines.append(f"first case ({first[0]['case']}): {first[0]['seconds']:.1f} s including its one-time kernel "
                     "loading")
    return lines


def gradient_lines(summary: dict) -> list[str]:
    rows = summary.get("gradients") or []
    ran = [g for g in rows if g.get("ok") is not None]
    good = [g for g in ran if g["ok"]]
    worst = max((g["max_rel_err"] for g in good), default=None)
    lines = [f"{len(good)} of {len(ran)} (method, cell) pairs give bptt's float64 gradients on the device "
             f"(largest relative error {'n/a' if worst is None else f'{worst:.2g}'}, tolerance 1e-9; reversible "
             "with verify=True: the reversal rebuilt the start state bit for bit)"]
    lines += [f"WRONG: {g['method']} {g['options']} on {g['cell']}: "
              f"{g.get('reason') or 'max relative error %.3g' % g['max_rel_err']}" for g in ran if not g["ok"]]
    skipped = sorted({f"{g['method']}: {g['reason']}" for g in rows if g.get("ok") is None
                      and g.get("applies", True)})
    lines += [f"not run: {s}" for s in skipped]
    return lines


def case_rows(summary: dict, status: str) -> list[dict]:
    return [c for c in summary.get("cases", []) if c.get("status") == status]


def readme_text(summary: dict) -> str:
    done, skipped, failed = (case_rows(summary, s) for s in ("done", "skipped", "failed"))
    parts = [
        "# revbench gpu-check",
        "",
        f"Command: `{summary.get('command')}`  ",
        f"Started {summary.get('started_at')}; the cases ended {summary.get('duration_s', 0):.0f} s into a "
        f"{summary.get('budget_s', 0):.0f} s budget (then the files were written); {len(done)} case(s) measured, "
        f"{len(skipped)} skipped, {len(failed)} failed.",
        "",
        "## Machine",
        "",
        *[f"- {line}" for line in environment_lines(summary.get("environment") or {})],
        "",
        "## Start-up costs",
        "",
        *[f"- {line}" for line in startup_lines(summary)],
        "",
        "## Gradients on the device",
        "",
        *[f"- {line}" for line in gradient_lines(summary)],
        "",
        "## Meter calibration",
        "",
        "Each row is one region that allocated a tensor of exactly the size shown, wrote it, held it "
        f"{summary.get('hold_s', 0.05) * 1000:.0f} ms and freed it, after `torch.cuda.empty_cache()`. The CUDA "
        "allocator and the live-tensor meter must read the size exactly; NVML reads what the driver handed out "
        "(2 MiB pages, sampled every ms) and, in every later figure, also the CUDA context and the allocator's "
        "cache. Read each later NVML figure against these rows and the context's cost below.",
        "",
        calibration_table_md(summary.get("calibration") or []),
        "",
        *[f"- {line}" for line in calibration_lines(summary)],
        "",
        "## Files",
        "",
        "- `benchmarks.json`: pytest-benchmark JSON (the schema of `revbench run`); `revbench report` and "
        "`revbench compare` read it. Steps timed with " + str(summary.get("timer")) + ".",
        "- `report.html`: the report of those benchmarks, with this check's sections at the end."
        + (f" NOT WRITTEN: {summary['report_error']}; rebuild it with `revbench report benchmarks.json -o "
           "report.html`" if summary.get("report_error") else ""),
        "- `gpu-check.json`: everything above as data, and every case's status.",
    ]
    for snap in summary.get("snapshots", []):
        if snap.get("file"):
            parts.append(f"- `{snap['file']}`: allocator timeline of one {snap['method']} step of "
                         f"{snap['config_id']} ({snap['bytes']:,} bytes; stacks: {snap.get('stacks')}); drop it on {VIEWER}")
        else:
            parts.append(f"- no snapshot of {snap['method']}: {snap.get('reason')}")
    problems = [f"- {k} failed: {v}" for k, v in (summary.get("stage_errors") or {}).items()]
    if summary.get("contract_error"):
        problems.append(f"- benchmarks.json NOT WRITTEN: the records break the record contract: "
                        f"{summary['contract_error']}")
    if problems:
        parts += ["", "## Problems", ""] + problems
    parts += ["", "## Measured", ""]
    parts += [f"- {c['case']} ({c['seconds']:.1f} s)" for c in done] or ["- nothing"]
    if failed:
        parts += ["", "## Failed", ""] + [f"- {c['case']}: {c['reason']}" for c in failed]
    parts += ["", "## Skipped", ""]
    parts += [f"- {c['case']}: {c['reason']}" for c in skipped] or ["- nothing"]
    return "\n".join(parts) + "\n"


def _table_html(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def report_sections(summary: dict) -> list[tuple[str, str]]:
    """(title, HTML) sections the check adds to the report page."""
    env = "".join(f"<li>{esc(x)}</li>" for x in environment_lines(summary.get("environment") or {}))
    startup = "".join(f"<li>{esc(x)}</li>" for x in startup_lines(summary))
    cal_rows = [[_mib(r["tensor_bytes"]), r["meter"], r["figure"], r["expected"],
                 _mib(r["seen_bytes"]) if r["seen_bytes"] is not None else f"n/a ({r.get('reason')})",
                 "n/a" if r["delta_bytes"] is None else f"{r['delta_bytes']:+,} B", _ratio(r["ratio"])]
                for r in summary.get("calibration") or []]
    cal = (_table_html(["tensor", "meter", "figure", "expected", "seen", "seen - expected", "seen / expected"],
                       cal_rows) + "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in calibration_lines(summary)) + "</ul>")
    snaps = []
    for s in summary.get("snapshots", []):
        if s.get("file"):
            snaps.append(f'<li><a href="{esc(s["file"])}">{esc(s["file"])}</a>: one {esc(s["method"])} step of '
                         f'{esc(s["config_id"])}, {s["bytes"]:,} bytes. Open {esc(VIEWER)} and drop the file on it.</li>')
        else:
            snaps.append(f"<li>no snapshot of {esc(s['method'])}: {esc(s.get('reason'))}</li>")
    other = [[c["case"], c["status"], c.get("reason", "")] for c in summary.get("cases", []) if c["status"] != "done"]
    return [
        ("GPU check: machine", f"<ul>{env}</ul><p>Steps timed with {esc(summary.get('timer'))}.</p>"),
        ("GPU check: start-up costs", f"<ul>{startup}</ul>"),
        ("GPU check: gradients on the device",
         "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in gradient_lines(summary)) + "</ul>"),
        ("GPU check: meter calibration", cal),
        ("GPU check: memory snapshots", f"<ul>{''.join(snaps) or '<li>none taken</li>'}</ul>"),
        ("GPU check: skipped and failed cases", _table_html(["case", "status", "why"], other) if other
         else "<p>none</p>"),
    ]
