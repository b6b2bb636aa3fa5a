"""`@pytest.mark.limit_activation_memory(...)` (revbench.measure.pytest_plugin) and the sizes it reads
(revbench.measure.budget): a case over its budget fails, naming the limit, the peak and by how much."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
# pytester restores sys.modules after each in-process run: torch._dynamo imported there for the first time would be
# imported a second time by a later test and fail ("Only a single TORCH_LIBRARY ..."); import it once here
import torch._dynamo  # noqa: F401

from revbench.measure.budget import SizeError, format_size, parse_size

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("-p", "pytest_benchmark.plugin", "-p", "revbench.measure.pytest_plugin")


# --- sizes ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, nbytes", [
    ("4 MiB", 4 * 2 ** 20), ("4MiB", 4 * 2 ** 20), ("4 MB", 4 * 10 ** 6), ("4 kB", 4000), ("4 KB", 4000),
    ("4 KiB", 4096), ("1.5 KiB", 1536), ("0.5 GB", 500_000_000), ("2 GiB", 2 ** 31), ("1 TiB", 2 ** 40),
    ("3 PB", 3 * 10 ** 15), ("4096", 4096), ("4096 B", 4096), ("12 bytes", 12), (" 7 MiB ", 7 * 2 ** 20),
    (4096, 4096), (0, 0), (2 ** 40, 2 ** 40), (1024.0, 1024),
])
def test_sizes_are_read_exactly(text, nbytes):
    assert parse_size(text) == nbytes and isinstance(parse_size(text), int)


@pytest.mark.parametrize("bad, says", [
    ("4 mb", "unknown unit 'mb' (did you mean 'MB'?)"), ("4 Mb", "unknown unit 'Mb'"), ("4 M", "unknown unit 'M'"),
    ("4 MIB", "did you mean 'MiB'?"), ("4 parsecs", "unknown unit"), ("-4 MiB", "not a size"), ("", "not a size"),
    ("MiB", "not a size"), ("1.0001 B", "not a whole number of bytes"), (-1, ">= 0"), (True, "not a size"),
    (float("inf"), "not a size"), (1.5, "whole number"), (None, "not a size"), ([4], "not a size"),
])
def test_bad_sizes_say_what_is_accepted(bad, says):
    with pytest.raises(SizeError) as info:
        parse_size(bad)
    assert says in str(info.value) and "\n" not in str(info.value)


def test_format_size():
    assert format_size(5 * 2 ** 20) == "5,242,880 B (5.00 MiB)"
    assert format_size(1000) == "1,000 B" and format_size(2048) == "2,048 B (2.00 KiB)"


# --- the marker, in a pytest run of its own ----------------------------------------------------------------

@pytest.fixture
def run(pytester, monkeypatch):
    # only the plugins named here: the run must not depend on what else is installed (or on the entry point)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")

    def go(source: str, *args):
        pytester.makepyfile(test_case=source)
        return pytester.runpytest(*PLUGINS, "-p", "no:cacheprovider", "--benchmark-disable", *args)
    return go


BENCH_CASES = '''
import pytest

def _step():
    return sum(range(10))

@pytest.mark.limit_activation_memory("4 MiB")
def test_over(benchmark):
    benchmark(_step)
    benchmark.extra_info.update(peak_bytes=5 * 2**20, peak_bytes_meter="live_tensors")

@pytest.mark.limit_activation_memory("5 MiB")
def test_at_the_limit(benchmark):
    benchmark(_step)
    benchmark.extra_info["peak_bytes"] = 5 * 2**20

@pytest.mark.limit_activation_memory("5 MB")
def test_si_limit_is_smaller(benchmark):
    benchmark(_step)
    benchmark.extra_info["peak_bytes"] = 5 * 2**20

@pytest.mark.limit_activation_memory(6_000_000)
def test_int_bytes(benchmark):
    benchmark(_step)
    benchmark.extra_info["peak_bytes"] = 5 * 2**20

def test_unmarked(benchmark):
    benchmark(_step)
    benchmark.extra_info["peak_bytes"] = 10**12
'''


def test_a_case_over_its_budget_fails_naming_limit_peak_and_excess(run):
    result = run(BENCH_CASES, "--strict-markers")
    result.assert_outcomes(passed=3, failed=2)
    out = result.stdout.str()
    assert ("limit_activation_memory('4 MiB'): peak_bytes 5,242,880 B (5.00 MiB) exceeds the limit "
            "4,194,304 B (4.00 MiB) by 1,048,576 B (1.00 MiB), +25.0%; measured by "
            "benchmark.extra_info['peak_bytes'] (live_tensors meter)") in out
    # "5 MB" is 5,000,000 bytes: the 5 MiB peak is 242,880 B over it
    assert "limit_activation_memory('5 MB'): peak_bytes 5,242,880 B (5.00 MiB) exceeds the limit 5,000,000 B" in out
    assert "by 242,880 B (237.19 KiB), +4.9%" in out
    failed = {r.nodeid.split("::")[-1] for r in result.reprec.getreports("pytest_runtest_logreport")
              if r.when == "call" and r.failed}
    assert failed == {"test_over", "test_si_limit_is_smaller"}


def test_marker_is_registered_for_strict_markers(run):
    result = run("import pytest\n\n@pytest.mark.limit_activation_memory('1 GiB')\ndef test_x(benchmark):\n"
                 "    benchmark(lambda: None)\n    benchmark.extra_info['peak_bytes'] = 1\n", "--strict-markers")
    result.assert_outcomes(passed=1)
    listed = run("def test_y():\n    pass\n", "--markers").stdout.str()
    assert "@pytest.mark.limit_activation_memory(limit)" in listed


def test_the_fixture_measures_a_users_own_step(run):
    source = '''
import pytest
import torch

def step():
    return torch.empty(1 << 20, dtype=torch.uint8)      # exactly 1 MiB alive at the peak

@pytest.mark.limit_activation_memory("1 MiB")
def test_fits(activation_memory):
    figures = activation_memory.measure(step)
    assert figures["peak_bytes"] == 1 << 20 and figures["peak_bytes_meter"] == "live_tensors"

@pytest.mark.limit_activation_memory("1000 KiB")
def test_too_big(activation_memory):
    activation_memory.measure(step)

@pytest.mark.limit_activation_memory("2 MiB")
def test_model_step(activation_memory):
    model = torch.nn.Linear(64, 64)
    x = torch.randn(32, 64)
    figures = activation_memory.measure(lambda: model(x).relu().sum().backward(), params=model.parameters())
    assert figures["live_peak_grad_bytes"] == (64 * 64 + 64) * 4     # the gradients the step created
    assert figures["peak_bytes"] == figures["live_peak_bytes"] >= figures["live_peak_grad_bytes"]
'''
    result = run(source)
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert ("limit_activation_memory('1000 KiB'): peak_bytes 1,048,576 B (1.00 MiB) exceeds the limit "
            "1,024,000 B (1000.00 KiB) by 24,576 B (24.00 KiB), +2.4%; measured by activation_memory.measure "
            "(1 call, highest peak)") in out


def test_a_marked_case_that_measures_nothing_fails(run):
    source = '''
import pytest

@pytest.mark.limit_activation_memory("4 MiB")
def test_nothing():
    assert 1 + 1 == 2

@pytest.mark.limit_activation_memory("4 MiB")
def test_unavailable(benchmark):
    benchmark(lambda: None)
    benchmark.extra_info.update(peak_bytes=None, peak_bytes_reason="no meter on this device")

@pytest.mark.limit_activation_memory("4 MiB")
def test_fails_on_its_own(benchmark):
    benchmark(lambda: None)
    assert False, "its own failure"
'''
    result = run(source)
    result.assert_outcomes(failed=3)
    out = result.stdout.str()
    assert "no activation-memory peak to check against 4,194,304 B (4.00 MiB): the test measured nothing" in out
    assert "activation_memory.measure(step)" in out
    assert "benchmark.extra_info['peak_bytes'] is unavailable: no meter on this device" in out
    assert "its own failure" in out
    # count in the failure reports only: the short summary repeats each message, cut or whole by terminal width
    reports = out.split("short test summary info")[0]
    assert reports.count("no activation-memory peak") == 2     # the third keeps its own failure


@pytest.mark.parametrize("arg, says", [('"4 mb"', "unknown unit 'mb'"), ('"four"', "is not a size"),
                                       ("", "takes one limit"), ('"1 MiB", "2 MiB"', "takes one limit")])
def test_a_bad_limit_is_a_usage_error(run, arg, says):
    result = run(f"import pytest\n\n@pytest.mark.limit_activation_memory({arg})\ndef test_x():\n    pass\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "test_case.py::test_x: @pytest.mark.limit_activation_memory" in err and says in err
    assert "Traceback" not in err


def test_the_plugin_is_registered_by_an_entry_point():
    tomllib = pytest.importorskip("tomllib")        # Python >= 3.11
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    eps = meta["project"].get("entry-points", {}).get("pytest11", {})
    assert eps.get("revbench") == "revbench.measure.pytest_plugin", \
        "pyproject.toml needs [project.entry-points.pytest11] revbench = \"revbench.measure.pytest_plugin\""


def test_loading_the_plugin_does_not_import_torch():
    import subprocess

    code = ("import sys; import revbench.measure.pytest_plugin; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-500:]
