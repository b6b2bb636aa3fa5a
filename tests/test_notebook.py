"""reports/benchmarks.ipynb runs headless (nbclient, python3 kernel) against a fixture benchmark JSON."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from revbench.report.results import load_benchmarks
from tests.fixtures import benchjson

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "reports" / "benchmarks.ipynb"
SAMPLE = REPO / "reports" / "sample-benchmarks.json"


def test_committed_sample_is_a_valid_benchmark_file():
    df = load_benchmarks(SAMPLE)
    assert len(df) > 0 and df["peak_bytes"].notna().all()


def test_notebook_uses_report_functions_not_its_own_plotting():
    nb = json.loads(NOTEBOOK.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    assert "REVBENCH_JSON" in code and "load_benchmarks" in code
    for forbidden in ("import seaborn", "import matplotlib", "plt.", "sns."):
        assert forbidden not in code, f"notebook draws by itself ({forbidden}); use revbench.report.page"


def test_notebook_executes_against_a_fixture(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel installed (pip install ipykernel)")

    fixture = benchjson.write_benchmark_json(tmp_path / "fixture-benchmarks.json", cells=("revlstm",),
                                           seq_lens=(35, 70))
    n_benchmarks = len(json.loads(fixture.read_text())["benchmarks"])
    monkeypatch.setenv("REVBENCH_JSON", str(fixture))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"{fixture}: {n_benchmarks} benchmarks" in text  # the env var was honoured
    html = [o["data"]["text/html"] for o in outputs if "data" in o and "text/html" in o["data"]]
    figures = [h for h in html if "<svg" in h]  # inline SVG figures
    assert len(figures) == 4  # memory, frontier, savings, efficiency
    assert any("revlstm-L1-H256-E256-B20-T70" in h for h in html)  # the summary tables show the fixture's configs
    assert not any("revgru" in h for h in html)  # and not the committed sample's
