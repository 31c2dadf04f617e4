"""Which CPU recipe makes the DM learn the kinetics? DM quality (``nnUNetv2_dkm_dm_quality``) against pretraining
steps, for the levers that plausibly matter, on held-out TRAINING exams; the chosen recipe is then scored once on the
test split.

    python benchmarks/dm_recipe.py --workdir /work/studies/dm_recipe            # train what is missing, evaluate
    python benchmarks/dm_recipe.py --workdir ... --runs enh post --no-train    # evaluate what exists

Design, fixed before any result was seen:
- data: make demo's phantom (``nnUNetv2_dkm_synthesize -d 990 --shape 64 64 12``, seed 0): 32 labelled, 48 unlabelled
  training exams, 12 test exams. The DM holds out 8 labelled training exams (its validation exams, the same for every
  run): the SELECTION split every choice below is made on.
- runs (``RUNS``): the ``small`` preset network and recipe (v-prediction, batch 16, 90 % tumour-centred patches,
  half the timesteps from the noisier half), EMA 0.999, with one lever changed: the target (post vs enhancement),
  the loss weighting on enhancing voxels (2 vs 0); snapshots kept along the way; the enhancement run goes on to 8000
  steps, the others stop at 2000. The plan had 4000 steps for every lever, a 32x32-patch run to 16000 steps and a
  regression reference; the compute of the session that ran it (one core per run, about 1.1 s per step) cut it to
  this, before any lever's result at a common budget had been seen. The 32x32-patch run (``enh_p32``: smaller
  patches, more steps) ran in a later session to 8000 steps, the same number of training pixels as 2000 steps of
  64x64 patches, fixed before its result was seen (16000 cut for compute).
- samplers (``SAMPLERS``): DDIM with 1 step (the one-step estimate from pure noise), 5 and 20 steps (eta 0), and 20
  steps with eta 1; for the EMA and the raw weights at the common budget, for the EMA weights with eta 0 at every
  other snapshot (``grid``; the full grid at every snapshot was cut for compute), and for the chosen weights and
  sampler at every snapshot.
- choice: the (run, weights, sampler) with the lowest phase-1 tumour MAE on the selection split at the common
  budget (``COMPARISON_STEP``, 2000 steps of 64x64 patches; for the 32x32 run the snapshot with as many training
  pixels, 8000 steps: ``Run.comparison_step``); the recipe's step count is the smallest snapshot of that run, weights
  and sampler whose tumour MAE is within 2 points (of the identity's MAE) of its best snapshot.
  Amended after the selection-split results were seen, before any test-split score: only pairs whose breast MAE is
  not worse than the pre-contrast image's are eligible. The rule as first fixed picked DDIM with eta 1, whose tumour
  MAE was the best but whose breast MAE was about a third worse than the pre-contrast image's: a noisier image, not
  a better one. The report shows both picks.
Writes ``benchmarks/results_dm_recipe.md``, ``results_dm_recipe.csv`` and ``dm_recipe.png``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

REPO = Path(__file__).resolve().parents[1]
DATASET_ID = 990
EMA_DECAY = 0.999
# the common budget at which the levers are compared (see the module docstring for why 2000)
COMPARISON_STEP = 2000


@dataclass(frozen=True)
class Run:
    """One pretraining run: the lever it changes and its command-line arguments."""

    name: str
    lever: str
    arguments: tuple[str, ...]
    snapshots: tuple[int, ...]
    # the snapshot compared with the other runs: the one with COMPARISON_STEP's number of training pixels
    comparison_step: int = COMPARISON_STEP


RUNS = {
    "enh": Run("enh", "target enhancement (post - pre)", ("--target", "enhancement", "--steps", "8000"),
               (500, 1000, 2000, 4000, 8000)),
    "post": Run("post", "target post-contrast image (the recipe of the previous default)",
                ("--target", "post", "--steps", "2000"), (500, 1000, 2000)),
    "enh_w0": Run("enh_w0", "target enhancement, unweighted loss (--enhancement-weight 0)",
                  ("--target", "enhancement", "--enhancement-weight", "0", "--steps", "2000"), (500, 1000, 2000)),
    "enh_p32": Run("enh_p32", "target enhancement, 32x32 patches, 4x the steps (same training pixels)",
                   ("--target", "enhancement", "--patch-size", "32", "32", "--steps", "8000"), (2000, 4000, 8000),
                   comparison_step=8000),
}
SAMPLERS = {"ddim1": (1, 0.0), "ddim5": (5, 0.0), "ddim20": (20, 0.0), "ddim20_eta1": (20, 1.0)}
WEIGHTS = ("ema", "raw")
CURVE_SAMPLERS = ("ddim1", "ddim5", "ddim20")


def grid(run: Run, step: int) -> list[tuple[str, str]]:
    """The (weights, sampler) pairs scored at a snapshot: all at the common budget, EMA with eta 0 elsewhere."""
    if step == run.comparison_step:
        return [(weights, sampler) for weights in WEIGHTS for sampler in SAMPLERS]
    return [("ema", sampler) for sampler in CURVE_SAMPLERS]


def environment(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({name: str(workdir / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    return env


def prepare(workdir: Path) -> None:
    """The phantom and its 2d plans, unless there."""
    env = environment(workdir)
    binaries = Path(sys.executable).parent
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (workdir / name).mkdir(parents=True, exist_ok=True)
    if not list((workdir / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*")):
        subprocess.run([binaries / "nnUNetv2_dkm_synthesize", "-d", str(DATASET_ID), "--shape", "64", "64", "12"],
                       check=True, env=env)
    if not list((workdir / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*/nnUNetPlans.json")):
        subprocess.run([binaries / "nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "2d", "-np", "1",
                        "-npfp", "1"], check=True, env=env)


def pretrain_command(run: Run, checkpoint: Path) -> list[str]:
    command = [str(Path(sys.executable).parent / "nnUNetv2_dkm_pretrain"), "-d", str(DATASET_ID), "-c", "2d",
               "--ema", str(EMA_DECAY), "--save-every", "250", "--validate-every", "250", *run.arguments,
               "--keep-steps", *map(str, run.snapshots)]
    if checkpoint.is_file():
        command.append("--continue")
    return command


def train(run: Run, workdir: Path) -> None:
    """Pretrain the run where its last snapshot is missing (``nnUNet_dkm_checkpoint`` names its file)."""
    checkpoint = workdir / "runs" / run.name / "dm_checkpoint.pt"
    if checkpoint.with_name(f"dm_checkpoint.step{run.snapshots[-1]}.pt").is_file():
        return
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(pretrain_command(run, checkpoint), check=True,
                   env={**environment(workdir), "nnUNet_dkm_checkpoint": str(checkpoint)})


def snapshot_file(workdir: Path, run: Run, step: int, weights: str) -> Path | None:
    """The snapshot's checkpoint; for the raw weights a copy whose weights are the raw ones (made once)."""
    from nnunet_dkm.diffusion.checkpoint import load_checkpoint, save_checkpoint

    path = workdir / "runs" / run.name / f"dm_checkpoint.step{step}.pt"
    if not path.is_file():
        return None
    if weights == "ema":
        return path
    raw = path.with_name(f"dm_checkpoint.step{step}.raw.pt")
    if not raw.is_file():
        checkpoint = load_checkpoint(path)
        checkpoint.weights = checkpoint.training_state["raw_weights"]
        checkpoint.weights_are_ema = False
        checkpoint.training_state = None
        save_checkpoint(checkpoint, raw)
    return raw


