"""``nnUNetv2_dkm_probe``: do the DM's frozen features know where tumours are?

Pixel classifiers (logistic regression and a small MLP) on frozen, upsampled DM features (as in label-efficient
diffusion segmentation, Baranchuk et al., ICLR 2022), against the same classifiers on the untrained DM (same
architecture, random frozen weights), the pre-contrast intensity, a fixed filter bank and the real enhancement
(ceiling)::

    nnUNetv2_dkm_probe -d 990 -c 2d
    nnUNetv2_dkm_probe -d 990 -c 2d --settings A50:decoder:2 A250:decoder:34 B:decoder:34 --num-labelled 8
    nnUNetv2_dkm_probe -d 990 -c 2d --settings all -device cuda

Fit: labelled training cases; selection (held-out training cases): each row's threshold and the best setting;
report: the test split. Writes results.md, results.csv, results_summary.csv, results_comparisons.csv and probe.png to
``$nnUNet_results/DatasetXXX/dkm_probe__<plans>__<configuration>/`` (or ``-o``).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from nnunet_dkm.cli_types import non_negative_int, positive_int
from nnunet_dkm.command_line import add_device_argument, add_verbose_argument, check_writable_folder, command_line_entry
from nnunet_dkm.preprocessing import PlannedDataset
from nnunet_dkm.probe.cases import probe_checkpoint, probe_output_folder
from nnunet_dkm.probe.report import ProbeFiles, ReportContext, classifier_description, write_results
from nnunet_dkm.probe.run import run_probe
from nnunet_dkm.probe.scoring import CLASSIFIERS, ClassifierSettings, ProbeOptions
from nnunet_dkm.probe.settings import SYNTAX_HELP, ProbeError, parse_settings
from nnunet_dkm.reporting import machine_description, utc_now

PROG = "nnUNetv2_dkm_probe"


def add_split_arguments(parser: argparse.ArgumentParser, dataset_default: str | None = None) -> None:
    """The arguments every probe command shares: the dataset, the split of its cases, the seed and the device."""
    parser.add_argument("-d", "--dataset", required=dataset_default is None, default=dataset_default,
                        help="dataset id or name" + (f" ({dataset_default})" if dataset_default else ""))
    parser.add_argument("-c", "--configuration", default="2d", help="nnU-Net configuration (2d)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier")
    parser.add_argument("--num-labelled", type=positive_int,
                        help="labelled training cases to fit on (default: all outside the selection set)")
    parser.add_argument("--num-selection", type=positive_int,
                        help="held-out training cases that choose thresholds and the setting (default: a quarter, "
                             "at least 2)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="seed of the split, pixels, untrained DM and classifiers (same seed, same table)")
    add_device_argument(parser, "where the DMs run")


def split_options(args: argparse.Namespace, **other: object) -> ProbeOptions:
    """``ProbeOptions`` of the shared split arguments (``add_split_arguments``), plus any other option."""
    return ProbeOptions(num_labelled=args.num_labelled, num_selection=args.num_selection, seed=args.seed,
                        device=args.device, **other)


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_split_arguments(result)
    result.add_argument("-chk", "--checkpoint", type=Path,
                        help="DM checkpoint (default: $nnUNet_dkm_checkpoint, else the dataset's dkm folder)")
    result.add_argument("--controls", nargs="+", default=[], choices=("pre-only", "regression"),
                        help="also probe the dataset's DMs of these objectives (nnUNetv2_dkm_pretrain --objective; "
                             "the benchmark's pre-only and regression DM controls) beside the untrained DM; the DM is "
                             "compared with each")
    result.add_argument("--settings", nargs="+", default=["default"], metavar="SETTING",
                        help=f"DM settings: {SYNTAX_HELP} (default: nnUNetTrainerDKM's setting)")
    result.add_argument("--pixels-per-class", type=positive_int, default=1000,
                        help="cap on tumour (and as many non-tumour) body pixels per fit case (1000)")
    result.add_argument("--classifiers", nargs="+", choices=CLASSIFIERS, default=list(CLASSIFIERS))
    result.add_argument("-o", "--output", type=Path,
                        help="output folder (default: $nnUNet_results/DatasetXXX/dkm_probe__<plans>__<cfg>/)")
    add_verbose_argument(result)
    return result


def probe(args: argparse.Namespace, command: str) -> Path:
    """Run the probe for parsed arguments; returns the output folder."""
    settings = parse_settings(args.settings)
    dataset = PlannedDataset.load(args.dataset, args.configuration, args.plans)
    checkpoint = probe_checkpoint(dataset, args.checkpoint)
    output = check_writable_folder(args.output if args.output is not None else probe_output_folder(dataset), "-o")
    options = split_options(args, pixels_per_class=args.pixels_per_class, classifiers=tuple(args.classifiers),
                            classifier_settings=ClassifierSettings())
    started = time.perf_counter()
    checkpoints = {"pretrained": checkpoint}
    for objective in args.controls:
        checkpoints[objective] = dataset.existing_dm_checkpoint(ProbeError, objective).path
    result = run_probe(dataset, checkpoints, settings, options=options)
    print(result.split.describe())
    for note in result.notes:
        print(f"note: {note}")
    context = ReportContext(
        title=f"DM feature probe: {dataset.name}, {dataset.configuration}", command=command,
        date=utc_now(), machine=machine_description(args.device),
        dataset=dataset.name, configuration=dataset.configuration, plans=dataset.plans_identifier, seed=args.seed,
        classifier_description=classifier_description(options),
    )
    table = write_results(result, context, ProbeFiles.in_folder(output))
    print(table)
    print(f"probe done in {time.perf_counter() - started:.0f} s: wrote {output / 'results.md'}, results.csv, "
          "results_summary.csv, results_comparisons.csv and probe.png")
    return output


@command_line_entry
def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: -device cuda requested but no CUDA device is available; use -device cpu")
    probe(args, " ".join([PROG, shlex.join(argv)]))


if __name__ == "__main__":
    main()
