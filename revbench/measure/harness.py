"""The harness: run any method on any configuration, measure it the same way, and emit one flat record.

Nothing here knows which method it measures. A ``BenchConfig`` names a model and a
synthetic segment; ``Workload`` builds them deterministically from the seed;
``measure_method`` warms the method up (so parameter gradients already exist, as
in any step after the first of a training loop), then runs one step under every
meter of ``revbench.measure.memory``, then one more identical step for each meter that
needs a step of its own (the heap meter, torch's profiler: ``memory.measure_apart``),
and returns the record described in the README ("The benchmark record"). Time is not
measured here: pytest-benchmark times the step in the suites, with the thread count
the record's ``torch_num_threads`` names.
"""
from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass, replace

import torch

from revbench import methods
from revbench.core.buffer_reference import simulating

from revbench.measure import memory
from revbench.measure.environment import environment_info
from revbench.models.lm import RNNLM

RECORD_SCHEMA = "revbench.record/1"
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class BenchConfig:
    """One model and one synthetic segment (random tokens; an untrained model's gates)."""
    cell: str = "revlstm"
    num_layers: int = 1
    hidden_size: int = 650
    emb_size: int = 650
    batch_size: int = 20
    seq_len: int = 70
    max_forget_bits: int | None = 3
    vocab_size: int = 10000
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0

    @property
    def config_id(self) -> str:
        k = "knone" if self.max_forget_bits is None else f"k{self.max_forget_bits}"
        return (f"{self.cell}-L{self.num_layers}-H{self.hidden_size}-E{self.emb_size}-B{self.batch_size}"
                f"-T{self.seq_len}-{k}-V{self.vocab_size}-{self.device}-{self.dtype}")

    def with_(self, **changes) -> "BenchConfig":
        return replace(self, **changes)

    @property
    def reversible(self) -> bool:
        return self.cell.startswith(("rev", "nf-rev"))


def target_dtype(cfg) -> torch.dtype:
    """The torch dtype of a configuration's ``dtype``, after checking that its ``device`` exists here."""
    if cfg.dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {cfg.dtype!r}")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"configuration asks for {cfg.device} but no CUDA device is available")
    return _DTYPES[cfg.dtype]


class Workload:
    """The model, one segment of inputs/targets and the initial state of a configuration."""

    def __init__(self, cfg: BenchConfig):
        dtype = target_dtype(cfg)
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.model = RNNLM(cfg.vocab_size, cfg.emb_size, cfg.hidden_size, cfg.num_layers, cell=cfg.cell,
                           max_forget_bits=cfg.max_forget_bits if cfg.reversible else None
                           ).to(device=cfg.device, dtype=dtype)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        shape = (cfg.seq_len, cfg.batch_size)
        self.inputs = torch.randint(0, cfg.vocab_size, shape, generator=g).to(cfg.device)
        self.targets = torch.randint(0, cfg.vocab_size, shape, generator=g).to(cfg.device)
        self.state = self.model.init_state(cfg.batch_size)

    def warm_up(self, method, steps: int = 2):
        """One short step: allocates the parameter gradients (as in any step after the first of a training loop)
        and any one-time state, at a fraction of a full step's cost."""
        n = min(steps, self.cfg.seq_len)
        try:
            method.step(self.model, self.inputs[:n], self.targets[:n], self.state)
        except ValueError:
            if n == self.cfg.seq_len:
                raise
            # the method's options do not fit a short slice (e.g. a fixed number of chunks above 2): warm up on
            # the whole segment; a real error raises again there
            method.step(self.model, self.inputs, self.targets, self.state)

    def step(self, method):
        out = method.step(self.model, self.inputs, self.targets, self.state)
        if self.cfg.device.startswith("cuda"):
            torch.cuda.synchronize()
        return out


def method_identity(method) -> dict:
    opts = method.options() if hasattr(method, "options") else {}
    return {"method": method.name, "method_options": json.dumps(opts, sort_keys=True, default=str),
            "method_label": method.label() if hasattr(method, "label") else method.name}


