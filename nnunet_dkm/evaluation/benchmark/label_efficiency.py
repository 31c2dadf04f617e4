"""The label-efficiency overview: Dice against the number of labelled training cases N, and whether the learned DM
beats the untrained-DM control (and vanilla nnU-Net) at each N, judged over training runs.

Input: the per-case table of every run, with columns ``method``, ``fold`` (the base fold), ``repeat``,
``num_labelled`` (``4``, ``8``, ..., ``all``), ``labelled_cases`` (how many cases that run trained on) and the
metrics. Output: ``label_efficiency.md``, ``label_efficiency.csv`` and ``label_efficiency.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.evaluation.benchmark.methods import MethodInfo
from nnunet_dkm.evaluation.run_statistics import run_level_comparison, run_means
from nnunet_dkm.reporting import markdown_table

CURVE_METHODS = ("vanilla", "dkm", "untrained_dm_control", "oracle_post_contrast")
CURVE_COLOURS = {"vanilla": "#1f77b4", "dkm": "#d62728", "untrained_dm_control": "#9467bd",
                 "oracle_post_contrast": "#2ca02c"}
GOAL_GAIN = 0.03  # DKM - control in Dice that counts as a regime where the kinetic code helps


def labels_in_order(per_case: pd.DataFrame) -> list[str]:
    """The N of the table, smallest first, ``all`` last."""
    return sorted(per_case["num_labelled"].unique(), key=lambda n: float("inf") if n == "all" else int(n))


def dice_by_n(per_case: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Mean and std of Dice over runs x cases per (N, method), with the mean number of labelled cases and the
    per-run means (columns ``run k``, in the order of (fold, repeat))."""
    rows = []
    for label in labels_in_order(per_case):
        of_n = per_case[per_case["num_labelled"] == label]
        for method in methods:
            rows_of = of_n[of_n["method"] == method]
            if rows_of.empty:
                continue
            row = {"num_labelled": label, "labelled_cases": float(rows_of["labelled_cases"].mean()),
                   "method": method, "n": len(rows_of), "dice_mean": float(rows_of["dice"].mean()),
                   "dice_std": float(rows_of["dice"].std(ddof=0))}
            means = run_means(rows_of.drop(columns="num_labelled"))
            means = means.sort_values([c for c in ("fold", "repeat") if c in means.columns])
            row.update({f"run {i}": float(v) for i, v in enumerate(means["dice"])})
            rows.append(row)
    return pd.DataFrame(rows)


def dkm_against(per_case: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per N: DKM minus ``reference`` over training runs (``run_level_comparison``), its verdict, and whether the
    goal (>= +0.03 Dice with the run-level interval above 0) is met."""
    rows = []
    for label in labels_in_order(per_case):
        of_n = per_case[per_case["num_labelled"] == label].drop(columns="num_labelled")
        if not {"dkm", reference} <= set(of_n["method"]):
            continue
        c = run_level_comparison(of_n, "dkm", reference)
        rows.append({
            "num_labelled": label, "reference": reference, "runs": c.runs, "mean_difference": c.mean_difference,
            "t_low": c.t_low, "t_high": c.t_high, "bootstrap_low": c.bootstrap_low,
            "bootstrap_high": c.bootstrap_high, "per_run": " ".join(f"{d:+.3f}" for d in c.run_differences),
            "verdict": c.verdict, "goal_met": bool(c.verdict_class == "better" and c.mean_difference >= GOAL_GAIN),
        })
    return pd.DataFrame(rows)


def efficiency_figure(table: pd.DataFrame, labels: dict[str, str], path: Path, title: str) -> None:
    """Dice against the number of labelled cases: the mean over runs x cases (line) and each run's mean (dots)."""
    figure = Figure(figsize=(7, 4.5))
    axis = figure.subplots()
    fold_columns = [c for c in table.columns if c.startswith("run ")]
    for method in CURVE_METHODS:
        rows = table[table["method"] == method].sort_values("labelled_cases")
        if rows.empty:
            continue
        colour = CURVE_COLOURS[method]
        axis.plot(rows["labelled_cases"], rows["dice_mean"], "-o", color=colour, label=labels.get(method, method))
        for column in fold_columns:
            axis.scatter(rows["labelled_cases"], rows[column], color=colour, s=12, alpha=0.45)
    ticks = table.drop_duplicates("num_labelled").sort_values("labelled_cases")
    axis.set_xscale("log", base=2)
    axis.set_xticks(ticks["labelled_cases"], [f"{n}" if n != "all" else f"all ({c:.0f})"
                                              for n, c in zip(ticks["num_labelled"], ticks["labelled_cases"],
                                                              strict=True)])
    axis.minorticks_off()
    axis.set_xlabel("labelled training cases N (per fold)")
    axis.set_ylabel("Dice on the test split")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title, fontsize=10)
    write_atomically(path, lambda temporary: figure.savefig(temporary, dpi=120, format="png", bbox_inches="tight"))


