"""Does the gain last? DKM against vanilla nnU-Net as training converges, and what carries the gain (issue 32).

    python benchmarks/convergence.py --workdir /work/studies/convergence --stage prepare   # phantom, plans, DMs
    python benchmarks/convergence.py --workdir ... --stage phase1 --schedules 1epoch     # one schedule at a time
    python benchmarks/convergence.py --workdir ... --stage plan                           # the compute rule
    python benchmarks/convergence.py --workdir ... --stage phase1                         # every phase-1 schedule
    python benchmarks/convergence.py --workdir ... --stage phase2                         # needs its two DMs
    python benchmarks/convergence.py --stage report                                       # from the records alone

Run each stage pinned to one core (``taskset -c 1 env OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE ...``). Every
finished training writes its study record into ``benchmarks/records/convergence/`` (``nnUNetv2_dkm_benchmark
--records``); a stage skips every run whose record exists, so a stage stopped on one machine resumes on a fresh clone
on another (``--stage prepare`` rebuilds the phantom, its plans and the shipped DMs there), and the report is rebuilt
from the committed records alone.

Design, fixed before any result (issue 32):
- data and DM: ``make demo``'s phantom (``nnUNetv2_dkm_synthesize -d 990 --shape 64 64 12``: seed 0, cue 0.5, all
  labelled training cases) with the demo's shipped DM (``benchmarks/dms/demo_phantom_2d.pt``) and the default
  features; the test split (12 cases) scores every run.
- schedules: nnU-Net's 1, 5 and 20 epochs of 250 iterations (vanilla: nnU-Net's own ``nnUNetTrainer_1epoch``,
  ``_5epochs``, ``_20epochs``; DKM and the controls: ours with the same suffixes).
- runs: folds 0 and 1 x 2 repeats per method and schedule, each training pinned to one core.
- phase 1: vanilla, DKM and the untrained-DM control at every schedule.
- phase 2, at the longest schedule: the pre-only and regression DM controls (their DMs pretrained by the ``small``
  recipe on the same phantom and shipped as ``benchmarks/dms/demo_phantom_2d_<objective>.pt``) and virtual contrast.
- phase 3, few labels at the longest schedule, only where phase 1 there shows DKM - untrained control >= +0.03 with
  its run-level interval above 0: vanilla, DKM and the control with 4 labelled cases, folds 0-2 x 2 repeats, label
  subsets drawn as the regime study drew them (``--num-labelled``), with a label-free DM.
- phase 4, last, only if vanilla still gains >= 0.02 Dice from 5 to 20 epochs and the compute allows: 50 epochs for
  phase 1's methods.
- compute rule: if phases 1 and 2 would take more than 30 core-hours of training at 20 epochs, the longest schedule
  is 10 epochs (``_10epochs``) for every phase. ``--stage plan`` decides it from the 1-epoch runs' measured wall
  times (per method, scaled by epochs) before any longer schedule runs, and writes the decision into
  ``benchmarks/records/convergence_plan.json``; later stages read it from there.

Compute estimate before any run (2026-12-07; replaced by ``--stage plan`` from the measured 1-epoch runs): vanilla
``nnUNetTrainer_1epoch`` on this phantom took 483 s for its 250 iterations on one core of a slow VM beside another
job (1.9 s per iteration); DKM and the DM controls cost about 1.5x vanilla per iteration
(``benchmarks/results_segmentation_speed.md`` and issue 33's remeasurement: 1.23x to 1.54x), virtual contrast about
vanilla's. One run of 1 epoch: vanilla 0.13, DKM-like 0.20 core-hours. Phase 1 at 1 + 5 + 20 epochs x 4 runs: 56
core-hours; phase 2 at 20 epochs: 43; so the rule will choose 10 epochs, where phases 1 and 2 take about 34 + 21 = 55
core-hours: at one core for about 2.5 hours per 3-hour session, some 20 sessions. The 1-epoch runs of phase 1
(2.1 core-hours) come first; the ``plan`` stage then fixes the longest schedule from their measured times.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from nnunet_dkm.evaluation.nnunet_runs import run_command, use_workdir
from nnunet_dkm.evaluation.records import RecordStore, per_case_frame
from nnunet_dkm.evaluation.run_statistics import run_level_comparison, run_means, t_interval

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RECORDS = REPO / "benchmarks" / "records" / "convergence"
PLAN_FILE = RECORDS.parent / "convergence_plan.json"  # beside the records folder: not a record
DATASET = 990
FOLDS = ("0", "1")
REPEATS = 2
EPOCHS = {"1epoch": 1, "5epochs": 5, "10epochs": 10, "20epochs": 20, "50epochs": 50}
PHASE1_METHODS = ("vanilla", "dkm", "untrained-dm")
PHASE2_METHODS = ("pre-only-dm", "regression-dm", "virtual-contrast")
CORE_HOUR_LIMIT = 30.0
SHIPPED = {"kinetic": REPO / "benchmarks" / "dms" / "demo_phantom_2d.pt",
           "pre-only": REPO / "benchmarks" / "dms" / "demo_phantom_2d_pre-only.pt",
           "regression": REPO / "benchmarks" / "dms" / "demo_phantom_2d_regression.pt"}
# the benchmark's method keys: DKM minus each of these
REFERENCES = ("untrained_dm_control", "vanilla", "pre_only_dm_control", "regression_dm_control", "virtual_contrast")


def stage_prepare(workdir: Path) -> None:
    """The phantom, its 2d plans and every shipped DM that exists, unless there."""
    if not list((workdir / "nnUNet_raw").glob(f"Dataset{DATASET}_*")):
        run_command([str(BIN / "nnUNetv2_dkm_synthesize"), "-d", str(DATASET), "--shape", "64", "64", "12"])
    if not list((workdir / "nnUNet_preprocessed").glob(f"Dataset{DATASET}_*/nnUNetPlans.json")):
        run_command([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET), "-c", "2d", "-np", "1",
                     "--verify_dataset_integrity"], unset=("nnUNet_n_proc_DA",))
    for objective, shipped in SHIPPED.items():
        if shipped.is_file():
            run_command([str(BIN / "nnUNetv2_dkm_install_dm"), "-i", str(shipped), "-d", str(DATASET), "-c", "2d",
                         "--objective", objective])
        else:
            print(f"not shipped yet: the {objective} DM ({shipped.relative_to(REPO)})")


def benchmark(workdir: Path, schedule: str, methods: tuple[str, ...], extra: tuple[str, ...] = ()) -> None:
    """``nnUNetv2_dkm_benchmark`` of ``methods`` at ``schedule`` with the study's records."""
    run_command([str(BIN / "nnUNetv2_dkm_benchmark"), "-d", str(DATASET), "-c", "2d", "-f", *FOLDS, "--repeats",
                 str(REPEATS), "--schedule", schedule, "--methods", *methods, "-device", "cpu", "--records",
                 str(RECORDS), "-o", str(workdir / "benchmark" / schedule), *extra])


