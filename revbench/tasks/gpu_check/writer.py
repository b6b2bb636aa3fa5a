"""The check's output folder: what it holds, its limits, and the files themselves.

At most :data:`MAX_FILES` files, each under :data:`MAX_FILE_BYTES`, no subfolders: ``benchmarks.json``
(pytest-benchmark JSON whose records pass ``revbench report`` / ``compare`` validation), ``report.html``
(``revbench.report.page``'s page with the check's own sections), ``gpu-check.json`` (environment, calibration,
start-up costs, every case's status), ``README.md`` (machine, command, duration, what was skipped and why) and the
memory snapshots. Every file is written atomically (``revbench.util.atomic``).
"""
from __future__ import annotations

import json
from pathlib import Path

from revbench.util.atomic import atomic_write_text, remove_stale_temporaries

MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2 ** 20
BENCHMARKS, REPORT, SUMMARY, README = "benchmarks.json", "report.html", "gpu-check.json", "README.md"
SNAPSHOTS = ("snapshot-bptt.pickle", "snapshot-reversible.pickle")
OWN_FILES = (BENCHMARKS, REPORT, SUMMARY, README) + SNAPSHOTS


class OutputError(ValueError):
    """The output folder cannot take the check's files (one line saying why)."""


def prepare_out_dir(out: Path) -> list[Path]:
    """Make sure ``out`` is a folder holding nothing but the check's own files (an earlier check's are
    replaced); create it. Returns the temporaries of a killed earlier check that were removed."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {str(out)!r} is a file, not a folder")
    if out.is_dir():
        removed = remove_stale_temporaries(out, OWN_FILES)
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OWN_FILES)
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise OutputError(f"--out {str(out)!r} holds other files ({', '.join(foreign[:3])}{more}): the check "
                              "writes at most 8 files into a folder of its own; choose an empty or new folder")
        return removed
    out.mkdir(parents=True)
    return []


def check_limits(out: Path) -> None:
    """OutputError unless ``out`` holds at most MAX_FILES plain files, each under MAX_FILE_BYTES, no folder."""
    entries = list(out.iterdir())
    folders = [p.name for p in entries if p.is_dir()]
    if folders:
        raise OutputError(f"{out} holds folder(s) {', '.join(sorted(folders))}: the results must be plain files")
    if len(entries) > MAX_FILES:
        raise OutputError(f"{out} holds {len(entries)} files, more than {MAX_FILES}")
    big = [f"{p.name} ({p.stat().st_size:,} bytes)" for p in entries if p.stat().st_size >= MAX_FILE_BYTES]
    if big:
        raise OutputError(f"{out}: {', '.join(big)} over the {MAX_FILE_BYTES:,}-byte limit")


def write_limited(path: Path, text: str) -> Path:
    """Write ``text`` atomically, refusing (OutputError) what would reach MAX_FILE_BYTES."""
    size = len(text.encode("utf-8"))
    if size >= MAX_FILE_BYTES:
        raise OutputError(f"{path.name} would be {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit")
    return atomic_write_text(path, text)


def benchmark_document(entries: list[dict], machine: dict, commit: str | None, started: str) -> dict:
    """A pytest-benchmark document (the shape ``pytest --benchmark-json`` writes) around ``entries``."""
    from pytest_benchmark import __version__

    return {"machine_info": machine, "commit_info": {"id": commit, "project": "revbench"},
            "benchmarks": entries, "datetime": started, "version": __version__}


def write_results(out: Path, summary: dict, document: dict | None, readme, sections) -> list[str]:
    """Write the check's files into ``out``; returns their names. The benchmark document is validated as
    ``revbench report`` reads it first: a document the contract refuses raises BenchmarkFileError, never written.
    ``readme(summary)`` and ``sections(summary)`` give the README text and the report's own sections; they are
    called after the report was tried, so a report that could not be built (``summary["report_error"]``) is
    named in the README, and the other files are still written."""
    written = []
    if document is not None and document["benchmarks"]:
        from revbench.report.results import benchmarks_from_dict

        df = benchmarks_from_dict(document, source=out / BENCHMARKS)
        write_limited(out / BENCHMARKS, json.dumps(document, indent=1, sort_keys=True) + "\n")
        written.append(BENCHMARKS)
        try:
            from revbench.report.page import build_report_html

            page = build_report_html(df, title=f"revbench gpu-check: {summary.get('gpu_name') or 'GPU'}",
                                     extra_sections=sections(summary))
            write_limited(out / REPORT, page)
            written.append(REPORT)
        except Exception as exc:            # the JSON is written; the report can be rebuilt with revbench report
            summary["report_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
    write_limited(out / SUMMARY, json.dumps(summary, indent=1, sort_keys=True, default=str) + "\n")
    written.append(SUMMARY)
    write_limited(out / README, readme(summary))
    written.append(README)
    return written