def evaluate(workdir: Path, checkpoint: Path, split: str, sampler: str, output: Path) -> pd.DataFrame:
    """``nnUNetv2_dkm_dm_quality`` of one checkpoint and sampler (its results.csv reused when there)."""
    from nnunet_dkm.evaluation.dm_quality_cli import measure

    if (output / "results.csv").is_file():
        return pd.read_csv(output / "results.csv")
    for name, value in environment(workdir).items():
        os.environ[name] = value
    steps, eta = SAMPLERS[sampler]
    table, _ = measure(DATASET_ID, "2d", split=split, checkpoint_file=checkpoint, ddim_steps=steps, eta=eta,
                       output=output, command=f"nnUNetv2_dkm_dm_quality -d {DATASET_ID} -c 2d --split {split} -chk "
                                              f"{checkpoint} --ddim-steps {steps} --eta {eta:g}")
    return table


def collect(workdir: Path, runs: list[Run], split: str = "selection",
            only: tuple[str, str] | None = None) -> pd.DataFrame:
    """Every (run, snapshot, weights, sampler) of ``grid`` (or only the pair ``only`` at every snapshot) scored on
    ``split``; one row per estimate, phase and region."""
    frames = []
    for run in runs:
        for step in run.snapshots:
            for weights, sampler in [only] if only else grid(run, step):
                checkpoint = snapshot_file(workdir, run, step, weights)
                if checkpoint is None:
                    continue
                output = workdir / "quality" / split / run.name / f"step{step}_{weights}_{sampler}"
                table = evaluate(workdir, checkpoint, split, sampler, output)
                frames.append(table.assign(run=run.name, step=step, weights=weights, sampler=sampler))
    return pd.concat(frames, ignore_index=True)