def study_records() -> pd.DataFrame:
    """Every record's per-case rows (empty without records)."""
    return per_case_frame(RecordStore(RECORDS).all())


def training_hours(records: pd.DataFrame) -> dict[str, float]:
    """Per method: the mean core-hours of one 1-epoch training, from the records' wall times."""
    one_epoch = records[records["schedule"] == "1epoch"].drop_duplicates(["method", "fold", "repeat"])
    return {method: float(rows["wall_seconds"].mean()) / 3600 for method, rows in one_epoch.groupby("method")}


def compute_plan(records: pd.DataFrame) -> dict:
    """The compute rule of the module docstring, from the 1-epoch runs."""
    hours = training_hours(records)
    missing = [m for m in ("vanilla", "dkm", "untrained_dm_control") if m not in hours]
    if missing:
        raise SystemExit(f"the compute rule needs the 1-epoch runs of {missing}: run --stage phase1 --schedules 1epoch")
    runs = len(FOLDS) * REPEATS
    dkm_like = hours["dkm"]  # the DM controls and DKM share the network; virtual contrast is nnU-Net with 2 inputs

    def phases_1_and_2(longest: int) -> float:
        phase1 = sum(hours[m] for m in ("vanilla", "dkm", "untrained_dm_control")) * runs * (1 + 5 + longest)
        phase2 = (2 * dkm_like + hours["vanilla"]) * runs * longest
        return phase1 + phase2

    at_20 = phases_1_and_2(20)
    longest = "20epochs" if at_20 <= CORE_HOUR_LIMIT else "10epochs"
    return {"one_epoch_core_hours": {m: round(h, 4) for m, h in hours.items()},
            "phases_1_and_2_core_hours_at_20_epochs": round(at_20, 1),
            "phases_1_and_2_core_hours_at_10_epochs": round(phases_1_and_2(10), 1),
            "limit_core_hours": CORE_HOUR_LIMIT, "longest_schedule": longest,
            "rule": f"longest schedule 20 epochs if phases 1 and 2 take at most {CORE_HOUR_LIMIT:g} core-hours of "
                    f"training at 20 epochs, else 10 epochs (estimate: each method's mean 1-epoch wall time x epochs "
                    f"x {runs} runs; the pre-only and regression controls at DKM's time, virtual contrast at "
                    f"vanilla's)"}


