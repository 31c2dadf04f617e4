#!/usr/bin/env bash
# `make demo`: the whole DKM journey on the embedded synthetic phantom, sized for a 2-core CPU.
#
# Every step is a command from the README. Output goes to demo_output/ (git-ignored); re-running reuses what exists
# (the dataset, the plans, the DM and every trained model) and only redoes what is missing.
# The diffusion module (scripts/demo_dm.sh): the one shipped with the repository when it was made for the plans of the
# phantom just synthesized, else pretrained here.
# Knobs: DEMO_OUTPUT (folder), DEMO_DATASET (id, 990), DEMO_FOLDS ("0 1 2": three training runs, the fewest that
# measure the training noise and so give run-level verdicts), DEMO_REPEATS (1: training runs per fold),
# DEMO_PRETRAIN (1: pretrain the DM here), DEMO_DM_STEPS (pretraining steps; default the small recipe's 8000),
# DEMO_METHODS (nnUNetv2_dkm_benchmark --methods; add "oracle" for the post-contrast oracle: a fifth more time).
# Every finished training run writes a study record into $DEMO_OUTPUT/records (nnUNetv2_dkm_benchmark --records).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${DEMO_OUTPUT:-demo_output}
DATASET=${DEMO_DATASET:-990}
FOLDS=${DEMO_FOLDS:-0 1 2}
REPEATS=${DEMO_REPEATS:-1}
# the rows the verdicts need; the post-contrast ceiling is shown by the label rule on post-contrast (no network)
METHODS=${DEMO_METHODS:-vanilla dkm untrained-dm baselines}
START=$(date +%s)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export nnUNet_raw="$OUT/nnUNet_raw" nnUNet_preprocessed="$OUT/nnUNet_preprocessed" nnUNet_results="$OUT/nnUNet_results"
unset nnUNet_dkm_checkpoint  # the demo uses its own dataset's DM
mkdir -p "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
nnUNet_extTrainer=$(nnUNetv2_dkm_trainer_path)
export nnUNet_extTrainer
# nnU-Net spawns 8 export workers by default; on 2 cores each start costs seconds
export nnUNet_def_n_proc=${nnUNet_def_n_proc:-1}

step() { printf '\n### [%s, %ds] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - START ))" "$*"; }
dataset_folder() { compgen -G "$1/Dataset${DATASET}_*" | head -n 1 || true; }

step "1/4 synthesise the demo phantom: 32 train, 12 test, 48 unlabelled DCE exams at 64x64x12"
if [ -n "$(dataset_folder "$nnUNet_raw")" ]; then
    echo "reusing $(dataset_folder "$nnUNet_raw")"
else
    nnUNetv2_dkm_synthesize -d "$DATASET" --shape 64 64 12
fi

step "2/4 nnU-Net planning and preprocessing"
PREPROCESSED=$(dataset_folder "$nnUNet_preprocessed")
if [ -n "$PREPROCESSED" ] && [ -f "$PREPROCESSED/nnUNetPlans.json" ]; then
    echo "reusing $PREPROCESSED"
else
    nnUNetv2_plan_and_preprocess -d "$DATASET" -c 2d -np 2 --verify_dataset_integrity
    PREPROCESSED=$(dataset_folder "$nnUNet_preprocessed")
fi

step "3/4 the diffusion module (small preset)"
bash "$REPO/scripts/demo_dm.sh" "$DATASET" "$PREPROCESSED"

step "4/4 benchmark: $METHODS (folds $FOLDS)"
# augmentation in the training process: worker processes only compete for the 2 cores
# shellcheck disable=SC2086
nnUNet_n_proc_DA=0 nnUNetv2_dkm_benchmark -d "$DATASET" -c 2d -f $FOLDS --repeats "$REPEATS" --schedule demo \
    --methods $METHODS -device cpu -o "$OUT/benchmark" --records "$OUT/records"
RUNS=$(( $(wc -w <<< "$FOLDS") * REPEATS ))
if [ "$REPEATS" -eq 1 ] && [ "$(wc -w <<< "$FOLDS")" -lt 3 ]; then
    echo "verdicts: with $RUNS training run(s) (one per fold) the training noise is not measured, so results.md gives"
    echo "no verdict between networks; the rules, the oracle and the per-case tables stand. For verdicts over"
    echo "training runs: DEMO_REPEATS=3 make demo (reuses every model made so far)."
else
    echo "verdicts: over $RUNS training runs (folds x repeats), with 95 % intervals in results.md."
fi

step "done in $(( ($(date +%s) - START) / 60 )) min: $OUT/benchmark/results.md, dice_bars.png, overlays.png"