def tumour_phase1(scores: pd.DataFrame) -> pd.DataFrame:
    """The synthetic images' phase-1 tumour rows with the breast MAE beside them."""
    synthetic = scores[(scores["estimate"] == "synthetic") & (scores["phase"] == 1)]
    keys = ["run", "step", "weights", "sampler"]
    tumour = synthetic[synthetic["region"] == "tumour"].set_index(keys)
    breast = synthetic[synthetic["region"] == "breast"].set_index(keys)
    out = tumour[["mae", "mae_vs_identity", "psnr", "ssim", "enhancement_corr"]].copy()
    out["breast_mae_vs_identity"] = breast["mae_vs_identity"]
    return out.reset_index()


def best_at_budget(rows: pd.DataFrame, breast_no_worse: bool = True) -> pd.Series:
    """The (run, weights, sampler) with the lowest tumour MAE at the common budget, among those whose breast MAE is
    not worse than the pre-contrast image's (``breast_no_worse``; False: the rule as first fixed)."""
    common = rows[rows["step"] == rows["run"].map(lambda name: RUNS[name].comparison_step)]
    if breast_no_worse:
        common = common[common["breast_mae_vs_identity"] <= 0]
    return common.loc[common["mae_vs_identity"].idxmin()]


def choose(rows: pd.DataFrame) -> dict:
    """The rule of the module docstring (``rows`` holding the best pair's snapshots)."""
    best = best_at_budget(rows)
    same = rows[(rows["run"] == best["run"]) & (rows["weights"] == best["weights"])
                & (rows["sampler"] == best["sampler"])].sort_values("step")
    enough = same[same["mae_vs_identity"] <= same["mae_vs_identity"].min() + 0.02]
    return {"run": best["run"], "weights": best["weights"], "sampler": best["sampler"],
            "steps": int(enough["step"].iloc[0]), "last_step": int(same["step"].iloc[-1])}


