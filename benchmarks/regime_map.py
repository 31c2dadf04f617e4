"""Where do the learned kinetics help? A map over label scarcity (N) and how much of the kinetics the pre-contrast
image shows (the phantom's ``--pre-contrast-cue``), on the scarce preset (64x64x12: 32 labelled, 24 test and 240
unlabelled exams, seed 0).

    python benchmarks/regime_map.py --workdir /work/studies/regime --stage curve     # 1. the schedule curve
    python benchmarks/regime_map.py --workdir ... --stage dms                        # 2. one label-free DM per cue
    python benchmarks/regime_map.py --workdir ... --stage probe                      # 3. DM quality + probe per cue
    python benchmarks/regime_map.py --workdir ... --stage segmentation               # 4. the two segmentation points
                                                                                     #    (phase A; see below)
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

Compute plan, amended on 2026-12-05 before any segmentation result of this study was seen (measured on this 2-core
VM: an 8000-step DM takes about 2.3 h on one core, a ``1epoch`` training about 11 min; the full design is about 53
core-hours):
- DMs: the kinetic DM at every cue (the probe rule needs it); the pre-only and regression DMs only at the
  segmentation points (``--stage dms --cues C --objectives pre-only regression``). The probe reports the control
  rows where their DMs exist.
- Segmentation in two phases per point. Phase A (``--methods`` default): vanilla, DKM and the untrained-DM control,
  36 trainings. Phase B, at a point where phase A shows DKM - control >= +0.03 with its run-level interval above 0:
  the pre-only and regression DM controls and virtual contrast (they say whether the kinetics or the diffusion
  training carry the gain). ``--stage segmentation --cues 0.5`` runs the default point before the probe exists.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from nnunet_dkm.evaluation.benchmark.stages import ensure_planned
from nnunet_dkm.evaluation.nnunet_runs import run_command, use_workdir

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
PHASE_A = METHODS[:3]
# every training run finished from now on writes its study record here (nnUNetv2_dkm_benchmark --records); the
# results committed before records existed stay as they are
RECORDS = REPO / "benchmarks" / "records" / "regime"


def raw_dataset(workdir: Path, cue: float) -> Path | None:
    found = sorted((workdir / "nnUNet_raw").glob(f"Dataset{DATASET_IDS[cue]:03d}_*"))
    return found[0] if found else None


def prepare(workdir: Path, cue: float) -> None:
    """The scarce phantom at ``cue`` (seed 0) and its 2d plans, unless there."""
    if raw_dataset(workdir, cue) is None:
        run_command([str(BIN / "nnUNetv2_dkm_synthesize"), "-d", str(DATASET_IDS[cue]), "--preset", "scarce",
                     "--pre-contrast-cue", f"{cue:g}"])
    ensure_planned(raw_dataset(workdir, cue), "2d", "nnUNetPlans")


# -- 1. schedule ------------------------------------------------------------------------------------------------
def curve_folder(workdir: Path, schedule: str) -> Path:
    return workdir / "curve" / schedule


def stage_curve(workdir: Path) -> None:
    prepare(workdir, DEFAULT_CUE)
    for schedule in CURVE_SCHEDULES:
        if not (curve_folder(workdir, schedule) / "label_efficiency.csv").is_file():
            run_command([str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET_IDS[DEFAULT_CUE]), "-c", "2d", "-f",
                         *FOLDS, "--num-labelled", "4", "all", "--methods", "vanilla", "--schedule", schedule,
                         "-device", "cpu", "-o", str(curve_folder(workdir, schedule)), "--records", str(RECORDS)])


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
    from nnunet_dkm.paths import dm_checkpoint_location

    return dm_checkpoint_location(workdir / "nnUNet_preprocessed" / raw_dataset(workdir, cue).name, "2d",
                                  objective).path


def stage_dms(workdir: Path, cues: list[float], objectives: tuple[str, ...]) -> None:
    for cue in cues:
        prepare(workdir, cue)
        for objective in objectives:
            if dm_finished(workdir, cue, objective):
                continue
            command = [str(BIN / "nnUNetv2_dkm_pretrain"), "-d", str(DATASET_IDS[cue]), "-c", "2d", "--label-free",
                       "--objective", objective]
            if dm_file(workdir, cue, objective).is_file():
                command.append("--continue")
            run_command(command)


def dm_finished(workdir: Path, cue: float, objective: str) -> bool:
    """Whether the DM exists and reached its recipe's step count."""
    from nnunet_dkm.diffusion.checkpoint import load_checkpoint

    if raw_dataset(workdir, cue) is None or not dm_file(workdir, cue, objective).is_file():
        return False
    checkpoint = load_checkpoint(dm_file(workdir, cue, objective))
    return checkpoint.pretraining_steps() is not None and not checkpoint.stopped_early


