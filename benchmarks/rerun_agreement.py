"""Do two runs of the same benchmark command, each from scratch, reach the same verdicts? (issue 21, point 6)

    python benchmarks/rerun_agreement.py --benchmarks RUN_A/benchmark RUN_B/benchmark

Each folder is the ``-o`` of one ``nnUNetv2_dkm_benchmark`` run (same command, fresh ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results``). This script only reads their ``run_level.csv`` (the run-level
comparisons, their intervals and verdicts, the command and its DMs; from ``results.md`` where an older benchmark did
not write the last two) and ``summary.csv`` (each method's run-to-run spread), and writes
``benchmarks/results_repeats.md`` and ``benchmarks/rerun_agreement.png``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from nnunet_dkm.evaluation.run_statistics import verdict_class

REPO = Path(__file__).resolve().parents[1]


def read_benchmark(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The Dice run-level comparisons, the per-method spread, and the benchmark's command line and DMs."""
    comparisons = pd.read_csv(folder / "run_level.csv")
    if "command" in comparisons:
        command, dms = comparisons["command"].iloc[0], [d for d in comparisons["dms"].fillna("").iloc[:1] if d]
    else:  # a run_level.csv written before it had these columns: the report's header has them
        lines = (folder / "results.md").read_text().splitlines()
        command = next((line.split("`")[1] for line in lines if line.startswith("- **Command:**")), "(not found)")
        dms = [line[2:] for line in lines if re.match(r"- [a-z-]+ DM \(", line)]  # "- kinetic DM (<file>): ..."
    if "verdict_class" not in comparisons:  # likewise
        comparisons["verdict_class"] = [verdict_class(c.t_low, c.t_high, c.folds, c.repeats)
                                        for c in comparisons.itertuples()]
    comparisons = comparisons[comparisons["metric"] == "dice"].reset_index(drop=True)
    return comparisons, pd.read_csv(folder / "summary.csv"), f"`{command}`" + "".join(f"; {dm}" for dm in dms)


def agreement(runs: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per comparison and run: mean difference, t-interval, bootstrap interval, verdict; ``agree`` is True
    where every run gave the same verdict class (better, worse, no detectable difference or no verdict)."""
    frames = []
    for name, comparisons in runs.items():
        frames.append(comparisons.assign(benchmark=name, comparison=comparisons["method"] + " − "
                                         + comparisons["reference"]))
    table = pd.concat(frames, ignore_index=True)
    verdicts = table.groupby("comparison", sort=False)["verdict_class"].nunique()
    return table.assign(agree=table["comparison"].map(verdicts == 1))


def figure(table: pd.DataFrame, path: Path) -> None:
    """Each comparison's mean difference with its t-interval, one marker per benchmark run."""
    comparisons = list(dict.fromkeys(table["comparison"]))
    names = list(dict.fromkeys(table["benchmark"]))
    fig = Figure(figsize=(7.5, 0.8 + 0.7 * len(comparisons)))
    axis = fig.subplots()
    for offset, name in enumerate(names):
        part = table[table["benchmark"] == name].set_index("comparison").loc[comparisons]
        y = [i + 0.15 * (offset - (len(names) - 1) / 2) for i in range(len(comparisons))]
        axis.errorbar(part["mean_difference"], y, xerr=[part["mean_difference"] - part["t_low"],
                                                        part["t_high"] - part["mean_difference"]],
                      fmt="o", capsize=3, label=name)
    axis.axvline(0, color="grey", lw=0.8)
    axis.set_yticks(range(len(comparisons)), comparisons)
    axis.invert_yaxis()
    axis.set_xlabel("Dice difference over runs (folds x repeats), 95 % t-interval")
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def markdown(table: pd.DataFrame, summaries: dict[str, pd.DataFrame], commands: dict[str, str],
             invocation: str, load: str) -> str:
    names = list(summaries)
    lines = ["# Rerun agreement: the same benchmark command twice, each from scratch", "",
             f"- made by: `{invocation}`", f"- load: {load}"]
    lines += [f"- {name}: {commands[name]}" for name in names]
    lines += ["", "## Run-level comparisons (Dice; runs = folds x repeats, paired by fold and repeat)", "",
              "| comparison | benchmark | runs | mean difference | 95 % t-interval | 95 % bootstrap | verdict | "
              "per-run differences |",
              "|---|---|---|---|---|---|---|---|"]
    for row in table.itertuples():
        lines.append(f"| {row.comparison} | {row.benchmark} | {row.runs} ({row.folds} folds x {row.repeats}) | "
                     f"{row.mean_difference:+.3f} | [{row.t_low:+.3f}, {row.t_high:+.3f}] | "
                     f"[{row.bootstrap_low:+.3f}, {row.bootstrap_high:+.3f}] | {row.verdict} | {row.run_differences} |")
    lines += ["", "## Do the verdicts agree?", ""]
    for comparison, part in table.groupby("comparison", sort=False):
        verdicts = "; ".join(f"{r.benchmark}: {r.verdict}" for r in part.itertuples())
        lines.append(f"- {comparison}: **{'agree' if part['agree'].iloc[0] else 'DISAGREE'}** ({verdicts})")
    lines += ["", "## Each method's spread over runs (mean Dice per run)", "",
              "| method | benchmark | runs | mean of run means | std over runs | std between repeats of a fold |",
              "|---|---|---|---|---|---|"]
    for name, summary in summaries.items():
        for row in summary.dropna(subset=["dice_run_mean"]).itertuples():
            lines.append(f"| {row.method} | {name} | {int(row.runs)} | {row.dice_run_mean:.3f} | "
                         f"{row.dice_run_std:.3f} | {row.dice_repeat_std:.3f} |")
    lines += ["", "![intervals](rerun_agreement.png)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", type=Path, nargs="+", required=True,
                        help="the output folders of two or more runs of the same benchmark command")
    parser.add_argument("--wall-seconds", type=int, nargs="+", default=[],
                        help="each run's measured wall time (date +%%s before and after), in --benchmarks order")
    parser.add_argument("--load", default="not stated", help="what else ran on the machine meanwhile")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_repeats.md")
    args = parser.parse_args()
    if len(args.benchmarks) < 2:
        parser.error("give at least two benchmark folders")
    runs, summaries, commands = {}, {}, {}
    for index, folder in enumerate(args.benchmarks):
        name = f"run {chr(ord('A') + index)}"
        runs[name], summaries[name], commands[name] = read_benchmark(folder)
        if index < len(args.wall_seconds):
            commands[name] += f"; wall time {args.wall_seconds[index] / 60:.0f} min"
    table = agreement(runs)
    figure(table, args.output.with_name("rerun_agreement.png"))
    invocation = "python benchmarks/rerun_agreement.py --benchmarks " + " ".join(map(str, args.benchmarks))
    if args.wall_seconds:
        invocation += " --wall-seconds " + " ".join(map(str, args.wall_seconds))
    invocation += f" --load '{args.load}'"
    text = markdown(table, summaries, commands, invocation, args.load)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
