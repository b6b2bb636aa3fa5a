"""The output folder of `revbench run`: ``benchmarks.json`` and ``report.html``, kept a consistent pair.

- ``prepare(path)``: create the folder and prove it is writable (``OutDirError``, one line, otherwise).
- ``locked(path)``: one `revbench run` at a time per folder (``flock`` on the folder; the kernel drops it when
  the process dies, however it dies), so that the next two steps never touch a live run's files.
- ``recover(path)``: at the start of a run, undo what an earlier, killed run left: finish its commit (see below),
  remove its temporary files (and say so), and rebuild a report that names another JSON than the one beside it.
- ``report_page(df, digest, title)``: the report of a run, which names the SHA-256 of the JSON it was built from,
  for machines in ``<meta name="revbench-benchmarks-sha256">`` and for readers in its "source" line.

- ``PARTIAL_NAME``: the cases an unfinished run kept (``revbench.tasks.engine.partial``); its temporary files
  are litter too.

The pair is committed in a fixed order: both are written to temporary files first, then the JSON is renamed into
place, then the report. A kill between the two renames leaves the new JSON, the old report (naming the old JSON)
and the complete new report in its temporary file; ``recover`` renames that one into place. Whatever else
happens, a report that names another JSON is stale and ``recover`` rebuilds it from the JSON beside it.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Callable, Iterator

from revbench.tasks.engine.partial import PARTIAL_NAME
from revbench.util.atomic import atomic_write_text, remove_stale_temporaries, stale_removal_note, stale_temporaries
from revbench.util.runlock import folder_lock

JSON_NAME, HTML_NAME = "benchmarks.json", "report.html"
MARKER = '<meta name="revbench-benchmarks-sha256" content="{}">'
_MARKER_RE = re.compile(rb'<meta name="revbench-benchmarks-sha256" content="([0-9a-f]{64})">')
_END = b"</html>\n"
REBUILT_TITLE = "revbench benchmark report (rebuilt from benchmarks.json)"


class OutDirError(Exception):
    """--out cannot be used: one line naming the folder and the problem."""


def prepare(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and check that files can be created in it."""
    import tempfile

    if out_dir.exists() and not out_dir.is_dir():
        raise OutDirError(f"--out {out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutDirError(f"--out {out_dir}: cannot create the folder ({exc.strerror or exc})") from None
    try:
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise OutDirError(f"--out {out_dir}: cannot write there ({exc.strerror or exc})") from None
    return out_dir


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out_dir`` (``OutDirError`` if another run holds it; ``revbench.util.runlock``)."""
    with folder_lock(out_dir, lambda: OutDirError(f"--out {out_dir}: another revbench run is writing there (wait "
                                                  "for it to finish, or choose another --out)")):
        yield


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def named_digest(page_path: Path) -> str | None:
    """The JSON digest a report written by `revbench run` names (None: no report, or not one of ours)."""
    try:
        with open(page_path, "rb") as fh:
            m = _MARKER_RE.search(fh.read(4096))
    except OSError:
        return None
    return m.group(1).decode() if m else None


def _complete(page_path: Path) -> bool:
    try:
        with open(page_path, "rb") as fh:
            fh.seek(max(0, page_path.stat().st_size - len(_END)))
            return fh.read() == _END
    except OSError:
        return False


def source_label(json_path: Path, digest: str) -> str:
    """What the report's "source" line says: the final JSON's path and the start of its SHA-256."""
    return f"{json_path} (sha256 {digest[:12]})"


def report_page(df, digest: str, title: str) -> str:
    """The HTML report of ``df`` naming ``digest``, the SHA-256 of the JSON it was built from."""
    import matplotlib

    matplotlib.use("Agg")
    from revbench.report.page import build_report_html

    page = build_report_html(df, title=title)
    anchor = '<meta charset="utf-8">'
    at = page.find(anchor)
    if at < 0:
        anchor, at = "<head>", page.index("<head>")
    at += len(anchor)
    return page[:at] + MARKER.format(digest) + page[at:]


def recover(out_dir: Path, rebuild: bool, say: Callable[[str], None]) -> None:
    """Repair what a killed run left in ``out_dir`` (call it under ``locked``): finish an interrupted commit,
    remove temporary files, and (``rebuild``) rebuild a report naming another JSON than the one beside it."""
    json_path, html_path = out_dir / JSON_NAME, out_dir / HTML_NAME
    current = file_digest(json_path) if json_path.is_file() else None
    if current and named_digest(html_path) != current:
        for tmp in stale_temporaries(out_dir, [HTML_NAME]):
            if named_digest(tmp) == current and _complete(tmp):
                os.replace(tmp, html_path)
                say(f"{html_path}: finished writing the report of the interrupted run that wrote {json_path}")
                break
    note = stale_removal_note(remove_stale_temporaries(out_dir, [JSON_NAME, HTML_NAME, PARTIAL_NAME]))
    if note:
        say(note)
    named = named_digest(html_path)
    if current is None or named in (None, current):
        return                                   # consistent, or not a report of ours (left as it is)
    if not rebuild:
        say(f"note: {html_path} was built from other results than {json_path} (it is rebuilt by the next run "
            "without --no-report)")
        return
    from revbench.report.results import BenchmarkFileError, load_benchmarks

    try:
        df = load_benchmarks(json_path)
    except BenchmarkFileError as exc:
        say(f"note: {html_path} was built from other results than {json_path}, which cannot be read ({exc}); "
            "left as it is")
        return
    df.attrs["source"] = source_label(json_path, current)
    atomic_write_text(html_path, report_page(df, current, REBUILT_TITLE))
    say(f"{html_path}: rebuilt from {json_path} (it was built from other results: by a run before one with "
        "--no-report, or one killed before it replaced the report)")