def base_record(kind: str, method, cfg, figures: dict) -> dict:
    """What every record starts with: schema, kind, the method's identity, the configuration (its fields and
    ``config_id``; no seed), the headline peak and every meter's figures. The environment comes last."""
    record = {"record_schema": RECORD_SCHEMA, "kind": kind, **method_identity(method), "config_id": cfg.config_id}
    record.update({k: v for k, v in asdict(cfg).items() if k != "seed"})
    # the limit applies to cells that forget through the buffer; ordinary and no-forgetting cells have none
    record["max_forget_bits"] = cfg.max_forget_bits if cfg.cell in ("revgru", "revlstm") else None
    record.update(memory.peak_figures(figures))
    record.update(figures)
    return record


def measure_method(method, cfg: BenchConfig, workload: Workload | None = None, warmup: int = 1,
                   profiler: str = "auto", heap: bool = True, meters=None) -> dict:
    """Warm up, then measure one step of ``method`` on ``cfg`` with every meter (``profiler``: the profiler
    meter's mode, ``heap``: whether the heap meter runs; see ``memory.apart_meters``). ``meters``: a callable
    ``(device, params) -> list[Meter]`` replacing ``memory.default_meters`` (e.g. without the live-tensor meter,
    for a method that cannot run under a dispatch mode). The reference buffer is simulated in the first
    measured step only (``buffer_bits_reference``). Returns the record."""
    wl = workload or Workload(cfg)
    for _ in range(warmup):
        wl.warm_up(method)
    gc.collect()
    params = list(wl.model.parameters())
    outs = []
    with simulating():
        figures = memory.measure(lambda: outs.append(wl.step(method)),
                                 (meters or memory.default_meters)(cfg.device, params))
    stats = outs[0].stats
    outs.clear()
    figures.update(memory.measure_apart(lambda: wl.step(method), memory.apart_meters(cfg.device, profiler, heap)))
    record = base_record("lm", method, cfg, figures)
    for key in ("state_bits_baseline", "buffer_bits_actual", "buffer_bits_ideal", "saving_actual", "saving_ideal",
                "buffer_efficiency", "forward_steps", "reverse_steps", "stored_states_peak", "buffer_bits_reference"):
        record[key] = stats.get(key)
    if record["buffer_bits_actual"] is None:
        record["buffer_bits_actual_reason"] = (
            "this method does not keep the information buffer" if cfg.reversible else "this cell has no buffer")
    if record["buffer_bits_reference"] is None:
        record["buffer_bits_reference_reason"] = (record.get("buffer_bits_actual_reason")
                                                  or "no reference buffer was simulated")
    record.update(environment_info(cfg.device))
    return record


def add_allocator_saving(record: dict, bptt_peak: int | None) -> dict:
    """allocator_saving = peak_bytes of 'bptt' on the same configuration / this record's peak_bytes."""
    peak = record.get("peak_bytes")
    if bptt_peak and peak:
        record["allocator_saving"] = bptt_peak / peak
    else:
        record["allocator_saving"] = None
        record["allocator_saving_reason"] = "no bptt measurement on this configuration" if not bptt_peak else \
            "peak_bytes unavailable"
    return record


class BaselineCache:
    """Memoised bptt records per configuration, so every record can carry its savings against bptt.
    ``measure(cfg)`` measures bptt on a configuration (default: the language-model step)."""

    def __init__(self, measure=None, **options):
        self._measure = measure or (lambda cfg: measure_method(methods.get("bptt"), cfg, **options))
        self._records: dict[str, dict] = {}

    def bptt(self, cfg) -> dict:
        if cfg.config_id not in self._records:
            self._records[cfg.config_id] = self._measure(cfg)
        return self._records[cfg.config_id]

    def bptt_peak(self, cfg) -> int | None:
        return self.bptt(cfg).get("peak_bytes")

    def remember(self, record: dict) -> None:
        if record.get("method") == "bptt" and record.get("method_options") == "{}":
            self._records[record["config_id"]] = record
