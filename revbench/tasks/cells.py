"""The cells the reproductions train and the forgetting limits they try: display labels, each reversible
cell's ordinary counterpart, the cells that have a forgetting limit, and how a limit is written and read."""
from __future__ import annotations


LIMITS_DEFAULT = (2, 3, 5, None)
CELL_LABEL = {"gru": "GRU", "lstm": "LSTM", "revgru": "RevGRU", "revlstm": "RevLSTM", "nf-revgru": "NF-RevGRU",
              "nf-revlstm": "NF-RevLSTM"}
BASELINE_OF = {"revgru": "gru", "revlstm": "lstm", "nf-revgru": "gru", "nf-revlstm": "lstm"}
FORGETTING_CELLS = ("revgru", "revlstm")


def limit_label(k) -> str:
    return "no limit" if k is None else f"{k} bit"


def parse_limit(text: str):
    t = str(text).strip().lower()
    if t in ("none", "no", "nolimit", "no-limit", "inf"):
        return None
    try:
        k = int(t)
    except ValueError:
        raise ValueError(f"a forgetting limit is an int from 1 to 10 or 'none', got {text!r}") from None
    if not 1 <= k <= 10:
        raise ValueError(f"a forgetting limit is an int from 1 to 10 or 'none', got {k}")
    return k
