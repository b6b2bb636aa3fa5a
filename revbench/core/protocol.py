"""The seam of the project: what a training method returns.

(The chain protocol and ``ChainResult`` join this module with the one method protocol.)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class StepOutput:
    loss: torch.Tensor          # mean cross-entropy over the step's target tokens (detached, float)
    state: list | None          # final state, detached, for the next segment (None for the encoder-decoder)
    stats: dict = field(default_factory=dict)
