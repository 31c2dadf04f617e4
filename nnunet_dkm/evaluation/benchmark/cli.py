"""``nnUNetv2_dkm_benchmark``: DKM against vanilla nnU-Net on one split, with controls, ceilings and baselines.

    nnUNetv2_dkm_benchmark -d 990 -c 2d -f 0 1 2            # full nnU-Net schedules (GPU)
    nnUNetv2_dkm_benchmark -d 990 -c 2d -f 0 1 --schedule demo -device cpu
    nnUNetv2_dkm_benchmark -d 990 -c 2d -f 0 --ablation     # + the paper's Table 2 over DM feature levels
    nnUNetv2_dkm_benchmark -d 990 -c 2d -f 0 1 --repeats 3 --methods vanilla dkm untrained-dm pre-only-dm

Methods (``methods.py``, chosen by ``--methods``), all evaluated on the same cases (the test split
``imagesTs/labelsTs``; without one, each fold's validation cases): vanilla nnU-Net, DKM, the untrained-DM, pre-only-DM
and regression-DM controls, the virtual-contrast nnU-Net, optional DM-level ablations, the post-contrast ceilings and
pre-contrast baselines without a network; ``--repeats`` trains every network R times per fold. Stages
(``stages.py``): train what is missing, predict, apply the rules, score. Verdicts over training runs
(``run_statistics.py``) and outputs (``outputs.py``): ``results.md``, ``per_case.csv``, ``summary.csv``, ``runs.csv``,
``run_level.csv``, ``paired.csv``, ``dice_bars.png`` and ``overlays.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import textwrap
from pathlib import Path

import pandas as pd
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_dkm.atomic import remove_stale_temporaries, report_removed
from nnunet_dkm.cli_types import fraction, non_negative_int, positive_int
from nnunet_dkm.command_line import add_device_argument, add_verbose_argument, check_writable_folder, command_line_entry
from nnunet_dkm.diffusion.checkpoint import load_checkpoint
from nnunet_dkm.evaluation.benchmark.cases import (
    BenchmarkError,
    evaluation_cases,
    has_test_split,
    load_splits,
)
from nnunet_dkm.evaluation.benchmark.label_subsets import label_runs, parse_num_labelled
from nnunet_dkm.evaluation.benchmark.methods import (
    DEFAULT_ABLATION,
    DEFAULT_METHODS,
    METHOD_CHOICES,
    METHOD_QUESTIONS,
    SCHEDULE_CHOICES,
    SYNTHESIS_DDIM_STEPS,
    SYNTHESIS_ETA,
    Method,
    TrainerChoice,
    plan_methods,
)
from nnunet_dkm.evaluation.benchmark.outputs import write_label_runs, write_outputs
from nnunet_dkm.evaluation.benchmark.recording import BenchmarkRecords
from nnunet_dkm.evaluation.benchmark.report import BenchmarkContext
from nnunet_dkm.evaluation.benchmark.stages import (
    RunKey,
    ensure_planned,
    model_of,
    network_runs,
    predict_run,
    rule_baselines,
    score,
    stage,
    train_run,
)
from nnunet_dkm.evaluation.oracle import copy_split_file, make_oracle_dataset
from nnunet_dkm.evaluation.virtual_contrast import SynthesisRecipe, make_virtual_contrast_dataset
from nnunet_dkm.fingerprints import file_sha256
from nnunet_dkm.paths import (
    DatasetLocationError,
    dataset_folder,
    existing_dm_checkpoint,
    nnunet_folder,
    pretrain_command,
    unfinished_dm_message,
)
from nnunet_dkm.reporting import machine_description
from nnunet_dkm.training.lookup import check_trainer_names

# the option that names each network row's trainer (the ablation rows' names come from --ablation)
TRAINER_OPTIONS = {"vanilla": "--vanilla-trainer", "dkm": "--dkm-trainer", "untrained_dm_control": "--control-trainer",
                   "oracle_post_contrast": "--oracle-trainer", "virtual_contrast": "--vanilla-trainer",
                   "pre_only_dm_control": "--schedule (pre-only DM)",
                   "regression_dm_control": "--schedule (regression DM)"}


def locate(args: argparse.Namespace) -> tuple[Path, Path]:
    """(raw, preprocessed) folders of the dataset; errors name the command that makes what is missing."""
    raw = dataset_folder("nnUNet_raw", args.dataset)
    plan_first = f"run `nnUNetv2_plan_and_preprocess -d {args.dataset} -c {args.configuration}` first"
    try:
        preprocessed = dataset_folder("nnUNet_preprocessed", args.dataset)
    except DatasetLocationError as error:
        raise BenchmarkError(f"{error}: {plan_first}") from error
    if not (preprocessed / f"{args.plans}.json").is_file():
        raise BenchmarkError(f"{preprocessed / (args.plans + '.json')} not found: {plan_first}")
    return raw, preprocessed


def preprocessed_data_identifier(args: argparse.Namespace, preprocessed: Path) -> str:
    """The configuration's preprocessed data folder name; refuses a configuration that the plans lack or that was not
    preprocessed, before anything trains (nnUNetv2_train would fail on it after the first models)."""
    plans = PlansManager(str(preprocessed / f"{args.plans}.json"))
    available = ", ".join(plans.available_configurations)
    if args.configuration not in plans.available_configurations:
        raise BenchmarkError(f"-c {args.configuration}: not a configuration of {preprocessed / args.plans}.json "
                             f"(it has {available})")
    data_identifier = plans.get_configuration(args.configuration).data_identifier
    if not (preprocessed / data_identifier).is_dir():
        raise BenchmarkError(f"-c {args.configuration}: {preprocessed / data_identifier} is missing; run "
                             f"`nnUNetv2_plan_and_preprocess -d {args.dataset} -c {args.configuration}` first")
    return data_identifier


def checked_dms(args: argparse.Namespace, raw: Path, preprocessed: Path, methods: list[Method]) -> dict[str, dict]:
    """Per DM objective the methods need, its checkpoint's metadata; refuses a missing DM, and for
    ``--num-labelled`` a DM pretrained with tumour labels (DKM would then see more labels than N). Checked before
    anything trains."""
    found = {}
    for objective in dict.fromkeys(m.dm_objective for m in methods if m.uses_dm):
        location = existing_dm_checkpoint(preprocessed, raw.name, args.configuration, args.plans, objective,
                                          BenchmarkError, " --label-free" if args.num_labelled else "")
        checkpoint = load_checkpoint(location.path)
        metadata = checkpoint.metadata
        if args.num_labelled and not metadata.get("label_free") and not args.allow_labelled_dm:
            raise BenchmarkError(
                f"--num-labelled: the DM at {location.describe()} was pretrained with tumour labels (patches centred "
                f"on the training cases' tumours), so DKM would see more labels than N. Pretrain a label-free DM: "
                f"{pretrain_command(raw.name, args.configuration, args.plans, objective)} --label-free (with "
                f"--overwrite to replace this one, or export nnUNet_dkm_checkpoint=<file> to keep both), or pass "
                f"--allow-labelled-dm"
            )
        if checkpoint.stopped_early and not args.allow_unfinished_dm:
            raise BenchmarkError(unfinished_dm_message(location, raw.name, args.configuration,
                                                       checkpoint.pretraining_steps(), args.plans, objective)
                                 + ", or pass --allow-unfinished-dm to benchmark it as it is")
        found[objective] = {**metadata, "target": checkpoint.config.target, "path": str(location.path),
                            "steps_description": checkpoint.steps_description()}
    return found


def dm_note(objective: str, metadata: dict) -> str:
    """How one of the benchmark's DMs was pretrained, from its checkpoint."""
    labels = "label-free (patches centred by enhancement, never by a tumour label)" if metadata.get("label_free") \
        else "patches centred on the training cases' tumours and on enhancement"
    return (f"{objective} DM ({metadata['path']}): {metadata.get('preset', '?')} preset, "
            f"{metadata['steps_description']}, target {metadata.get('target', '?')}, {labels}; "
            f"{len(metadata.get('train_exams', []))} training exams")


