"""Small builders shared by the tests (not fixtures of results: inputs only)."""
import torch

from revbench.core.cells import REVERSIBLE_CELLS
from revbench.models.lm import RNNLM

DROPOUT = dict(dropout_emb=0.1, dropout_in=0.2, dropout_h=0.2, dropout_out=0.3, weight_drop=0.3)


def make_model(cell, layers=1, k=3, vocab=40, emb=12, hidden=12, dtype=torch.float64, dropout=True, seed=1,
               init_range=None):
    torch.manual_seed(seed)
    k = k if cell in REVERSIBLE_CELLS else None        # ordinary cells have no forgetting limit
    m = RNNLM(vocab, emb, hidden, layers, cell=cell, max_forget_bits=k, init_range=init_range,
              **(DROPOUT if dropout else {})).to(dtype)
    m.train(dropout)
    return m


def make_batch(T, B, vocab=40, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (T, B), generator=g), torch.randint(0, vocab, (T, B), generator=g)


def run_method(method, model, x, y, state=None, lengths=None, seed=3):
    """Zero grads, seed torch (so dropout masks match across methods), run one step, return (out, grads)."""
    for p in model.parameters():
        p.grad = None
    torch.manual_seed(seed)
    state = model.init_state(x.shape[1]) if state is None else state
    out = method.step(model, x, y, state, lengths=lengths)
    return out, {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def max_rel_err(ga, gb):
    assert ga.keys() == gb.keys()
    return max(float((ga[n] - gb[n]).norm() / ga[n].norm().clamp_min(1e-300)) for n in ga)


def random_state(model, B, seed=5, scale=2.0):
    """A non-zero initial state with negative values (reversible: fixed-point ints)."""
    g = torch.Generator().manual_seed(seed)
    state = []
    for c, shapes in zip(model.cells, (c.part_shapes(B) for c in model.cells)):
        parts = tuple((torch.rand(s, generator=g, dtype=torch.float64) * 2 - 1) * scale for s in shapes)
        state.append(tuple(p.to(model.float_dtype()) for p in parts))
    return model.state_from_floats(state)


def run_cli(argv, capsys):
    """Exit status, stdout and stderr of ``revbench ARGV`` run in this process (argparse's exits included)."""
    from revbench.cli import main as cli_main

    try:
        rc = cli_main([str(a) for a in argv])
    except SystemExit as exc:        # argparse usage errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err