# -- 3. DM quality and probe per cue ---------------------------------------------------------------------------
def quality_folder(workdir: Path, cue: float) -> Path:
    return workdir / "quality" / f"cue_{cue:g}"


def probe_folder(workdir: Path, cue: float) -> Path:
    return workdir / "probe" / f"cue_{cue:g}"


def stage_probe(workdir: Path, cues: list[float]) -> None:
    """DM quality and the probe per cue with a finished kinetic DM; the probe's control rows are the pre-only and
    regression DMs that are finished, and it runs again when one more has finished since."""
    for cue in cues:
        if not dm_finished(workdir, cue, "kinetic"):
            print(f"cue {cue:g}: its kinetic DM is not finished (`--stage dms`); no probe")
            continue
        dataset = str(DATASET_IDS[cue])
        if not (quality_folder(workdir, cue) / "results.csv").is_file():
            run_command([str(BIN / "nnUNetv2_dkm_dm_quality"), "-d", dataset, "-c", "2d", "-o",
                         str(quality_folder(workdir, cue))])
        controls = [o for o in OBJECTIVES[1:] if dm_finished(workdir, cue, o)]
        results = probe_folder(workdir, cue) / "results.csv"
        if not results.is_file() or not set(controls) <= set(pd.read_csv(results)["model"]):
            run_command([str(BIN / "nnUNetv2_dkm_probe"), "-d", dataset, "-c", "2d",
                         *(["--controls", *controls] if controls else []), "-o", str(probe_folder(workdir, cue))])


def probe_gaps(workdir: Path) -> pd.DataFrame:
    """Per cue, the logistic-regression probe's selection and test Dice of every row at the trainer's setting
    (columns ``<row>_selection``, ``<row>_test``; rows: pretrained, untrained, pre-only, regression, filter_bank,
    intensity, ceiling)."""
    rows = []
    for cue in CUES:
        path = probe_folder(workdir, cue) / "results_summary.csv"
        if not path.is_file():
            continue
        summary = pd.read_csv(path)
        logistic = summary[summary["classifier"] == "logistic"]
        entry = {"cue": cue}
        for name, row in zip(logistic["model"].fillna(logistic["kind"]), logistic.itertuples(), strict=True):
            entry[f"{name}_selection"], entry[f"{name}_test"] = float(row.selection_dice), float(row.dice_mean)
        rows.append(entry)
    return pd.DataFrame(rows)


def unprobed_cues(gaps: pd.DataFrame) -> str:
    """Why the second point cannot be fixed yet ("" once every cue of the sweep has a probe)."""
    unprobed = [f"{c:g}" for c in CUES if not len(gaps) or c not in set(gaps["cue"])]
    return (f"the second segmentation point is chosen over all cues {[f'{c:g}' for c in CUES]}; cue(s) "
            f"{', '.join(unprobed)} have no probe yet (`--stage dms`, then `--stage probe`)") if unprobed else ""


def segmentation_cues(gaps: pd.DataFrame) -> list[float]:
    """The rule of point 3 of the module docstring, over the whole sweep: it refuses while a cue has no probe (a
    partial sweep would fix the second point on the cues that happened to finish first)."""
    if unprobed_cues(gaps):
        raise SystemExit(unprobed_cues(gaps))
    gap = gaps.set_index("cue")["pretrained_selection"] - gaps.set_index("cue")["untrained_selection"]
    ranked = [cue for cue in gap.sort_values(ascending=False).index if cue != DEFAULT_CUE]
    return [DEFAULT_CUE, ranked[0]]


