"""Cost against the fused nn.LSTM/nn.GRU step (revbench.measure.fused_reference): the reference of every cell, the
ratios computed from the records' own figures, measured once per configuration, the record contract, the grid."""
from __future__ import annotations

import copy
import importlib.util
import json
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from revbench.core.cells import CELL_TYPES
from revbench.measure.fused_reference import (FUSED_KEYS, FusedReferenceCache, add_fused_ratios,
                                              fused_reference_cell, fused_reference_config,
                                              measure_fused_reference, no_fused_reference, time_rounds)
from revbench.measure.grids import Case, default_grid
from revbench.measure.harness import BaselineCache, BenchConfig
from revbench.report.results import BenchmarkFileError, benchmarks_from_dict
from tests.fixtures import benchjson

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = BenchConfig(cell="revlstm", hidden_size=8, emb_size=6, batch_size=2, seq_len=5, vocab_size=20)
SUITE = Path(__file__).resolve().parents[1] / "suites" / "test_steps.py"


def test_the_reference_of_every_cell_is_the_ordinary_cell_of_its_family_and_width():
    expected = {"revlstm": "lstm", "nf-revlstm": "lstm", "lstm": "lstm",
                "revgru": "gru", "nf-revgru": "gru", "gru": "gru"}
    assert set(expected) == set(CELL_TYPES)
    for cell, ref in expected.items():
        assert fused_reference_cell(cell) == ref
        cfg = TINY.with_(cell=cell, max_forget_bits=3 if cell in ("revlstm", "revgru") else None)
        r = fused_reference_config(cfg)
        assert (r.cell, r.max_forget_bits) == (ref, None)
        # same sizes (a reversible cell of hidden H: the reference is the ordinary cell of hidden H), same device
        assert r.with_(cell=cell, max_forget_bits=cfg.max_forget_bits) == cfg
    assert fused_reference_cell("transformer") is None
    assert "no fused kernel" in measure_fused_reference(TINY.with_(cell="transformer"))["reason"]


def test_time_rounds_times_each_round_after_the_warm_up():
    calls = []
    times = time_rounds(lambda: calls.append(time.perf_counter()), rounds=3, warmup_rounds=2)
    assert len(calls) == 5 and len(times) == 3 and all(t >= 0 for t in times)


class FakeBenchmark:
    """What test_step uses of pytest-benchmark's fixture: pedantic (timed with perf_counter), stats, extra_info."""

    def __init__(self):
        self.extra_info, self.group, self.stats = {}, None, None

    def pedantic(self, fn, args=(), rounds=1, warmup_rounds=0, iterations=1):
        times = time_rounds(lambda: fn(*args), rounds, warmup_rounds)
        self.stats = SimpleNamespace(stats=SimpleNamespace(median=statistics.median(times)))


@pytest.fixture(scope="module")
def suite_records(one_thread):
    """test_step of suites/test_steps.py on tiny cases, with a counting fused-reference cache."""
    spec = importlib.util.spec_from_file_location("revbench_suite_steps", SUITE)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    measured = []

    def counting(cfg, rounds):
        measured.append(fused_reference_config(cfg).config_id)
        return measure_fused_reference(cfg, rounds)
    refs, bptt = FusedReferenceCache(counting), BaselineCache()
    out = {}
    lstm, nf_revgru = TINY.with_(cell="lstm", max_forget_bits=None), TINY.with_(cell="nf-revgru", max_forget_bits=None)
    for method, cfg in (("reversible", TINY), ("bptt", TINY), ("bptt-fused", lstm), ("torch-checkpoint", nf_revgru)):
        bench = FakeBenchmark()
        suite.test_step(bench, Case(method, cfg, rounds=2), bptt, refs, {"profiler": "auto", "heap": True})
        out[(method, cfg.cell)] = (bench.extra_info, bench.stats.stats.median)
    return out, measured


def test_the_ratios_are_the_records_own_figures(suite_records):
    out, _ = suite_records
    for (method, cell), (rec, median) in out.items():
        assert rec["fused_reference"].startswith("bptt-fused on " + ("gru" if "gru" in cell else "lstm") + "-L1-H8-E6")
        assert rec["fused_peak_bytes"] > 0 and rec["fused_time_s"] > 0 and rec["fused_rounds"] == 2
        assert "time.perf_counter" in rec["fused_timer"] and "2 rounds" in rec["fused_timer"]
        assert rec["fused_peak_ratio"] == rec["peak_bytes"] / rec["fused_peak_bytes"]
        assert rec["fused_time_ratio"] == median / rec["fused_time_s"]
        # the reference was timed with the thread count the method's record names (the one pinned for the session)
        assert rec["fused_torch_num_threads"] == rec["torch_num_threads"] == 1
    # the fused step against itself: the same deterministic peak
    assert out[("bptt-fused", "lstm")][0]["fused_peak_ratio"] == 1.0


def test_the_reference_is_measured_once_per_configuration(suite_records):
    out, measured = suite_records
    assert len(measured) == len(set(measured)) == 2          # revlstm, lstm -> one lstm reference; nf-revgru -> gru
    assert (out[("reversible", "revlstm")][0]["fused_time_s"] == out[("bptt", "revlstm")][0]["fused_time_s"]
            == out[("bptt-fused", "lstm")][0]["fused_time_s"])


