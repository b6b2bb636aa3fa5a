"""The state between two steps of a stack of cells, and the exact update of a reversible cell's state parts.

A ``Carry`` (immutable) holds one ``LayerState`` per layer. For reversible cells a layer state holds the
fixed-point integers, their float values (== ints / 2**23 exactly) and the live part of the layer's
information buffer (part of the exact state: it feeds bits back into h); for ordinary cells only floats.

``StateUpdater`` applies one multiplicative-plus-additive update of a state part (quantise the gate, multiply
through the buffer, add) or, with ``known``, replays a step whose next integers are already known;
``StateUndoer`` undoes the updates of one layer in reverse order. Both serve every model kind: the language
model's segment and each side of the encoder-decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from revbench.core.buffer import GATE_ONE, buffered_div, buffered_mul, empty_buffer, is_empty
from revbench.core.fixedpoint import (SCALE, STATE_LIMIT, FixedPointOverflowError, check_state, forgotten_bits,
                                      from_fixed, quantise_gate, to_fixed)
from revbench.core.functional import scope, straight_through

# Fast paths (identical results, tested in tests/test_fast_paths.py against the eager path, FAST_CHECKS = False):
# the overflow checks of a layer-step (non-finite gates, |state| >= STATE_LIMIT) are kept as tensors and tested
# with one host sync when the layer's step ends, instead of one sync per update; the error raised is the same.
FAST_CHECKS = True
# ``leaf_carry`` shares the carry's float values (== from_fixed(ints) bit for bit) instead of converting the
# integers again (eager path: FAST_LEAVES = False).
FAST_LEAVES = True


@dataclass(frozen=True)
class LayerState:
    ints: tuple | None          # int64 fixed point (reversible cells) or None
    floats: tuple               # float values (== ints / 2**23 exactly for reversible cells)
    bx: torch.Tensor | None     # live buffer (reversible cells that forget) or None


@dataclass(frozen=True)
class Carry:
    layers: tuple

    def floats(self) -> list[torch.Tensor]:
        return [f for layer in self.layers for f in layer.floats]

    def grads(self) -> list[torch.Tensor]:
        return [f.grad if f.grad is not None else torch.zeros_like(f) for f in self.floats()]

    def nbytes(self) -> int:
        """Bytes one stored state holds (what a checkpointing slot costs): fixed-point ints, their float
        values and the live buffer for reversible cells; the floats for ordinary cells."""
        n = 0
        for layer in self.layers:
            tensors = [*(layer.ints or ()), *layer.floats, *((layer.bx,) if layer.bx is not None else ())]
            n += sum(t.numel() * t.element_size() for t in tensors)
        return n


FIXED_POINT_DTYPES = (torch.float32, torch.float64)


def check_float_dtype(cells, dtype) -> None:
    """Reversible cells compute their fixed-point updates from float32 or float64 values: refuse the others
    (in bfloat16 or float16 the forward and the replayed step would round differently)."""
    if any(c.reversible for c in cells) and dtype not in FIXED_POINT_DTYPES:
        name = str(dtype).replace("torch.", "")
        raise TypeError(f"the model is in {name}, but reversible cells need float32 or float64 (their exact "
                        f"fixed-point state is computed from float values); use model.float() or model.double()")


def check_lengths(name: str, lengths):
    """``lengths`` as an integer tensor (a list or tensor of ints; floats, NaN and bools are refused)."""
    t = torch.as_tensor(lengths)
    if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be integers (a LongTensor or a list of ints), got dtype "
                        f"{str(t.dtype).replace('torch.', '')}")
    return t


def start_carry(cells, state, batch: int, dtype, device) -> Carry:
    """The first Carry of a stack of ``cells`` from a user state (per layer a tuple of tensors: int64 fixed
    point for reversible cells, floats of ``dtype`` otherwise), with an empty live buffer per forgetting layer."""
    layers = []
    for c, parts in zip(cells, state):
        if c.reversible:
            ints = tuple(p.detach() for p in parts)
            bx = empty_buffer((batch, c.half), device) if c.forgets else None
            layers.append(LayerState(ints, tuple(from_fixed(p, dtype) for p in ints), bx))
        else:
            layers.append(LayerState(None, tuple(p.detach().to(dtype) for p in parts), None))
    return Carry(tuple(layers))


def leaf_carry(carry: Carry, dtype: torch.dtype) -> Carry:
    """A Carry with the same exact values whose float tensors are fresh autograd leaves (requires_grad):
    the start of a recomputed stretch (the floats' storage is shared; eager path: reversible layers convert their
    integers again)."""
    layers = []
    for ls in carry.layers:
        if ls.ints is not None and not FAST_LEAVES:
            floats = tuple(from_fixed(p, dtype).requires_grad_() for p in ls.ints)
        else:
            # a reversible layer's floats are from_fixed(ints) already, bit for bit (the carry's invariant):
            # share their storage instead of converting again
            floats = tuple(f.detach().requires_grad_() for f in ls.floats)
        layers.append(LayerState(ls.ints, floats, ls.bx))
    return Carry(tuple(layers))


def same_ints(a: Carry, b: Carry) -> bool:
    """True when the fixed-point integers of two carries are equal (layers without integers are skipped)."""
    for la, lb in zip(a.layers, b.layers):
        if la.ints is None or lb.ints is None:
            continue
        if not all(torch.equal(u, v) for u, v in zip(la.ints, lb.ints)):
            return False
    return True


def col(mask):
    """A (B,) step mask as a (B, 1) column (None stays None)."""
    return None if mask is None else mask.unsqueeze(-1)


def buffer_bits_allocated(carry: Carry, stacks) -> int:
    """Bits the buffers of a carry allocate: the live tensor's storage (its dtype's width per element) plus
    each word stack's chunk capacity."""
    bits = 0
    for ls, st in zip(carry.layers, stacks):
        if ls.bx is not None and st is not None:
            bits += 8 * ls.bx.numel() * ls.bx.element_size() + st.allocated_bits()
    return bits