def efficiency_markdown(table: pd.DataFrame, against_control: pd.DataFrame, against_vanilla: pd.DataFrame,
                        labels: dict[str, str], header: Sequence[str]) -> str:
    """The overview's markdown: context lines, Dice per N and method, DKM against control and vanilla per N."""
    fold_columns = [c for c in table.columns if c.startswith("run ")]
    lines = [*header, "", "## Dice per number of labelled training cases (mean ± std over runs x cases; then each "
             "run's mean)", "",
             *markdown_table([{"N": row["num_labelled"], "labelled cases": f"{row['labelled_cases']:.0f}",
                               "method": labels.get(row["method"], row["method"]), "n": row["n"],
                               "Dice": f"{row['dice_mean']:.3f} ± {row['dice_std']:.3f}",
                               **{c: "" if np.isnan(row[c]) else f"{row[c]:.3f}" for c in fold_columns}}
                              for _, row in table.iterrows()])]
    for title, frame in (("DKM − untrained-DM control (learned kinetics vs capacity)", against_control),
                         ("DKM − vanilla nnU-Net", against_vanilla)):
        lines += ["", f"## {title}, over training runs", "", *markdown_table([{
            "N": row.num_labelled, "runs": row.runs, "mean Dice difference": f"{row.mean_difference:+.3f}",
            "95 % t-interval": f"[{row.t_low:+.3f}, {row.t_high:+.3f}]",
            "hierarchical bootstrap": f"[{row.bootstrap_low:+.3f}, {row.bootstrap_high:+.3f}]", "per run": row.per_run,
            "verdict": row.verdict, "goal met": "yes" if row.goal_met else "no",
        } for row in frame.itertuples(index=False)], columns=["N", "runs", "mean Dice difference", "95 % t-interval",
                                                               "hierarchical bootstrap", "per run", "verdict",
                                                               "goal met"])]
    lines += ["", f"A difference counts only where the 95 % t-interval over training runs (folds x repeats) excludes "
              f"0; the goal is DKM − control >= +{GOAL_GAIN} Dice with the interval above 0."]
    return "\n".join(lines) + "\n"


def write_label_efficiency(output: Path, per_case: pd.DataFrame, methods: Sequence[MethodInfo],
                           header: Sequence[str], title: str) -> str:
    """Write ``label_efficiency.{md,csv,png}`` into ``output``; returns the markdown."""
    labels = {m.key: m.label for m in methods}
    table = dice_by_n(per_case, [m.key for m in methods])
    against_control = dkm_against(per_case, "untrained_dm_control")
    against_vanilla = dkm_against(per_case, "vanilla")
    efficiency_figure(table, labels, output / "label_efficiency.png", title)
    write_atomically(output / "label_efficiency.csv", lambda temporary: table.to_csv(temporary, index=False))
    text = efficiency_markdown(table, against_control, against_vanilla, labels,
                               [*header, "", "![Dice against N](label_efficiency.png)"])
    write_atomically(output / "label_efficiency.md", lambda temporary: temporary.write_text(text))
    return text
