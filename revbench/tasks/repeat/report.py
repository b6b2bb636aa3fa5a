"""The report of the repeat task: the accuracy figure and tables (``repeat.html``), ``repeat.csv``,
``repeat.json`` (to rebuild the report: ``load_repeat``) and ``README.md``, with why no-forgetting models fail."""
from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

from revbench.tasks import pages


def fig_repeat(rows: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 4.6))
    ax = fig.subplots()
    from matplotlib.ticker import NullFormatter

    # (colour, marker, line style, marker size): hollow markers of different sizes keep models that overlap
    # (every model at accuracy 1.0) visible
    styles = {"gru": ("#2d5fa8", "o", "-", 11), "revgru": ("#2d5fa8", "s", "--", 7), "nf-revgru": ("#2d5fa8", "x", ":", 7),
              "lstm": ("#c0392b", "o", "-", 15), "revlstm": ("#c0392b", "s", "--", 4), "nf-revlstm": ("#c0392b", "x", ":", 7)}
    for model in dict.fromkeys(r["model"] for r in rows):
        pts = sorted([r for r in rows if r["model"] == model], key=lambda r: r["seq_len"])
        col, mk, ls, size = styles.get(pts[0]["cell"], (None, "o", "-", 7))
        ax.plot([r["seq_len"] for r in pts], [r["accuracy"] for r in pts], marker=mk, ls=ls, color=col, label=model,
                markersize=size, markerfacecolor="none", markeredgewidth=1.4)
    if rows:
        ax.axhline(rows[0]["chance"], color="grey", lw=1, ls="-.", label=f"chance (1/{rows[0]['symbols']})")
    ax.set_xscale("log")
    lengths = sorted({r["seq_len"] for r in rows})
    ax.set_xticks(lengths, [str(t) for t in lengths])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("test accuracy (steps 1..T-1)")
    ax.set_title("repeat task: output the previous input")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


REPEAT_WHY = [
    "Why no-forgetting models must fail: a model that solves the task outputs x_t at step t+1, i.e. x_t is a "
    "function of h_(t+1). Run an exactly reversible model backwards from its final state h_T and its last input "
    "x_T: the output read from h_T gives x_(T-1); reversing step T with x_T gives h_(T-1); its output gives "
    "x_(T-2); and so on down to x_0. So h_T alone (with x_T) determines the whole input sequence: (T-1) log2(V) "
    "bits must fit in a state of fixed size. The no-forgetting updates are additive (h <- h + f(x, other half)), "
    "hence volume-preserving: they cannot contract the state to drop the old symbol, so the 'current symbol' "
    "must stay readable while everything before it is still packed into the same units.",
    "How the experiment makes this visible: the state is small (32 units) relative to the sequence's information "
    "(3 bits per step with 8 symbols, so 30 bits at T=11 and 237 bits at T=80), every sequence starts from a zero "
    "state (so nothing but the inputs is in h), and the loss and accuracy count every step 1..T-1 (a model cannot "
    "pass by solving only the first few steps). Ordinary GRU/LSTM need only the last symbol (3 bits); the "
    "buffered RevGRU/RevLSTM forget into the information buffer, so their h also needs only the last symbol.",
    "Caveat: in exact arithmetic a 32-unit state with 23 fractional bits per unit could hold hundreds of bits, "
    "so the failure is of what a smooth network can learn to write and read back, not a counting bound; every "
    "model gets the same training budget (same steps, batch, optimiser). Where the curve drops depends on that "
    "budget and on the state size: more training steps or more units move the failure of the no-forgetting "
    "models to longer sequences (at moderate lengths they are partly a matter of slower learning), while the "
    "argument says that for a state of any fixed size the failure must come at some length.",
]


