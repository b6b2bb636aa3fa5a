"""The cases a run has finished, kept in the output folder so that an interrupted run resumes from them.

``PartialStore(path, fingerprint)``: ``load(say)`` reads what an earlier run of the same settings left and trusts
it only when every check passes: the file parses, has this format, its SHA-256 (over the rest of its content)
matches, it was made with the same settings (``Settings.fingerprint``), and every entry is a pytest-benchmark
entry that passes the record contract (``revbench.report.validate.check_entry``) under the name of its case.
Anything else is said in one line and the file is not used (it is replaced by the next finished case).
``add(case, entry, session)`` records a finished case and rewrites the file atomically
(``revbench.util.atomic``), so a kill at any moment leaves the previous complete file.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from revbench.util.atomic import atomic_write_text

FORMAT = "revbench.partial/1"
PARTIAL_NAME = "benchmarks.partial.json"


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class PartialStore:
    def __init__(self, path: Path, fingerprint: dict):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.cases: dict[str, dict] = {}          # case id -> pytest-benchmark entry
        self.sessions: dict[str, dict] = {}       # worker -> {"machine_info", "commit_info"}

    def load(self, say: Callable[[str], None]) -> int:
        """Take over the finished cases of an earlier run with the same settings; how many."""
        self.cases, self.sessions = {}, {}
        if not self.path.exists():
            return 0
        try:
            body = self._checked()
        except ValueError as exc:
            say(f"{self.path}: not used ({exc}); its cases run again")
            return 0
        if body["settings"] != self.fingerprint:
            say(f"{self.path}: made with other settings ({_diff(body['settings'], self.fingerprint)}); its cases "
                "run again")
            return 0
        self.cases, self.sessions = dict(body["cases"]), dict(body["sessions"])
        return len(self.cases)

    def _checked(self) -> dict:
        from revbench.report.validate import BenchmarkFileError, check_document, check_entry

        try:
            doc = json.loads(self.path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ValueError(f"unreadable: {type(exc).__name__}: {str(exc)[:120]}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError(f"not a partial results file of this version (format {FORMAT!r})")
        body = {k: v for k, v in doc.items() if k != "sha256"}
        if doc.get("sha256") != _digest(body):
            raise ValueError("its SHA-256 does not match its content: damaged or edited")
        if not isinstance(body.get("cases"), dict) or not isinstance(body.get("sessions"), dict) \
                or not isinstance(body.get("settings"), dict):
            raise ValueError("missing cases, sessions or settings")
        if not body["cases"]:
            return body
        try:
            check_document({"benchmarks": list(body["cases"].values())}, "it")
            for cid, entry in body["cases"].items():
                if not entry["name"].endswith(f"[{cid}]"):
                    raise ValueError(f"the entry of case {cid!r} is not that case's benchmark")
                check_entry(entry, "it")
        except (BenchmarkFileError, KeyError, TypeError) as exc:
            raise ValueError(f"a case's record breaks the record contract: {type(exc).__name__}: {exc}") from None
        return body

    def add(self, case: str, entry: dict, session: dict | None = None) -> None:
        self.cases[case] = entry
        worker = (entry.get("extra_info") or {}).get("worker")
        if session is not None and worker:
            self.sessions[worker] = {k: session.get(k) for k in ("machine_info", "commit_info")}
        self.save()

    def save(self) -> None:
        body = {"format": FORMAT, "settings": self.fingerprint, "cases": self.cases, "sessions": self.sessions}
        atomic_write_text(self.path, json.dumps({**body, "sha256": _digest(body)}, sort_keys=True) + "\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _diff(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)!r} then, {new.get(k)!r} now" for k in keys) or "unknown"
