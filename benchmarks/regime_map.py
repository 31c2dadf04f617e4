"""Where do the learned kinetics help? A map over label scarcity (N) and how much of the kinetics the pre-contrast
image shows (the phantom's ``--pre-contrast-cue``), on the scarce preset (64x64x12: 32 labelled, 24 test and 240
unlabelled exams, seed 0).

    python benchmarks/regime_map.py --workdir /work/studies/regime --stage curve     # 1. the schedule curve
    python benchmarks/regime_map.py --workdir ... --stage dms                        # 2. one label-free DM per cue
    python benchmarks/regime_map.py --workdir ... --stage probe                      # 3. DM quality + probe per cue
    python benchmarks/regime_map.py --workdir ... --stage segmentation               # 4. the two segmentation points
    python benchmarks/regime_map.py --workdir ... --stage report                     # results_regime_map.md + figure

Every stage reuses what exists, so a stage can be rerun (or run on another core) at any time. Design, fixed before
any segmentation result was seen:
1. schedule: vanilla nnU-Net at N = 4 and N = all (25) on folds 0-2, for the schedules ``CURVE_SCHEDULES``; the
   study schedule is the shortest one at which vanilla's mean Dice at N = 4 lies at least 0.05 below N = all (the
   longest where none does).
2. cue sweep: cues ``CUES``; per cue one label-free DM of each objective (kinetic, pre-only, regression) by the
   ``small`` preset's recipe; the DM-quality measure (test split) and the probe (the trainer's feature setting; rows:
   learned, untrained, pre-only, regression DM, filter bank).
3. segmentation points: the default cue (0.5) and the cue with the largest learned - untrained probe gap on the
   probe's SELECTION split (logistic regression); where that is the default cue, the second largest. At each point:
   N = 4 and N = all, folds 0-2 x 2 repeats, methods vanilla, DKM, untrained-DM, pre-only DM, regression DM and the
   virtual-contrast nnU-Net (``nnUNetv2_dkm_benchmark --num-labelled 4 all --repeats 2``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_CUE = 0.5
CUES = (0.0, 0.5, 1.0, 2.0)
DATASET_IDS = {0.0: 981, 0.5: 980, 1.0: 982, 2.0: 983}
CURVE_SCHEDULES = {"demo": 120, "1epoch": 250, "2epochs": 500, "5epochs": 1250}  # name: iterations
GAP = 0.05
FOLDS = ("0", "1", "2")
REPEATS = 2
OBJECTIVES = ("kinetic", "pre-only", "regression")
METHODS = ("vanilla", "dkm", "untrained-dm", "pre-only-dm", "regression-dm", "virtual-contrast")


def environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({name: str(workdir / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    env.update({"nnUNet_n_proc_DA": "0", "nnUNet_def_n_proc": "1"})
    env.pop("nnUNet_dkm_checkpoint", None)
    return env


def run(command: list[str], workdir: Path, log: Path | None = None) -> None:
    print("$", " ".join(command), flush=True)
    if log is None:
        subprocess.run(command, check=True, env=environment(workdir))
        return
    with open(log, "a") as stream:
        subprocess.run(command, check=True, env=environment(workdir), stdout=stream, stderr=subprocess.STDOUT)


def raw_dataset(workdir: Path, cue: float) -> Path | None:
    found = sorted((workdir / "nnUNet_raw").glob(f"Dataset{DATASET_IDS[cue]:03d}_*"))
    return found[0] if found else None


def prepare(workdir: Path, cue: float) -> None:
    """The scarce phantom at ``cue`` (seed 0) and its 2d plans, unless there."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
    dataset = str(DATASET_IDS[cue])
    if raw_dataset(workdir, cue) is None:
        run([str(BIN / "nnUNetv2_dkm_synthesize"), "-d", dataset, "--preset", "scarce", "--pre-contrast-cue",
             f"{cue:g}"], workdir)
    if not list((workdir / "nnUNet_preprocessed").glob(f"Dataset{dataset}_*/nnUNetPlans.json")):
        run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", dataset, "-c", "2d", "-np", "1", "-npfp", "1"],
            workdir)


# -- 1. schedule ------------------------------------------------------------------------------------------------
def curve_folder(workdir: Path, schedule: str) -> Path:
    return workdir / "curve" / schedule


def stage_curve(workdir: Path) -> None:
    prepare(workdir, DEFAULT_CUE)
    for schedule in CURVE_SCHEDULES:
        if not (curve_folder(workdir, schedule) / "label_efficiency.csv").is_file():
            run([str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET_IDS[DEFAULT_CUE]), "-c", "2d", "-f", *FOLDS,
                 "--num-labelled", "4", "all", "--methods", "vanilla", "--schedule", schedule, "-device", "cpu",
                 "-o", str(curve_folder(workdir, schedule))], workdir)


def curve_table(workdir: Path) -> pd.DataFrame:
    """Vanilla's mean Dice per schedule and N (with the per-run means), from each schedule's overview."""
    rows = []
    for schedule, iterations in CURVE_SCHEDULES.items():
        path = curve_folder(workdir, schedule) / "per_case_label_efficiency.csv"
        if not path.is_file():
            continue
        per_case = pd.read_csv(path, dtype={"num_labelled": str})
        vanilla = per_case[per_case["method"] == "vanilla"]
        for label, of_n in vanilla.groupby("num_labelled"):
            run_means = of_n.groupby([c for c in ("fold", "repeat") if c in of_n.columns])["dice"].mean()
            rows.append({"schedule": schedule, "iterations": iterations, "num_labelled": label,
                         "dice": float(of_n["dice"].mean()), "run_dice": " ".join(f"{v:.3f}" for v in run_means)})
    return pd.DataFrame(rows)