def buffers_empty(carry: Carry, stacks) -> bool:
    """True when every buffer of a carry holds no information (reversal consumed exactly what was stored)."""
    return all(is_empty(ls.bx, st) for ls, st in zip(carry.layers, stacks) if ls.bx is not None)


class StateUpdater:
    """Applies one multiplicative-plus-additive update of a reversible cell's state part.

    ``stack``: the layer's WordStack (None when words are not kept); ``parts``: the cell's part names (for
    overflow messages); ``known=None``: the exact forward (quantise, multiply through the buffer, add);
    ``known=LayerState``: replay; the next integers are already known (reversible backprop).
    ``ideal`` sums the bits forgotten over the updates of this step: -log2 of each applied gate, i.e. of the
    quantised and clamped z_q / 2^RZ (a float gate below 2^-RZ forgets RZ bits, not more).
    """

    def __init__(self, stack, parts, dtype, ls: LayerState, mask, known: LayerState | None):
        self.stack, self.parts, self.dtype, self.mask, self.known = stack, parts, dtype, mask, known
        self.ints, self.floats, self.bx = list(ls.ints), list(ls.floats), ls.bx
        self.ideal = None
        self.pending = [] if FAST_CHECKS else None     # deferred checks: (kind, name, flag), in update order
        self.pending_ints = {}                          # index in pending -> the ints a "state" check tests

    def __call__(self, i: int, z, add):
        h_prev, m = self.floats[i], col(self.mask)
        if self.known is None:
            add_int = to_fixed(add)
            if m is not None:
                add_int = torch.where(m, add_int, torch.zeros_like(add_int))
            if z is None:
                new = self.ints[i] + add_int
            else:
                self.check_gate(z, self.parts[i])
                zq = quantise_gate(z)
                # information forgotten: -log2 of the gate actually applied (quantised to RZ bits, clamped to
                # [2^-RZ, 1]), not of the float gate: a float gate below 2^-RZ forgets only RZ bits
                bits = forgotten_bits(zq)
                if m is not None:
                    zq = torch.where(m, zq, torch.full_like(zq, GATE_ONE))
                    bits = torch.where(m, bits, torch.zeros_like(bits))
                with scope("revbench.buffer"):
                    new, self.bx = buffered_mul(self.ints[i], zq, self.bx, self.stack, mask=m)
                new = new + add_int
                s = bits.sum()
                self.ideal = s if self.ideal is None else self.ideal + s
            self.check_ints(new, self.parts[i])
        else:
            new = self.known.ints[i]
        self.ints[i] = new
        if torch.is_grad_enabled():
            expr = (h_prev if z is None else z * h_prev) + add
            if m is not None:
                expr = torch.where(m, expr, h_prev)
            f = straight_through(new, expr, SCALE, self.dtype)
        else:
            f = from_fixed(new, self.dtype)
        self.floats[i] = f
        return f

    # ---- overflow checks: at once (the eager path), or deferred to ``result`` as one host sync per layer-step
    def check_gate(self, z, name: str) -> None:
        """A non-finite forget gate would be quantised to maximal forgetting: raise (now or in ``result``)."""
        if self.pending is None:
            if not bool(torch.isfinite(z).all()):
                raise _gate_error(name)
        else:
            self.pending.append(("gate", name, torch.isfinite(z).all()))          # True: fine

    def check_ints(self, ints, name: str) -> None:
        """``check_state(ints, name)``, now or in ``result`` (same error, same order)."""
        if self.pending is None:
            check_state(ints, name)
        else:
            self.pending_ints[len(self.pending)] = ints
            self.pending.append(("state", name, torch.aminmax(ints)))            # (min, max)

    def flush_checks(self) -> None:
        """Run the deferred checks (one host sync); raise the first failing one's error, as the eager path would."""
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        oks = [flag for kind, _, flag in pending if kind == "gate"]
        mins = [flag[0] for kind, _, flag in pending if kind == "state"]
        maxs = [flag[1] for kind, _, flag in pending if kind == "state"]
        bad = None
        if mins:
            bad = (torch.stack(maxs) >= STATE_LIMIT).logical_or_(torch.stack(mins) <= -STATE_LIMIT).any()
        if oks:
            gates_bad = torch.stack(oks).all().logical_not_()
            bad = gates_bad if bad is None else bad.logical_or_(gates_bad)
        if not bool(bad):
            return
        for j, (kind, name, flag) in enumerate(pending):          # the first failing check, in update order
            if kind == "gate" and not bool(flag):
                raise _gate_error(name)
            if kind == "state":
                check_state(self.pending_ints[j], name)

    def result(self) -> LayerState:
        self.flush_checks()
        bx = self.known.bx if self.known is not None else self.bx
        return LayerState(tuple(self.ints), tuple(self.floats), bx)


def _gate_error(name: str) -> FixedPointOverflowError:
    return FixedPointOverflowError(
        f"non-finite forget gate in the update of {name}: a NaN or infinite gate would be quantised to maximal "
        f"forgetting; the cell's pre-activations diverged (check the learning rate, or non-finite weights)")


class StateUndoer:
    """Undoes the updates of one reversible layer in reverse order (exact integers, no autograd)."""

    def __init__(self, stack, ls: LayerState, mask):
        self.stack, self.mask, self.bx = stack, mask, ls.bx

    def __call__(self, i, h, z, add):
        m = col(self.mask)
        add_int = to_fixed(add)
        if m is not None:
            add_int = torch.where(m, add_int, torch.zeros_like(add_int))
        h = h - add_int
        if z is None:
            return h
        zq = quantise_gate(z)
        if m is not None:
            zq = torch.where(m, zq, torch.full_like(zq, GATE_ONE))
        with scope("revbench.buffer"):
            h, self.bx = buffered_div(h, zq, self.bx, self.stack)
        return h