# -- 4. segmentation -------------------------------------------------------------------------------------------
def segmentation_folder(workdir: Path, cue: float) -> Path:
    return workdir / "segmentation" / f"cue_{cue:g}"


def stage_segmentation(workdir: Path, schedule: str, cues: list[float], methods: list[str]) -> None:
    """The benchmark at each cue: N = 4 and N = all, ``FOLDS`` x ``REPEATS``; it resumes trainings and reuses
    finished ones, so a later call with more methods adds only their trainings."""
    for cue in cues:
        run_command([str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET_IDS[cue]), "-c", "2d", "-f", *FOLDS,
                     "--num-labelled", "4", "all", "--repeats", str(REPEATS), "--methods", *methods,
                     "--schedule", schedule, "-device", "cpu", "-o", str(segmentation_folder(workdir, cue)),
                     "--records", str(RECORDS)])


def cues_to_segment(workdir: Path, requested: list[float] | None) -> list[float]:
    """The design's points (point 3 of the module docstring); ``requested`` may run a subset of them, e.g. the
    default cue, which needs no probe, before the other cues' DMs exist."""
    if requested == [DEFAULT_CUE]:
        return requested
    points = segmentation_cues(probe_gaps(workdir))
    if requested is None:
        return points
    outside = [c for c in requested if c not in points]
    if outside:
        raise SystemExit(f"cue(s) {outside} are not segmentation points of the design: {points}")
    return requested


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--stage", required=True, choices=("curve", "dms", "probe", "segmentation", "report"))
    parser.add_argument("--cues", type=float, nargs="+", help="stages dms and probe: default all; stage "
                        "segmentation: default the design's two points")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES, help="stage dms")
    parser.add_argument("--methods", nargs="+", default=list(PHASE_A), choices=METHODS,
                        help="stage segmentation (phase B adds pre-only-dm regression-dm virtual-contrast)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_regime_map.md",
                        help="stage report")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    use_workdir(workdir)
    if args.stage == "curve":
        stage_curve(workdir)
    elif args.stage == "dms":
        stage_dms(workdir, args.cues or list(CUES), tuple(args.objectives))
    elif args.stage == "probe":
        stage_probe(workdir, args.cues or list(CUES))
    elif args.stage == "segmentation":
        schedule, why = study_schedule(curve_table(workdir))
        cues = cues_to_segment(workdir, args.cues)
        print(f"schedule {schedule} ({why}); cues {cues}; methods {args.methods}")
        stage_segmentation(workdir, schedule, cues, args.methods)
    else:
        report(workdir, args.output)


# -- 5. report -------------------------------------------------------------------------------------------------
def curve_gaps(workdir: Path) -> pd.DataFrame:
    """Per schedule: vanilla's run means at N = 4 and N = all, and Dice(all) - Dice(4) per fold with its 95 %
    t-interval over folds (paired by fold and repeat)."""
    from nnunet_dkm.evaluation.run_statistics import run_means, t_interval

    rows = []
    for schedule, iterations in CURVE_SCHEDULES.items():
        path = curve_folder(workdir, schedule) / "per_case_label_efficiency.csv"
        if not path.is_file():
            continue
        per_case = pd.read_csv(path, dtype={"num_labelled": str})
        means = run_means(per_case[per_case["method"] == "vanilla"])
        means = means.pivot_table(index=[c for c in ("fold", "repeat") if c in means.columns],
                                  columns="num_labelled", values="dice")
        gaps = (means["all"] - means["4"]).to_numpy()
        low, high = t_interval(gaps)
        rows.append({"schedule": schedule, "iterations": iterations, "runs": len(gaps),
                     "dice_n4": float(means["4"].mean()), "dice_all": float(means["all"].mean()),
                     "gap": float(gaps.mean()), "gap_low": low, "gap_high": high,
                     "run_gaps": " ".join(f"{g:+.3f}" for g in gaps)})
    return pd.DataFrame(rows)