def study_schedule(curve: pd.DataFrame) -> tuple[str, str]:
    """The rule of point 1 of the module docstring; returns (schedule, why)."""
    wide = curve.pivot(index="schedule", columns="num_labelled", values="dice")
    ordered = [s for s in CURVE_SCHEDULES if s in wide.index]
    for schedule in ordered:
        gap = wide.loc[schedule, "all"] - wide.loc[schedule, "4"]
        if gap >= GAP:
            return schedule, f"the shortest schedule with vanilla Dice(N = all) - Dice(N = 4) = {gap:.3f} >= {GAP}"
    return ordered[-1], f"no schedule of the curve reached a gap of {GAP}: the longest one"


# -- 2. DMs per cue --------------------------------------------------------------------------------------------
def dm_file(workdir: Path, cue: float, objective: str) -> Path:
    name = "dm_checkpoint.pt" if objective == "kinetic" else f"dm_checkpoint_{objective}.pt"
    raw = raw_dataset(workdir, cue)
    return workdir / "nnUNet_preprocessed" / raw.name / "dkm" / "2d" / name


def stage_dms(workdir: Path, cues: list[float], objectives: tuple[str, ...]) -> None:
    for cue in cues:
        prepare(workdir, cue)
        for objective in objectives:
            path = dm_file(workdir, cue, objective)
            if path.is_file() and _finished(path):
                continue
            command = [str(BIN / "nnUNetv2_dkm_pretrain"), "-d", str(DATASET_IDS[cue]), "-c", "2d", "--label-free",
                       "--objective", objective]
            if path.is_file():
                command.append("--continue")
            run(command, workdir, workdir / f"dm_{DATASET_IDS[cue]}_{objective}.log")


def _finished(path: Path) -> bool:
    """Whether a DM reached its recipe's step count."""
    from nnunet_dkm.diffusion.checkpoint import load_checkpoint

    metadata = load_checkpoint(path).metadata
    return metadata.get("steps") == (metadata.get("recipe") or {}).get("steps")


# -- 3. DM quality and probe per cue ---------------------------------------------------------------------------
def quality_folder(workdir: Path, cue: float) -> Path:
    return workdir / "quality" / f"cue_{cue:g}"


def probe_folder(workdir: Path, cue: float) -> Path:
    return workdir / "probe" / f"cue_{cue:g}"


def stage_probe(workdir: Path, cues: list[float]) -> None:
    for cue in cues:
        dataset = str(DATASET_IDS[cue])
        if not (quality_folder(workdir, cue) / "results.csv").is_file():
            run([str(BIN / "nnUNetv2_dkm_dm_quality"), "-d", dataset, "-c", "2d", "-o",
                 str(quality_folder(workdir, cue))], workdir)
        if not (probe_folder(workdir, cue) / "results.csv").is_file():
            run([str(BIN / "nnUNetv2_dkm_probe"), "-d", dataset, "-c", "2d", "--controls", "pre-only", "regression",
                 "-o", str(probe_folder(workdir, cue))], workdir)


def probe_gaps(workdir: Path) -> pd.DataFrame:
    """Per cue, the logistic-regression probe's selection and test Dice of every row at the trainer's setting, and
    learned - untrained on both splits."""
    rows = []
    for cue in CUES:
        path = probe_folder(workdir, cue) / "summary.csv"
        if not path.is_file():
            continue
        summary = pd.read_csv(path)
        logistic = summary[summary["classifier"] == "logistic"].set_index("kind")
        entry = {"cue": cue}
        for kind in logistic.index:
            entry[f"{kind}_selection"] = float(logistic.loc[kind, "selection_dice"])
            entry[f"{kind}_test"] = float(logistic.loc[kind, "dice_mean"])
        rows.append(entry)
    return pd.DataFrame(rows)


def segmentation_cues(gaps: pd.DataFrame) -> list[float]:
    """The rule of point 3 of the module docstring."""
    gap = (gaps.set_index("cue")["dm_selection"] - gaps.set_index("cue")["untrained_dm_selection"])
    ranked = [cue for cue in gap.sort_values(ascending=False).index if cue != DEFAULT_CUE]
    return [DEFAULT_CUE, ranked[0]]


# -- 4. segmentation -------------------------------------------------------------------------------------------
def segmentation_folder(workdir: Path, cue: float) -> Path:
    return workdir / "segmentation" / f"cue_{cue:g}"


def stage_segmentation(workdir: Path, schedule: str, cues: list[float]) -> None:
    for cue in cues:
        if (segmentation_folder(workdir, cue) / "label_efficiency.csv").is_file():
            continue
        run([str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET_IDS[cue]), "-c", "2d", "-f", *FOLDS,
             "--num-labelled", "4", "all", "--repeats", str(REPEATS), "--methods", *METHODS, "--schedule", schedule,
             "-device", "cpu", "-o", str(segmentation_folder(workdir, cue))], workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--stage", required=True, choices=("curve", "dms", "probe", "segmentation", "report"))
    parser.add_argument("--cues", type=float, nargs="+", default=list(CUES), help="stages dms and probe")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES, help="stage dms")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if args.stage == "curve":
        stage_curve(workdir)
    elif args.stage == "dms":
        stage_dms(workdir, args.cues, tuple(args.objectives))
    elif args.stage == "probe":
        stage_probe(workdir, args.cues)
    elif args.stage == "segmentation":
        schedule, why = study_schedule(curve_table(workdir))
        cues = segmentation_cues(probe_gaps(workdir))
        print(f"schedule {schedule} ({why}); cues {cues}")
        stage_segmentation(workdir, schedule, cues)
    else:
        report(workdir)


def report(workdir: Path) -> None:
    raise SystemExit("the report stage is written once the study's outputs exist")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
