"""Fuzz `revbench compare` and `revbench report` with hostile variants of a valid benchmark JSON.

A valid document (tests/fixtures/benchjson.py's language-model records plus three encoder-decoder records
from reports/nmt-step/benchmarks.json) gets one mutation at a time (tests/fixtures/hostile.py: keys deleted,
types changed, extreme numbers, nesting 100,000 deep, truncation, bytes that are not UTF-8, unpaired
surrogates, unknown keys). Whatever the mutant, both commands answer with their documented exit status
(compare: 0 or 1 for a usable file, 3 for a bad one; report: 0 or 3), a bad file gets one line on stderr
naming it, and nothing prints a traceback: in process (revbench.cli.main) and in a real interpreter.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from revbench import cli
from revbench.report.compare import compare
from revbench.report.results import BenchmarkFileError, benchmarks_from_dict
from revbench.report.tables import environment_table, summary_table
from tests.fixtures import benchjson, hostile

ROOT = Path(__file__).resolve().parents[1]
N_COMPARE = 240        # mutants through `revbench compare` (both ways round), in process
N_REPORT = 24          # of those, rendered by `revbench report` (a usable one takes about a second)
N_SUBPROCESS = 24      # of those, through both commands in a real interpreter


def _base_doc() -> dict:
    doc = benchjson.build_benchmark_json(cells=("revgru",), seq_lens=(35,), forget_limits=(3, None))
    s2s = json.loads((ROOT / "reports" / "nmt-step" / "benchmarks.json").read_text())["benchmarks"]
    doc["benchmarks"] += [b for b in s2s if b["extra_info"]["method"] in ("bptt", "checkpoint", "reversible")][:3]
    return doc


BASE = _base_doc()
MUTANTS = hostile.mutants(BASE, seed=17, n=N_COMPARE)
# the cases the issue names, whatever the random draw
NAMED = [
    ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000),
    ("peak_bytes = 10**30", json.dumps({**BASE, "benchmarks": [
        {**BASE["benchmarks"][0], "extra_info": {**BASE["benchmarks"][0]["extra_info"], "peak_bytes": 10 ** 30}},
        *BASE["benchmarks"][1:]]}).encode()),
    ("machine_info a string", json.dumps({**BASE, "machine_info": "x86_64"}).encode()),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The valid document and every mutant, written to files: (valid path, [(description, path)])."""
    d = tmp_path_factory.mktemp("hostile")
    valid = d / "valid.json"
    valid.write_text(json.dumps(BASE))
    out = []
    for i, (what, data) in enumerate(NAMED + MUTANTS):
        path = d / f"mutant-{i:03d}.json"
        path.write_bytes(data)
        out.append((what, path))
    return valid, out


def _check_answer(command: str, rc, out: str, err: str, path: Path, what: str) -> None:
    """The documented answer: a usable file -> 0 (or 1: compare's regression), a bad one -> 3 and one line."""
    assert "Traceback" not in out + err, f"{what}: {command} printed a traceback:\n{err[-2000:]}"
    assert rc in ((0, 1, 3) if command == "compare" else (0, 3)), f"{what}: {command} exited {rc}: {err[-500:]}"
    if rc == 3:
        assert err.startswith(f"revbench {command}: error: ") and err.count("\n") == 1, f"{what}: {err!r}"
        assert str(path) in err, f"{what}: the message does not name {path}: {err!r}"
    else:
        assert err == "", f"{what}: {command} exited {rc} with {err!r}"


def _run_in_process(argv, capsys):
    capsys.readouterr()
    rc = cli.main(argv)            # an exception escaping here fails the test with the mutant named below
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_compare_answers_every_mutant_with_its_documented_exit_status(files, capsys):
    valid, mutants = files
    accepted = 0
    for what, path in mutants:
        answers = []
        for argv in (["compare", str(valid), str(path)], ["compare", str(path), str(valid)]):
            try:
                rc, out, err = _run_in_process(argv, capsys)
            except Exception as exc:  # noqa: BLE001 - name the mutant in the failure
                pytest.fail(f"{what}: {' '.join(argv[:1])} raised {type(exc).__name__}: {exc}")
            _check_answer("compare", rc, out, err, path, what)
            answers.append(rc == 3)
        assert answers[0] == answers[1], f"{what}: usable as new but not as base (or the other way round)"
        accepted += not answers[0]
    # the mutations are not all fatal: some leave a usable file (an unknown key, a figure made null, ...)
    assert 0 < accepted < len(mutants)


