"""Fixed-point arithmetic for exactly reversible hidden states.

States are int64 tensors holding ``value * 2**FRAC_BITS``. Forget-type gates are
quantised to ``RZ`` bits: ``z_int = round(z * 2**RZ)`` in ``[1, 2**RZ]``.

``mul_with_buffer`` is Algorithm 1 of MacKay et al. (after Maclaurin et al. 2015):
an exact, invertible multiplication of ``h`` by ``z_int / 2**RZ`` that moves the
bits the multiplication destroys into an integer buffer ``b`` and moves buffer
bits back into ``h``. ``div_with_buffer`` is its exact inverse. Both are
elementwise over any shape, with floor semantics and non-negative remainders,
so negative states work. Neither checks ranges; ``check_state`` does.
"""
from __future__ import annotations

import torch

FRAC_BITS = 23          # fractional bits of a fixed-point state
RZ = 10                 # bits of a quantised gate
GATE_ONE = 1 << RZ      # the quantised value of z = 1
SCALE = float(1 << FRAC_BITS)
# |state| must stay below this: keeps h * z_int and the float conversion far from int64 limits.
STATE_LIMIT = 1 << 52
_UPDATE_CLAMP = float(1 << 60)


class FixedPointOverflowError(OverflowError):
    """A fixed-point state left the representable range (it would have wrapped silently)."""


def _plain(x: torch.Tensor) -> torch.Tensor:
    """``x`` without autograd history (detached only where it has some: one op fewer per call without grad)."""
    return x.detach() if x.requires_grad else x


def to_fixed(x: torch.Tensor) -> torch.Tensor:
    """Float tensor -> int64 fixed point (round to nearest). Non-finite values become huge so that
    ``check_state`` reports them instead of letting an undefined cast wrap."""
    y = (_plain(x) * SCALE).nan_to_num_(nan=_UPDATE_CLAMP, posinf=_UPDATE_CLAMP, neginf=-_UPDATE_CLAMP)
    return y.clamp_(-_UPDATE_CLAMP, _UPDATE_CLAMP).round_().to(torch.int64)     # in place: one temporary


def from_fixed(h: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int64 fixed point -> float of ``dtype`` (exact in float64; deterministic rounding in float32)."""
    return h.to(dtype) / SCALE


def limit_gate(s: torch.Tensor, max_forget_bits: int | None) -> torch.Tensor:
    """Map a sigmoid output s in [0, 1] to z in [2**-k, 1] (k = max_forget_bits); identity for None."""
    if max_forget_bits is None:
        return s
    floor = 2.0 ** -max_forget_bits
    return (1.0 - floor) * s + floor


def quantise_gate(z: torch.Tensor) -> torch.Tensor:
    """z in [0, 1] -> int64 in [1, 2**RZ]; a quantised 0 becomes 1 (so at most RZ bits are forgotten)."""
    return (_plain(z) * GATE_ONE).round_().to(torch.int64).clamp_(1, GATE_ONE)


_BITS_TABLES: dict = {}


def forgotten_bits(zq: torch.Tensor) -> torch.Tensor:
    """-log2(zq / 2**RZ) = RZ - log2(zq) in float64 for quantised gates zq in [1, 2**RZ]: the information the
    update forgets. Looked up in a table of the 2**RZ + 1 values (one op, not three per update)."""
    table = _BITS_TABLES.get(zq.device)
    if table is None:
        table = RZ - torch.log2(torch.arange(GATE_ONE + 1, dtype=torch.float64, device=zq.device))
        _BITS_TABLES[zq.device] = table
    return torch.take(table, zq)


def mul_with_buffer(h: torch.Tensor, z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact h * z / 2**RZ with buffer b (Algorithm 1). Returns (h', b'). Requires b * 2**RZ + 2**RZ < 2**63."""
    b = b * GATE_ONE + (h & (GATE_ONE - 1))         # 1-2: make room, store the bits the division drops
    h = h >> RZ                                      # 3: floor(h / 2**RZ)
    h = h * z                                        # 4
    h = h + torch.remainder(b, z)                    # 5: move information back from the buffer
    b = torch.div(b, z, rounding_mode="floor")       # 6
    return h, b


def div_with_buffer(h: torch.Tensor, z: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inverse of ``mul_with_buffer``: returns the (h, b) it was given."""
    b = b * z + torch.remainder(h, z)
    h = torch.div(h, z, rounding_mode="floor")
    h = (h << RZ) + (b & (GATE_ONE - 1))
    b = b >> RZ
    return h, b


def check_state(h: torch.Tensor, what: str = "state") -> None:
    """Raise FixedPointOverflowError if any |h| reached STATE_LIMIT (about 2**29 in value)."""
    if bool(((h >= STATE_LIMIT) | (h <= -STATE_LIMIT)).any()):
        worst = float(h.abs().max()) / SCALE
        raise FixedPointOverflowError(
            f"fixed-point {what} overflow: a value reached magnitude {worst:.4g}, beyond the representable "
            f"{STATE_LIMIT / SCALE:.4g} (int64 with {FRAC_BITS} fractional bits); the hidden/cell state diverged "
            f"(check the learning rate, or a non-finite update)")