def test_the_records_meet_the_contract_and_load(suite_records):
    out, _ = suite_records
    doc = benchjson.build_benchmark_json(cells=("revlstm",), seq_lens=(35,), forget_limits=(3,),
                                         methods=(("bptt", {}),))
    template = doc["benchmarks"][0]
    doc["benchmarks"] = []
    for i, (rec, median) in enumerate(out.values()):
        entry = copy.deepcopy(template)
        entry.update(name=f"test_step[{i}]", fullname=f"suites/test_steps.py::test_step[{i}]", extra_info=rec)
        entry["stats"].update(median=median, mean=median, min=median)
        doc["benchmarks"].append(entry)
    df = benchmarks_from_dict(json.loads(json.dumps(doc)))
    assert list(df["fused_peak_ratio"]) == pytest.approx(list(df["peak_bytes"] / df["fused_peak_bytes"]))
    assert list(df["fused_time_ratio"]) == pytest.approx(list(df["time_median_s"] / df["fused_time_s"]))


def test_unmeasurable_references_give_none_with_a_reason():
    rec = add_fused_ratios({"peak_bytes": 100}, {"reason": "no fused kernel for cell 'x'"}, 0.5)
    assert rec["fused_time_ratio"] is None and rec["fused_peak_ratio"] is None
    assert rec["fused_time_ratio_reason"] == rec["fused_peak_ratio_reason"] == "no fused kernel for cell 'x'"
    assert rec["fused_time_s_reason"] == "no fused kernel for cell 'x'"
    ref = {"fused_reference": "bptt-fused on lstm-...", "fused_time_s": 0.25, "fused_peak_bytes": 400}
    rec = add_fused_ratios({"peak_bytes": 100}, ref, None)                  # the step was not timed
    assert rec["fused_time_ratio"] is None and "not timed" in rec["fused_time_ratio_reason"]
    assert rec["fused_peak_ratio"] == 0.25
    s2s = no_fused_reference({})
    assert all(s2s[k] is None and s2s[f"{k}_reason"] == "no fused kernel for the attention decoder" for k in FUSED_KEYS)


@pytest.mark.parametrize("key, value, words", [
    ("fused_time_ratio", 0.0, "fused_time_ratio is a ratio of two positive figures, so it must be > 0"),
    ("fused_peak_ratio", -1.0, "must be > 0"),
    ("fused_peak_ratio", float("inf"), "must be null"),
    ("fused_time_s", 0.0, "fused_time_s is a time per step in seconds, so it must be in (0, 1e+06]"),
    ("fused_time_s", 1e7, "must be in (0, 1e+06]"),
    ("fused_peak_bytes", -1, "fused_peak_bytes must be an integer from 0"),
    ("fused_rounds", 0, "fused_rounds must be an integer from 1"),
    ("fused_reference", 3, "fused_reference must be a string"),
    ("fused_timer", ["perf_counter"], "fused_timer must be a string"),
])
def test_impossible_fused_figures_are_bad_input(key, value, words):
    doc = benchjson.build_benchmark_json(cells=("revlstm",), seq_lens=(35,), forget_limits=(3,))
    doc["benchmarks"][1]["extra_info"][key] = value
    with pytest.raises(BenchmarkFileError) as err:
        benchmarks_from_dict(doc)
    assert words in str(err.value)


def test_a_reference_timed_with_other_threads_gives_no_time_ratio():
    rec = {"peak_bytes": 100, "torch_num_threads": 1}
    ref = {"fused_reference": "bptt-fused on x", "fused_time_s": 0.5, "fused_peak_bytes": 50, "fused_rounds": 3,
           "fused_timer": "t", "fused_torch_num_threads": 2}
    add_fused_ratios(rec, ref, 1.0)
    assert rec["fused_time_ratio"] is None and "2 thread(s), the method with 1" in rec["fused_time_ratio_reason"]
    assert rec["fused_peak_ratio"] == 2.0 and rec["fused_torch_num_threads"] == 2
    same = add_fused_ratios({"peak_bytes": 100, "torch_num_threads": 2}, ref, 1.0)
    assert same["fused_time_ratio"] == 2.0


def test_fused_figures_may_be_null_or_absent():
    doc = benchjson.build_benchmark_json(cells=("revlstm",), seq_lens=(35,), forget_limits=(3,))
    no_fused_reference(doc["benchmarks"][0]["extra_info"], "because")
    for key in FUSED_KEYS:
        doc["benchmarks"][1]["extra_info"].pop(key, None)
    df = benchmarks_from_dict(doc)
    assert df["fused_time_ratio"].isna().sum() == 2 and df.loc[0, "fused_time_ratio_reason"] == "because"


def test_the_default_grid_has_the_peers_on_the_small_lm_configurations():
    grid = default_grid()
    peers = [c for c in grid if c.method in ("torch-checkpoint", "revolve")]
    assert {(c.method, json.dumps(c.options, sort_keys=True)) for c in peers} == {
        ("torch-checkpoint", '{"fused": false}'), ("revolve", '{"budget": 0.1}')}
    assert sorted(c.cfg.cell for c in peers) == sorted(["gru", "lstm", "revgru", "revlstm"] * 2)
    assert all((c.cfg.hidden_size, c.cfg.batch_size, c.cfg.seq_len, c.cfg.vocab_size) == (128, 16, 70, 2000)
               for c in peers)
    assert len({c.id for c in grid}) == len(grid)


def test_warm_up_falls_back_to_the_whole_segment_when_options_do_not_fit_a_short_slice():
    """torch-checkpoint with 10 chunks cannot run 2 steps: the harness warms up on the whole segment instead."""
    from revbench import methods
    from revbench.measure.harness import BenchConfig, measure_method

    cfg = BenchConfig(cell="lstm", hidden_size=8, emb_size=8, batch_size=2, seq_len=12, max_forget_bits=None,
                      vocab_size=20)
    record = measure_method(methods.get("torch-checkpoint", segments=10), cfg)
    assert record["peak_bytes"] > 0 and record["method_label"] == "torch-checkpoint(segments=10)"
