"""pytest-benchmark suites: `pytest suites/ --benchmark-json out.json [--revbench-grid default|frontier|paper|large]`.

Each case is one method on one configuration; see revbench/measure/grids.py. Language-model cases run in test_steps.py
(fixture ``case``), encoder-decoder cases in test_seq2seq_steps.py (fixture ``s2s_case``).

``--revbench-threads N`` (default 1) pins torch's intra-op thread pool (``torch.set_num_threads``, and the inter-op
pool where torch still allows it) for the whole session, so every method and its fused reference are timed with
the same threads; every record says how many (``torch_num_threads``). ``--revbench-profiler auto|split|peak|off``
chooses how much of torch's profiler meter runs and ``--revbench-heap on|off`` whether the heap meter runs
(``revbench.measure.memory.apart_meters``; each takes one more step per record).
"""
import argparse

import pytest

from revbench.measure.environment import pin_threads, restore_threads
from revbench.measure.grids import GRIDS, get_grid
from revbench.measure.fused_reference import FusedReferenceCache
from revbench.measure.harness import BaselineCache
from revbench.measure.memory import PROFILER_SPLITS
from revbench.measure.seq2seq_bench import Seq2SeqBenchConfig, bptt_cache


def _threads(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of threads >= 1, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of threads >= 1, got {text!r}")
    return n


def pytest_addoption(parser):
    group = parser.getgroup("revbench")
    group.addoption("--revbench-grid", default="default", choices=sorted(GRIDS),
                    help="which benchmark grid to run (default: %(default)s)")
    group.addoption("--revbench-filter", default=None,
                    help="only cases whose id contains this substring")
    group.addoption("--revbench-threads", default=1, type=_threads,
                    help="torch threads for the whole session (torch.set_num_threads; the inter-op pool too where "
                         "allowed); recorded as torch_num_threads (default: %(default)s)")
    group.addoption("--revbench-profiler", default="auto", choices=PROFILER_SPLITS,
                    help="torch's profiler meter: 'split' also computes its category split (slow: about 0.5 ms per "
                         "op), 'peak' only the peak, 'auto' the split for small steps, 'off' none (default: "
                         "%(default)s)")
    group.addoption("--revbench-heap", default="on", choices=("on", "off"),
                    help="the heap meter (glibc mallinfo2 at op boundaries; one more step per record): "
                         "heap_peak_bytes (default: %(default)s)")


def pytest_configure(config):
    n = config.getoption("--revbench-threads", default=None)
    if n is not None:
        config._revbench_threads_before = pin_threads(n)


def pytest_unconfigure(config):
    before = getattr(config, "_revbench_threads_before", None)
    if before is not None:
        restore_threads(before)


def pytest_report_header(config):
    before = getattr(config, "_revbench_threads_before", None)
    if before is None:
        return None
    import torch

    interop = (f"inter-op {torch.get_num_interop_threads()}" if before["interop_pinned"]
               else f"inter-op {torch.get_num_interop_threads()} (not pinned: {before['interop_reason']})")
    return f"revbench: torch threads {torch.get_num_threads()}, {interop}"


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
def measure_options(pytestconfig):
    """Keyword arguments of every measure_method / measure_seq2seq call of the session (``--revbench-profiler``,
    ``--revbench-heap``)."""
    return {"profiler": pytestconfig.getoption("--revbench-profiler"),
            "heap": pytestconfig.getoption("--revbench-heap") == "on"}


@pytest.fixture(scope="session")
def bptt_peaks(measure_options):
    return BaselineCache(**measure_options)


@pytest.fixture(scope="session")
def fused_refs(measure_options):
    """The fused nn.LSTM/nn.GRU reference of each configuration, measured once per run."""
    return FusedReferenceCache(**measure_options)


@pytest.fixture(scope="session")
def s2s_bptt(measure_options):
    return bptt_cache(**measure_options)
