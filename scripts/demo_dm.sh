#!/usr/bin/env bash
# `make demo`'s diffusion module: bash scripts/demo_dm.sh DATASET_ID PREPROCESSED_DATASET_FOLDER
#
# Uses the DM shipped with the repository (DEMO_SHIPPED_DM, default benchmarks/dms/demo_phantom_2d.pt: pretrained by
# the small recipe's 8000 steps on make demo's phantom; its sidecar <file>.json states how) when
# nnUNetv2_dkm_install_dm finds that it was made for this dataset's plans; otherwise, or with DEMO_PRETRAIN=1, it
# pretrains one here (DEMO_DM_STEPS steps, default the recipe's). A DM that stopped before its recipe's steps (a
# shipped resumable checkpoint, or an interrupted run) is continued. nnU-Net's folder variables must be exported.
set -euo pipefail

DATASET=$1
PREPROCESSED=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
SHIPPED_DM=${DEMO_SHIPPED_DM:-$REPO/benchmarks/dms/demo_phantom_2d.pt}
DM_STEPS=${DEMO_DM_STEPS:-}
DM_FILE="$PREPROCESSED/dkm/2d/dm_checkpoint.pt"

pretrain() {
    local steps_option=()
    [ -n "$DM_STEPS" ] && steps_option=(--steps "$DM_STEPS")
    echo "pretraining the DM here (small preset, ${DM_STEPS:-8000} steps): the shipped demo DM took 5.0 hours of"
    echo "training on one CPU core for 8000 steps (its sidecar's training_seconds); it resumes with --continue"
    local began=$SECONDS
    nnUNetv2_dkm_pretrain -d "$DATASET" -c 2d -device cpu --preset small "${steps_option[@]}" "$@"
    echo "DM pretraining took $(( (SECONDS - began) / 60 )) min"
}

if [ -f "$DM_FILE" ]; then
    echo "reusing $DM_FILE"
elif [ "${DEMO_PRETRAIN:-0}" = 1 ]; then
    echo "DEMO_PRETRAIN=1: not using the shipped DM"
    pretrain
elif [ ! -f "$SHIPPED_DM" ]; then
    echo "no shipped DM at $SHIPPED_DM"
    pretrain
elif nnUNetv2_dkm_install_dm -i "$SHIPPED_DM" -d "$DATASET" -c 2d; then
    echo "using the DM shipped with the repository, made for this phantom's plans (no pretraining: 0 min); how it"
    echo "was made: $SHIPPED_DM.json. DEMO_PRETRAIN=1 make demo pretrains one here instead"
else
    echo "the shipped DM $SHIPPED_DM cannot be used for this dataset (the reason is above)"
    pretrain
fi
if python -c "import sys; from nnunet_dkm.diffusion.checkpoint import load_checkpoint as load
sys.exit(0 if load(sys.argv[1]).stopped_early else 1)" "$DM_FILE"; then
    echo "the DM stopped before its recipe's steps: continuing its pretraining"
    pretrain --continue
fi
