"""Which DM features know where tumours are? The pixel probe of ``nnUNetv2_dkm_probe`` over the whole settings grid
(mode A at t* in {50, 150, 250, 500, 750}, mode B, mode C with 5 DDIM steps; decoder and encoder; levels f1, f2, f3,
f4, f3+f4, f1..f4: 84 settings), against the untrained DM, the intensity, the filter bank and the enhancement ceiling.

    python benchmarks/feature_probe.py -d 990 -c 2d                 # the dataset's DM, all 84 settings
    python benchmarks/feature_probe.py -d 990 --settings default B:decoder:34 --output /tmp/probe.md

Writes ``benchmarks/results_feature_probe.md`` (the command that made it, the table, paired comparisons, the setting
chosen on the selection split), ``results_feature_probe.csv`` (one line per row x classifier x report case),
``feature_probe.png`` (bars and probability maps) and ``feature_probe_grid.png`` (pretrained minus untrained report
Dice over the grid, and each setting's forward cost). Needs the dataset planned and its DM pretrained.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from nnunet_dkm.atomic import write_atomically
from nnunet_dkm.command_line import add_verbose_argument, command_line_entry
from nnunet_dkm.preprocessing import PlannedDataset
from nnunet_dkm.probe.cases import probe_checkpoint
from nnunet_dkm.probe.cli import add_split_arguments, split_options
from nnunet_dkm.probe.report import (
    CLASSIFIER_NAMES,
    ProbeFiles,
    ReportContext,
    classifier_description,
    summary_table,
    write_results,
)
from nnunet_dkm.probe.run import ProbeResult, run_probe
from nnunet_dkm.probe.scoring import ProbeOptions
from nnunet_dkm.probe.settings import DmSetting, parse_settings
from nnunet_dkm.reporting import machine_description, utc_now

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "benchmarks" / "results_feature_probe.md"


def grid_frame(result: ProbeResult, classifier: str) -> pd.DataFrame:
    """Per setting: mean report Dice of the probed DM, of the untrained DM, their difference and the forward cost."""
    summary = summary_table(result)
    summary = summary[summary["classifier"] == classifier]
    first = result.checkpoints[0].name
    learned = summary[summary["model"] == first].set_index("setting")["dice_mean"]
    untrained = summary[summary["model"] == "untrained"].set_index("setting")["dice_mean"]
    costs = result.costs.set_index("setting")["forward_ms_per_slice"]
    frame = pd.DataFrame({"dice": learned, "untrained": untrained}).reindex([s.code for s in result.settings])
    frame["difference"] = frame["dice"] - frame["untrained"]
    frame["ms_per_slice"] = costs.reindex(frame.index)
    return frame


def _forward_name(setting: DmSetting) -> str:
    return f"{setting.mode}{setting.number if setting.mode != 'B' else ''}:{setting.source}"


def grid_figure(result: ProbeResult) -> Figure:
    """Heat maps over (DM forward x levels): pretrained minus untrained report Dice per classifier, and the cost."""
    forwards = list(dict.fromkeys(_forward_name(s) for s in result.settings))
    levels = list(dict.fromkeys("f" + "".join(map(str, s.levels)) for s in result.settings))
    classifiers = list(dict.fromkeys(result.per_case["classifier"]))
    figure = Figure(figsize=(4.2 * (len(classifiers) + 1), 0.35 * len(forwards) + 2.0), layout="constrained")
    axes = figure.subplots(1, len(classifiers) + 1, squeeze=False)[0]
    panels = [(classifier, "difference") for classifier in classifiers] + [(classifiers[0], "ms_per_slice")]
    for ax, (classifier, column) in zip(axes, panels, strict=True):
        frame = grid_frame(result, classifier)
        values = np.full((len(forwards), len(levels)), np.nan)
        for setting in result.settings:
            values[forwards.index(_forward_name(setting)),
                   levels.index("f" + "".join(map(str, setting.levels)))] = frame.loc[setting.code, column]
        if column == "difference":
            limit = max(float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0, 0.01)
            image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
            ax.set_title(f"{CLASSIFIER_NAMES.get(classifier, classifier)}: report Dice,\n"
                         f"{result.checkpoints[0].name} minus untrained DM", fontsize=9)
        else:
            image = ax.imshow(values, cmap="viridis", aspect="auto")
            ax.set_title("truncated DM forward (ms / slice)", fontsize=9)
        figure.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(len(levels)), levels, fontsize=7)
        ax.set_yticks(range(len(forwards)), forwards, fontsize=7)
        for (row, col), value in np.ndenumerate(values):
            if np.isfinite(value):
                ax.text(col, row, f"{value:.2f}" if column == "difference" else f"{value:.2g}", ha="center",
                        va="center", fontsize=6)
    return figure


def run_study(dataset_id: str, configuration: str, plans: str, checkpoint: Path | None, settings: Sequence[str],
              options: ProbeOptions, output: Path, command: str) -> ProbeResult:
    """Probe the grid and write the markdown, CSV and the two figures next to ``output``."""
    dataset = PlannedDataset.load(dataset_id, configuration, plans)
    parsed = parse_settings(settings)
    path = probe_checkpoint(dataset, checkpoint)
    print(f"probing {path} on {dataset.name} ({configuration}) at {len(parsed)} setting(s)", flush=True)
    result = run_probe(dataset, {"pretrained": path}, parsed, options=options)
    context = ReportContext(
        title=f"DM feature probe over {len(parsed)} settings: {dataset.name}, {configuration}", command=command,
        date=utc_now(), machine=machine_description(options.device),
        dataset=dataset.name, configuration=configuration, plans=plans, seed=options.seed,
        classifier_description=classifier_description(options),
    )
    stem = output.with_suffix("")
    figure_name = stem.name.removeprefix("results_")
    files = ProbeFiles(output, stem.with_suffix(".csv"), output.with_name(f"{figure_name}.png"))
    grid_file = output.with_name(f"{figure_name}_grid.png")
    figure = grid_figure(result)
    write_atomically(grid_file, lambda file: figure.savefig(file, dpi=120))
    context = replace(context, extra_figures=(grid_file.name,))
    table = write_results(result, context, files)
    print(result.split.describe())
    print(table)
    print(f"wrote {files.markdown}, {files.csv}, {files.figure} and {grid_file}")
    return result


@command_line_entry
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_split_arguments(parser, dataset_default="990")
    parser.add_argument("-chk", "--checkpoint", type=Path, help="DM checkpoint (default: the dataset's)")
    parser.add_argument("--settings", nargs="+", default=["all"], help="DM settings (default: all 84)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="markdown file; the CSV and figures go next to it")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    run_study(args.dataset, args.configuration, args.plans, args.checkpoint, args.settings, split_options(args),
              args.output, "python benchmarks/feature_probe.py " + shlex.join(argv))
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
