"""Benchmark outputs: the markdown and CSV tables, the Dice bar chart and the overlay figure.

Every file is written to a temporary name and renamed (``nnunet_dkm.atomic``), so a reader never sees half a
table. Figures use matplotlib's object-oriented ``Figure`` (no pyplot, no global backend switch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.evaluation.benchmark.methods import MethodInfo
from nnunet_dkm.evaluation.run_statistics import RunLevelComparison
from nnunet_dkm.evaluation.statistics import PairedComparison
from nnunet_dkm.reporting import ReportHeader, format_mean_std, format_number, format_p, markdown_table

ROLE_COLOURS = {"pre-contrast network": "#1f77b4", "control": "#9467bd", "pre-contrast baseline": "#7f7f7f",
                "post-contrast ceiling": "#2ca02c"}


@dataclass
class BenchmarkContext:
    """What every table states: data, split, trainers, command, date and machine."""

    dataset: str
    label_source: str
    configuration: str
    plans: str
    split: str
    folds: Sequence[int]
    command: str
    date: str
    machine: str
    notes: list[str] = field(default_factory=list)
    repeats: int = 1
    dms: list[str] = field(default_factory=list)  # how each DM the methods use was pretrained (cli.dm_note)

    def header(self, title: str, split: str, *notes: str) -> ReportHeader:
        """The header of a report titled ``title: dataset, configuration``: the dataset, the split followed by
        ``split``, then ``notes``, the DMs and the context's notes."""
        return ReportHeader(f"{title}: {self.dataset}, {self.configuration}", self.command, self.machine, self.date,
                            notes=[f"**Dataset:** {self.dataset}; label source: {self.label_source}",
                                   f"**Split:** {self.split}; {split}", *notes, *self.dms, *self.notes])


def markdown_report(context: BenchmarkContext, methods: Sequence[MethodInfo], summary: pd.DataFrame,
                    spread: pd.DataFrame, per_run: pd.DataFrame, run_level: Sequence[RunLevelComparison],
                    case_level: Sequence[PairedComparison], findings: Sequence[str], figures: Sequence[str]) -> str:
    """The benchmark's markdown: context, Table 1 style summary, run-level comparisons (the verdicts), per-run Dice,
    the case-level tests (secondary), findings."""
    by_key = {m.key: m for m in methods}
    spread_of = spread.set_index("method") if not spread.empty else pd.DataFrame()

    def noise(method: str) -> str:
        if method not in spread_of.index:
            return ""
        return (f"{format_number(spread_of.loc[method, 'dice_run_std'])} / "
                f"{format_number(spread_of.loc[method, 'dice_repeat_std'])}")

    lines = [
        *context.header("DKM benchmark", f"folds {', '.join(map(str, context.folds))}, {context.repeats} training "
                        f"run(s) per fold and method; plans {context.plans}",
                        "**Trainers:** " + "; ".join(f"{m.label}: `{m.made_by}`" for m in methods
                                                     if m.made_by.startswith("nnUNet"))).lines(),
        "",
        "## Segmentation quality (mean ± std over runs x cases)",
        "",
        *markdown_table([{
            "method": by_key[row.method].label, "role": by_key[row.method].role, "input": by_key[row.method].input,
            "made by": f"`{by_key[row.method].made_by}`", "n": row.n,
            "Dice": format_mean_std(row.dice_mean, row.dice_std),
            "Jaccard": format_mean_std(row.jaccard_mean, row.jaccard_std),
            "HD95 (mm)": format_mean_std(row.hd95_mm_mean, row.hd95_mm_std, 1),
            "empty predictions": row.empty_predictions,
            "run-to-run std (all runs / repeats of a fold)": noise(row.method),
        } for row in summary.itertuples(index=False)]),
        "", "HD95 of an empty prediction is the image diagonal (the worst distance the grid allows).", "",
    ]
    if run_level:
        lines += [
            "## Comparisons over training runs (the verdicts)",
            "",
            "Each run (fold x repeat) gives the difference of the two methods' mean Dice over its cases; the verdict "
            "rests on the 95 % t-interval over runs (\"better\" only above 0).",
            "",
            *markdown_table([{
                "comparison": f"{by_key[c.method].label} − {by_key[c.reference].label}", "runs": c.runs,
                "mean difference": f"{c.mean_difference:+.3f}", "95 % t-interval": f"[{c.t_low:+.3f}, {c.t_high:+.3f}]",
                "hierarchical bootstrap": f"[{c.bootstrap_low:+.3f}, {c.bootstrap_high:+.3f}]", "verdict": c.verdict,
            } for c in run_level]),
            "",
        ]
    if not per_run.empty:
        table = per_run.assign(method=[by_key[m].label for m in per_run["method"]])
        numbers = table.columns[1:]
        table[numbers] = table[numbers].map(lambda v: "" if math.isnan(v) else f"{v:.3f}")
        lines += ["## Mean Dice per training run", "", *markdown_table(table), ""]
    if case_level:
        lines += [
            "## Case-level tests (secondary: conditional on the trained models)",
            "",
            "Paired over (run, case); the Wilcoxon test treats cases as independent and holds each trained model "
            "fixed, so training noise is not in it.",
            "",
            *markdown_table([{
                "comparison": f"{by_key[c.method].label} − {by_key[c.reference].label}", "metric": c.metric,
                "pairs": c.pairs, "mean difference": f"{c.mean_difference:+.3f}", "std": f"{c.std_difference:.3f}",
                "wins / ties / losses": f"{c.wins} / {c.ties} / {c.losses}", "Wilcoxon p": format_p(c.wilcoxon_p),
            } for c in case_level]),
            "",
        ]
    lines += ["## What the numbers show", "", *[f"- {f}" for f in findings]]
    if figures:
        lines += ["", "## Figures", "", *[f"![{Path(f).stem}]({f})" for f in figures]]
    return "\n".join(lines) + "\n"


