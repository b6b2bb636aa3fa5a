"""The method registry: one name -> one method class, for every model kind.

Built in: ``bptt`` and ``reversible`` (this package); ``bptt-fused``, ``checkpoint``, ``gruslys``,
``torch-checkpoint`` (torch.utils.checkpoint), ``revolve`` (the checkpoint-schedules package) and
``compile-budget`` (torch.compile's activation memory budget), in ``baselines``. Third-party methods
register with ``@register("name")`` or the ``revbench.methods`` entry point group; ``get(name, **options)``
returns a configured instance.
"""
from __future__ import annotations

import json
from importlib.metadata import entry_points

from baselines.compile_budget import CompileBudget
from baselines.fused import FusedBPTT
from baselines.plan_methods import Checkpoint, Gruslys
from baselines.revolve import Revolve
from baselines.torch_checkpoint import TorchCheckpoint
from revbench.methods.bptt import BPTT
from revbench.methods.reversible import Reversible

class UnknownMethodError(KeyError, ValueError):
    """No method of that name (a KeyError for lookups, a ValueError for callers validating input)."""

    def __str__(self) -> str:
        return str(self.args[0])


_REGISTRY: dict[str, type] = {cls.name: cls for cls in (BPTT, Reversible, FusedBPTT, Checkpoint, Gruslys,
                                                         TorchCheckpoint, Revolve, CompileBudget)}


def register(name: str):
    """Class decorator: register a method class (a ``revbench.core.protocol.Method``) under ``name``."""
    def deco(cls):
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"a method named {name!r} is already registered ({_REGISTRY[name].__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def _load(name: str) -> None:
    if name in _REGISTRY:
        return
    for ep in entry_points(group="revbench.methods"):
        if ep.name == name:
            ep.load()
            return


def available() -> list[str]:
    """Every method name: built in, registered, and announced by entry points."""
    return sorted(set(_REGISTRY) | {ep.name for ep in entry_points(group="revbench.methods")})


def method_class(name: str) -> type:
    _load(name)
    if name not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}: not available; choose one of {', '.join(available())}")
    return _REGISTRY[name]


def get(name: str, **options):
    """A configured method: ``.step(lm, inputs, targets, state, lengths=None)`` or ``.step(seq2seq, batch)``."""
    return method_class(name)(**options)


def supports(name: str, cell: str, kind: str = "lm") -> tuple[bool, str]:
    """Whether method ``name`` applies to ``cell`` of a model kind (``"lm"`` or ``"seq2seq"``) and why not,
    without building anything."""
    return method_class(name).supports(cell, kind)


def parse_options(text: str) -> dict:
    """A method's options from the command line's ``--method-options`` JSON object (ValueError otherwise)."""
    try:
        opts = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--method-options is not valid JSON: {exc}") from None
    if not isinstance(opts, dict):
        raise ValueError("--method-options must be a JSON object, e.g. '{\"budget\": 0.1}'")
    return opts