def repeat_sections(rows: list[dict], meta: dict | None = None) -> list[tuple[str, str]]:
    import pandas as pd

    from revbench.report.html import dataframe_to_html_table, figure_html

    meta = meta or {}
    s = meta.get("settings") or {}
    secs = [("Accuracy against sequence length", figure_html(
        fig_repeat(rows), "Repeat task: accuracy of each model against the sequence length (log axis). Models "
                          "drawn on top of each other at 1.0 are told apart by marker size.",
        f"fresh random sequences of {s.get('symbols')} symbols; each point is a separate model trained "
        f"{s.get('steps')} Adam steps (batch {s.get('batch_size')}) at that length from a zero state, then tested "
        f"on {s.get('eval_sequences')} new sequences; accuracy over steps 1..T-1.",
        "accuracy against sequence length per model"))]
    df = pd.DataFrame(rows)
    if len(df):
        wide = df.pivot_table(index="model", columns="seq_len", values="accuracy", sort=False)
        wide.columns = [f"T={c}" for c in wide.columns]
        secs.append(("Accuracy table", dataframe_to_html_table(
            wide.reset_index(), formats={c: "{:.3f}" for c in wide.columns},
            caption="test accuracy (steps 1..T-1); chance = 1/symbols")))
        secs.append(("All runs", dataframe_to_html_table(
            df, formats={"accuracy": "{:.3f}", "accuracy_first_quarter": "{:.3f}", "accuracy_last_quarter": "{:.3f}",
                         "final_train_loss": "{:.3f}", "chance": "{:.3f}", "sequence_bits": "{:.0f}",
                         "train_s": "{:.1f}"}, scroll=True)))
    secs.append(("Why", pages.paragraphs(REPEAT_WHY)))
    how = []
    if meta.get("command"):
        how.append(f"<p>Command: <code>{html.escape(meta['command'])}</code></p>")
    if s:
        how.append(f"<p>Settings: <code>{html.escape(json.dumps(s, sort_keys=True))}</code></p>")
    if meta.get("duration_min") is not None:
        how.append(f"<p>Wall time: {meta['duration_min']:.1f} min.</p>")
    how.append(pages.env_html(meta.get("environment") or {}))
    secs.append(("How these numbers were made", "".join(how)))
    return secs


def write_repeat_report(out_dir, rows: list[dict], meta: dict) -> dict:
    import pandas as pd

    from revbench.util.atomic import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    tmp = out / ".repeat.csv.tmp"
    df.to_csv(tmp, index=False)
    os.replace(tmp, out / "repeat.csv")
    from revbench.tasks.jsonio import json_default
    from revbench.util.atomic import atomic_write_json

    atomic_write_json({"rows": rows, "meta": meta}, out / "repeat.json", default=json_default)
    page = pages.page("revbench: the repeat task (MacKay et al. 2018, section 4)",
                      f"{len(rows)} runs; {time.strftime('%Y-%m-%d %H:%M', time.localtime())}",
                      repeat_sections(rows, meta))
    atomic_write_text(out / "repeat.html", page)
    atomic_write_text(out / "README.md", repeat_readme(rows, meta))
    return {"csv": out / "repeat.csv", "html": out / "repeat.html", "readme": out / "README.md"}


def load_repeat(out_dir) -> tuple[list[dict], dict]:
    """Rows and meta of an earlier ``run_repeat`` (``repeat.json``), to rebuild the report without training."""
    path = Path(out_dir) / "repeat.json"
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist: run `revbench reproduce repeat` first")
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["rows"], data["meta"]


def repeat_readme(rows: list[dict], meta: dict) -> str:
    import pandas as pd

    env = meta.get("environment") or {}
    parts = ["# The repeat task (MacKay et al. 2018, section 4)", "",
             "Generated by `revbench reproduce repeat`: `repeat.csv` (one row per model and length), `repeat.html` "
             "(figure and tables, self-contained).", ""]
    if meta.get("command"):
        parts += ["```", meta["command"], "```", ""]
    if meta.get("duration_min") is not None:
        parts.append(f"Wall time: {meta['duration_min']:.1f} min.")
    parts += [f"Machine: {env.get('device_name')} ({env.get('cpu_count')} CPUs), torch {env.get('torch_version')}.",
              "", f"Settings: `{json.dumps(meta.get('settings') or {}, sort_keys=True)}`", ""]
    df = pd.DataFrame(rows)
    if len(df):
        wide = df.pivot_table(index="model", columns="seq_len", values="accuracy", sort=False)
        wide.columns = [f"T={c}" for c in wide.columns]
        parts += ["## Test accuracy against sequence length", "", pages.md_table(wide.reset_index()), "",
                  f"Chance: {1.0 / df['symbols'].iloc[0]:.3f}.", ""]
    parts += ["## Why", ""] + [t + "\n" for t in REPEAT_WHY]
    return "\n".join(parts)
