"""revbench: reversible recurrent networks (MacKay et al. 2018) and a memory/time benchmark harness.

Quick start::

    from revbench import methods
    from revbench.models.lm import RNNLM
    model = RNNLM(vocab_size=10000, emb_size=650, hidden_size=650, cell="revlstm", max_forget_bits=3)
    out = methods.get("reversible").step(model, inputs, targets, model.init_state(20))
"""
from importlib.metadata import PackageNotFoundError, version as _dist_version

try:        # the one place the version is written is pyproject.toml; an installed copy carries it
    __version__ = _dist_version("revbench")
except PackageNotFoundError:        # a checkout on sys.path that was never installed
    __version__ = "0+unknown"
del PackageNotFoundError, _dist_version
