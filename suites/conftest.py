"""pytest-benchmark suites: `pytest suites/ --benchmark-json out.json [--revbench-grid default|frontier|paper|large]`.

Each case is one method on one configuration; see revbench/measure/grids.py. Language-model cases run in test_steps.py
(fixture ``case``), encoder-decoder cases in test_seq2seq_steps.py (fixture ``s2s_case``).
"""
import pytest

from revbench.measure.grids import GRIDS, get_grid
from revbench.measure.fused_reference import FusedReferenceCache
from revbench.measure.harness import BaselineCache
from revbench.measure.seq2seq_bench import Seq2SeqBenchConfig, bptt_cache


def pytest_addoption(parser):
    group = parser.getgroup("revbench")
    group.addoption("--revbench-grid", default="default", choices=sorted(GRIDS),
                    help="which benchmark grid to run (default: %(default)s)")
    group.addoption("--revbench-filter", default=None,
                    help="only cases whose id contains this substring")


def pytest_generate_tests(metafunc):
    for name in ("case", "s2s_case"):
        if name in metafunc.fixturenames:
            cases = get_grid(metafunc.config.getoption("--revbench-grid"))
            cases = [c for c in cases if isinstance(c.cfg, Seq2SeqBenchConfig) == (name == "s2s_case")]
            sub = metafunc.config.getoption("--revbench-filter")
            if sub:
                cases = [c for c in cases if sub in c.id]
            metafunc.parametrize(name, cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def bptt_peaks():
    return BaselineCache()


@pytest.fixture(scope="session")
def fused_refs():
    """The fused nn.LSTM/nn.GRU reference of each configuration, measured once per run."""
    return FusedReferenceCache()


@pytest.fixture(scope="session")
def s2s_bptt():
    return bptt_cache()
