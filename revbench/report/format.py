"""Text formatting shared by the report: numbers (MiB, ratios, integers), HTML escaping, missing values,
the order of methods and the label of each row's setting."""
from __future__ import annotations

import html
import re
from typing import Iterable

MIB = float(1 << 20)
METHOD_FAMILY_ORDER = ("bptt", "checkpoint", "gruslys", "reversible")
SETTING_DIMS = ("num_layers", "hidden_size", "emb_size", "batch_size", "vocab_size", "device", "dtype")
_DIM_PREFIX = {"num_layers": "L", "hidden_size": "H", "emb_size": "E", "batch_size": "B", "vocab_size": "V"}


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def isna(value) -> bool:
    import pandas as pd

    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt_num(value, digits: int = 2) -> str:
    v = float(value)
    if v != 0 and abs(v) < 10 ** (-digits):
        return f"{v:.{digits}g}"
    return f"{v:,.{digits}f}"


def fmt_mib(value) -> str:
    """Bytes -> 'x.xx' MiB text."""
    return fmt_num(float(value) / MIB, 2)


def fmt_ratio(value) -> str:
    return f"{float(value):,.2f}"


def fmt_int(value) -> str:
    return f"{int(value):,}"


def _method_family(label: str) -> str:
    return str(label).split("(")[0].strip()


def method_order(labels: Iterable[str]) -> list[str]:
    """Method labels in a stable order: bptt, checkpoint, gruslys..., reversible..., then the rest."""
    def key(label):
        fam = _method_family(label)
        rank = METHOD_FAMILY_ORDER.index(fam) if fam in METHOD_FAMILY_ORDER else len(METHOD_FAMILY_ORDER)
        return (rank, _budget_key(label), str(label))
    return sorted({str(x) for x in labels}, key=key)


def _budget_key(label: str) -> float:
    m = re.search(r"budget=([0-9.eE+-]+)", str(label))
    try:
        return float(m.group(1)) if m else 0.0
    except ValueError:
        return 0.0


def setting_labels(df):
    """A Series naming each row's setting: the cell plus whatever of layers/sizes/batch/device/dtype varies."""
    varying = [d for d in SETTING_DIMS if d in df.columns and df[d].astype(str).nunique(dropna=False) > 1]

    def label(row):
        parts = [str(row["cell"])]
        for d in varying:
            parts.append(f"{_DIM_PREFIX[d]}{row[d]}" if d in _DIM_PREFIX else str(row[d]))
        return " ".join(parts)
    return df.apply(label, axis=1) if len(df) else df["cell"].astype(str)


def short_label(label: str) -> str:
    """A compact method label for figures and sentences: 'gruslys(budget=0.1, policy=hsm)' -> 'gruslys(b=0.1, hsm)',
    'revolve(budget=0.1, schedule=revolve)' -> 'revolve(b=0.1)'. Option values are kept: they tell methods apart."""
    label = str(label)
    m = re.fullmatch(r"([^()]+)\((.*)\)", label)
    if not m:
        return label
    fam, opts = m.group(1).strip(), []
    for part in (p.strip() for p in m.group(2).split(",") if p.strip()):
        key, _, value = part.partition("=")
        if key == "budget":
            opts.append(f"b={value}")
        elif key in ("policy", "schedule"):
            if value != fam:
                opts.append(value)
        else:
            opts.append(part)
    return f"{fam}({', '.join(opts)})" if opts else fam


def short_labels(labels: Iterable[str]) -> dict:
    """label -> short label, distinct for distinct labels (a short form two labels share falls back to the full one)."""
    labels = list(dict.fromkeys(str(x) for x in labels))
    short = {label: short_label(label) for label in labels}
    seen: dict = {}
    for label, s in short.items():
        seen.setdefault(s, []).append(label)
    return {label: (s if len(seen[s]) == 1 else label) for label, s in short.items()}