def longest_schedule() -> str:
    if not PLAN_FILE.is_file():
        raise SystemExit(f"no compute plan yet ({PLAN_FILE.relative_to(REPO)}): run --stage phase1 --schedules 1epoch, "
                         f"then --stage plan")
    return json.loads(PLAN_FILE.read_text())["longest_schedule"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, help="nnU-Net folders of the study (every stage but report)")
    parser.add_argument("--stage", required=True, choices=("prepare", "phase1", "plan", "phase2", "report"))
    parser.add_argument("--schedules", nargs="+", choices=tuple(EPOCHS), help="phase1: default 1epoch, 5epochs and "
                        "the longest schedule of the plan")
    parser.add_argument("--methods", nargs="+", help="phase1 / phase2: a subset of the phase's methods")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_convergence.md")
    args = parser.parse_args()
    if args.stage == "report":
        report(args.output)
        return
    if args.stage == "plan":
        plan = compute_plan(study_records())
        PLAN_FILE.write_text(json.dumps(plan, indent=1) + "\n")
        print(json.dumps(plan, indent=1))
        return
    if args.workdir is None:
        parser.error(f"--stage {args.stage} needs --workdir")
    workdir = args.workdir.resolve()
    use_workdir(workdir)
    stage_prepare(workdir)
    if args.stage == "phase1":
        for schedule in args.schedules or ("1epoch", "5epochs", longest_schedule()):
            benchmark(workdir, schedule, tuple(args.methods or PHASE1_METHODS))
    elif args.stage == "phase2":
        benchmark(workdir, longest_schedule(), tuple(args.methods or PHASE2_METHODS))


# -- report -----------------------------------------------------------------------------------------------------
def dice_by_schedule(records: pd.DataFrame) -> pd.DataFrame:
    """Per method and schedule: runs, mean Dice over runs and its 95 % t-interval over runs."""
    rows = []
    for (method, schedule), rows_of in records.groupby(["method", "schedule"]):
        means = run_means(rows_of)["dice"].to_numpy()
        low, high = t_interval(means)
        rows.append({"method": method, "schedule": schedule, "iterations": EPOCHS[schedule] * 250, "runs": len(means),
                     "dice": float(means.mean()), "low": low, "high": high,
                     "per_run": " ".join(f"{m:.3f}" for m in means)})
    return pd.DataFrame(rows).sort_values(["method", "iterations"], ignore_index=True)


