"""`revbench run` under hostile input and kills: bad --out / --pytest-args are one line and exit 2; a value
starting with '-' is passed with '='; the --filter hint only when no case matched; SIGKILL leaves no pytest child
alive and the next run removes the litter; Ctrl-C stops the child and exits 130; benchmarks.json and report.html
are a consistent pair even when a kill falls between their two renames. The real runs use one small case."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import run_cli as cli

SMALL = "bptt-s2s-gru-all"          # one encoder-decoder case, bptt only (no reference measurement)
NO_CASE = "bptt-gru-L1-H64"         # matches no case of the default grid
EARLIER = {"benchmarks.json": b'{"earlier": "results"}\n', "report.html": b"<html>earlier report</html>\n"}




def error_line(err: str) -> str:
    """The one line an error prints (no traceback; argparse's usage lines aside)."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    return lines[0]


def earlier_results(out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in EARLIER.items():
        (out / name).write_bytes(data)
    return {name: (out / name).read_bytes() for name in EARLIER}


def contents(out: Path) -> dict:
    return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def litter(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------------- processes
def _stat(pid: int):
    """(state, ppid) of a process from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rfind(")") + 2:].split()
    return fields[0], int(fields[1])


def descendants(pid: int) -> list[int]:
    """Every living process below ``pid`` (children, their children, ...)."""
    by_parent: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st and st[0] != "Z":
                by_parent.setdefault(st[1], []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        kids = by_parent.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"          # a zombie is dead (waiting for init to reap it)


def wait_until(cond, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_run(out: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    """`revbench run` on one small case in a process of its own (its own process group, as a shell starts a
    foreground job), output to files."""
    logs = [open(tmp_path / "run.out", "wb"), open(tmp_path / "run.err", "wb")]
    try:
        return subprocess.Popen([sys.executable, "-m", "revbench.cli", "run", "--filter", SMALL, "--out", str(out),
                                 *extra], stdout=logs[0], stderr=logs[1], start_new_session=True)
    finally:
        for fh in logs:
            fh.close()


def pytest_child(run: subprocess.Popen) -> list[int]:
    """Wait until the run's pytest child is running (its temporary JSON exists); return the run's descendants."""
    def cmdline(pid):
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return b""

    def started():
        kids = descendants(run.pid)
        return kids if any(b"pytest" in cmdline(k) for k in kids) else None
    kids = wait_until(started, 60, "the pytest child")
    time.sleep(1.5)                                   # well into pytest (collecting or measuring)
    assert run.poll() is None, "the run ended before it could be interrupted"
    return descendants(run.pid) or kids


def stop_all(run: subprocess.Popen, kids: list[int]) -> None:
    """Clean up after a test that failed midway: the run and every process it started (orphans included)."""
    for k in set(kids) | set(descendants(run.pid)):
        if alive(k):
            os.kill(k, signal.SIGKILL)
    run.kill()
    run.wait()


# ------------------------------------------------------------------------------------------- item 6: bad input
def test_out_dir_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    target = tmp_path / "out.txt"
    target.write_text("not a folder")
    rc, out, err = cli(["run", "--filter", SMALL, "--out", target], capsys)
    line = error_line(err)
    assert rc == 2 and "--out" in line and str(target) in line and "not a folder" in line, err
    assert target.read_text() == "not a folder" and out == ""
    rc, out, err = cli(["run", "--filter", SMALL, "--out", target / "sub"], capsys)
    line = error_line(err)
    assert rc == 2 and "--out" in line and str(target / "sub") in line, err


def test_unwritable_out_dir_is_one_line_and_exit_2(tmp_path, capsys):
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        cases = [ro, ro / "sub"]
    else:                                 # root writes anywhere on a normal filesystem; sysfs refuses it
        probe = Path("/sys/revbench-probe")
        try:
            probe.touch()
        except OSError:
            cases = [Path("/sys"), probe.with_name("revbench-out")]
        else:
            probe.unlink()
            pytest.skip("no unwritable folder to try as root")
    for target in cases:
        rc, out, err = cli(["run", "--filter", SMALL, "--out", target], capsys)
        line = error_line(err)
        assert rc == 2 and "--out" in line and str(target) in line and "cannot" in line, err
        assert not (target / "benchmarks.json").exists()


@pytest.mark.parametrize("value, says", [("'unbalanced", "No closing quotation"),
                                         ('--benchmark-disable "-k x', "No closing quotation"),
                                         ("--benchmark-json=x.json", "--benchmark-json"),
                                         ("--revbench-grid frontier", "--grid"),
                                         (f"--revbench-filter={NO_CASE}", "--filter")])
def test_bad_pytest_args_are_one_line_and_exit_2(tmp_path, capsys, value, says):
    out_dir = tmp_path / "out"
    rc, out, err = cli(["run", "--filter", SMALL, "--out", out_dir, f"--pytest-args={value}"], capsys)
    line = error_line(err)
    assert rc == 2 and "--pytest-args" in line and says in line, err
    assert not out_dir.exists()                        # refused before anything was done


@pytest.mark.parametrize("value", ["--benchmark-disable", "-x"])
def test_pytest_args_starting_with_a_dash_say_how_to_pass_them(tmp_path, capsys, value):
    rc, out, err = cli(["run", "--out", tmp_path / "out", "--pytest-args", value], capsys)
    line = error_line(err)
    assert rc == 2 and "--pytest-args" in line and "--pytest-args=" in line, err


def test_an_out_dir_another_run_is_writing_is_refused(tmp_path, capsys):
    import fcntl

    out = tmp_path / "out"
    before = earlier_results(out)
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)          # what a running `revbench run` holds
        rc, _, err = cli(["run", "--filter", SMALL, "--out", out], capsys)
    finally:
        os.close(fd)
    line = error_line(err)
    assert rc == 2 and "another revbench run" in line and str(out) in line, err
    assert contents(out) == before


# ------------------------------------------------------------------------------------------- item 9: the hint
def test_no_records_when_the_filter_matched_gives_no_filter_hint(tmp_path, capsys):
    """--pytest-args=--benchmark-disable: the case runs but pytest-benchmark records nothing. The filter matched,
    so the message must not blame it; earlier results stay."""
    out = tmp_path / "out"
    before = earlier_results(out)
    rc, _, err = cli(["run", "--filter", SMALL, "--out", out, "--pytest-args=--benchmark-disable"], capsys)
    assert rc == 1 and "Traceback" not in err, err
    assert "no case matched" not in err and "1 selected case" in err and "--benchmark-disable" in err, err
    assert "left untouched" in err and contents(out) == before and not litter(out)


def test_a_filter_that_matches_nothing_says_so(tmp_path, capsys):
    out = tmp_path / "out"
    before = earlier_results(out)
    rc, _, err = cli(["run", "--filter", NO_CASE, "--out", out], capsys)
    line = error_line(err)
    assert rc == 1 and f"--filter {NO_CASE!r}" in line and "no case" in line and "left untouched" in line, err
    assert contents(out) == before


# ------------------------------------------------------------------------------------------- item 10: kills
def test_sigkill_leaves_no_child_and_the_next_run_removes_the_litter(tmp_path, capsys):
    out = tmp_path / "out"
    before = earlier_results(out)
    run, kids = start_run(out, tmp_path), []
    try:
        kids = pytest_child(run)
        run.send_signal(signal.SIGKILL)
        run.wait(30)
        wait_until(lambda: not any(alive(k) for k in kids), 20, f"the pytest child(ren) {kids} to die")
    finally:
        stop_all(run, kids)
    assert {n: contents(out)[n] for n in EARLIER} == before           # the earlier results are untouched
    for name in ("benchmarks.json", "report.html", "benchmarks.partial.json"):   # what a kill mid-write leaves
        (out / f".{name}.k1ll3d0x.tmp").write_bytes(b"half-written")
    left = litter(out)
    (out / "benchmarks.partial.json").unlink(missing_ok=True)        # the case may have finished before the kill
    rc, got, err = cli(["run", "--filter", NO_CASE, "--out", out], capsys)     # the next run (fails fast)
    assert rc == 1 and not litter(out) and contents(out) == before, err
    assert all(n in got + err for n in left), got + err                            # it says what it removed


def test_ctrl_c_stops_the_child_exits_130_and_keeps_earlier_results(tmp_path):
    out = tmp_path / "out"
    before = earlier_results(out)
    run, kids = start_run(out, tmp_path), []
    try:
        kids = pytest_child(run)
        os.killpg(run.pid, signal.SIGINT)             # Ctrl-C: the terminal signals the foreground process group
        rc = run.wait(60)
        gone = not any(alive(k) for k in kids)
    finally:
        stop_all(run, kids)
    err = (tmp_path / "run.err").read_text()
    assert rc == 130 and "Traceback" not in err and "interrupted" in err.splitlines()[-1], err
    assert "left untouched" in err.splitlines()[-1], err
    kept = {n: b for n, b in contents(out).items() if n != "benchmarks.partial.json"}   # the case may have ended
    assert gone and not litter(out) and kept == before


# ------------------------------------------------------------------------------------------- item 11: the pair
DIE_AFTER_JSON = textwrap.dedent("""
    import os, signal, sys
    real = os.replace
    def replace(src, dst, *a, **k):
        real(src, dst, *a, **k)
        if os.path.basename(dst) == "benchmarks.json":      # killed between the JSON's rename and the report's
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
    from revbench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _names(page: str) -> str | None:
    m = re.search(r'<meta name="revbench-benchmarks-sha256" content="([0-9a-f]{64})">', page)
    return m.group(1) if m else None


def test_a_kill_between_json_and_report_is_repaired_by_the_next_run(tmp_path, capsys):
    out = tmp_path / "out"
    earlier_results(out)
    proc = subprocess.run([sys.executable, "-c", DIE_AFTER_JSON, "run", "--filter", SMALL, "--out", str(out)],
                          capture_output=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    new_json = (out / "benchmarks.json").read_bytes()
    assert new_json != EARLIER["benchmarks.json"] and (out / "report.html").read_bytes() == EARLIER["report.html"]

    rc, got, err = cli(["run", "--filter", NO_CASE, "--out", out], capsys)     # the next run (fails fast)
    assert rc == 1, err
    page = (out / "report.html").read_text()
    assert _names(page) == _sha(out / "benchmarks.json") and (out / "benchmarks.json").read_bytes() == new_json
    assert f"sha256 {_sha(out / 'benchmarks.json')[:12]}" in page                  # visible to a reader too
    assert "report.html" in got + err and not litter(out)

    # the JSON replaced under a report that names another one (e.g. after --no-report): the report is rebuilt
    data = json.loads(new_json)
    (out / "benchmarks.json").write_text(json.dumps(data, indent=3))
    rc, got, err = cli(["run", "--filter", NO_CASE, "--out", out], capsys)
    assert rc == 1 and "rebuilt" in got + err, got + err
    page = (out / "report.html").read_text()
    assert _names(page) == _sha(out / "benchmarks.json") and "Encoder-decoder" in page and not litter(out)