def cue_rows(workdir: Path, gaps: pd.DataFrame) -> pd.DataFrame:
    """Per cue with outputs: the DM's phase-1 MAE relative to the pre-contrast image (tumour: synthetic and linear
    map; breast: synthetic), the learned DM's logistic probe Dice, and its learned - untrained / pre-only /
    regression / filter-bank differences with their case intervals; ``gaps``: ``probe_gaps``."""
    rows = []
    learned_dice = gaps.set_index("cue")["pretrained_test"] if len(gaps) else {}
    for cue in CUES:
        quality = quality_folder(workdir, cue) / "results.csv"
        comparisons = probe_folder(workdir, cue) / "results_comparisons.csv"
        if not (quality.is_file() and comparisons.is_file()):
            continue
        scores = pd.read_csv(quality).set_index(["phase", "region", "estimate"])["mae_vs_identity"]
        compared = pd.read_csv(comparisons)
        compared = compared[(compared["model"] == "pretrained") & (compared["classifier"] == "logistic")]
        for row in compared.itertuples():
            rows.append({"cue": cue, "tumour": float(scores[1, "tumour", "synthetic"]),
                         "tumour_linear": float(scores[1, "tumour", "linear"]),
                         "breast": float(scores[1, "breast", "synthetic"]), "learned_dice": learned_dice[cue],
                         "minus": row.reference, "cases": row.cases, "difference": row.mean_difference,
                         "low": row.interval_low, "high": row.interval_high})
    return pd.DataFrame(rows)


SEGMENTATION_REFERENCES = ("untrained_dm_control", "vanilla", "pre_only_dm_control", "regression_dm_control",
                          "virtual_contrast")  # the benchmark's method keys, control first


def segmentation_per_case(workdir: Path) -> dict[float, pd.DataFrame]:
    """Per segmentation point that has outputs: the benchmark's per-case table."""
    paths = {cue: segmentation_folder(workdir, cue) / "per_case_label_efficiency.csv" for cue in CUES}
    return {cue: pd.read_csv(path, dtype={"num_labelled": str}) for cue, path in paths.items() if path.is_file()}


def training_minutes(workdir: Path, cue: float, schedule: str) -> pd.DataFrame:
    """Per finished nnU-Net training of ``schedule`` at ``cue`` (any repeat): its trainer and its wall time in
    minutes, from the first to the last timestamp of its ``training_log_*.txt`` (interrupted attempts, whose logs
    end without "Training done", are left out)."""
    rows = []
    for log in sorted((workdir / "nnUNet_results").glob(f"**/Dataset{DATASET_IDS[cue]:03d}_*/*_{schedule}__*/fold_*/"
                                                           "training_log_*.txt")):
        text = log.read_text()
        stamps = pd.to_datetime(pd.Series(text.splitlines()).str.extract(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+):")[0]
                                .dropna())
        if "Training done" in text and len(stamps):
            rows.append({"trainer": log.parent.parent.name.split("__")[0],
                         "minutes": (stamps.iloc[-1] - stamps.iloc[0]).total_seconds() / 60})
    return pd.DataFrame(rows, columns=["trainer", "minutes"])