def figure(rows: pd.DataFrame, references: pd.DataFrame, path: Path) -> None:
    """Tumour MAE vs identity against steps: one panel per sampler, one line per (run, weights)."""
    fig = Figure(figsize=(4.2 * len(SAMPLERS), 3.8))
    axes = fig.subplots(1, len(SAMPLERS), sharey=True)
    for axis, sampler in zip(axes, SAMPLERS, strict=True):
        for (run, weights), part in rows[rows["sampler"] == sampler].groupby(["run", "weights"]):
            part = part.sort_values("step")
            axis.plot(part["step"], 100 * part["mae_vs_identity"], marker="o", ms=3,
                      linestyle="-" if weights == "ema" else ":", label=f"{run} ({weights})")
        for name, value in references.items():
            axis.axhline(100 * value, color="grey", lw=0.8, ls="--")
            axis.text(axis.get_xlim()[0], 100 * value, f" {name}", fontsize=7, va="bottom", color="grey")
        axis.axhline(-30, color="red", lw=0.8)
        axis.set_xscale("log")
        steps = sorted({step for run in RUNS.values() for step in run.snapshots})
        axis.set_xticks(steps, [str(step) for step in steps])
        axis.minorticks_off()
        axis.set_title(f"{sampler} (selection split)", fontsize=9)
        axis.set_xlabel("pretraining steps")
    axes[0].set_ylabel("tumour MAE vs pre-contrast image (%)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def test_split_scores(workdir: Path, chosen: dict) -> pd.DataFrame:
    """The chosen (run, snapshot, weights, sampler) scored once on the test split."""
    run = RUNS[chosen["run"]]
    rows = []
    for step in sorted({chosen["steps"], chosen["last_step"]}):
        checkpoint = snapshot_file(workdir, run, step, chosen["weights"])
        output = workdir / "quality" / "test" / run.name / f"step{step}_{chosen['weights']}_{chosen['sampler']}"
        rows.append(evaluate(workdir, checkpoint, "test", chosen["sampler"], output).assign(step=step))
    return pd.concat(rows, ignore_index=True)


def goal_lines(test: pd.DataFrame) -> list[str]:
    """The issue's goal on the test split, per snapshot: tumour MAE >= 30 % below identity, below the linear map,
    and a positive enhancement correlation (phase 1)."""
    lines = []
    for step, part in test.groupby("step"):
        tumour = part[(part["phase"] == 1) & (part["region"] == "tumour")].set_index("estimate")
        synthetic, linear = tumour.loc["synthetic"], tumour.loc["linear"]
        checks = [("MAE >= 30 % below the pre-contrast image", synthetic["mae_vs_identity"] <= -0.30,
                   f"{synthetic['mae_vs_identity']:+.0%}"),
                  ("closer than the linear map", synthetic["mae"] < linear["mae"],
                   f"{synthetic['mae']:.3f} vs {linear['mae']:.3f}"),
                  ("enhancement correlates with the truth", synthetic["enhancement_corr"] > 0,
                   f"{synthetic['enhancement_corr']:.3f}")]
        lines.append(f"- step {step}: " + "; ".join(f"{text}: {'met' if ok else 'NOT met'} ({value})"
                                                    for text, ok, value in checks))
    return lines


def markdown(rows: pd.DataFrame, scores: pd.DataFrame, test: pd.DataFrame, chosen: dict, runs: list[Run],
             command: str) -> str:
    from nnunet_dkm.reporting import ReportHeader, machine_description, markdown_table

    reference = scores[(scores["phase"] == 1) & (scores["region"] == "tumour")].groupby("estimate")
    reference = reference["mae_vs_identity"].first()
    steps = sorted({step for run in runs for step in run.snapshots})
    table = []
    for run in runs:
        for (weights, sampler), part in rows[rows["run"] == run.name].groupby(["weights", "sampler"]):
            by_step = part.set_index("step")
            table.append([run.name, run.lever, weights, sampler, *[
                f"{by_step.loc[s, 'mae_vs_identity']:+.0%} / {by_step.loc[s, 'breast_mae_vs_identity']:+.0%}"
                if s in by_step.index else "-" for s in steps]])
    lines = [*ReportHeader("DM recipe: synthetic post-contrast quality against pretraining steps", command,
                           f"{machine_description('cpu')}; each pretraining run pinned to one core (`taskset`, "
                           "`OMP_NUM_THREADS=1`), two runs side by side", notes=[
             "data: make demo's phantom (64x64x12, seed 0); selection split = the DM's 8 held-out labelled "
             "training exams; the test split (12 exams) is scored once, for the chosen recipe only",
             "measure: `nnUNetv2_dkm_dm_quality` (phase 1): MAE relative to the pre-contrast image's MAE, tumour / "
             "breast (the body minus the tumour) in each cell; negative is better",
             f"references on the selection split: linear map {reference.get('linear', np.nan):+.0%}, mask-told "
             f"ceiling {reference.get('mask-told ceiling', np.nan):+.0%}"]).lines(), "",
             *markdown_table(table, ["run", "lever", "weights", "sampler", *[f"step {s}" for s in steps]])]
    first = best_at_budget(rows, breast_no_worse=False)
    lines += ["", f"The rule as first fixed (tumour MAE alone) picks `{first['run']}`, {first['weights']} weights, "
              f"`{first['sampler']}`: tumour {first['mae_vs_identity']:+.0%}, breast "
              f"{first['breast_mae_vs_identity']:+.0%} against the pre-contrast image; the amended rule admits only "
              "pairs whose breast MAE is not worse than the pre-contrast image's."]
    lines += ["", f"**Chosen** (amended rule, selection split): run `{chosen['run']}`, {chosen['weights']} weights, "
              f"sampler `{chosen['sampler']}`, {chosen['steps']} steps (within 2 points of its best snapshot; "
              f"snapshots to {chosen['last_step']}).",
              "", "## The chosen recipe on the test split (scored once)", "",
              *markdown_table([[row.step, row.region, row.estimate, f"{row.mae:.3f}", f"{row.mae_vs_identity:+.0%}",
                                f"{row.psnr:.1f}", f"{row.ssim:.3f}", f"{row.enhancement_corr:.3f}"]
                               for row in test[test["phase"] == 1].itertuples()],
                              ["step", "region", "estimate", "MAE", "MAE vs identity", "PSNR", "SSIM",
                               "enhancement corr."])]
    lines += ["", "Goal (issue 20) on the test split:", *goal_lines(test), "", "![curves](dm_recipe.png)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dm_recipe"))
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--no-train", action="store_true", help="evaluate only the snapshots that exist")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results_dm_recipe.md")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    prepare(workdir)
    runs = [RUNS[name] for name in args.runs]
    if not args.no_train:
        for run in runs:
            train(run, workdir)
    scores = collect(workdir, runs)
    best = best_at_budget(tumour_phase1(scores))
    curve = collect(workdir, [RUNS[best["run"]]], only=(best["weights"], best["sampler"]))
    keys = ["run", "step", "weights", "sampler", "estimate", "phase", "region"]
    scores = pd.concat([scores, curve], ignore_index=True).drop_duplicates(subset=keys)
    scores.to_csv(args.output.with_suffix(".csv"), index=False)
    rows = tumour_phase1(scores)
    reference_rows = scores[(scores["phase"] == 1) & (scores["region"] == "tumour")
                            & (scores["estimate"].isin(["linear", "mask-told ceiling"]))]
    references = reference_rows.groupby("estimate")["mae_vs_identity"].first()
    figure(rows, references, args.output.with_name("dm_recipe.png"))
    chosen = choose(rows)
    test = test_split_scores(workdir, chosen)
    command = "python benchmarks/dm_recipe.py --workdir " + str(args.workdir) + " --runs " + " ".join(args.runs)
    text = markdown(rows, scores, test, chosen, runs, command)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