def test_report_answers_mutants_with_its_documented_exit_status(files, capsys, tmp_path):
    valid, mutants = files
    for what, path in mutants[:len(NAMED) + N_REPORT]:
        out_html = tmp_path / "report.html"
        out_html.write_text("EARLIER")
        try:
            rc, out, err = _run_in_process(["report", str(path), "-o", str(out_html)], capsys)
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{what}: report raised {type(exc).__name__}: {exc}")
        _check_answer("report", rc, out, err, path, what)
        # the same contract as compare's: usable for one command means usable for the other
        assert (rc == 3) == (cli.main(["compare", str(valid), str(path)]) == 3), what
        capsys.readouterr()
        assert (out_html.read_text() == "EARLIER") == (rc == 3), what


DRIVER = textwrap.dedent("""
    import json, runpy, sys
    for i, argv in enumerate(json.load(open(sys.argv[1]))):
        print(f"@@case {i}", flush=True)
        print(f"@@case {i}", file=sys.stderr, flush=True)
        sys.argv = ["revbench", *argv]
        try:
            runpy.run_module("revbench.cli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code
        sys.stdout.flush()
        print(f"@@rc {code}", file=sys.stderr, flush=True)
""")


def test_both_commands_answer_mutants_in_a_real_interpreter(files, tmp_path):
    """One interpreter, the real `python -m revbench.cli` entry point (sys.exit, real stdout/stderr)."""
    valid, mutants = files
    chosen = mutants[:len(NAMED)] + mutants[len(NAMED) + N_REPORT:][:N_SUBPROCESS]
    runs = []
    for what, path in chosen:
        runs.append(("compare", what, path, ["compare", str(valid), str(path)]))
        runs.append(("report", what, path, ["report", str(path), "-o", str(tmp_path / "r.html")]))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([argv for *_, argv in runs]))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.run([sys.executable, str(driver), str(plan)], capture_output=True, text=True, timeout=600,
                          cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    outs = proc.stdout.split("@@case ")[1:]
    errs = proc.stderr.split("@@case ")[1:]
    assert len(outs) == len(errs) == len(runs), proc.stderr[-3000:]
    for (command, what, path, _), out, err in zip(runs, outs, errs):
        err_body, _, rc_line = err.partition("\n")[2].rpartition("@@rc ")
        out_body = out.partition("\n")[2]
        rc = int(rc_line.strip())
        _check_answer(command, rc, out_body, err_body, path, what)


# --- the loader alone, under hypothesis: any value anywhere is loaded or refused, nothing else ---------

# the first (language-model) and last (encoder-decoder) benchmark and the file's metadata; not stats.data
_ENDS = (0, len(BASE["benchmarks"]) - 1)
PATHS = [p for p in hostile.paths(BASE)
         if (p[0] != "benchmarks" or len(p) == 1 or p[1] in _ENDS) and "data" not in p[:4]]
_leaf = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
         | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | st.sampled_from(hostile.VALUES))
JSON_VALUES = st.recursive(_leaf, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
BASE_DF = benchmarks_from_dict(BASE, source="<base>")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_anywhere_is_loaded_or_refused_as_a_bad_file(data):
    doc = copy.deepcopy(BASE)
    path = data.draw(st.sampled_from(PATHS), label="path")
    node = doc
    for key in path[:-1]:
        node = node[key]
    if data.draw(st.booleans(), label="delete"):
        del node[path[-1]]
    else:
        node[path[-1]] = data.draw(JSON_VALUES, label="value")
    try:
        df = benchmarks_from_dict(doc, source="<fuzz>")
    except BenchmarkFileError as exc:
        assert str(exc).startswith("<fuzz>: ") and "\n" not in str(exc)
        return
    for base, new in ((BASE_DF, df), (df, BASE_DF)):
        result = compare(base, new)
        result.format_table(show_all=True)
        json.loads(result.to_json())
    summary_table(df)
    environment_table(df)
