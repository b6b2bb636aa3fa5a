"""README's library snippets run as pasted (each ```python block, in a fresh namespace)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_readme_has_python_snippets():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_snippet_runs(index):
    namespace = {}
    exec(compile(BLOCKS[index], f"README.md python block {index + 1}", "exec"), namespace)
    out = namespace.get("out")
    assert out is not None and bool(out.loss.isfinite())
    model = namespace["model"]
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
