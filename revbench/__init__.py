"""revbench: reversible recurrent networks (MacKay et al. 2018) and a memory/time benchmark harness.

Quick start::

    from revbench import methods
    from revbench.models.lm import RNNLM
    model = RNNLM(vocab_size=10000, emb_size=650, hidden_size=650, cell="revlstm", max_forget_bits=3)
    out = methods.get("reversible").step(model, inputs, targets, model.init_state(20))
"""
__version__ = "0.1.0"