def segmentation_rows(per_case: dict[float, pd.DataFrame]) -> pd.DataFrame:
    """Per segmentation point, N and reference: DKM - reference over training runs (the benchmark's own overview
    statistic, ``dkm_against``)."""
    from nnunet_dkm.evaluation.benchmark.label_efficiency import dkm_against

    tables = [dkm_against(table, reference).assign(cue=cue) for cue, table in per_case.items()
              for reference in SEGMENTATION_REFERENCES]
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def segmentation_dice(per_case: dict[float, pd.DataFrame]) -> pd.DataFrame:
    """Per segmentation point, N and method: mean Dice over runs x cases and the per-run means (``dice_by_n``)."""
    from nnunet_dkm.evaluation.benchmark.label_efficiency import dice_by_n

    tables = [dice_by_n(table, list(dict.fromkeys(table["method"]))).assign(cue=cue) for cue, table in per_case.items()]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def report_figure(curve: pd.DataFrame, segmentation: pd.DataFrame, path: Path) -> None:
    """(a) vanilla Dice against iterations at N = 4 and N = all; (b, c) DKM - control and DKM - vanilla against N
    per cue, with 95 % intervals over runs."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    for column, label in (("dice_n4", "N = 4"), ("dice_all", "N = all")) if len(curve) else ():
        axes[0].plot(curve["iterations"], curve[column], marker="o", label=label)
    axes[0].set_xlabel("training iterations (vanilla nnU-Net)")
    axes[0].set_ylabel("mean test Dice over runs")
    axes[0].set_title("schedule curve (cue 0.5)", fontsize=9)
    if len(curve):
        axes[0].legend(fontsize=8)
    else:
        axes[0].text(0.5, 0.5, "not run yet", ha="center", va="center", transform=axes[0].transAxes)
    for axis, reference in zip(axes[1:], SEGMENTATION_REFERENCES[:2], strict=True):
        part = segmentation[segmentation["reference"] == reference] if len(segmentation) else segmentation
        for cue, of_cue in part.groupby("cue") if len(part) else ():
            mean = of_cue["mean_difference"]
            axis.errorbar(of_cue["num_labelled"], mean, yerr=[mean - of_cue["t_low"], of_cue["t_high"] - mean],
                          marker="o", capsize=3, label=f"cue {cue:g}")
        axis.axhline(0, color="grey", lw=0.8)
        axis.set_title(f"DKM - {reference}", fontsize=9)
        axis.set_xlabel("labelled training cases N")
        if len(part):
            axis.legend(fontsize=8)
        else:
            axis.text(0.5, 0.5, "not run yet", ha="center", va="center", transform=axis.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def second_point_lines(gaps: pd.DataFrame) -> list[str]:
    """The rule of the second segmentation point, as measured: the probe's learned - untrained Dice on the selection
    split per cue, and the point it fixes (or why none is fixed yet)."""
    if not len(gaps):
        return []
    lines = ["", "Second segmentation point, by the rule of the design: the largest learned - untrained probe gap on "
             "the SELECTION split among the cues other than the default.", "",
             "| cue | learned DM | untrained DM | gap |", "|---|---|---|---|"]
    for r in gaps.itertuples():
        lines.append(f"| {r.cue:g} | {r.pretrained_selection:.3f} | {r.untrained_selection:.3f} | "
                     f"{r.pretrained_selection - r.untrained_selection:+.3f} |")
    not_yet = unprobed_cues(gaps)
    return lines + ["", f"Second point: not fixed yet ({not_yet})." if not_yet else
                    f"Second point: **cue {segmentation_cues(gaps)[1]:g}**."]


def report(workdir: Path, output: Path) -> None:
    """``results_regime_map.md`` and ``regime_map.png`` from whatever stages have outputs; a stage without outputs
    is named, with its command, as not run."""
    from nnunet_dkm.reporting import machine_description

    gaps = probe_gaps(workdir)
    curve, cues, per_case = curve_gaps(workdir), cue_rows(workdir, gaps), segmentation_per_case(workdir)
    segmentation, dice = segmentation_rows(per_case), segmentation_dice(per_case)
    schedule, why = study_schedule(curve_table(workdir)) if len(curve) else (None, "")  # read once, used twice
    lines = ["# Where do the learned kinetics help? Regime map (scarce preset, 2d)", "",
             f"- command: `python benchmarks/regime_map.py --workdir {workdir} --stage report`",
             f"- machine: {machine_description('cpu')}; each training pinned to one core (`taskset`, "
             "`OMP_NUM_THREADS=1`), at most two side by side",
             "- design: fixed before any segmentation result was seen (module docstring of `benchmarks/regime_map.py`)",
             "", "## 1. Schedule: vanilla nnU-Net at N = 4 and N = all (cue 0.5, folds 0-2)", ""]
    if len(curve):
        lines += ["| schedule | iterations | runs | Dice N = 4 | Dice N = all | all - 4 | 95 % t-interval over folds "
                  "| per fold |", "|---|---|---|---|---|---|---|---|"]
        for r in curve.itertuples():
            lines.append(f"| {r.schedule} | {r.iterations} | {r.runs} | {r.dice_n4:.3f} | {r.dice_all:.3f} | "
                         f"{r.gap:+.3f} | [{r.gap_low:+.3f}, {r.gap_high:+.3f}] | {r.run_gaps} |")
        chosen = curve.set_index("schedule").loc[schedule]
        if chosen["gap_low"] <= 0:
            why += (f"; its 95 % interval over folds, [{chosen['gap_low']:+.3f}, {chosen['gap_high']:+.3f}], "
                    "includes 0: the few-label regime is reached on average, not in every fold")
        missing = [s for s in CURVE_SCHEDULES if s not in set(curve["schedule"])]
        lines += ["", f"Study schedule: **{schedule}**, {why} (means over runs x cases, the rule's measure).",
                  f"Schedules of the curve not run: {', '.join(missing) or 'none'} (the rule needs only the "
                  "schedules up to the first that meets it)."]
    else:
        lines += ["Not run: `--stage curve`."]
    lines += ["", "## 2. Cue sweep: DM quality and the probe (logistic regression, report cases)", ""]
    if len(cues):
        lines += ["DM quality: phase-1 MAE of the DM's synthetic image relative to the pre-contrast image's "
                  "(negative: closer to the truth), in the tumour (beside a linear intensity map's) and in the rest of "
                  "the breast. Probe: the learned DM's report Dice and its difference to each other row.", "",
                  "| cue | tumour MAE: DM / linear map | breast MAE: DM | learned DM probe Dice | minus | cases | "
                  "Dice difference | 95 % interval over cases |", "|---|---|---|---|---|---|---|---|"]
        for r in cues.itertuples():
            lines.append(f"| {r.cue:g} | {r.tumour:+.0%} / {r.tumour_linear:+.0%} | {r.breast:+.0%} | "
                         f"{r.learned_dice:.3f} | {r.minus} | {r.cases} | {r.difference:+.3f} | "
                         f"[{r.low:+.3f}, {r.high:+.3f}] |")
    missing = [f"{c:g}" for c in CUES if not len(cues) or c not in set(cues["cue"])]
    if missing:
        lines += ["", f"Cues not run yet: {', '.join(missing)} (`--stage dms`, then `--stage probe`)."]
    lines += second_point_lines(gaps)
    lines += ["", "## 3. Segmentation: DKM minus each control over training runs (folds x repeats)", ""]
    if len(segmentation):
        lines += ["Goal: DKM - untrained-DM control >= +0.03 Dice with the run-level interval above 0, or, where no "
                  "point has that, half-widths <= 0.02 everywhere, so that the map bounds the effect.", "",
                  "| cue | N | DKM minus | runs | mean Dice difference | 95 % t-interval | half-width | per run | "
                  "verdict | gain goal met |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in segmentation.itertuples():
            lines.append(f"| {r.cue:g} | {r.num_labelled} | {r.reference} | {r.runs} | {r.mean_difference:+.3f} | "
                         f"[{r.t_low:+.3f}, {r.t_high:+.3f}] | {(r.t_high - r.t_low) / 2:.3f} | {r.per_run} | "
                         f"{r.verdict} | {'yes' if r.goal_met else 'no'} |")
        for cue in sorted(per_case) if schedule else ():
            times = training_minutes(workdir, cue, schedule)
            by_trainer = times.groupby("trainer")["minutes"].agg(["count", "median"])
            lines += ["", f"Wall time at cue {cue:g}: {len(times)} finished `{schedule}` trainings, "
                      f"{times['minutes'].sum() / 60:.1f} core-hours in all (each pinned to one core, at most two side "
                      "by side; from nnU-Net's training logs); median minutes per training: "
                      + ", ".join(f"{t} {r['median']:.1f} ({r['count']:.0f})" for t, r in by_trainer.iterrows()) + "."]
        lines += ["", "Mean test Dice per method over runs x cases, and per run (in the order of fold, repeat):", "",
                  "| cue | N | method | runs x cases | mean Dice | per run |", "|---|---|---|---|---|---|"]
        run_columns = [c for c in dice.columns if c.startswith("run ")]
        for _, r in dice.iterrows():
            runs = " ".join(f"{r[c]:.3f}" for c in run_columns if not np.isnan(r[c]))
            lines.append(f"| {r.cue:g} | {r.num_labelled} | {r.method} | {r.n} | {r.dice_mean:.3f} | {runs} |")
    else:
        lines += ["Not run yet: `--stage segmentation` (needs stages 1-3: it reads the schedule and the cues from "
                  "them)."]
    figure_path = output.with_name("regime_map.png")
    report_figure(curve, segmentation, figure_path)
    lines += ["", f"![regime map]({figure_path.name})"]
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