def dice_bar_chart(summary: pd.DataFrame, methods: Sequence[MethodInfo], path: Path, title: str) -> None:
    """Horizontal bars of mean Dice ± std per method, coloured by role."""
    by_key = {m.key: m for m in methods}
    rows = list(summary.itertuples(index=False))
    fig = Figure(figsize=(8, 0.45 * len(rows) + 1.9))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    colours = [ROLE_COLOURS[by_key[r.method].role] for r in rows]
    ax.barh(y, [r.dice_mean for r in rows], xerr=[r.dice_std for r in rows], color=colours, capsize=3)
    for position, row in zip(y, rows, strict=True):
        ax.text(0.01, position, f"{row.dice_mean:.3f}", va="center", ha="left", fontsize=8, color="white")
    ax.set_yticks(y, [by_key[r.method].label for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("Dice (mean ± std over runs x cases)")
    ax.set_title(title, fontsize=10)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in ROLE_COLOURS.values()]
    fig.legend(handles, list(ROLE_COLOURS), loc="lower center", ncol=len(ROLE_COLOURS), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def overlay_figure(rows: Sequence[tuple[str, np.ndarray, dict[str, np.ndarray]]], path: Path) -> None:
    """One row per case: the pre-contrast slice, then each mask's contour over it.

    ``rows`` holds ``(title, pre_slice (y, x), {panel title: boolean mask slice (y, x)})``; the ground truth is
    the first mask by convention.
    """
    columns = 1 + max(len(masks) for _, _, masks in rows)
    fig = Figure(figsize=(2.4 * columns, 2.5 * len(rows)))
    axes = fig.subplots(len(rows), columns, squeeze=False)
    for axes_row, (title, image, masks) in zip(axes, rows, strict=True):
        low, high = np.percentile(image, (1, 99.5))
        axes_row[0].imshow(image, cmap="gray", vmin=low, vmax=high)
        axes_row[0].set_title(f"{title}\npre-contrast", fontsize=8)
        for ax, (name, mask) in zip(axes_row[1:], masks.items(), strict=False):
            ax.imshow(image, cmap="gray", vmin=low, vmax=high)
            if mask.any():
                colour = "#30ff30" if name == "ground truth" else "#ff3030"
                ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.0)
            ax.set_title(name, fontsize=8)
        for ax in axes_row:
            ax.axis("off")
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
