"""pytest-benchmark suites: `pytest suites/ --benchmark-json out.json [--revbench-grid default|frontier|paper|large]`.

Each case is one method on one configuration; see revbench/grids.py.
"""
import pytest

from revbench.grids import GRIDS, get_grid
from revbench.harness import BaselineCache


def pytest_addoption(parser):
    group = parser.getgroup("revbench")
    group.addoption("--revbench-grid", default="default", choices=sorted(GRIDS),
                    help="which benchmark grid to run (default: %(default)s)")
    group.addoption("--revbench-filter", default=None,
                    help="only cases whose id contains this substring")


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = get_grid(metafunc.config.getoption("--revbench-grid"))
        sub = metafunc.config.getoption("--revbench-filter")
        if sub:
            cases = [c for c in cases if sub in c.id]
        metafunc.parametrize("case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def bptt_peaks():
    return BaselineCache()
