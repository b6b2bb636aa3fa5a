"""Packaging and the command line as a user meets them: tox installs the CPU build of torch before the project (as
CI does), `revbench --version`, every subcommand's `--help`, the option spellings shared by every subcommand,
and no torch import for `revbench --version` nor for the help of the subcommands that need none."""
from __future__ import annotations

import argparse
import configparser
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from revbench import cli
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
TORCH_PIN = re.compile(r"torch==[0-9.]+\+cpu")


def _revbench(*argv, importtime=False):
    """``python -m revbench.cli ARGV`` in a fresh interpreter of this environment, run from the checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "revbench.cli", *argv]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _imported(importtime_stderr: str) -> set[str]:
    """Module names in ``python -X importtime``'s report."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2}


# --------------------------------------------------------------------------------------------- tox and CI
def _tox() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "tox.ini")
    return cfg


def test_tox_installs_cpu_torch_before_the_project():
    env = _tox()["testenv"]
    # tox installs `deps` first, then the package with its extras: `torch>=2.1` is satisfied by then
    assert TORCH_PIN.search(env["deps"]), f"tox.ini deps must pin the CPU build of torch, got {env['deps']!r}"
    assert env.get("package", "").strip() == "editable"
    assert env.get("skip_install", "false").strip().lower() == "false"
    # the same torch build and the same extras as CI's, torch first there too
    ci = (REPO / ".ci" / "run").read_text()
    assert TORCH_PIN.search(env["deps"]).group(0) == TORCH_PIN.search(ci).group(0)
    ci_extras = re.search(r'-e "\.\[([a-z,]+)\]"', ci)
    assert ci_extras and set(ci_extras.group(1).split(",")) == set(env["extras"].split()) >= {"dev"}
    assert ci.index(TORCH_PIN.search(ci).group(0)) < ci_extras.start()


def test_tox_takes_the_data_folder_from_revbench_data_and_drops_isolated_build():
    cfg = _tox()
    assert "isolated_build" not in cfg["tox"]
    set_env = cfg["testenv"]["set_env"]
    assert re.search(r"REVBENCH_DATA\s*=\s*\{env:REVBENCH_DATA:\{toxinidir\}/\.\./shared/data\}", set_env), set_env
    assert "REVBENCH_*" in cfg["testenv"]["pass_env"]


def test_tox_bench_runs_the_ci_gate():
    cfg = _tox()
    assert ".ci/gate" in cfg["testenv:bench"]["commands"]
    assert "bash .ci/gate" in (REPO / ".ci" / "run").read_text()


def test_the_gate_commands_parse():
    """Every `revbench ...` line of .ci/gate is accepted by today's parser (options renamed there would break CI)."""
    import shlex

    lines = [ln.strip() for ln in (REPO / ".ci" / "gate").read_text().splitlines() if ln.strip().startswith("revbench ")]
    assert len(lines) == 2
    for line in lines:
        argv = shlex.split(line.replace("$out", "/tmp/out"))[1:]
        cli.build_parser([argv[0]]).parse_args(argv)        # exits 2 (SystemExit) on an unknown option


def test_extras_open_the_notebook_and_draw_histograms():
    tomllib = pytest.importorskip("tomllib")            # Python >= 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert any(re.match(r"(jupyterlab|notebook)\b", r) for r in extras["notebooks"])
    assert any(r.startswith("pytest-benchmark[histogram]") for r in extras["histogram"])
    assert any(re.match(r"ray\b", r) for r in extras["cluster"])
    assert project["scripts"]["revbench"] == "revbench.cli:main"


def test_the_notebook_is_a_valid_notebook():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(REPO / "reports" / "benchmarks.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"


# --------------------------------------------------------------------------------------------- --version
def test_version_prints_one_line_without_importing_torch():
    proc = _revbench("--version", importtime=True)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "\n" not in line
    m = re.fullmatch(r"revbench (\S+) \(torch (\S+), Python (\S+)\)", line)
    assert m, line
    assert m.group(1) == importlib.metadata.version("revbench")
    assert m.group(2) == importlib.metadata.version("torch")
    assert "torch" not in _imported(proc.stderr)


def test_version_matches_the_package():
    import revbench

    assert revbench.__version__ == importlib.metadata.version("revbench")
    assert cli.version_line().startswith(f"revbench {revbench.__version__} (torch ")


@pytest.mark.parametrize("argv", [("compare",), ("report",), ("run",), ("train", "nmt"), ("reproduce", "lm")], ids=" ".join)
def test_help_does_not_import_torch(argv):
    proc = _revbench(*argv, "--help", importtime=True)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: revbench {' '.join(argv)}"), proc.stderr
    assert "Traceback" not in proc.stderr
    imported = _imported(proc.stderr)
    assert "torch" not in imported and "pandas" not in imported


def test_only_the_subcommand_named_is_imported():
    proc = _revbench("compare", "--help", importtime=True)
    assert proc.returncode == 0, proc.stderr
    others = {module for name, (module, _) in cli.COMMANDS.items() if name != "compare"}
    assert not others & _imported(proc.stderr)


# --------------------------------------------------------------------------------------------- every --help
def _subcommands(parser: argparse.ArgumentParser, prefix=()):
    """(argv prefix, parser) of ``parser`` and of every subcommand under it, depth first."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, prefix + (name,))


ALL = list(_subcommands(cli.build_parser()))
ALL_IDS = [" ".join(p) or "revbench" for p, _ in ALL]


def test_every_command_is_listed():
    names = {p for p, _ in ALL}
    for expected in [("run",), ("report",), ("compare",), ("train", "lm"), ("train", "nmt"), ("reproduce", "lm"),
                     ("reproduce", "nmt"), ("reproduce", "repeat"), ("export",), ("profile",), ("gpu-check",)]:
        assert expected in names


@pytest.mark.parametrize("argv", [p for p, _ in ALL], ids=ALL_IDS)
def test_help_exits_0_without_a_traceback(argv, capsys):
    rc, out, err = run_cli([*argv, "--help"], capsys)
    assert rc == 0, err
    assert out.startswith("usage: revbench") and "Traceback" not in out + err


@pytest.mark.parametrize("argv,parser", ALL, ids=ALL_IDS)
def test_every_option_is_explained(argv, parser):
    for action in parser._actions:
        if action.option_strings:
            assert action.help and action.help.strip(), f"revbench {' '.join(argv)} {action.option_strings[0]}"


@pytest.mark.parametrize("argv,parser", ALL, ids=ALL_IDS)
def test_one_spelling_per_option(argv, parser):
    """An output folder is `--out` (`--out-dir` is only an alias of it), an output file `-o/--output`,
    less output `--quiet`, everywhere."""
    for action in parser._actions:
        opts = set(action.option_strings)
        where = f"revbench {' '.join(argv)} {sorted(opts)}"
        assert not opts & {"--outdir", "--output-dir", "--output_dir", "--silent", "--out_dir"}, where
        if "--out-dir" in opts:
            assert "--out" in opts, f"{where}: --out-dir must be an alias of --out"
        if "-o" in opts:
            assert "--output" in opts, where
        if "--quiet" in opts or "-q" in opts:
            assert "--quiet" in opts, where