def companion_datasets(args: argparse.Namespace, raw: Path, preprocessed: Path, methods: list[Method],
                       dms: dict[str, dict], notes: list[str]) -> dict[str | None, Path]:
    """The raw datasets the network rows train on: the benchmarked one (key None) and the companions the methods
    need (made where missing, planned, and given the benchmarked dataset's split file). ``methods``: those with a
    run still to make (a companion whose runs are all recorded is not made)."""
    datasets: dict[str | None, Path] = {None: raw}
    needed = {m.companion for m in methods if m.companion}
    if "oracle" in needed:
        datasets["oracle"] = make_oracle_dataset(raw, args.oracle_id, args.post_phase)
        notes.append(f"post-contrast oracle dataset: {datasets['oracle'].name} (made by this benchmark)")
    if "virtual-contrast" in needed:
        recipe = SynthesisRecipe(dms["kinetic"]["path"], file_sha256(Path(dms["kinetic"]["path"])),
                                 args.configuration, args.synthesis_ddim_steps, args.synthesis_eta)
        datasets["virtual-contrast"], seconds = make_virtual_contrast_dataset(
            raw, preprocessed, recipe, args.plans, args.device, args.virtual_contrast_id)
        cases = len(list((datasets["virtual-contrast"] / "imagesTr").glob("*_0001*"))) + \
            len(list((datasets["virtual-contrast"] / "imagesTs").glob("*_0001*")))
        notes.append(f"virtual-contrast dataset: {datasets['virtual-contrast'].name}: synthetic post-contrast phase "
                     f"1 from the pre-contrast image alone (DDIM {args.synthesis_ddim_steps} steps, eta "
                     f"{args.synthesis_eta:g}) for {cases} cases in {seconds:.0f} s ({seconds / max(cases, 1):.1f} "
                     f"s per case, {args.device})")
    for name, folder in datasets.items():
        if name is not None:
            print(f"{name} dataset: {folder}", flush=True)
            copy_split_file(preprocessed, ensure_planned(folder, args.configuration, args.plans))
    return datasets


