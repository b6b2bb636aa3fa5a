"""The encoder-decoder benchmark record (revbench.measure.seq2seq_bench) and its report section."""
import copy
import json

import pytest

from revbench.report.page import render_report
from revbench.report.results import load_benchmarks, split_kinds
from revbench import methods
from revbench.measure.seq2seq_bench import (Seq2SeqBenchConfig, Seq2SeqWorkload, add_side_savings, bptt_cache,
                                            measure_seq2seq)
from tests.fixtures import benchjson

TINY = Seq2SeqBenchConfig(hidden_size=16, emb_size=8, batch_size=4, src_len=7, tgt_len=6, vocab_size=50,
                          context="emb+h:3")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def records(one_thread):
    cache, out = bptt_cache(), {}
    for name, opts in (("bptt", {}), ("reversible", {}), ("checkpoint", {}), ("gruslys", {"slots": 2})):
        rec = measure_seq2seq(methods.get(name, **opts), TINY)
        cache.remember(rec)
        add_side_savings(rec, cache.bptt(TINY))
        out[name] = rec
    return out


def test_workload_is_a_padded_batch_of_the_configured_lengths():
    b = Seq2SeqWorkload(TINY).batch
    assert b.src.shape == (7, 4) and b.tgt_in.shape == (6, 4)
    assert b.src_lengths.tolist() == [7, 6, 5, 4]            # spread over [S/2, S]: both sides padded
    assert int(b.tgt_lengths.max()) == 6 and int(b.tgt_lengths.min()) < 6


def test_record_identity_and_per_side_figures(records):
    bp, rv = records["bptt"], records["reversible"]
    for rec in records.values():
        assert rec["kind"] == "seq2seq" and rec["config_id"] == TINY.config_id
        assert rec["seq_len"] == 13 and rec["src_len"] == 7 and rec["tgt_len"] == 6 and rec["context"] == "emb+h:3"
        assert rec["peak_bytes"] > 0 and rec["enc_held_bytes"] > 0 and rec["dec_held_bytes"] > 0
        assert rec["saving_actual"] is None and "enc_" in rec["saving_actual_reason"]
        json.dumps(rec, allow_nan=False)                      # no inf/nan in a record
    for name in ("reversible", "checkpoint", "gruslys"):
        rec = records[name]
        assert rec["enc_held_bytes"] < bp["enc_held_bytes"] and rec["dec_held_bytes"] < bp["dec_held_bytes"], name
        assert rec["enc_allocator_saving"] == bp["enc_held_bytes"] / rec["enc_held_bytes"]
    assert rv["enc_saving_actual"] > 1 and rv["dec_saving_ideal"] > 1        # the reversible method's bit counts
    assert bp["enc_saving_actual"] is None and bp["enc_saving_actual_reason"]
    assert records["gruslys"]["method_options"] == '{"policy": "hsm", "slots": 2}'
    assert methods.supports("reversible", "gru", kind="seq2seq")[0] is False
    assert methods.supports("checkpoint", "gru", kind="seq2seq")[0] is True


def test_records_carry_the_heap_and_profiler_meters_and_no_silent_cuda_keys(records):
    from revbench.report.validate import value_problem

    for name, rec in records.items():
        # torch's profiler: its peak beside peak_bytes (it also sees wrapped Python scalars: a few bytes more)
        assert rec["peak_bytes"] <= rec["profiler_peak_bytes"] <= rec["peak_bytes"] + 4096, name
        assert rec["heap_peak_bytes"] is None and rec["heap_peak_bytes_reason"] or rec["heap_peak_bytes"] > 0
        for key in ("cuda_peak_allocated_bytes", "nvml_peak_used_bytes", "nvml_process_peak_used_bytes"):
            assert key in rec and (rec[key] is not None or rec[f"{key}_reason"])
        assert rec["torch_num_threads"] == 1 and isinstance(rec["cpu_model"], (str, type(None)))
        assert rec["fused_torch_num_threads"] is None and rec["fused_torch_num_threads_reason"]
        assert not [k for k, v in rec.items() if value_problem(k, v)]


def _doc_with(records):
    doc = benchjson.build_benchmark_json(methods=(("bptt", {}), ("reversible", {})), seq_lens=(35, 70))
    template = doc["benchmarks"][0]
    for rec in records.values():
        entry = copy.deepcopy(template)
        entry.update(name=f"test_seq2seq_step[{rec['method_label']}-{rec['config_id']}]", extra_info=rec,
                     group=rec["config_id"])
        entry["fullname"] = "suites/test_seq2seq_steps.py::" + entry["name"]
        doc["benchmarks"].append(entry)
    return doc


def test_report_has_an_encoder_decoder_section_beside_the_language_model(tmp_path, records):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_doc_with(records)))
    df = load_benchmarks(path)
    lm, s2s = split_kinds(df)
    assert len(s2s) == 4 and len(lm) == len(df) - 4 and set(lm["kind"]) == {"lm"}
    page = render_report(path, tmp_path / "r.html").read_text()
    assert ">Encoder-decoder (attention NMT step)</h2>" in page
    assert "enc allocator saving" in page and "gruslys(policy=hsm, slots=2)" in page
    section = page.split(">Encoder-decoder (attention NMT step)</h2>")[1].split("</section>")[0]
    assert section.count("<tr") == 5 and ("data:image/png;base64," in section or "<svg" in section)  # + a figure
    lm_page = render_report(load_benchmarks(path).pipe(lambda d: split_kinds(d)[0]), tmp_path / "lm.html").read_text()
    assert "no encoder-decoder benchmarks" in lm_page


def test_encoder_decoder_records_have_no_fused_reference(records):
    for rec in records.values():
        for key in ("fused_time_ratio", "fused_peak_ratio", "fused_reference", "fused_time_s", "fused_peak_bytes"):
            assert rec[key] is None
            assert rec[f"{key}_reason"] == "no fused kernel for the attention decoder"
