"""When do the DM's features start to know where tumours are? The pixel probe of ``nnUNetv2_dkm_probe`` at one setting
on snapshots of one pretraining run (``nnUNetv2_dkm_pretrain --keep-steps 0 100 300 ...`` keeps
``dm_checkpoint.step<N>.pt`` beside the checkpoint), against the untrained DM and the filter bank, plotted against
training steps.

    nnUNetv2_dkm_pretrain -d 990 -c 2d --steps 2000 --keep-steps 0 100 250 500 1000
    python benchmarks/dm_learning_curve.py -d 990 -c 2d                      # every snapshot of the dataset's DM
    python benchmarks/dm_learning_curve.py -d 990 --checkpoints a.pt b.pt --setting B:decoder:34 --output /tmp/c.md

Writes ``benchmarks/results_dm_learning_curve.md`` (the command, per snapshot and classifier the report Dice and the
paired differences learned minus untrained and learned minus filter bank, with Wilcoxon p), ``.csv`` (one line per
row x classifier x report case, with the snapshot's steps) and ``dm_learning_curve.png``.
"""

from __future__ import annotations

import argparse
import math
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.diffusion.checkpoint import load_checkpoint
from nnunet_dkm.paths import missing_dm_message
from nnunet_dkm.preprocessing import PlannedDataset
from nnunet_dkm.probe import ProbeError, ProbeOptions, comparisons, parse_settings, run_probe, summary_table
from nnunet_dkm.probe.cli import add_split_arguments, run_reported, split_options
from nnunet_dkm.probe.features import FILTER_BANK
from nnunet_dkm.probe.report import CLASSIFIER_NAMES, classifier_description
from nnunet_dkm.probe.run import UNTRAINED, ProbeResult
from nnunet_dkm.reporting import format_p, format_signed, machine_description, utc_now

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results_dm_learning_curve.md"
SNAPSHOT = re.compile(r"\.step(\d+)$")


def steps_of(path: Path) -> int:
    """Training steps of a checkpoint: its metadata's ``steps``, else the ``.step<N>`` of its name."""
    steps = load_checkpoint(path).metadata.get("steps")
    if steps is not None:
        return int(steps)
    match = SNAPSHOT.search(path.stem)
    if match is None:
        raise ProbeError(f"{path}: no training steps in its metadata or its name (dm_checkpoint.step<N>.pt)")
    return int(match[1])


def find_snapshots(dataset: PlannedDataset) -> list[Path]:
    """The dataset's DM checkpoint and its ``.step<N>`` snapshots beside it."""
    location = dataset.dm_checkpoint
    path = location.path
    found = sorted(path.parent.glob(f"{path.stem}.step*{path.suffix}"))
    if path.is_file():
        found.append(path)
    if not found:
        raise ProbeError(missing_dm_message(location, dataset.name, dataset.configuration, dataset.plans_identifier))
    return found


def named_checkpoints(paths: Sequence[Path]) -> dict[str, Path]:
    """``{"step<N>": path}`` in order of steps; of two files with the same steps the first is kept."""
    for path in paths:
        if not path.is_file():
            raise ProbeError(f"--checkpoints {path}: no such file")
    by_steps: dict[int, Path] = {}
    for path in paths:
        by_steps.setdefault(steps_of(path), path)
    return {f"step{steps}": by_steps[steps] for steps in sorted(by_steps)}


def curve_table(result: ProbeResult, steps: dict[str, int]) -> pd.DataFrame:
    """Per snapshot and classifier: steps, mean report Dice, and the paired Dice differences against the untrained DM
    and the filter bank (mean, standard error, Wilcoxon p)."""
    dice = summary_table(result).set_index(["model", "classifier"])["dice_mean"]
    lines: dict[tuple[str, str], dict] = {}
    for item in comparisons(result):
        reference = "untrained" if item.reference.startswith(UNTRAINED) else "filter_bank"
        line = lines.setdefault((item.model, item.classifier), {
            "model": item.model, "steps": steps[item.model], "classifier": item.classifier,
            "dice_mean": dice.get((item.model, item.classifier), np.nan), "cases": item.comparison.pairs})
        line[f"mean_difference_{reference}"] = item.comparison.mean_difference
        line[f"standard_error_{reference}"] = (item.comparison.std_difference
                                               / math.sqrt(max(item.comparison.pairs, 1)))
        line[f"wilcoxon_p_{reference}"] = item.comparison.wilcoxon_p
    frame = pd.DataFrame(list(lines.values()))
    return frame.sort_values(["classifier", "steps"]).reset_index(drop=True)