def run_benchmark(args: argparse.Namespace) -> Path:
    raw, preprocessed = locate(args)
    data_identifier = preprocessed_data_identifier(args, preprocessed)
    info = json.loads((raw / "dataset.json").read_text())
    file_ending = info["file_ending"]
    label_source = info.get("dkm", {}).get("label_source", "unknown")
    trainers = TrainerChoice(args.schedule, args.vanilla_trainer, args.dkm_trainer, args.control_trainer,
                             args.oracle_trainer)
    methods = plan_methods(trainers, args.post_phase, tuple(args.methods), tuple(args.ablation or ()))
    check_trainer_names({TRAINER_OPTIONS.get(m.info.key, f"--ablation ({m.info.label})"): m.trainer
                         for m in methods if m.trainer})
    dms = checked_dms(args, raw, preprocessed, methods)
    output = Path(args.output) if args.output else (
        nnunet_folder("nnUNet_results") / raw.name / f"dkm_benchmark__{args.plans}__{args.configuration}")
    check_writable_folder(output, "-o")
    runs = label_runs(preprocessed, data_identifier, args.folds, args.num_labelled or [None])
    folds = list(dict.fromkeys(run.nnunet_fold for run in runs))
    splits = load_splits(preprocessed)
    split_text, cases = evaluation_cases(raw, splits, folds, file_ending, args.post_phase)  # inputs, before training
    output.mkdir(parents=True, exist_ok=True)
    report_removed(remove_stale_temporaries(output), "partly written file")
    notes: list[str] = []

    records = None
    recorded: frozenset = frozenset()
    if args.records:
        records = BenchmarkRecords.plan(Path(args.records), methods, runs, args.repeats, raw, preprocessed,
                                        args.configuration, args.plans, args.schedule,
                                        {objective: found["path"] for objective, found in dms.items()})
        recorded = records.recorded()
        print(f"records: {args.records}: {len(recorded)} of {len(records.identities)} network runs recorded "
              f"(neither trained nor predicted again)", flush=True)
    runs_to_make = network_runs(methods, folds, args.repeats, recorded)
    to_make = list(dict.fromkeys(method for method, _, _ in runs_to_make))

    stage(f"1/3 network runs: {len(runs_to_make)} to make ({args.repeats} repeat(s) of {len(folds)} fold(s)), each "
          f"trained where missing, predicted and scored before the next")
    datasets = companion_datasets(args, raw, preprocessed, to_make, dms, notes)
    test_split = has_test_split(raw, file_ending)
    scored = [records.recorded_per_case()] if records is not None else []  # read before this call's records join
    predictions: dict[RunKey, Path] = {}
    for method, fold, repeat in runs_to_make:
        key = (method.info.key, fold, repeat)
        model = model_of(method, fold, repeat, datasets, args.plans, args.configuration)
        seconds = train_run(model, args.device)
        predictions[key] = predict_run(method, model, repeat, cases[fold], datasets[method.companion] / "imagesTs",
                                       args.device, output, test_split, file_ending)
        scored.append(score({fold: cases[fold]}, {key: predictions[key]}, file_ending))
        if records is not None:
            for path in records.write_new(scored[-1], {key: seconds}, args.device):
                print(f"record written: {path}", flush=True)
    stage("2/3 baselines without a network")
    if "baselines" in args.methods:
        rules = rule_baselines(cases, {fold: splits[fold]["train"] for fold in folds}, raw, output, file_ending)
        scored.append(score(cases, rules, file_ending))
        predictions.update(rules)
    per_case = pd.concat(scored, ignore_index=True) if scored else pd.DataFrame()

    stage("3/3 tables and figures")
    context = BenchmarkContext(
        dataset=raw.name, label_source=label_source, configuration=args.configuration, plans=args.plans,
        split=split_text, folds=args.folds, command=args.command,
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), machine=machine_description(args.device),
        repeats=args.repeats, notes=notes, dms=[dm_note(objective, metadata) for objective, metadata in dms.items()],
    )
    if "threshold" in label_source.lower() or "ftv" in label_source.lower() or label_source == "synthetic":
        context.notes.append("the labels are (or follow) a post-contrast threshold rule, so methods that see the "
                             "post-contrast phase score near 1 by construction")
    infos = [m.info for m in methods]
    if args.num_labelled:
        text = write_label_runs(output, context, infos, runs, per_case, cases, predictions, file_ending,
                                args.overlays)
    else:
        text = write_outputs(output, context, infos, per_case, cases, predictions, file_ending, args.overlays)
    print(text)
    print(f"written to {output}")
    return output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="nnUNetv2_dkm_benchmark",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill(
            "Benchmark DKM against vanilla nnU-Net on the pre-contrast image, with the untrained-DM control, the "
            "post-contrast ceiling and baselines without a network. Trains missing models with nnUNetv2_train, "
            "reuses existing ones.", 100),
        epilog="what each --methods row answers:\n" + "\n".join(
            textwrap.fill(question, 100, initial_indent=f"  {name:17}", subsequent_indent=" " * 19)
            for name, question in METHOD_QUESTIONS.items()),
    )
    parser.add_argument("-d", "--dataset", type=int, required=True, help="dataset id, e.g. 990")
    parser.add_argument("-c", "--configuration", default="2d", help="nnU-Net configuration (2d)")
    parser.add_argument("-f", "--folds", type=non_negative_int, nargs="+", default=[0],
                        help="folds to train and evaluate; several folds give paired statistics that include "
                             "training noise (default 0)")
    parser.add_argument("-p", "--plans", default="nnUNetPlans", help="plans identifier (default nnUNetPlans)")
    parser.add_argument("--schedule", choices=SCHEDULE_CHOICES, default="full",
                        help="append _<schedule> to every default trainer name: nnU-Net's full schedule (default), "
                             "or a short one (debug 2x4, demo 10x12 iterations; 1epoch, 2epochs, 5epochs, 10epochs, "
                             "20epochs, 50epochs of 250 iterations each, nnU-Net's own vanilla classes of those "
                             "names where it has them)")
    parser.add_argument("--vanilla-trainer", default=None, help="vanilla trainer (default nnUNetTrainer)")
    parser.add_argument("--dkm-trainer", default=None, help="DKM trainer (default nnUNetTrainerDKM)")
    parser.add_argument("--control-trainer", default=None,
                        help="untrained-DM control (default nnUNetTrainerDKM_untrainedDM)")
    parser.add_argument("--oracle-trainer", default=None, help="trainer of the post-contrast oracle (nnUNetTrainer)")
    parser.add_argument("--ablation", nargs="*", default=None, metavar="LEVELS",
                        help="also DKM with these DM feature levels, e.g. 1 2 3 4 1234 (no value: those five)")
    parser.add_argument("--methods", nargs="+", choices=METHOD_CHOICES, default=list(DEFAULT_METHODS),
                        metavar="METHOD",
                        help=f"the rows to make: {', '.join(METHOD_CHOICES)} (default: {' '.join(DEFAULT_METHODS)}; "
                             f"baselines = the rules without a network: body mask, intensity window, label rule)")
    parser.add_argument("--repeats", type=positive_int, default=1,
                        help="train every network method R times per fold, as independent runs (repeat 0 in "
                             "$nnUNet_results, repeat r in $nnUNet_results/<dataset>/dkm_benchmark_repeats/repeat_r; "
                             "reused when present); method comparisons are judged over runs (folds x repeats)")
    parser.add_argument("--synthesis-ddim-steps", type=positive_int, default=SYNTHESIS_DDIM_STEPS,
                        help=f"virtual-contrast: DDIM steps of the synthetic post-contrast image (default "
                             f"{SYNTHESIS_DDIM_STEPS}, chosen on training cases: benchmarks/results_dm_recipe.md)")
    parser.add_argument("--synthesis-eta", type=fraction, default=SYNTHESIS_ETA,
                        help=f"virtual-contrast: DDIM eta (default {SYNTHESIS_ETA:g})")
    parser.add_argument("--virtual-contrast-id", type=positive_int, default=None,
                        help="dataset id of the virtual-contrast companion (default: reuse one, else the highest "
                             "free id)")
    parser.add_argument("--oracle-id", type=positive_int, default=None,
                        help="dataset id of the oracle companion (default: reuse one, else the highest free id)")
    parser.add_argument("--post-phase", type=positive_int, default=1,
                        help="post-contrast phase of the ceiling (default 1)")
    parser.add_argument("--overlays", type=positive_int, default=3, help="cases shown in overlays.png (default 3)")
    parser.add_argument("--num-labelled", nargs="+", default=None, metavar="N",
                        help="label efficiency: train every method on N labelled cases of each fold's training split "
                             "(nested subsets, appended to splits_final.json as extra folds), e.g. 4 8 16 all; needs "
                             "a DM pretrained with --label-free")
    parser.add_argument("--allow-labelled-dm", action="store_true",
                        help="with --num-labelled, accept a DM that was pretrained with tumour labels")
    parser.add_argument("--allow-unfinished-dm", action="store_true",
                        help="accept a DM whose pretraining stopped before its recipe's steps (interrupted, or "
                             "--max-minutes)")
    parser.add_argument("--records", default=None, metavar="FOLDER",
                        help="study records: write one JSON record per finished network run (what ran, its per-case "
                             "scores, wall time, machine, commit) into FOLDER, and neither train nor predict a run "
                             "whose record is there already, so a benchmark resumes on any machine from its records")
    parser.add_argument("-o", "--output", default=None,
                        help="output folder (default $nnUNet_results/DatasetXXX/dkm_benchmark__<plans>__<cfg>)")
    add_device_argument(parser, "device for training and prediction")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if args.ablation is not None and not args.ablation:
        args.ablation = list(DEFAULT_ABLATION)
    for levels in args.ablation or ():
        if not levels or any(c not in "1234" for c in levels) or sorted(set(levels)) != list(levels):
            parser.error(f"--ablation {levels!r}: give increasing DM levels from 1 to 4, e.g. 1 34 1234")
    if args.num_labelled is not None:
        try:
            args.num_labelled = parse_num_labelled(args.num_labelled)
        except ValueError as error:
            parser.error(str(error))
    args.command = shlex.join(["nnUNetv2_dkm_benchmark", *(sys.argv[1:] if argv is None else argv)])
    return args


@command_line_entry
def main(argv: list[str]) -> None:
    run_benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
