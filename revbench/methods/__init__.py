"""Training methods: one registry for the language model and the encoder-decoder.

``get(name, **options).step(model, ...)`` trains any revbench model with any method that applies; see
``revbench.core.protocol`` for the protocol every method implements (``run_chain`` over a chain of steps).
"""
from revbench.core.protocol import ChainResult, Method, MethodUnavailable, StepOutput
from revbench.methods.registry import (UnknownMethodError, available, get, method_class, parse_options, register,
                                       supports)

__all__ = ["ChainResult", "Method", "MethodUnavailable", "StepOutput", "UnknownMethodError", "available", "get", "method_class", "parse_options", "register",
           "supports"]