def curve_figure(curve: pd.DataFrame, setting: str) -> Figure:
    """Per classifier: learned minus untrained and learned minus filter bank report Dice (± standard error) vs
    steps."""
    classifiers = list(dict.fromkeys(curve["classifier"]))
    figure = Figure(figsize=(5.0 * len(classifiers), 3.6), layout="constrained")
    axes = figure.subplots(1, len(classifiers), squeeze=False)[0]
    for ax, classifier in zip(axes, classifiers, strict=True):
        lines = curve[curve["classifier"] == classifier]
        for reference, colour, label in (("untrained", "#9467bd", "minus untrained DM"),
                                         ("filter_bank", "#8c564b", f"minus {FILTER_BANK}")):
            ax.errorbar(lines["steps"], lines[f"mean_difference_{reference}"],
                        yerr=lines[f"standard_error_{reference}"], marker="o", capsize=3, color=colour, label=label)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("DM training steps")
        ax.set_ylabel("report Dice difference (± s.e.)")
        ax.set_title(f"{CLASSIFIER_NAMES.get(classifier, classifier)}, {setting}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure


def curve_markdown(result: ProbeResult, curve: pd.DataFrame, command: str, dataset: PlannedDataset, setting: str,
                   options: ProbeOptions, figure: str) -> str:
    lines = [
        f"# DM learning curve of the feature probe: {dataset.name}, {dataset.configuration}, {setting}",
        "",
        f"- **Command:** `{command}`",
        f"- **Date / machine:** {utc_now()}; {machine_description(options.device)}",
        "- **Snapshots:** " + "; ".join(f"{info.name}: `{info.path}`" for info in result.checkpoints),
        f"- **Cases:** {result.split.describe()}",
        f"- **Pixels:** {result.sampled_pixels} balanced body pixels; {classifier_description(options)}; seed "
        f"{options.seed}",
        *[f"- {note}" for note in result.notes],
        "",
        "Paired per-case report Dice differences (learned DM minus the untrained DM of the same architecture at the "
        "same setting, and minus the filter bank), mean ± standard error over report cases, two-sided Wilcoxon p.",
        "",
        "| steps | classifier | report Dice | minus untrained DM | p | minus filter bank | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for line in curve.itertuples(index=False):
        lines.append(
            f"| {line.steps} | {CLASSIFIER_NAMES.get(line.classifier, line.classifier)} | {line.dice_mean:.3f} "
            f"| {format_signed(line.mean_difference_untrained)} ± {line.standard_error_untrained:.3f} "
            f"| {format_p(line.wilcoxon_p_untrained)} "
            f"| {format_signed(line.mean_difference_filter_bank)} ± {line.standard_error_filter_bank:.3f} "
            f"| {format_p(line.wilcoxon_p_filter_bank)} |")
    lines += ["", f"![learning curve]({figure})"]
    return "\n".join(lines) + "\n"


def run_curve(dataset_id: str, configuration: str, plans: str, checkpoints: Sequence[Path] | None, setting: str,
              options: ProbeOptions, output: Path, command: str) -> pd.DataFrame:
    """Probe every snapshot at ``setting`` and write the markdown, CSV and figure next to ``output``."""
    dataset = PlannedDataset.load(dataset_id, configuration, plans)
    settings = parse_settings([setting])
    if len(settings) != 1:
        raise ProbeError(f"--setting {setting}: the learning curve probes one setting, not {len(settings)}")
    named = named_checkpoints(checkpoints if checkpoints else find_snapshots(dataset))
    steps = {name: int(name.removeprefix("step")) for name in named}
    print(f"probing {len(named)} snapshot(s) ({', '.join(named)}) of {dataset.name} at {settings[0].code}", flush=True)
    result = run_probe(dataset, named, settings, options=options)
    curve = curve_table(result, steps)
    figure_file = output.with_name(output.with_suffix("").name.removeprefix("results_") + ".png")
    figure = curve_figure(curve, settings[0].code)
    write_atomically(figure_file, lambda file: figure.savefig(file, dpi=120))
    per_case = result.per_case.assign(steps=result.per_case["model"].map(steps))
    write_atomically(output.with_suffix(".csv"), lambda file: per_case.to_csv(file, index=False))
    text = curve_markdown(result, curve, command, dataset, settings[0].code, options, figure_file.name)
    write_atomically(output, lambda file: file.write_text(text))
    print(result.split.describe())
    print(text.split("\n\n")[-2])
    print(f"wrote {output}, {output.with_suffix('.csv')} and {figure_file}")
    return curve


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_arguments(parser, dataset_default="990")
    parser.add_argument("--checkpoints", type=Path, nargs="+",
                        help="checkpoints to probe (default: the dataset's DM and its dm_checkpoint.step<N>.pt)")
    parser.add_argument("--setting", default="default", help="one DM setting (default: nnUNetTrainerDKM's)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="markdown file; the CSV and the figure go next to it")
    args = parser.parse_args(argv)
    options = split_options(args)
    command = "python benchmarks/dm_learning_curve.py " + shlex.join(argv)
    run_reported(lambda: run_curve(args.dataset, args.configuration, args.plans, args.checkpoints, args.setting,
                                   options, args.output, command))


if __name__ == "__main__":
    main()
