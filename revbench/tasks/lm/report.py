"""The report of the LM grid: ``table1.html`` (tables, figure, how the numbers were made) and ``README.md``.

The report holds a Table-1-shaped table (rows: models; columns: limits; cells: valid
perplexity with the savings) next to the paper's numbers (as recalled in PAPER.md, unverified),
the per-run records, the reversible models relative to their ordinary counterparts, and the
allocator saving (bptt's peak / reversible's peak, one segment of the same trained model with the
same dropout masks).
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from revbench.tasks import pages
from revbench.tasks.cells import BASELINE_OF, CELL_LABEL, FORGETTING_CELLS, LIMITS_DEFAULT, limit_label
from revbench.tasks.lm.records import records_frame, write_records
from revbench.tasks.lm.tables import PAPER_NOTE, paper_table1, relative_table, table1


def fig_lm(records: list[dict], data: str = "ptb"):
    """Two panels: validation perplexity against the forgetting limit (ordinary baselines dashed), and the
    paper-style savings (actual solid, ideal dotted) against the limit. None if no reversible run."""
    from matplotlib.figure import Figure

    recs = [r for r in records if r["data"] == data]
    rev = [r for r in recs if r["cell"] in FORGETTING_CELLS]
    if not rev:
        return None
    xs = {k: i for i, k in enumerate(LIMITS_DEFAULT)}
    fig = Figure(figsize=(11, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    colours = {"revgru": "#2d5fa8", "revlstm": "#c0392b"}
    for (c, L) in sorted({(r["cell"], r["num_layers"]) for r in rev}):
        pts = sorted([r for r in rev if r["cell"] == c and r["num_layers"] == L], key=lambda r: xs[r["max_forget_bits"]])
        x = [xs[r["max_forget_bits"]] for r in pts]
        col = colours.get(c, None)
        lab = f"{L}-layer {CELL_LABEL[c]}"
        if L > 1:                                  # a deeper model of the same cell: same colour, lighter
            col = {"revgru": "#7fa7dd", "revlstm": "#e8998f"}.get(c, col)
        ax1.plot(x, [r["valid_ppl"] for r in pts], "o-", color=col, label=lab)
        base = [b for b in recs if b["cell"] == BASELINE_OF[c] and b["num_layers"] == L]
        if base:
            ax1.axhline(base[0]["valid_ppl"], color=col, ls="--", lw=1,
                        label=f"{L}-layer {CELL_LABEL[BASELINE_OF[c]]} (baseline)")
        ax2.plot(x, [r["saving_actual"] or float("nan") for r in pts], "o-", color=col, label=f"{lab}: actual")
        ax2.plot(x, [r["saving_ideal"] or float("nan") for r in pts], "s:", color=col, label=f"{lab}: ideal")
        alloc = [(xx, r["allocator_saving"]) for xx, r in zip(x, pts) if r["allocator_saving"]]
        if alloc:
            ax2.plot([a for a, _ in alloc], [b for _, b in alloc], "^--", color=col, alpha=0.6,
                     label=f"{lab}: allocator (whole step)")
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(LIMITS_DEFAULT)), [limit_label(k) for k in LIMITS_DEFAULT])
        ax.set_xlabel("max forgetting per unit per step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ppls = [r["valid_ppl"] for r in recs if r.get("valid_ppl")]
    if ppls and max(ppls) > 3 * min(ppls):        # a diverged run would flatten every other line
        ax1.set_yscale("log")
    ax1.set_ylabel(f"{data} validation perplexity")
    ax1.set_title("perplexity (lower is better)")
    ax2.set_ylabel("memory saving (x, higher is better)")
    ax2.set_title("hidden-state memory saving vs BPTT")
    fig.tight_layout()
    return fig


def fig_saving_through_training(records: list[dict], data: str = "ptb"):
    """The savings of each reversible run through its training: a column per cell (and depth), a colour per
    forgetting limit; top row the paper-style savings per log interval (actual solid, ideal dotted), bottom row
    the allocator saving before training and after each epoch. None if no run logged them."""
    from matplotlib.figure import Figure

    runs = [r for r in records if r["data"] == data and r["cell"] in FORGETTING_CELLS
            and ((r.get("training_curve") or {}).get("paper") or (r.get("training_curve") or {}).get("allocator"))]
    if not runs:
        return None
    groups = sorted({(r["num_layers"], r["cell"]) for r in runs})
    fig = Figure(figsize=(5.2 * len(groups), 6.4))
    axes = fig.subplots(2, len(groups), squeeze=False, sharex=True)
    colours = dict(zip(LIMITS_DEFAULT, ("#c0392b", "#e67e22", "#2d5fa8", "#27ae60")))
    order = {k: i for i, k in enumerate(LIMITS_DEFAULT)}
    for j, (L, cell) in enumerate(groups):
        top, bottom = axes[0][j], axes[1][j]
        for r in sorted((r for r in runs if (r["num_layers"], r["cell"]) == (L, cell)),
                        key=lambda r: order.get(r["max_forget_bits"], 99)):
            col, lab = colours.get(r["max_forget_bits"]), limit_label(r["max_forget_bits"])
            curve = r["training_curve"]
            if curve.get("paper"):
                xs = [p[0] for p in curve["paper"]]
                top.plot(xs, [p[1] for p in curve["paper"]], "-", color=col, label=f"{lab}: actual")
                top.plot(xs, [p[2] if p[2] else float("nan") for p in curve["paper"]], ":", color=col,
                         label=f"{lab}: ideal")
            if curve.get("allocator"):
                bottom.plot([a[0] for a in curve["allocator"]], [a[1] for a in curve["allocator"]], "o-",
                            color=col, label=lab)
        top.set_title(f"{L}-layer {CELL_LABEL[cell]}")
        top.set_ylabel("paper-style saving (x)")
        bottom.set_ylabel("allocator saving (x, whole step)")
        bottom.set_xlabel("epochs of training")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def lm_sections(records: list[dict], meta: dict | None = None) -> list[tuple[str, str]]:
    """HTML fragments (title, html) of the LM reproduction, for a standalone page or
    ``revbench.report.page.render_report(..., extra_sections=...)``."""
    from revbench.report.html import dataframe_to_html_table, figure_html, note_html

    meta = meta or {}
    sections = []
    datasets = sorted({r["data"] for r in records}) or ["ptb"]
    for data in datasets:
        t = table1(records, data)
        frag = dataframe_to_html_table(
            t, caption=f"{data}: validation perplexity (paper-style memory saving: actual x / ideal x), ours")
        frag += note_html("Saving = bits of the hidden (and cell) states BPTT stores (32 bits per value per step) "
                          "divided by the bits of the information buffer: 'actual' counts the words our buffer "
                          "allocated at its peak (32-bit live states, one per 4 units, + 16-bit word chunks), 'ideal' "
                          "the sum of -log2(z) over the forget gates. Averaged over the last epoch (ratio of sums).")
        frag += dataframe_to_html_table(paper_table1(), caption="Paper, PTB (Table 1 as recalled: valid ppl "
                                                                 "(saving)) - as recalled, unverified")
        frag += note_html(PAPER_NOTE)
        sections.append((f"Table 1 shape: {data}", frag))
    rel = relative_table(records)
    if len(rel):
        frag = dataframe_to_html_table(
            rel, formats={c: "{:.2f}" for c in ("valid_ppl", "baseline_valid_ppl", "test_ppl", "baseline_test_ppl")}
            | {c: "{:.3f}" for c in ("valid_ppl_ratio", "test_ppl_ratio")}
            | {c: "{:.2f}" for c in ("saving_actual", "saving_ideal", "allocator_saving")},
            caption="Reversible models against their ordinary counterparts (ratio = reversible / ordinary "
                    "perplexity; 1.00 = equal)")
        frag += note_html("allocator_saving: one training step of the SAME trained model on the same segment with "
                          "the same dropout masks, metered with revbench.measure.memory (live-tensor meter on CPU, CUDA "
                          "allocator on a GPU): peak bytes of 'bptt' / peak bytes of 'reversible'. It includes "
                          "everything a step allocates (gates, logits of a step, the buffer), not only the "
                          "hidden states, so it is smaller than the paper-style saving.")
        sections.append(("Reversible vs ordinary", frag))
    figures = [
        (fig_lm, "Figure: {data}", "{data}: validation perplexity and memory saving against the forgetting limit.",
         "perplexity of the best epoch on the validation split (eval mode, forward only); savings as in the table; "
         "allocator saving as in 'Reversible vs ordinary'.",
         "{data} perplexity and saving against the forgetting limit"),
        (fig_saving_through_training, "Figure: {data}, the saving through training",
         "{data}: memory saving of each reversible run through its training.",
         "top: the paper-style savings of the training steps of each log interval (ratio of sums; actual = the "
         "buffer's allocated bits, ideal = the bits forgotten); bottom: the allocator saving (bptt's peak / the "
         "method's peak) of one step on the first training segment, the same segment and dropout masks every "
         "time, before training (0) and after each epoch, on a copy of the model. The saving moves because the gates "
         "learn how much to forget.", "{data} saving through training"),
    ]
    for draw, title, caption, how, alt in figures:
        for data in datasets:
            fig = draw(records, data)
            if fig is not None:
                sections.append((title.format(data=data), figure_html(
                    fig, caption.format(data=data), how, alt.format(data=data))))
    df = records_frame(records)
    if len(df):
        sections.append(("All runs", dataframe_to_html_table(
            df, formats={"valid_ppl": "{:.2f}", "test_ppl": "{:.2f}", "saving_actual": "{:.2f}",
                         "saving_ideal": "{:.2f}", "buffer_efficiency": "{:.2f}", "allocator_saving": "{:.2f}",
                         "train_ppl_last_epoch": "{:.1f}", "train_minutes": "{:.1f}",
                         "bptt_peak_bytes": "{:,.0f}", "method_peak_bytes": "{:,.0f}", "parameters": "{:,.0f}"},
            mono=("run",), scroll=True)))
    if meta.get("differences"):
        sections.append(("Differences from the paper", pages.paragraphs(meta["differences"])))
    how = []
    if meta.get("command"):
        how.append(f"<p>Command: <code>{html.escape(meta['command'])}</code></p>")
    if meta.get("config"):
        how.append(f"<p>Configuration <code>{html.escape(meta['config_name'] or '')}</code>: "
                   f"<code>{html.escape(json.dumps(meta['config'], sort_keys=True))}</code></p>")
    if meta.get("statuses"):
        import pandas as pd
        how.append(dataframe_to_html_table(pd.DataFrame(meta["statuses"]), caption="grid runs"))
    how.append(pages.env_html(meta.get("environment") or {}))
    sections.append(("How these numbers were made", "".join(how)))
    return sections


def lm_differences(records: list[dict], cfg_dict: dict | None) -> list[str]:
    """Plain statements of where this reproduction differs from the paper and why."""
    c = cfg_dict or {}
    out = []
    if c:
        sizes = c.get("emb_size"), c.get("hidden_size"), c.get("batch_size"), c.get("bptt"), c.get("epochs")
        out.append(f"Model and schedule: embedding {sizes[0]}, hidden {sizes[1]} (tied), batch {sizes[2]}, BPTT "
                   f"{sizes[3]}, {sizes[4]} epochs on the CPU, against the paper's embedding 650, hidden 1150/650, "
                   "batch 20, BPTT 70 and training to convergence (tens of epochs) on a GPU. So our perplexities are "
                   "far higher than the paper's; only the comparison between models trained the same way means "
                   "something here.")
        drops = [c.get(k) for k in ("dropout_emb", "dropout_in", "dropout_h", "dropout_out", "weight_drop")]
        out.append(f"Regularisation: dropouts emb/in/between/out/weight-drop = {drops} (paper 0.1/0.4/0.3/0.4/0.5); "
                   "a run of a few epochs is limited by optimisation, not over-fitting, so heavy dropout would only "
                   "slow it down. AWD-LSTM's activation regularisers and averaged SGD are not used (lr / 4 on a "
                   "plateau instead, as PAPER.md describes).")
        out.append(f"Evaluation: validation and test batch {c.get('eval_batch_size')}/{c.get('test_batch_size')} "
                   f"with segments of {c.get('bptt')} steps (AWD evaluates the test set with batch 1).")
        out.append(f"Segment length {c.get('bptt')} instead of 70: the buffer's fixed part (a 32-bit live state "
                   "per 4 units and batch element, plus the first 16-bit word chunk) is amortised over fewer steps, "
                   "so the 'actual' saving is lower than at 70 steps; the 'ideal' saving does not depend on the length.")
    for key, title, option, fmt in (("lr", "Learning rate", "--lr", "at {:g}"), ("epochs", "Epochs", "--epochs", "{} epoch(s)")):
        want = c.get(key)
        other = [r for r in records if want is not None and r.get(key) is not None and r[key] != want]
        if other:
            runs = ", ".join(f"{r['run']} {fmt.format(r[key])}" for r in other)
            out.append(f"{title}: {runs}; every other run {fmt.format(want)}, the config's (`revbench reproduce lm "
                       f"{option}`). Each run's value is the `{key}` column of runs.csv.")
    for r in records:
        worst, vocab = (r.get("training_curve") or {}).get("max_train_ppl"), r.get("vocab_size")
        if worst and vocab and worst > 10 * vocab:
            out.append(f"{r['run']} diverged while training: a log interval's training perplexity reached {worst:.3g} "
                       f"(the vocabulary has {vocab:,} words; an untrained model scores about that). Its final "
                       f"validation perplexity {r['valid_ppl']:.1f} comes from a run that diverged, not from the "
                       "model trained as configured: rerun it with a lower learning rate (`--lr`) before comparing it.")
    depths = sorted({r["num_layers"] for r in records}) or [1]
    if depths == [1]:
        out.append("Depth: one layer only (the paper also trains 2 and 3 layers).")
    else:
        out.append(f"Depth: {', '.join(str(d) for d in depths)} layers (the paper trains 1, 2 and 3); deeper models "
                   "run only the forgetting limits and cells named in the command, each layer with its own "
                   "buffer, and the savings count every layer's states.")
    out.append("Savings: the paper's buffer pushes whole [batch, units] int64 chunks and one flag per step; ours is "
               "a streaming buffer (per-unit words), so 'actual' savings are not comparable one to one. The "
               "paper-style figures count hidden/cell states only; the allocator saving counts every byte of a "
               "training step, which is why it is smaller.")
    return out


def write_lm_report(out_dir, records: list[dict], meta: dict) -> dict:
    """Write runs.json/csv, table1.html and README.md into ``out_dir``. Returns the paths."""
    from revbench.util.atomic import atomic_write_text

    out = Path(out_dir)
    j, c = write_records(records, out)
    sections = lm_sections(records, meta)
    title = "revbench: language modelling reproduction (MacKay et al. 2018, Table 1)"
    sub = (f"{len(records)} finished runs; config {meta.get('config_name')}; "
           f"{time.strftime('%Y-%m-%d %H:%M', time.localtime())}")
    atomic_write_text(out / "table1.html", pages.page(title, sub, sections))
    atomic_write_text(out / "README.md", lm_readme(records, meta))
    return {"json": j, "csv": c, "html": out / "table1.html", "readme": out / "README.md"}


def lm_readme(records: list[dict], meta: dict) -> str:
    env = meta.get("environment") or {}
    parts = ["# Language modelling reproduction (Table 1 of MacKay et al. 2018)", "",
             "Generated by `revbench reproduce lm`; `table1.html` is the same content as one self-contained page, "
             "`runs.csv` / `runs.json` hold one record per finished run, `runs/<name>/` each run's log "
             "(`log.jsonl`), checkpoint and `result.json`.", ""]
    if meta.get("command"):
        parts += ["## How it was run", "", "```", meta["command"], "```", ""]
    if meta.get("duration_min") is not None:
        parts.append(f"Wall time of this invocation: {meta['duration_min']:.1f} min (finished runs are skipped, so a "
                     "rerun that only rebuilds the report takes seconds).")
    if records:
        parts.append(f"Training time summed over the {len(records)} finished runs: "
                     f"{sum(r['train_minutes'] for r in records):.1f} min.")
        starts = [r["started_at"] for r in records if r.get("started_at")]
        ends = [r["finished_at"] for r in records if r.get("finished_at")]
        if starts and ends:
            fmt = "%Y-%m-%d %H:%M UTC"
            parts.append(f"Runs trained from {time.strftime(fmt, time.gmtime(min(starts)))} to "
                         f"{time.strftime(fmt, time.gmtime(max(ends)))} "
                         f"({(max(ends) - min(starts)) / 60:.1f} min of wall time).")
    parts.append(f"Machine: {env.get('device_name')} ({env.get('cpu_count')} CPUs), {env.get('platform')}, "
                 f"torch {env.get('torch_version')}, Python {env.get('python_version')}, commit {env.get('commit')}.")
    parts.append("")
    if meta.get("statuses"):
        parts += ["Grid runs:", ""]
        parts += [f"- `{s['run']}`: {s['status']}" for s in meta["statuses"]]
        parts.append("")
    for data in sorted({r["data"] for r in records}):
        parts += [f"## {data}: ours, valid ppl (actual saving x / ideal saving x)", "",
                  pages.md_table(table1(records, data)), ""]
    parts += ["## Paper (Table 1, PTB, as recalled in PAPER.md, unverified)", "", pages.md_table(paper_table1()), "",
              PAPER_NOTE, ""]
    rel = relative_table(records)
    if len(rel):
        parts += ["## Reversible vs ordinary", "", pages.md_table(rel), ""]
    if records:
        parts += ["## All finished runs", "", pages.md_table(records_frame(records).drop(columns=["run"])), ""]
    if meta.get("differences"):
        parts += ["## Where this differs from the paper, and why", ""] + [f"- {d}" for d in meta["differences"]] + [""]
    return "\n".join(parts)
