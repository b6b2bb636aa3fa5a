"""`revbench profile`: the table, the JSON (atomic), the categories, bad arguments (exit 2, one line)."""
import json

import pytest
import torch

from helpers import run_cli
from revbench.measure.profile import CATEGORIES

TINY = ["profile", "--hidden", "8", "--batch", "2", "--seq-len", "3", "--vocab", "20", "--repeats", "1"]


def test_profile_prints_the_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "p.json"
    before = torch.get_num_threads()
    rc, out, err = run_cli(TINY + ["--json", path], capsys)
    assert rc == 0, err
    assert torch.get_num_threads() == before                    # threads restored after the run
    for name in ("bptt", "reversible", "bptt-fused", "cell matmuls", "buffer", "output+loss", "Python overhead",
                 "reversible/bptt"):
        assert name in out
    result = json.loads(path.read_text())
    assert result["torch_num_threads"] == 1 and result["config"]["seq_len"] == 3
    assert result["profiled_seq_len"] == 3
    rows = {r["method"]: r for r in result["methods"]}
    assert set(rows) == {"bptt", "reversible", "bptt-fused"}
    assert rows["bptt-fused"]["config_id"].startswith("lstm-")   # the fused reference's ordinary cell
    for row in rows.values():
        cats = row["categories_s"]
        assert set(cats) == set(CATEGORIES) and all(v >= 0 for v in cats.values())
        # the categories split the profiled step: op self time + overhead = wall (overhead clamped at 0)
        assert sum(cats.values()) == pytest.approx(max(row["profiled_wall_s"], row["op_self_s"]), rel=1e-9)
        assert row["ops_per_step_total"] > 0 and len(row["times_s"]) == 1
    rev = rows["reversible"]
    assert rev["categories_s"]["buffer"] > 0 and rev["ops_per_step"]["buffer"] > 0   # the buffer is seen
    assert rev["categories_s"]["output"] > 0 and rev["categories_s"]["cell_matmul"] > 0
    assert rows["bptt"]["categories_s"]["buffer"] > 0           # bptt multiplies through the buffer too
    assert set(result["ratios"]) == {"reversible/bptt", "bptt/bptt-fused", "reversible/bptt-fused"}
    assert not list(tmp_path.glob(".*.tmp"))                    # written atomically: no temporary left


def test_profile_a_shorter_profiled_step(tmp_path, capsys):
    """--profile-steps bounds the profiled step (the profiler's event list); the timed steps run the whole T."""
    path = tmp_path / "p.json"
    rc, out, err = run_cli(TINY + ["--profile-steps", "2", "--method", "reversible", "--json", path], capsys)
    assert rc == 0, err
    (row,) = json.loads(path.read_text())["methods"]
    assert row["profiled_seq_len"] == 2
    assert "T3-" in row["config_id"] and row["ops_per_step_total"] > 0


def test_profile_floor(tmp_path, capsys):
    """--floor times each weight's products and sums them per method: T x (counts x seconds), the output layer's
    part separately; the reversible method counts two forward products per cell weight, bptt one."""
    path = tmp_path / "p.json"
    rc, out, err = run_cli(TINY + ["--floor", "--json", path], capsys)
    assert rc == 0, err
    assert "matrix-product floor" in out and "floor/fused" in out
    floor = json.loads(path.read_text())["floor"]
    names = [p["weight"] for p in floor["products"]]
    assert names == ["cells.0.w1_x", "cells.0.w1_h", "cells.0.w2_x", "cells.0.w2_h", "decoder.weight"]
    for m in ("bptt", "reversible"):
        total = sum(p["seconds"][k] * p["per_time_step"][m][k] for p in floor["products"] for k in p["per_time_step"][m])
        assert floor["methods"][m]["floor_s"] == pytest.approx(3 * total, rel=1e-12)
        assert 0 < floor["methods"][m]["output_layer_s"] < floor["methods"][m]["floor_s"]
    cell = floor["products"][0]["per_time_step"]
    assert cell["bptt"]["forward"] == 1 and cell["reversible"]["forward"] == 2
    assert floor["products"][-1]["per_time_step"]["reversible"]["forward"] == 1     # its forward pass skips it
    assert all(p["rows"] == 2 and all(v > 0 for v in p["seconds"].values()) for p in floor["products"])
    for p in floor["products"]:     # the faster layout of the weight gradient is the one counted
        s = p["seconds"]
        assert s["weight_grad"] == min(s["weight_grad_row_major"], s["weight_grad_transposed"])
    assert "output weight gradient: row-major" in out


def test_profile_a_method_that_cannot_run_the_cell(capsys):
    rc, out, err = run_cli(TINY + ["--cell", "lstm", "--method", "reversible", "--method", "bptt"], capsys)
    assert rc == 0, err
    assert "n/a: method 'reversible' needs a reversible cell" in out


@pytest.mark.parametrize("argv,needle", [
    (["--hidden", "7"], "even hidden size"),
    (["--method", "no-such"], "--method 'no-such': unknown"),
    (["--json", "/nonexistent-folder/x.json"], "does not exist"),
    (["--threads", "0"], "--threads"),
    (["--max-forget-bits", "11"], "--max-forget-bits"),
])
def test_profile_bad_arguments(argv, needle, capsys):
    rc, out, err = run_cli(TINY + argv, capsys)
    assert rc == 2
    lines = [line for line in err.strip().splitlines() if "error:" in line]     # argparse adds its usage above
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in err