def differences(records: pd.DataFrame) -> pd.DataFrame:
    """Per schedule: DKM minus each reference over paired runs."""
    rows = []
    for schedule, of_schedule in records.groupby("schedule"):
        for reference in REFERENCES:
            if reference in set(of_schedule["method"]) and "dkm" in set(of_schedule["method"]):
                comparison = run_level_comparison(of_schedule, "dkm", reference)
                rows.append({"schedule": schedule, "iterations": EPOCHS[schedule] * 250, **comparison.as_dict()})
    return pd.DataFrame(rows).sort_values(["iterations", "reference"], ignore_index=True) if rows else pd.DataFrame()


def report_figure(dice: pd.DataFrame, path: Path) -> None:
    """Mean test Dice against training iterations per method, with run-level intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for method, rows in dice.groupby("method"):
        axis.errorbar(rows["iterations"], rows["dice"], yerr=[rows["dice"] - rows["low"], rows["high"] - rows["dice"]],
                      marker="o", capsize=3, label=method)
    axis.set_xscale("log")
    axis.set_xlabel("training iterations (log)")
    axis.set_ylabel("mean test Dice (95 % interval over runs)")
    axis.set_title("Convergence on make demo's phantom (2d)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report(output: Path) -> None:
    """``results_convergence.md`` and ``convergence.png`` from the records alone (byte-identical for the same
    records)."""
    records = study_records()
    lines = ["# Does the gain last? DKM against vanilla nnU-Net as training converges", "",
             "- command: `python benchmarks/convergence.py --stage report` (built from the study records in "
             "`benchmarks/records/convergence/` alone)",
             "- design: fixed before any result (module docstring of `benchmarks/convergence.py`): make demo's "
             "phantom, the demo's shipped DM, folds 0 and 1 x 2 repeats per method and schedule, each training "
             "pinned to one core; test split (12 cases)", ""]
    if PLAN_FILE.is_file():
        plan = json.loads(PLAN_FILE.read_text())
        lines += [f"Compute plan: {plan['rule']}. Measured 1-epoch core-hours per training: "
                  + ", ".join(f"{m} {h:.3f}" for m, h in sorted(plan["one_epoch_core_hours"].items()))
                  + f"; phases 1 and 2 at 20 epochs: {plan['phases_1_and_2_core_hours_at_20_epochs']:.1f} core-hours, "
                  f"at 10 epochs: {plan['phases_1_and_2_core_hours_at_10_epochs']:.1f}. **Longest schedule: "
                  f"{plan['longest_schedule']}.**", ""]
    if not len(records):
        lines += ["No run recorded yet."]
        output.write_text("\n".join(lines) + "\n")
        return
    dice = dice_by_schedule(records)
    lines += ["## Mean test Dice per method and schedule", "",
              "| method | schedule | iterations | runs | mean Dice | 95 % interval over runs | per run |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.method} | {r.schedule} | {r.iterations} | {r.runs} | {r.dice:.3f} | [{r.low:.3f}, {r.high:.3f}] "
              f"| {r.per_run} |" for r in dice.itertuples()]
    compared = differences(records)
    lines += ["", "## DKM minus each reference, over paired runs (folds x repeats)", ""]
    if len(compared):
        lines += ["| schedule | DKM minus | runs | mean Dice difference | 95 % t-interval | half-width | verdict |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.schedule} | {r.reference} | {r.runs} | {r.mean_difference:+.3f} | [{r.t_low:+.3f}, "
                  f"{r.t_high:+.3f}] | {(r.t_high - r.t_low) / 2:.3f} | {r.verdict} |" for r in compared.itertuples()]
    hours = records.drop_duplicates(["method", "schedule", "fold", "repeat"])
    lines += ["", f"Recorded trainings: {len(hours)}, {hours['wall_seconds'].sum() / 3600:.1f} core-hours of "
              "training wall time in all (each pinned to one core)."]
    figure = output.with_name("convergence.png")
    report_figure(dice, figure)
    lines += ["", f"![convergence]({figure.name})"]
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
